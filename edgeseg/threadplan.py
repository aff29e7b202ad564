"""Inference's thread count, chosen from the stages' measured costs once frames flow.

At load, onnxruntime gets one intra-op thread per usable core (:func:`edgeseg.backends.ort.thread_plan`):
right where inference is the slow stage, as for YOLOv8n-seg or DeepLabV3+. Where post-processing takes about
as long as inference (the small demo model, whose class map takes longer to split into instances than the
network takes to make it), inference's threads and the post-processing thread fight over the same cores.
Only the running pipeline knows which case it is in: post-processing's cost depends on the scene.

So a trial, once per run: after :data:`SETTLE_FRAMES` frames, the median time a frame of the inference thread
(preprocess + inference) and of the post-processing thread (decode + tracking, zones...) are measured over
:data:`WINDOW_FRAMES` frames. If post-processing takes at least :data:`TRY_SHARE` of inference's time, the
session is re-made with one thread fewer and the same is measured again. The fewer threads are kept unless
the slower of the two stages got slower by more than :data:`TOLERANCE`: a tie keeps them, as a core's worth
of CPU is left to the rest, and on a shared machine two windows of the same settings differ by up to 8%.

Measured on the demo model on 2 cores (``scripts/bench_pipeline.py`` against ``--threads 2``, the choice
before the trial, 3 alternated pairs; medians): the trial kept one thread each time; pipeline 48.8 against
44.6 fps, CPU 35.2 against 40.4 ms a frame, live latency p50 37 against 45 ms and p99 47 against 63 ms.
"""

from __future__ import annotations

import logging
import statistics
import threading
from dataclasses import dataclass
from typing import Protocol

SETTLE_FRAMES = 10  # frames after the start or a change whose times are not counted (first runs, queues)
WINDOW_FRAMES = 60  # inference frames whose median decides
# post-processed frames needed beside them (a live pipeline drops the frames a busy stage cannot take)
MIN_POSTPROCESSED = 10
GIVE_UP_FRAMES = 10 * WINDOW_FRAMES  # inference frames after which a window still short of those ends it
TRY_SHARE = 0.75  # post-processing's time over inference's from which one thread fewer is tried
TOLERANCE = 0.1  # how much slower the slower stage may get with one thread fewer and the fewer still kept

log = logging.getLogger(__name__)


class ThreadCount(Protocol):
    """A backend whose intra-op thread count may be changed between frames (on the inference thread)."""

    threads: int

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


class ThreadTrial:
    """The once-per-run trial. :meth:`postprocessed` is called by the post-processing thread for each frame,
    :meth:`inferred` by the inference thread, which makes the change it returns; :attr:`outcome` says what
    was decided, and why, once it is."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.outcome: str | None = None
        self._lock = threading.Lock()
        self._inference: list[float] = []
        self._postprocess: list[float] = []
        self._seen = 0  # inference frames since the start or the last change
        self._before: Costs | None = None  # the costs at the thread count the trial started from

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def stop(self, outcome: str) -> None:
        """End the trial where it is, with ``outcome`` as its account."""
        self.outcome = outcome
        log.info("inference threads: %s", outcome)

    def not_made(self, kept: int) -> None:
        """The change asked for could not be made (the backend said why); ``kept`` threads run on."""
        self.stop(f"{_threads(kept)} kept: a session on {_threads(self.threads)} could not be made")
        self.threads = kept

    def postprocessed(self, ms: float) -> None:
        with self._lock:
            if self._seen > SETTLE_FRAMES and not self.done:
                self._postprocess.append(ms)

    def inferred(self, ms: float) -> int | None:
        """Record one frame's inference time; the thread count to change to now, or None."""
        if self.done:
            return None
        with self._lock:
            self._seen += 1
            if self._seen <= SETTLE_FRAMES:
                return None
            self._inference.append(ms)
            if len(self._inference) < WINDOW_FRAMES or len(self._postprocess) < MIN_POSTPROCESSED:
                if self._seen >= GIVE_UP_FRAMES:
                    self.stop(f"{_threads(self.threads)} kept: too few frames were post-processed to compare")
                return None
            costs = Costs(
                self.threads, statistics.median(self._inference), statistics.median(self._postprocess)
            )
            self._inference.clear()
            self._postprocess.clear()
            self._seen = 0
        return self._decide(costs)

    def _decide(self, costs: Costs) -> int | None:
        before = self._before
        if before is None:
            if self.threads <= 1 or costs.postprocess_ms < TRY_SHARE * costs.inference_ms:
                self.stop(f"{costs}; inference is the slower stage, all {self.threads} kept")
                return None
            self._before = costs
            self.threads -= 1
            return self.threads
        if costs.slowest_ms <= before.slowest_ms * (1 + TOLERANCE):
            self.stop(f"{costs} (kept), against {before}")
            return None
        self.stop(f"{before} (kept), against {costs}")
        self.threads = before.threads
        return self.threads


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"
