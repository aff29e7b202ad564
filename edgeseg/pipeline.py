"""The threaded pipeline: source -> (preprocess + infer) -> (decode) -> sinks, one thread per stage.

Every arrow is a bounded :class:`StageQueue`. With a live source (``source.live``) a full queue drops its
oldest item and counts it, so a slow stage never builds a backlog: latency stays bounded and memory flat. With
a file source a full queue blocks its producer, so an offline run processes every frame. Each sink has its own
thread and queue: a slow or failing sink neither stalls inference nor stops the other sinks.

One frame that raises in any stage is logged and counted, never fatal. The pipeline installs no signal
handlers and never exits the process: callers stop it with :meth:`Pipeline.stop` (the CLI does so on
SIGINT/SIGTERM).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from edgeseg.errors import EdgesegError, SourceError, SourceGoneError
from edgeseg.frame import Frame, Result, StageTimes
from edgeseg.instances import Instances
from edgeseg.live import Controls, Outcome, Snapshot
from edgeseg.malloc import Trim
from edgeseg.preprocess import Prepared
from edgeseg.priority import call_lowered, could_not_lower, lower_this_thread, lowers
from edgeseg.sinks import HealthSink, LosslessSink, ReportingSink, Sink, SinkReport
from edgeseg.statedir import state_dir
from edgeseg.stats import STREAM_PREFIX, PipelineStats, StatsRecorder
from edgeseg.threadplan import Plan, ThreadCount, ThreadPlanner, planner_for
from edgeseg.watchdog import Activity, Health

if TYPE_CHECKING:
    from edgeseg.config import PipelineConfig
    from edgeseg.control import ControlSetup
    from edgeseg.events import Event
    from edgeseg.model import Model
    from edgeseg.semantic import SplitView
    from edgeseg.sources import Source

log = logging.getLogger(__name__)

T = TypeVar("T")

DRAIN_TIMEOUT_S = 1.0  # after stop(), sinks get this long to write what they hold before their queues are cut
LOSSLESS_DRAIN_TIMEOUT_S = (
    30.0  # ... and sinks that must not lose results (writing to a local spool) this long
)
LOSSLESS_QUEUE_SIZE = 16  # results (with their frames) waiting for a lossless sink; it takes them in batches
LOSSLESS_PUT_TIMEOUT_S = (
    5.0  # a lossless sink stuck this long loses the result (counted): the pipeline goes on
)
SOURCE_STOP_GRACE_S = 2.0  # after stop(), how long a source's read() in progress may take to return
SOURCE_ERROR_LIMIT = 10  # consecutive failing reads after which a source counts as dead


class Stages(Protocol):
    """The per-frame work between a source and the sinks (a :class:`edgeseg.model.Model` behind it).

    ``preprocess`` and ``infer`` run on the inference thread, ``decode`` on the post-processing thread, so
    decoding frame k overlaps inference of frame k+1. ``decode`` returns instances in full-frame pixels.
    Both ``preprocess`` and ``decode`` get the frame's :class:`~edgeseg.live.Snapshot`: the settings current
    when the frame was preprocessed.
    """

    def preprocess(self, frame: Frame, snapshot: Snapshot) -> Any: ...

    def infer(self, prepared: Any) -> Any: ...

    def decode(self, frame: Frame, prepared: Any, outputs: Any, snapshot: Snapshot) -> Instances: ...

    def close(self) -> None:
        """Release the inference backend; called on the inference thread once it has stopped."""


class StreamStage(Protocol):
    """A per-stream step after decode (the tracker; zones and events next): ``Result -> Result``.

    Stream stages run in order on the decode thread, so each sees the stream's results in capture order.
    Each is timed under its ``name`` in ``stage_ms``; one that raises on a frame is counted under
    ``stream:<name>`` in ``bad_frames`` and the result goes on unchanged (not lost). ``close`` runs on the
    decode thread at its end and may return the stage's final events (:mod:`edgeseg.events`: the ``end`` of
    every track still held); the pipeline sends them, after the last result, on one last
    :class:`~edgeseg.frame.Result` with ``final=True`` (the last frame again, no instances) to the sinks
    that publish events (``takes_final_events = True``: JSON lines, MQTT); image sinks never get it.
    """

    name: str

    def process(self, result: Result) -> Result: ...

    def reset(self) -> None:
        """Forget the stream's state (a new stream starts)."""

    def close(self) -> Sequence[Event] | None: ...


