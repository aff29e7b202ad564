"""Inference's thread count, and whether it runs frames side by side, chosen from the stages' measured costs
while frames flow.

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
that keeps changing costs a re-made session every few minutes at most; and a trial whose plan lost is not made
again while the plan kept measures what it did in that trial (each stage within :data:`TOLERANCE`, the runs'
busy share within a tenth). Where runs side by side are idle over half the time yet one run of every thread
falls behind the camera, that trial would otherwise be made, and lost, every cooldown, each time frames at the
worse plan and two sessions re-made (the demo at 30 fps on 2 cores runs near there, its runs busy about half
the time).

Where inference is the slower stage and frames wait for it (its runs inside frames :data:`BUSY_SHARE` of the
window: a file, or a camera faster than inference), the planner tries frames side by side instead: one
thread per core, each running its own frame on the same session (:class:`Plan`). For small networks that
is the better use of the cores: onnxruntime's threads share out one frame's operators with a wait at each,
where runs side by side never wait for each other. Measured on two cores, inference alone: YOLOv8n-seg at 320
ran at 1.8-1.9x one thread's rate with two runs and 1.4-1.65x with two threads, the demo model at 1.7-2.0x
against 1.3-1.6x. A frame then takes one thread's time, and each run holds its own intermediate tensors,
so the runs are kept only where the frames come faster with them by more than :data:`TOLERANCE` (judged by
the wall time a frame over each window: how far runs overlap is for the cores to say), and given up (for
every thread on one run) once post-processing holds the frames back or the runs sit idle over half of the
time (:data:`IDLE_SHARE`: the camera got slower than one run of every thread could take). Their trial
measures them over two windows between two of one run (one before, one after) and compares the means: a
shared machine's speed drifts by a tenth or more over the seconds a trial takes, and one window of each, the
runs' always second, would put the drift into the comparison. Where the two read within :data:`TOLERANCE`
of each other, it measures each plan twice more (the same way round) and decides on all eight windows: a
slow second in one window is what reads a wide gap as a tie. On the demo's device pipeline (2 cores),
the runs held side by side gave 1.27x the rate of one run of two threads (``scripts/bench_planner.py``), so
a trial that keeps one run there costs a fifth of the rate until the next.

Measured on the demo model bundled before its contact map (git 111e2a5; its decode took about as long as
its inference) on 2 cores (``scripts/bench_pipeline.py`` against ``--threads 2``, the choice before the trial,
3 alternated pairs; medians): the trial kept one thread each time; pipeline 48.8 against 44.6 fps, CPU 35.2
against 40.4 ms a frame, live latency p50 37 against 45 ms and p99 47 against 63 ms. The present demo
model's decode takes about a third of its inference's time: it keeps every thread.
"""

from __future__ import annotations

import logging
import os
import statistics
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import cv2

SETTLE_FRAMES = 10  # frames after the start or a change whose times are not counted (first runs, queues)
WINDOW_FRAMES = 60  # inference frames whose median decides
# post-processed frames needed beside them (a live pipeline drops the frames a busy stage cannot take)
MIN_POSTPROCESSED = 10
GIVE_UP_FRAMES = 10 * WINDOW_FRAMES  # inference frames after which a window still short of those is dropped
TRY_SHARE = 0.75  # post-processing's time over inference's from which one thread fewer is tried
RETURN_SHARE = 0.5  # ... and under which, with one thread fewer, every thread is tried again
TOLERANCE = 0.1  # how much slower the slower stage may be with one thread fewer and the fewer still kept
COOLDOWN_S = 300.0  # seconds from the end of a trial before the next may start
# share of a window inference's runs spent inside frames from which runs side by side are tried (under it
# frames do not wait for inference: a camera slower than it, or post-processing holding them back)...
BUSY_SHARE = 0.9
IDLE_SHARE = 0.5  # ... and under which they are given up again for one run (on every thread)
EXTENDED_WINDOWS = 8  # windows in all of a trial of runs side by side that read the plans a tenth apart

log = logging.getLogger(__name__)

