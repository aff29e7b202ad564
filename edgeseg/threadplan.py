"""Inference's thread count, chosen from the stages' measured costs while frames flow.

At load, onnxruntime gets one intra-op thread per usable core (:func:`edgeseg.backends.ort.thread_plan`):
right where inference is the slow stage, as for YOLOv8n-seg or DeepLabV3+. Where post-processing takes about
as long as inference (the small demo model, whose class map takes longer to split into instances than the
network takes to make it), inference's threads and the post-processing thread fight over the same cores.
Only the running pipeline knows which case it is in, and it can change: post-processing's cost depends on
the scene (an empty conveyor at start-up, a crowded one an hour later).

So the planner watches, over windows of :data:`WINDOW_FRAMES` frames, the median time a frame of the inference
thread (preprocess + inference) and of the post-processing thread (decode + tracking, zones...). With every
thread, where post-processing takes at least :data:`TRY_SHARE` of inference's time, it tries one thread fewer;
with one fewer, where post-processing has fallen under :data:`RETURN_SHARE` of it, it tries them all again.
A trial re-makes the session (between two frames, on the inference thread) and measures a window there. The
fewer threads are kept unless the slower of the two stages is slower with them by more than
:data:`TOLERANCE`: a tie keeps them, as a core's worth of CPU is left to the rest, and on a shared machine two
windows of the same settings differ by up to 8%. After a trial, the next waits :data:`COOLDOWN_S`, so a scene
that keeps changing costs a re-made session every few minutes at most.

Measured on the demo model on 2 cores (``scripts/bench_pipeline.py`` against ``--threads 2``, the choice
before the trial, 3 alternated pairs; medians): the trial kept one thread each time; pipeline 48.8 against
44.6 fps, CPU 35.2 against 40.4 ms a frame, live latency p50 37 against 45 ms and p99 47 against 63 ms.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

SETTLE_FRAMES = 10  # frames after the start or a change whose times are not counted (first runs, queues)
WINDOW_FRAMES = 60  # inference frames whose median decides
# post-processed frames needed beside them (a live pipeline drops the frames a busy stage cannot take)
MIN_POSTPROCESSED = 10
GIVE_UP_FRAMES = 10 * WINDOW_FRAMES  # inference frames after which a window still short of those is dropped
TRY_SHARE = 0.75  # post-processing's time over inference's from which one thread fewer is tried
RETURN_SHARE = 0.5  # ... and under which, with one thread fewer, every thread is tried again
TOLERANCE = 0.1  # how much slower the slower stage may be with one thread fewer and the fewer still kept
COOLDOWN_S = 300.0  # seconds from the end of a trial before the next may start

log = logging.getLogger(__name__)


class ThreadCount(Protocol):
    """A backend whose intra-op thread count may be changed between frames (on the inference thread):
    ``threads`` now, ``most_threads`` as it was loaded."""

    threads: int
    most_threads: int

    def set_threads(self, threads: int) -> None: ...


@dataclass(frozen=True)
class Costs:
    """Median milliseconds a frame of the inference and the post-processing threads at ``threads``."""

    threads: int
    inference_ms: float
    postprocess_ms: float

    @property
    def slowest_ms(self) -> float:
        return max(self.inference_ms, self.postprocess_ms)

    def __str__(self) -> str:
        return (
            f"{_threads(self.threads)}: inference {self.inference_ms:.1f} ms a "
            f"frame, post-processing {self.postprocess_ms:.1f}"
        )


class ThreadPlanner:
    """Watches the stages' costs for the whole run. :meth:`postprocessed` is called by the post-processing
    thread for each frame, :meth:`inferred` by the inference thread, which makes the change it returns;
    :attr:`outcome` says what was last decided, and why."""

    def __init__(self, most: int, threads: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.most = most  # the count at load: one thread per usable core
        self.threads = threads  # the count now
        self.outcome: str | None = None
        self._clock = clock
        self._next_trial = clock()  # the first may start at once
        self._lock = threading.Lock()
        self._inference: list[float] = []
        self._postprocess: list[float] = []
        self._seen = 0  # inference frames since the start, the last change or the last window
        self._before: Costs | None = None  # during a trial, the costs at the count it started from

    def postprocessed(self, ms: float) -> None:
        with self._lock:
            if self._seen > SETTLE_FRAMES:
                self._postprocess.append(ms)

    def inferred(self, ms: float) -> int | None:
        """Record one frame's inference time; the thread count to change to now, or None."""
        with self._lock:
            self._seen += 1
            if self._seen <= SETTLE_FRAMES:
                return None
            self._inference.append(ms)
            if len(self._inference) < WINDOW_FRAMES or len(self._postprocess) < MIN_POSTPROCESSED:
                if self._seen >= GIVE_UP_FRAMES:
                    self._restart_window()
                    if self.outcome is None:
                        self._decide(f"{_threads(self.threads)} kept: too few frames were post-processed")
                return None
            costs = Costs(
                self.threads, statistics.median(self._inference), statistics.median(self._postprocess)
            )
            self._restart_window()
        return self._judge(costs)

    def not_made(self, kept: int) -> None:
        """The change asked for could not be made (the backend said why); ``kept`` threads run on."""
        self._decide(f"{_threads(kept)} kept: a session on {_threads(self.threads)} could not be made")
        self.threads, self._before = kept, None
        self._next_trial = self._clock() + COOLDOWN_S
        with self._lock:
            self._restart_window()

    def _judge(self, costs: Costs) -> int | None:
        before = self._before
        if before is not None:  # the window at the count tried ends the trial
            self._before = None
            self._next_trial = self._clock() + COOLDOWN_S
            fewer, more = sorted((before, costs), key=lambda c: c.threads)
            if fewer.slowest_ms <= more.slowest_ms * (1 + TOLERANCE):
                self._decide(f"{fewer} (kept), against {more}")
                return self._change(fewer.threads)
            self._decide(f"{more} (kept), against {fewer}")
            return self._change(more.threads)
        if self.threads == self.most and costs.postprocess_ms >= TRY_SHARE * costs.inference_ms:
            target = self.most - 1
        elif self.threads < self.most and costs.postprocess_ms < RETURN_SHARE * costs.inference_ms:
            target = self.most
        else:
            if self.outcome is None:  # the first window, with nothing to try
                why = (
                    "inference is the slower stage"
                    if self.threads == self.most
                    else "post-processing takes over half of inference's time"
                )
                self._decide(f"{costs}; {why}, {_threads(self.threads)} kept")
            return None
        if self._clock() < self._next_trial:
            return None
        self._before = costs
        return self._change(target)

    def _change(self, threads: int) -> int | None:
        if threads == self.threads:
            return None
        self.threads = threads
        with self._lock:
            self._restart_window()
        return threads

    def _decide(self, outcome: str) -> None:
        self.outcome = outcome
        log.info("inference threads: %s", outcome)

    def _restart_window(self) -> None:
        self._inference.clear()
        self._postprocess.clear()
        self._seen = 0


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"