class ModelStages:
    """:class:`Stages` backed by the model facade. Called without a snapshot (a bench, an evaluation), the
    stages use ``snapshot``: the settings they were loaded with."""

    def __init__(self, model: Model, snapshot: Snapshot | None = None, inference_nice: int = 0) -> None:
        self.model = model
        self.snapshot = Snapshot() if snapshot is None else snapshot
        self.inference_nice = inference_nice  # nice steps below the pipeline (edgeseg.priority)

    @classmethod
    def from_config(cls, config: PipelineConfig, build_engine: bool = True) -> ModelStages:
        """Load (and warm up) the configured model with the configured ROI and post-processing, on a thread
        as far below the caller's priority as inference will run (``model.nice``: the backend's thread
        pools start there). ``build_engine``: False refuses (ModelError) a TensorRT engine not cached."""
        from edgeseg.control import snapshot
        from edgeseg.model import Model, inference_options

        nice = config.model.nice if lowers(config.model.nice) else 0
        options = replace(inference_options(config), build_engine=build_engine)
        model = call_lowered(lambda: Model.load(config.model.path, options), nice)
        return cls(model, snapshot(config, model.card), 0 if could_not_lower() else nice)

    @property
    def thread_count(self) -> ThreadCount | None:
        """The backend's CPU thread count where the pipeline may choose it (:mod:`edgeseg.threadplan`)."""
        return self.model.backend.thread_count

    def preprocess(self, frame: Frame, snapshot: Snapshot | None = None) -> Any:
        return self.model.preprocess(frame, (snapshot or self.snapshot).roi)

    def infer(self, prepared: Any) -> Any:
        return self.model.infer(prepared)

    def decode(
        self, frame: Frame, prepared: Any, outputs: Any, snapshot: Snapshot | None = None
    ) -> Instances:
        return self.model.decode(outputs, prepared, (snapshot or self.snapshot).decode)

    def explain(self, frame: Frame, prepared: Any, outputs: Any, snapshot: Snapshot) -> SplitView | None:
        """What the semantic split saw for this frame (the tune window's side view); ``None`` for heads
        without one."""
        return self.model.explain(outputs, prepared, snapshot.decode)

    def decode_view(self, view: SplitView, prepared: Any) -> Instances:
        """:meth:`decode`'s instances from :meth:`explain`'s view of the same frame."""
        return self.model.decode_view(view, prepared)

    def close(self) -> None:
        self.model.close()


class StageQueue(Generic[T]):
    """A bounded FIFO between two threads.

    ``put`` on a full queue drops the oldest item (``drop_oldest``, live sources; counted in the stats under
    ``name``) or waits for room (file sources; at most ``put_timeout_s`` when given, after which the new item
    is dropped, counted and logged). ``close`` lets the consumer drain what is left and then see ``None``;
    ``abort`` empties the queue at once and returns how many items it threw away.
    """

    def __init__(
        self,
        name: str,
        maxsize: int,
        drop_oldest: bool,
        stats: StatsRecorder,
        put_timeout_s: float | None = None,
    ) -> None:
        self.name = name
        self.maxsize = max(1, maxsize)
        self.drop_oldest = drop_oldest
        self.put_timeout_s = put_timeout_s
        self._stats = stats
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: T) -> bool:
        """Enqueue ``item``; ``False`` when the queue is closed (the item was not taken)."""
        deadline = None if self.put_timeout_s is None else time.monotonic() + self.put_timeout_s
        with self._cond:
            while len(self._items) >= self.maxsize and not self._closed:
                if self.drop_oldest:
                    self._items.popleft()
                    self._stats.dropped(self.name)
                    break
                if deadline is None:
                    self._cond.wait()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    self._stats.dropped(self.name)
                    log.error(
                        "%s has not taken a result for %g s: result lost", self.name, self.put_timeout_s
                    )
                    return True
                self._cond.wait(left)
            if self._closed:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self) -> T | None:
        """The next item, waiting for one; ``None`` once the queue is closed and empty."""
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            return None

    def get_batch(self, limit: int, linger_s: float = 0.0) -> list[T]:
        """Everything waiting (at most ``limit``), waiting for at least one; with ``linger_s``, unless the
        queue is full or closed by then, it sleeps that long and takes what came meanwhile as well; ``[]``
        once closed and empty."""
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            linger = linger_s > 0 and len(self._items) < limit and not self._closed
        if linger:
            # asleep, not waiting on the condition: each put would wake the consumer (a context switch a
            # result, what the batch is there to spare); a stop meanwhile waits at most this long
            time.sleep(linger_s)
        with self._cond:
            batch = [self._items.popleft() for _ in range(min(limit, len(self._items)))]
            if batch:
                self._cond.notify_all()
            return batch

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def abort(self) -> int:
        with self._cond:
            n = len(self._items)
            self._items.clear()
            self._closed = True
            self._cond.notify_all()
            return n

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