# OpenCV's own setting for its pool's size: a user who sets it keeps it
OPENCV_THREADS_ENV = "OPENCV_FOR_THREADS_NUM"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container or ``taskset`` may allow fewer
    than the machine has)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def serial_opencv() -> None:
    """Run each OpenCV call on the thread that makes it, without OpenCV's pool (the ``edgeseg`` command does
    at start; an embedding program may), unless :data:`OPENCV_THREADS_ENV` says otherwise.

    The pipeline already keeps the cores busy with threads of its own (inference, post-processing, sinks).
    OpenCV's pool (one thread per core) shares out each call among its threads, which then wait for the
    next call spinning: on the small crops and maps of post-processing that bought no time. Measured on 2
    cores (AMD EPYC), alternated with a pool of 2. Post-processing alone, calls back to back, where the pool
    spins the most (``scripts/bench_opencv_pool.py``): the demo model's decode 0.91-0.98x the time on
    0.52-0.56x the CPU; ``semantic_to_instances`` on the post-processing bench's scene sets 0.91-1.03x the
    time on 0.48-0.64x the CPU, on its hostile maps 0.85-1.32x the time (noise, tiny and ragged ones slower:
    their labelling is what the pool shares out) on 0.43-0.79x the CPU. Inside the demo pipeline with JSON
    lines and MQTT the pool's threads took ~0.5 ms of CPU a frame, and the rate did not tell the two apart:
    one thread over the pool 1.12, 1.03 and 0.98 in three sittings of 6 pairs (the last with this script).
    Where it counts is a host that does post-processing alone (the AI Camera's), or shares its cores."""
    if OPENCV_THREADS_ENV not in os.environ:
        cv2.setNumThreads(1)


class ThreadCount(Protocol):
    """A backend whose intra-op thread count may be changed between frames (on the inference thread):
    ``threads`` now, ``most_threads`` as it was loaded; ``runs``: the frames a pipeline last ran on it at
    once (the pipeline's to set: a later pipeline on the same backend starts from its plan)."""

    threads: int
    most_threads: int
    runs: int

    def set_threads(self, threads: int) -> None: ...


@dataclass(frozen=True, order=True)
class Plan:
    """How inference uses the cores: ``runs`` frames at once (one session, run from that many inference
    threads), each on ``threads`` intra-op threads. Plans order by what they hold: fewer runs first (each
    run holds its own intermediate tensors and a frame's latency grows as its run gets fewer threads),
    then fewer threads."""

    runs: int
    threads: int

    def __str__(self) -> str:
        one = _threads(self.threads)
        return one if self.runs == 1 else f"{self.runs} runs at once of {one}"


@dataclass(frozen=True)
class Costs:
    """Median milliseconds a frame of an inference run and of the post-processing thread under ``plan``, the
    share of the window the runs were inside frames (``busy``) and the window's wall-clock milliseconds a
    frame, all runs together (``window_ms``; None where no time passed)."""

    plan: Plan
    inference_ms: float
    postprocess_ms: float
    busy: float = 1.0
    window_ms: float | None = None

    @property
    def frame_ms(self) -> float:
        """Inference's milliseconds a frame: a run's median; with runs side by side, the window's wall time a
        frame (how much they overlap is the cores' to say, not a division's)."""
        if self.plan.runs == 1 or self.window_ms is None:
            return self.inference_ms / self.plan.runs
        return self.window_ms

    def slowest(self, by_wall: bool = False) -> float:
        """The slower stage's milliseconds a frame; ``by_wall``: inference's by the window's wall time a
        frame whatever the plan."""
        wall = self.window_ms if by_wall and self.window_ms is not None else self.frame_ms
        return max(wall, self.postprocess_ms)

    def __str__(self) -> str:
        return self.describe()

    def describe(self, by_wall: bool = False) -> str:
        """The figures :meth:`slowest` compares: with ``by_wall``, one run's wall time a frame as well."""
        if self.plan.runs > 1:
            each = f" each (one every {self.frame_ms:.1f} ms from all)"
        elif by_wall and self.window_ms is not None:
            each = f" (one every {self.window_ms:.1f} ms)"
        else:
            each = ""
        return (
            f"{self.plan}: inference {self.inference_ms:.1f} ms a frame{each}, "
            f"post-processing {self.postprocess_ms:.1f}"
        )


