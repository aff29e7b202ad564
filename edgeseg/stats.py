"""Run-time accounting of a pipeline: frame rate, stage times, latency percentiles, drops and bad frames.

Every figure is kept in a bounded window (the last few hundred frames), so a run of millions of frames uses
the same memory as a run of ten. Counters are plain integers. All methods are thread-safe: the stage threads
record, any thread may take a :class:`PipelineStats` snapshot.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

STREAM_PREFIX = "stream:"  # bad_frames key of a stream stage: its result went on without that stage's work
WINDOW = 512  # frames kept for percentiles and rates: ~20 s at 25 fps, a few kB of floats
PAUSE_S = 5.0  # no result for longer than this, and than PAUSE_GAPS of the window's mean gap, is a pause ...
PAUSE_GAPS = 4  # ... of the stream (a camera gone), not its pace: the rate restarts when results come back
STALE_S = 5.0  # no result for longer than this: the last frame rate is not shown as the current one


def counted(n: int, noun: str, plural: str = "") -> str:
    """``n`` and ``noun``, plural but for one (``plural``, else ``noun`` + s), as the run's summary says
    them: "1 frame", "2 frames", "1 ID switch", "0 ID switches"."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


@dataclass(frozen=True)
class PipelineStats:
    """A snapshot of one pipeline's figures.

    Attributes:
        frames_read: frames the source delivered.
        frames_done: results handed to the sinks.
        elapsed_s: seconds since the pipeline started.
        fps: results per second over the recent window, since the stream last paused (``nan`` before two
            results).
        fps_mean: results per second over the whole run.
        latency_ms_p50, latency_ms_p99: capture-to-result latency over the recent window, in ms.
        stage_ms: median duration in ms of each stage (``preprocess``, ``infer``, ``decode``,
            ``sink:<name>``), measured inside the stage (queue waits excluded).
        drops: frames dropped (oldest first) per queue: ``infer`` and ``decode`` for the stage inputs,
            ``sink:<name>`` for each sink's own queue.
        discarded: frames left in the queues when the pipeline was stopped before the end of its source.
        bad_frames: frames whose processing raised, per stage (``source``, ``preprocess``, ``infer``,
            ``decode``, ``sink:<name>``).
        error: why the pipeline stopped early (source failed to open, ...), else ``None``.
        idle_s: seconds since the last result (since the start before the first).
    """

    frames_read: int = 0
    frames_done: int = 0
    elapsed_s: float = 0.0
    fps: float = float("nan")
    fps_mean: float = float("nan")
    latency_ms_p50: float = float("nan")
    latency_ms_p99: float = float("nan")
    stage_ms: Mapping[str, float] = field(default_factory=dict)
    drops: Mapping[str, int] = field(default_factory=dict)
    discarded: int = 0
    bad_frames: Mapping[str, int] = field(default_factory=dict)
    error: str | None = None
    idle_s: float = 0.0

    @property
    def dropped_total(self) -> int:
        return sum(self.drops.values())

    @property
    def paused(self) -> bool:
        """No result for as long as a pause of the stream: over ``PAUSE_S``, and over ``PAUSE_GAPS`` of the
        window's mean gap (where the window has a pace: one result and then none is a pause too). A camera
        gone, not a slow stream (a frame every 10 s) between its frames."""
        if not self.frames_done or self.idle_s <= PAUSE_S:
            return False
        return math.isnan(self.fps) or self.idle_s * self.fps > PAUSE_GAPS

    @property
    def fps_now(self) -> float:
        """``fps``, or 0 while the stream is :attr:`paused`: a camera gone is not shown at its last rate."""
        return 0.0 if self.paused else self.fps


class StatsRecorder:
    """Collects the figures of one pipeline run; :meth:`snapshot` turns them into :class:`PipelineStats`."""

    def __init__(self, window: int = WINDOW) -> None:
        self._lock = threading.Lock()
        self._window = window
        self._t0 = time.monotonic_ns()
        self._last_done = self._t0
        self._read = 0
        self._done = 0
        self._done_times: deque[int] = deque(maxlen=window)
        self._latency_ms: deque[float] = deque(maxlen=window)
        self._stage_ms: dict[str, deque[float]] = {}
        self._drops: dict[str, int] = {}
        self._bad: dict[str, int] = {}
        self._discarded = 0
        self._error: str | None = None

    def restart_clock(self) -> None:
        with self._lock:
            self._t0 = self._last_done = time.monotonic_ns()

    def idle_s(self) -> float:
        """Seconds since the last result (since the start before the first)."""
        with self._lock:
            return (time.monotonic_ns() - self._last_done) / 1e9

    def frame_read(self) -> None:
        with self._lock:
            self._read += 1

    def stage(self, name: str, start_ns: int, end_ns: int) -> None:
        with self._lock:
            win = self._stage_ms.get(name)
            if win is None:
                win = self._stage_ms[name] = deque(maxlen=self._window)
            win.append((end_ns - start_ns) / 1e6)

    def frame_done(self, captured_ns: int, done_ns: int) -> None:
        with self._lock:
            times = self._done_times
            if len(times) >= 2:  # (the pace is known)
                gap = done_ns - times[-1]
                mean = (times[-1] - times[0]) / (len(times) - 1)
                if gap > PAUSE_S * 1e9 and gap > PAUSE_GAPS * mean:
                    # a rate over a window that spans the pause would be the pause's (0.2 fps for the 20 s
                    # after a 10 minute outage at 25 fps), not the stream's
                    times.clear()
            self._done += 1
            self._last_done = done_ns
            self._done_times.append(done_ns)
            self._latency_ms.append((done_ns - captured_ns) / 1e6)

    def dropped(self, queue: str, n: int = 1) -> None:
        with self._lock:
            self._drops[queue] = self._drops.get(queue, 0) + n

    def bad_frame(self, stage: str) -> None:
        with self._lock:
            self._bad[stage] = self._bad.get(stage, 0) + 1

    def discarded(self, n: int) -> None:
        with self._lock:
            self._discarded += n

    def failed(self, message: str) -> None:
        with self._lock:
            if self._error is None:
                self._error = message

    def snapshot(self) -> PipelineStats:
        with self._lock:
            now = time.monotonic_ns()
            elapsed = (now - self._t0) / 1e9
            fps = float("nan")
            if len(self._done_times) >= 2:
                span = (self._done_times[-1] - self._done_times[0]) / 1e9
                fps = (len(self._done_times) - 1) / span if span > 0 else float("nan")
            lat = np.fromiter(self._latency_ms, dtype=np.float64, count=len(self._latency_ms))
            p50, p99 = np.percentile(lat, [50, 99]) if lat.size else (float("nan"), float("nan"))
            return PipelineStats(
                frames_read=self._read,
                frames_done=self._done,
                elapsed_s=elapsed,
                fps=fps,
                fps_mean=self._done / elapsed if elapsed > 0 and self._done else float("nan"),
                latency_ms_p50=float(p50),
                latency_ms_p99=float(p99),
                stage_ms={
                    k: float(np.median(np.fromiter(v, np.float64))) for k, v in self._stage_ms.items() if v
                },
                drops=dict(self._drops),
                discarded=self._discarded,
                bad_frames=dict(self._bad),
                error=self._error,
                idle_s=(now - self._last_done) / 1e9,
            )