@dataclass(frozen=True)
class _Work:
    frame: Frame
    snapshot: Snapshot
    prepared: Any
    outputs: Any
    times: StageTimes


@dataclass(frozen=True)
class _Threads:
    """The model's inference thread count, where the pipeline may choose it, and what chooses it."""

    knob: ThreadCount
    planner: ThreadPlanner


def _run_name(name: str, k: int, sep: str = " ") -> str:
    """The first inference thread's own name, the others' with their number (from 2)."""
    return name if k == 0 else f"{name}{sep}{k + 1}"


class _Runs:
    """The inference threads' turns. The first ``active`` of them take frames; each frame's work leaves (for
    decode, or dropped) in the order the frames were taken, whichever run ends first; and a change of plan
    (:meth:`change`) is made while no thread is inside a frame and none starts one.

    A run that ends before an earlier frame's run does not wait for it: it leaves its work to go out with
    that frame and takes the next one, so its core is not idle meanwhile (two runs of the demo model on two
    cores: 1.90 cores busy against 1.79 when each waited its turn, ``scripts/bench_runs.py``). At most one
    frame more than there are runs is in flight (taken and not yet gone), so a run stuck on a frame holds
    back at most as many finished frames as there are runs.
    """

    def __init__(self, threads: int, active: int) -> None:
        self.active = active
        self._cond = threading.Condition()
        self._take = threading.Lock()  # one thread at a time waits for the next frame
        self._inside = 0  # threads between their turn and their frame's end
        self._ended: dict[int, Callable[[], None] | None] = {}  # frames ended out of turn, and their sends
        self._taken = 0  # frames taken, each numbered in turn
        self._left = 0  # frames that have left, in that order
        self._changing = False
        self._closed = False
        self._running = threads  # threads not yet ended

    def take(self, worker: int, get: Callable[[], Frame | None]) -> tuple[Frame, int] | None:
        """Thread ``worker``'s next frame and its number, once it is among the active and at most
        ``active`` frames are in flight; None: no more."""
        with self._cond:
            self._cond.wait_for(
                lambda: (
                    self._closed
                    or (
                        worker < self.active
                        and not self._changing
                        and self._inside + len(self._ended) <= self.active
                    )
                )
            )
            if self._closed:
                return None
            self._inside += 1
        with self._take:
            frame = get()
            number = self._taken
            self._taken += frame is not None
        if frame is None:
            with self._cond:
                self._inside -= 1
                self._closed = True
                self._cond.notify_all()
            return None
        return frame, number

    def leave(self, number: int, send: Callable[[], None] | None) -> None:
        """Frame ``number`` ends (``send``: how its work leaves; None: it was dropped); it leaves once every
        earlier one has, with any later ones that ended before it, by whichever thread ends the earliest."""
        with self._cond:
            self._ended[number] = send
            self._inside -= 1
            try:
                while self._left in self._ended:
                    out = self._ended.pop(self._left)
                    try:
                        if out is not None:
                            out()
                    finally:
                        self._left += 1
            finally:
                self._cond.notify_all()

    def change(self, apply: Callable[[], None]) -> None:
        """Call ``apply`` once no thread is inside a frame (one may be waiting for the next from the source:
        then once it has run it), none starting one meanwhile."""
        with self._cond:
            self._cond.wait_for(lambda: not self._changing)
            self._changing = True
            try:
                self._cond.wait_for(lambda: self._inside == 0 or self._closed)
                if not self._closed:
                    apply()
            finally:
                self._changing = False
                self._cond.notify_all()

    def close(self) -> None:
        """No thread takes another frame."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def ended(self) -> bool:
        """Count one thread as ended; True for the last one."""
        with self._cond:
            self._running -= 1
            return self._running == 0


class _Throttle:
    """Logs the first few failures of one kind, then one line per 100; keeps the latest for the summary.

    Tracebacks are for ``-v`` (debug logging) only: a user sees one line per failure.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self.last = ""

    def __call__(self, frame_index: int | None, exc: BaseException) -> None:
        self.count += 1
        self.last = str(exc) or type(exc).__name__
        where = "" if frame_index is None else f" on frame {frame_index}"
        trace = exc if log.isEnabledFor(logging.DEBUG) else None
        if self.count <= 3:
            log.warning("%s failed%s: %s", self.what, where, self.last, exc_info=trace)
        elif self.count % 100 == 0:
            log.warning("%s has failed %d times (latest%s: %s)", self.what, self.count, where, self.last)