class ThreadPlanner:
    """Watches the stages' costs for the whole run. :meth:`postprocessed` is called by the post-processing
    thread for each frame, :meth:`inferred` by the inference threads, one of which makes the change it
    returns; :attr:`outcome` says what was last decided, and why.

    ``runs``: whether inference may run several frames at once (one thread each, a run per core); the
    pipeline then has a thread per core ready for them."""

    def __init__(
        self,
        most: int,
        plan: Plan,
        clock: Callable[[], float] = time.monotonic,
        runs: bool = False,
    ) -> None:
        self.most = most  # the count at load: one thread per usable core
        self.plan = plan  # the plan now
        self.outcome: str | None = None
        self._runs = runs and most > 1
        self._clock = clock
        self._next_trial = clock()  # the first may start at once
        self._lock = threading.Lock()
        self._inference: list[float] = []
        self._postprocess: list[float] = []
        self._seen = 0  # inference frames since the start, the last change or the last window
        self._since = self._first = 0.0  # when the window's first frame started, and ended
        # during a trial: its windows so far (the first on the plan it started from), and the plans of the
        # windows still to come after the one under way
        self._trial: list[Costs] = []
        self._schedule: list[Plan] = []
        # the plan the last trial tried and lost to the one it started from, and that plan's costs in it
        self._lost: tuple[Plan, Costs] | None = None
        self._lost_said: tuple[Plan, Costs] | None = None  # (said once per trial lost)

    def postprocessed(self, ms: float) -> None:
        with self._lock:
            if self._seen > SETTLE_FRAMES:
                self._postprocess.append(ms)

    def inferred(self, ms: float) -> Plan | None:
        """Record one frame's inference time (its run's, preprocessing included); the plan to change to
        now, or None."""
        with self._lock:
            self._seen += 1
            if self._seen <= SETTLE_FRAMES:
                return None
            now = self._clock()
            if not self._inference:
                self._since, self._first = now - ms / 1000, now
            self._inference.append(ms)
            if len(self._inference) < WINDOW_FRAMES or len(self._postprocess) < MIN_POSTPROCESSED:
                if self._seen >= GIVE_UP_FRAMES:
                    self._restart_window()
                    if self.outcome is None:
                        self._decide(f"{self.plan} kept: too few frames were post-processed")
                return None
            wall, ends = (now - self._since) * 1000, (now - self._first) * 1000
            costs = Costs(
                self.plan,
                statistics.median(self._inference),
                statistics.median(self._postprocess),
                1.0 if wall <= 0 else min(1.0, sum(self._inference) / (wall * self.plan.runs)),
                None if ends <= 0 else ends / (len(self._inference) - 1),
            )
            self._restart_window()
            return self._judge(costs)

    def not_made(self, kept: Plan) -> None:
        """The change asked for could not be made (the backend said why); ``kept`` runs on."""
        with self._lock:
            self._decide(f"{kept} kept: a session on {_threads(self.plan.threads)} could not be made")
            self.plan, self._trial, self._schedule = kept, [], []
            self._next_trial = self._clock() + COOLDOWN_S
            self._restart_window()

    def _judge(self, costs: Costs) -> Plan | None:
        if self._trial:
            self._trial.append(costs)
            if self._schedule:
                return self._change(self._schedule.pop(0))
            return self._end_trial()
        plan, every = self.plan, Plan(1, self.most)
        if plan == every and costs.postprocess_ms >= TRY_SHARE * costs.inference_ms:
            target = Plan(1, self.most - 1)
        elif plan == every and self._runs and costs.busy >= BUSY_SHARE:
            # inference is the slower stage and frames wait for it: frames run side by side use the cores
            # better than threads share one frame (see the module's docstring)
            target = Plan(self.most, 1)
        elif (
            plan.runs == 1
            and plan.threads < self.most
            and costs.postprocess_ms < RETURN_SHARE * costs.inference_ms
        ):
            target = every
        elif plan.runs > 1 and (
            costs.postprocess_ms >= TRY_SHARE * costs.frame_ms or costs.busy < IDLE_SHARE
        ):
            # post-processing now holds the frames back, or they come slower (a camera): runs side by side
            # gain nothing, and a frame takes longer on one thread
            target = every
        else:
            if self.outcome is None:  # the first window, with nothing to try
                if plan.runs > 1:
                    why = "frames wait for inference"
                elif plan != every:
                    why = "post-processing takes over half of inference's time"
                elif self._runs and costs.busy < BUSY_SHARE:
                    why = f"inference is the slower stage, idle {1 - costs.busy:.0%} of the time"
                else:
                    why = "inference is the slower stage"
                self._decide(f"{costs}; {why}, {plan} kept")
            return None
        if self._clock() < self._next_trial:
            if self.outcome is None:  # a later pipeline's first window (planner_for)
                self._decide(
                    f"{costs}; {plan} kept: an earlier pipeline's trial ended under {COOLDOWN_S:.0f} s ago"
                )
            return None
        if self._lost is not None and self._lost[0] == target and _alike(costs, self._lost[1]):
            # what lost to this plan at these costs would lose again: a trial costs frames at the worse plan
            # (and two sessions re-made); one is made again once the costs have moved
            if self._lost_said is not self._lost:
                self._lost_said = self._lost
                self._decide(f"{costs}; {target} not tried again: it lost to {plan} at these costs")
            return None
        self._trial = [costs]
        # runs side by side against one run: the plan tried gets a second window, then the plan started from
        # a second one, so that each plan's windows centre on the same moment (see the module's docstring)
        self._schedule = [target, plan] if target.runs != plan.runs else []
        self._decide(f"{costs}; trying {target}")  # (what a run that ends during the trial reports)
        return self._change(target)

    def _end_trial(self) -> Plan | None:
        """Keep the plan that holds less unless the other's slower stage is faster by ``TOLERANCE``, over the
        trial's windows of each (their means). Runs side by side against one run are judged by the
        windows' wall time a frame, as only that tells how far the runs overlap; where the two read within
        ``TOLERANCE`` of each other, the trial first measures each plan twice more (once)."""
        windows = self._trial
        less, more = (_mean([c for c in windows if c.plan == p]) for p in sorted({c.plan for c in windows}))
        mixed = less.plan.runs != more.plan.runs
        tie = less.slowest(mixed) <= more.slowest(mixed) * (1 + TOLERANCE)
        close = tie and more.slowest(mixed) <= less.slowest(mixed) * (1 + TOLERANCE)
        if mixed and close and len(windows) < EXTENDED_WINDOWS:
            # plans read within a tenth of each other are where a second of a slow machine in one window
            # turns the decision; two more of each (this plan's window now, the other's two, this one's)
            # halve its weight (the plans' true gap on the demo pipeline, 1.27x, is far outside a tenth)
            start, other = windows[0].plan, windows[1].plan
            self._schedule = [other, other, start]
            self._decide(
                f"{more.describe(True)}, against {less.describe(True)}: "
                "under a tenth apart, measuring each twice more"
            )
            return None
        self._trial = []
        self._next_trial = self._clock() + COOLDOWN_S
        kept, rival = (less, more) if tie else (more, less)
        self._lost = (rival.plan, kept) if kept.plan == windows[0].plan else None
        over = f"; over {len(windows) // 2} windows of each" if len(windows) >= EXTENDED_WINDOWS else ""
        self._decide(f"{kept.describe(mixed)} (kept), against {rival.describe(mixed)}{over}")
        return self._change(kept.plan)

    def _change(self, plan: Plan) -> Plan | None:
        if plan == self.plan:
            return None
        self.plan = plan
        self._restart_window()
        return plan

    def _decide(self, outcome: str) -> None:
        self.outcome = outcome
        log.info("inference threads: %s", outcome)

    def _restart_window(self) -> None:
        self._inference.clear()
        self._postprocess.clear()
        self._seen = 0


# each backend's latest planner (see planner_for)
_latest: weakref.WeakKeyDictionary[ThreadCount, ThreadPlanner] = weakref.WeakKeyDictionary()


def planner_for(knob: ThreadCount, clock: Callable[[], float] = time.monotonic) -> ThreadPlanner:
    """The planner of a new pipeline whose inference runs on ``knob``. It starts from the plan the backend
    runs now; where an earlier pipeline planned on the same backend, it also waits out that one's cooldown
    before it tries another plan, and does not try again the plan that lost that one's last trial at the same
    costs. The ``edgeseg`` command's pipeline loads a model of its own, but a bench or an embedding program
    that runs pipelines one after another on the same stages would otherwise pay a trial (a session re-made,
    and maybe re-made again) in each. ``clock``: the planner's (a test's own)."""
    planner = ThreadPlanner(knob.most_threads, Plan(knob.runs, knob.threads), clock, runs=True)
    earlier = _latest.get(knob)
    if earlier is not None:
        planner._next_trial, planner._lost = earlier._next_trial, earlier._lost
    _latest[knob] = planner
    return planner


def _alike(now: Costs, then: Costs) -> bool:
    """Whether a window's costs are those of an earlier one of the same plan, to the planner's tolerance: its
    stages' milliseconds a frame within a tenth of each other, and the share of the time its runs were busy
    within a tenth of the window."""
    return (
        now.plan == then.plan
        and abs(now.inference_ms - then.inference_ms) <= TOLERANCE * max(now.inference_ms, then.inference_ms)
        and abs(now.postprocess_ms - then.postprocess_ms)
        <= TOLERANCE * max(now.postprocess_ms, then.postprocess_ms)
        and abs(now.busy - then.busy) <= TOLERANCE
    )


def _mean(windows: list[Costs]) -> Costs:
    """The costs of one plan over ``windows`` of it: each figure's mean."""
    walls = [c.window_ms for c in windows if c.window_ms is not None]
    return Costs(
        windows[0].plan,
        statistics.fmean(c.inference_ms for c in windows),
        statistics.fmean(c.postprocess_ms for c in windows),
        statistics.fmean(c.busy for c in windows),
        statistics.fmean(walls) if walls else None,
    )


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"