class Pipeline:
    """Runs ``source`` through ``stages`` into ``sinks``, each on its own thread.

    Args:
        source: an unopened :class:`edgeseg.sources.Source`; :meth:`start` opens it (the pipeline is its
            one owner) and the source thread closes it.
        stages: the per-frame work (:class:`ModelStages` in production).
        sinks: name -> sink; every result goes to each of them.
        queue_size: capacity of each queue for file sources. Live sources keep only the newest frame in
            front of each stage, because any frame waiting behind another is already stale.
        max_frames: stop after this many frames read from the source.
        owns_stages: close ``stages`` when the inference thread ends (the pipeline loaded the model);
            stages handed in by a caller who reuses them stay open.
        control: the live settings (:meth:`update`); ``None``: the settings are fixed (an empty
            :class:`~edgeseg.live.Snapshot`, for stages that need none).
        explain: also ask the stages (when they have ``explain``) what the split saw, into each result's
            ``split_view`` (the tune window shows it; it costs a second pass of the split).
        stream_stages: run in order on each result after decode (:class:`StreamStage`); the pipeline
            closes them.
    """

    def __init__(
        self,
        source: Source,
        stages: Stages,
        sinks: Mapping[str, Sink] | Sequence[tuple[str, Sink]] = (),
        queue_size: int = 2,
        max_frames: int | None = None,
        owns_stages: bool = False,
        control: Controls | None = None,
        explain: bool = False,
        stream_stages: Sequence[StreamStage] = (),
    ) -> None:
        self.source = source
        self.stream_stages = tuple(stream_stages)
        self.control = control
        self._explain = getattr(stages, "explain", None) if explain else None
        self._decode_view = getattr(stages, "decode_view", None) if explain else None
        knob: ThreadCount | None = getattr(stages, "thread_count", None)
        # stages shared with an earlier pipeline start from the count it left, and wait out its cooldown
        self._threads = None if knob is None else _Threads(knob, planner_for(knob))
        # a thread per core for inference runs side by side, where the planner may ask for them
        runs = 1 if knob is None else max(knob.most_threads, knob.runs)
        self._runs = _Runs(runs, 1 if knob is None else knob.runs)
        self._bad_preprocess, self._bad_inference = _Throttle("preprocess"), _Throttle("inference")
        self._inference_nice = int(getattr(stages, "inference_nice", 0))
        self._fixed = Snapshot()
        self.stages = stages
        self.owns_stages = owns_stages
        self.sinks: dict[str, Sink] = dict(sinks.items() if isinstance(sinks, Mapping) else sinks)
        self.max_frames = max_frames
        self.error: EdgesegError | None = None
        self._stats = StatsRecorder()
        self._stop = threading.Event()
        self._stop_at = 0.0
        self._started = False
        live = bool(getattr(source, "live", False))
        size = 1 if live else queue_size
        self._to_infer: StageQueue[Frame] = StageQueue("infer", size, live, self._stats)
        self._to_decode: StageQueue[_Work] = StageQueue("decode", size, live, self._stats)
        self._to_sinks: dict[str, StageQueue[Result]] = {
            name: (
                StageQueue(f"sink:{name}", LOSSLESS_QUEUE_SIZE, False, self._stats, LOSSLESS_PUT_TIMEOUT_S)
                if isinstance(sink, LosslessSink)
                else StageQueue(f"sink:{name}", max(size, queue_size if not live else 2), live, self._stats)
            )
            for name, sink in self.sinks.items()
        }
        self._sink_failures = {name: _Throttle(f"sink {name}") for name in self.sinks}
        # a source that marks its own device calls (a live source between reconnect attempts is waiting by
        # choice, not stuck) is watched through its activity; any other through its whole read()
        own = getattr(source, "activity", None)
        self._source_activity = own if isinstance(own, Activity) else None
        self._activity: dict[str, Activity] = {
            "read": self._source_activity or Activity(),
            **{_run_name("inference", k): Activity() for k in range(runs)},
            "decode": Activity(),
            **{f"sink {name}": Activity() for name in self.sinks},
        }
        self._source_thread = threading.Thread(target=self._read_loop, name="edgeseg-source", daemon=True)
        self._workers = [
            *(
                threading.Thread(
                    target=self._infer_loop, args=(k,), name=_run_name("edgeseg-infer", k, "-"), daemon=True
                )
                for k in range(runs)
            ),
            threading.Thread(target=self._decode_loop, name="edgeseg-decode", daemon=True),
            *(
                threading.Thread(target=self._sink_loop, args=(n, s), name=f"edgeseg-sink-{n}", daemon=True)
                for n, s in self.sinks.items()
            ),
        ]

    @classmethod
    def from_config(
        cls,
        config: PipelineConfig,
        extra_sinks: Mapping[str, Sink] | None = None,
        setup: ControlSetup | None = None,
    ) -> Pipeline:
        """Build source, model, live control and sinks from a validated config (the model is loaded and
        warmed up here); ``setup`` tells the control where the files and the saved tuning are."""
        from edgeseg.control import Control, ControlSetup
        from edgeseg.sinks import SinkContext, build_sinks
        from edgeseg.sinks.display import DisplaySinkConfig
        from edgeseg.sources import make_source

        source = make_source(config.source)
        stages = ModelStages.from_config(config)
        card = stages.model.card
        s = setup or ControlSetup()
        control = Control(
            config,
            card,
            base=s.base,
            file=s.file,
            tuning=s.tuning,
            reloader=s.reloader,
            left_out={key: value for key, (value, _) in s.left_out.items()},
            sensor_crops=not stages.model.backend.needs_tensor,
        )
        pipeline_box: list[Pipeline] = []
        ctx = SinkContext(
            class_names=tuple(card.classes),
            stats=lambda: pipeline_box[0].stats() if pipeline_box else PipelineStats(),
            request_stop=lambda: pipeline_box[0].stop() if pipeline_box else None,
            source_fps=lambda: source.stats.fps or config.source.fps,
            model_path=card.file,
            model_name=card.name,
            never_instances=card.never_instances,
            source_uri=source.uri,  # as the source shows it: a stream password redacted
            source_state=lambda: source.stats.state,
            state_dir=state_dir(config.pipeline.state_dir),
            control=control,
            zones={n: z.polygon for n, z in config.zones.items()} if config.tracker.enabled else {},
            lines={n: ln.points for n, ln in config.lines.items()} if config.tracker.enabled else {},
        )
        sinks = build_sinks(config.sinks, ctx)
        sinks.update(extra_sinks or {})
        from edgeseg.events import EventSequence
        from edgeseg.tracker import TrackerStage
        from edgeseg.zones import ZoneStage

        stream: list[StreamStage] = []
        if config.tracker.enabled:
            sequence = EventSequence()  # one event_seq per stream, across its stages
            stream.append(TrackerStage(config.tracker, sequence))
            if config.zones or config.lines:
                stream.append(ZoneStage(config.zones, config.lines, config.tracker.lost_s, sequence))
        pipeline = cls(
            source,
            stages,
            sinks,
            queue_size=config.pipeline.queue_size,
            max_frames=config.pipeline.max_frames,
            owns_stages=True,
            control=control,
            explain=config.sinks.section(DisplaySinkConfig).tune and "display" in sinks,
            stream_stages=stream,
        )
        pipeline_box.append(pipeline)
        return pipeline

    # control ------------------------------------------------------------------------------------------

    def update(self, changes: Mapping[str, Any], origin: str = "api") -> Outcome:
        """Change the running pipeline (see :mod:`edgeseg.control`): the next frame preprocessed uses the
        result. Thread-safe; never raises for bad input (it is in the outcome's ``rejected``)."""
        if self.control is None:
            why = "this pipeline was built without a configuration: nothing changes live"
            return Outcome({}, dict.fromkeys(map(str, changes), why), 0)
        return self.control.update(changes, origin)

    def snapshot(self) -> Snapshot:
        """The settings the next frame will be processed with."""
        return self._fixed if self.control is None else self.control.current()

    def start(self) -> None:
        """Open the source on the calling thread (so a source that can never work is an error here, before
        any thread runs), then start the stage threads.

        Raises:
            SourceError: the source cannot be opened; the pipeline's model and sinks are closed.
        """
        if self._started:
            return
        self._started = True
        try:
            self.source.open()
        except BaseException as exc:
            self._close_everything()
            if isinstance(exc, EdgesegError) or not isinstance(exc, Exception):
                raise
            raise SourceError(f"cannot open source {self.source.uri}: {exc}") from exc
        self._stats.restart_clock()
        for t in self._workers:
            t.start()
        self._source_thread.start()

    def stop(self) -> None:
        """Ask the pipeline to stop soon: no new frames are read, frames between stages are discarded (and
        counted), sinks write what they already hold and are closed. Returns at once; see :meth:`wait`."""
        if self._stop.is_set():
            return
        self._stop_at = time.monotonic()
        self._stop.set()
        self._stats.discarded(self._to_infer.abort() + self._to_decode.abort())
        try:
            self.source.close()  # unblocks a read() waiting on a device; sources allow it from any thread
        except Exception as exc:
            log.warning("closing source %s failed: %s", self.source.uri, exc)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every stage and sink has finished (or ``timeout`` s passed); ``True`` when finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._stop.is_set():
                # sinks that could not drain in time lose what they still hold (counted)
                waited = time.monotonic() - self._stop_at
                for name, q in self._to_sinks.items():
                    lossless = isinstance(self.sinks[name], LosslessSink)
                    if waited > (LOSSLESS_DRAIN_TIMEOUT_S if lossless else DRAIN_TIMEOUT_S):
                        if lossless:
                            # results handed to a sink that must keep them: lost (its report says so, the
                            # run exits 3), as when its queue cannot hold them mid-run
                            if n := q.abort():
                                self._stats.dropped(q.name, n)
                        else:
                            self._stats.discarded(q.abort())
            alive = [t for t in self._workers if t.is_alive()]
            # a read() in progress (a frame being decoded or rendered) gets a moment to return: a process
            # that exits while a thread is inside OpenCV can abort ("terminate called without an active
            # exception", SIGABRT); only a read() stuck longer is left behind
            grace = not self._stop.is_set() or time.monotonic() - self._stop_at < SOURCE_STOP_GRACE_S
            if grace and self._source_thread.is_alive():
                alive.append(self._source_thread)
            if not alive:
                if self._source_thread.is_alive():
                    log.warning("source %s did not return from read(); leaving it behind", self.source.uri)
                return True
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if left <= 0:
                return False
            alive[0].join(left)

    def _close_everything(self) -> None:
        for name, closable in (
            ("source", self.source),
            *self.sinks.items(),
            *((("model", self.stages),) if self.owns_stages else ()),
        ):
            try:
                closable.close()
            except Exception as exc:
                log.warning("closing %s failed: %s", name, exc)

    def run(self) -> PipelineStats:
        """Start, wait for the end of the source (or :meth:`stop` from another thread), return the stats."""
        self.start()
        self.wait()
        return self.stats()

    def stats(self) -> PipelineStats:
        return self._stats.snapshot()

    @property
    def thread_plan(self) -> str | None:
        """What was last decided about inference's thread count, and why (None: nothing to decide, or not
        yet)."""
        return None if self._threads is None else self._threads.planner.outcome

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def health(self, limit_s: float) -> Health:
        """Whether every stage makes progress (see :mod:`edgeseg.watchdog`): no call in flight longer than
        ``limit_s``, every stage thread alive while the source is read, and a result within ``limit_s`` or
        the source waiting by design, e.g. between connection attempts (then ``why`` is its state line)."""
        now = time.monotonic()
        for stage, activity in self._activity.items():
            busy = activity.busy_for(now)
            if busy > limit_s:
                return Health(False, f"a {stage} call has not returned for {busy:.0f} s")
        if self._started and not self._stop.is_set() and self._source_thread.is_alive():
            dead = [t.name.removeprefix("edgeseg-") for t in self._workers if not t.is_alive()]
            if dead:
                return Health(False, f"the {', '.join(dead)} thread has ended")
            for name, sink in self.sinks.items():
                if isinstance(sink, HealthSink) and (why := sink.failure()) is not None:
                    return Health(False, f"sink {name}: {why}")
        source = self.source.stats
        if source.waiting:
            return Health(True, source.state)
        idle = self._stats.idle_s()
        if idle > limit_s:
            return Health(False, f"no result for {idle:.0f} s")
        return Health(True)

    # stage threads -------------------------------------------------------------------------------------

    def _fail(self, exc: EdgesegError) -> None:
        # not logged as an error here: whoever runs the pipeline reports ``error`` once, in its own words
        if self.error is None:
            self.error = exc
        self._stats.failed(str(exc))
        log.debug("pipeline stops: %s", exc)

    def _read_loop(self) -> None:
        bad = _Throttle(f"source {self.source.uri}")
        reading = self._activity["read"] if self._source_activity is None else contextlib.nullcontext()
        try:
            n = 0
            failures = 0
            while not self._stop.is_set() and (self.max_frames is None or n < self.max_frames):
                try:
                    with reading:
                        frame = self.source.read()
                except SourceError as exc:
                    self._fail(exc)
                    break
                except Exception as exc:
                    self._stats.bad_frame("source")
                    bad(None, exc)
                    failures += 1
                    if failures >= SOURCE_ERROR_LIMIT:
                        # a camera's reads may well work in a fresh process (memory back, its driver
                        # reloaded): status 4, which the unit restarts; a file's would fail again (2)
                        failed = SourceGoneError if self.source.live else SourceError
                        self._fail(
                            failed(f"source {self.source.uri} failed {failures} reads in a row: {exc}")
                        )
                        break
                    continue
                failures = 0
                if frame is None:
                    break
                n += 1
                self._stats.frame_read()
                if not self._to_infer.put(frame):
                    self._stats.discarded(1)
        finally:
            self._to_infer.close()
            try:
                self.source.close()
            except Exception as exc:
                log.warning("closing source %s failed: %s", self.source.uri, exc)

    def _infer_loop(self, worker: int) -> None:
        lower_this_thread(self._inference_nice)
        busy = self._activity[_run_name("inference", worker)]
        try:
            while (taken := self._runs.take(worker, self._to_infer.get)) is not None:
                frame, number = taken
                done = None
                try:
                    done = self._infer(frame, busy)
                finally:
                    self._runs.leave(number, None if done is None else partial(self._to_decoding, done[0]))
                planned = (
                    done is None or self._threads is None or self._plan_threads(self._threads, done[1], busy)
                )
                if not planned:
                    self._runs.close()
                    # the model can no longer run: nothing may wait for it (a file source's read blocks on a
                    # full queue that no inference thread takes from, and the run never ends)
                    self.stop()
        finally:
            if self._runs.ended():
                self._to_decode.close()
                if self.owns_stages:
                    try:
                        self.stages.close()
                    except Exception as exc:
                        log.warning("closing the model failed: %s", exc)

    def _infer(self, frame: Frame, busy: Activity) -> tuple[_Work, float] | None:
        """One frame preprocessed and run, and the milliseconds both took; None where either failed (logged
        and counted)."""
        t0 = time.monotonic_ns()
        snap = self.snapshot()
        try:
            with busy:
                prepared = self.stages.preprocess(frame, snap)
        except Exception as exc:
            self._stats.bad_frame("preprocess")
            self._bad_preprocess(frame.index, exc)
            return None
        t1 = time.monotonic_ns()
        try:
            with busy:
                outputs = self.stages.infer(prepared)
        except Exception as exc:
            self._stats.bad_frame("infer")
            self._bad_inference(frame.index, exc)
            return None
        t2 = time.monotonic_ns()
        self._stats.stage("preprocess", t0, t1)
        self._stats.stage("infer", t1, t2)
        times = StageTimes(captured=frame.t_capture_ns, preprocessed=t1, inferred=t2)
        if isinstance(prepared, Prepared):
            prepared = prepared.spent()
        return _Work(frame, snap, prepared, outputs, times), (t2 - t0) / 1e6

    def _to_decoding(self, work: _Work) -> None:
        if not self._to_decode.put(work):
            self._stats.discarded(1)

    def _plan_threads(self, plan: _Threads, inference_ms: float, busy: Activity) -> bool:
        """Feed the thread planner one frame's inference time and make the change it asks for (``busy``: the
        calling inference thread's activity, while a session is made); False when the model can no longer
        run."""
        change = plan.planner.inferred(inference_ms)
        if change is None:
            return True

        def apply() -> None:
            if change.threads != plan.knob.threads:
                with busy:
                    plan.knob.set_threads(change.threads)
                if plan.knob.threads != change.threads:
                    plan.planner.not_made(Plan(plan.knob.runs, plan.knob.threads))
                    return
            self._runs.active = plan.knob.runs = change.runs

        try:
            self._runs.change(apply)
        except EdgesegError as exc:
            self._fail(exc)
            return False
        return True

    def _decode_loop(self) -> None:
        bad, bad_view = _Throttle("decode"), _Throttle("the split's view")
        bad_stream = [_Throttle(stage.name) for stage in self.stream_stages]
        busy = self._activity["decode"]
        trim = Trim()
        last: Result | None = None
        try:
            while (work := self._to_decode.get()) is not None:
                t0 = time.monotonic_ns()
                view = None
                if self._explain is not None:
                    try:
                        with busy:
                            view = self._explain(work.frame, work.prepared, work.outputs, work.snapshot)
                    except Exception as exc:  # the side view is a help, never a reason to lose the result
                        bad_view(work.frame.index, exc)
                try:
                    with busy:
                        # (a frame with a view takes the view's split: the same instances, split once)
                        instances = (
                            self.stages.decode(work.frame, work.prepared, work.outputs, work.snapshot)
                            if view is None or self._decode_view is None
                            else self._decode_view(view, work.prepared)
                        )
                except Exception as exc:
                    self._stats.bad_frame("decode")
                    bad(work.frame.index, exc)
                    continue
                t1 = time.monotonic_ns()
                self._stats.stage("decode", t0, t1)
                times = replace(work.times, decoded=t1, published=t1)
                result = Result(work.frame, instances, times, work.snapshot.version, view)
                for stage, bad_stage in zip(self.stream_stages, bad_stream, strict=True):
                    t2 = time.monotonic_ns()
                    try:
                        with busy:
                            result = stage.process(result)
                    except Exception as exc:  # a frame without tracking still goes to the sinks
                        self._stats.bad_frame(STREAM_PREFIX + stage.name)
                        bad_stage(work.frame.index, exc)
                    t1 = time.monotonic_ns()
                    self._stats.stage(stage.name, t2, t1)
                if self.stream_stages:
                    result = replace(result, times=replace(result.times, published=t1))
                if self._threads is not None:
                    self._threads.planner.postprocessed((t1 - t0) / 1e6)
                self._stats.frame_done(work.frame.t_capture_ns, t1)
                last = result
                for q in self._to_sinks.values():
                    q.put(result)
                trim()
        finally:
            final: list[Event] = []
            for stage in self.stream_stages:
                try:
                    final.extend(stage.close() or ())
                except Exception as exc:
                    log.warning("closing %s failed: %s", stage.name, exc)
            if final and last is not None:
                carrier = replace(
                    last,
                    instances=Instances.empty(last.frame.shape),
                    events=tuple(final),
                    final=True,
                    split_view=None,
                )
                for name, q in self._to_sinks.items():
                    if getattr(self.sinks[name], "takes_final_events", False):
                        q.put(carrier)
            for q in self._to_sinks.values():
                q.close()

    def reports(self) -> list[SinkReport]:
        """Each sink's account (call after :meth:`wait`): what a :class:`ReportingSink` says it wrote, and as
        lost, every result a sink raised on, and every result a lossless sink's queue had to drop."""
        out: list[SinkReport] = []
        stats = self.stats()
        for name, sink in self.sinks.items():
            report = sink.report() if isinstance(sink, ReportingSink) else SinkReport(())
            key = f"sink:{name}"
            failed = self._sink_failures[name]
            losses = [(stats.bad_frames.get(key, 0), f"it failed on (last error: {failed.last})")]
            if isinstance(sink, LosslessSink):
                losses.append((stats.drops.get(key, 0), "its queue could not hold (the sink was stuck)"))
            for n, why in losses:
                if n:
                    report = SinkReport((*report.lines, f"{name}: LOST {n} results {why}"), report.lost + n)
            out.append(report)
        return out

    def _sink_loop(self, name: str, sink: Sink) -> None:
        key = f"sink:{name}"
        bad = self._sink_failures[name]
        q = self._to_sinks[name]
        # (checked once: isinstance against a runtime-checkable Protocol looks its members up on every call)
        send_batch = sink.send_batch if isinstance(sink, LosslessSink) else None
        lossless = send_batch is not None
        limit = LOSSLESS_QUEUE_SIZE if lossless else 1
        # (a lossless sink may gather the results that come within its linger_s into one batch)
        linger_s = float(getattr(sink, "linger_s", 0.0)) if lossless else 0.0
        busy = self._activity[f"sink {name}"]
        try:
            while batch := q.get_batch(limit, linger_s):
                t0 = time.monotonic_ns()
                try:
                    with busy:
                        if send_batch is not None:
                            send_batch(batch)
                        else:
                            sink.send(batch[0])
                except Exception as exc:
                    for r in batch:
                        if not r.final:  # the carrier of the final events is not a frame's result
                            self._stats.bad_frame(key)
                    bad(batch[-1].frame.index, exc)
                    continue
                self._stats.stage(key, t0, time.monotonic_ns())
        finally:
            try:
                sink.close()
            except Exception as exc:
                self._stats.bad_frame(key)
                bad(None, exc)
