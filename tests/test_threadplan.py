"""Inference's thread count, and its runs side by side, chosen from the stages' measured costs: the planner's
rules, the ONNX Runtime session re-made between frames, a real pipeline on the demo model deciding each way,
and runs side by side handing frames on in order."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeseg import threadplan
from edgeseg.backends import InferenceOptions
from edgeseg.backends.ort import OrtBackend
from edgeseg.errors import ModelError, SessionLostError, TransientError
from edgeseg.frame import Frame, Result
from edgeseg.instances import Instances
from edgeseg.live import Snapshot
from edgeseg.model import Model
from edgeseg.pipeline import ModelStages, Pipeline, _Runs
from edgeseg.sources import SourceStats, make_source
from edgeseg.synthetic import PartsScene
from edgeseg.threadplan import (
    COOLDOWN_S,
    GIVE_UP_FRAMES,
    MIN_POSTPROCESSED,
    SETTLE_FRAMES,
    WINDOW_FRAMES,
    Plan,
    ThreadCount,
    ThreadPlanner,
)

DEMO_MODEL = Path(__file__).parents[1] / "models" / "demo-parts.onnx"


class Clock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def window(
    planner: ThreadPlanner,
    inference_ms: float,
    postprocess_ms: float,
    clock: Clock | None = None,
    every_ms: float | None = None,
) -> Plan | None:
    """Feed one settle period and one window of steady times; what the planner asked for at its end. With
    ``clock``, each frame takes its inference time on it, divided among the plan's runs (frames wait for
    inference all the time), or with ``every_ms`` one frame ends every ``every_ms`` (a camera sets the pace);
    without, no time passes."""
    asked = None
    for _ in range(SETTLE_FRAMES):
        assert planner.inferred(inference_ms * 50) is None  # settling: not counted, however slow
    for _ in range(WINDOW_FRAMES):
        planner.postprocessed(postprocess_ms)
        if clock is not None:
            clock.now += (inference_ms / planner.plan.runs if every_ms is None else every_ms) / 1000
        asked = planner.inferred(inference_ms)
    return asked


def windows(planner: ThreadPlanner, clock: Clock, *inference_ms: float) -> list[Plan | None]:
    """:func:`window` for each of ``inference_ms`` in turn (post-processing 5 ms a frame): what the planner
    asked for at the end of each."""
    return [window(planner, ms, postprocess_ms=5.0, clock=clock) for ms in inference_ms]


def test_inference_keeps_every_thread_while_it_is_the_slower_stage_and_loses_one_when_it_is_not() -> None:
    planner = ThreadPlanner(2, Plan(1, 2), Clock())
    assert window(planner, inference_ms=100.0, postprocess_ms=10.0) is None
    assert planner.plan.threads == 2
    assert planner.outcome is not None
    assert planner.outcome.endswith("inference is the slower stage, 2 threads kept")
    assert window(planner, inference_ms=100.0, postprocess_ms=10.0) is None
    # the scene filled up: post-processing now takes as long as inference
    assert window(planner, inference_ms=20.0, postprocess_ms=20.0) == Plan(1, 1)


def test_one_thread_fewer_is_kept_where_the_slower_stage_got_no_slower() -> None:
    planner = ThreadPlanner(2, Plan(1, 2), Clock())
    assert window(planner, inference_ms=12.0, postprocess_ms=18.0) == Plan(1, 1)
    assert window(planner, inference_ms=16.0, postprocess_ms=15.0) is None
    assert planner.plan.threads == 1
    assert planner.outcome == (
        "1 thread: inference 16.0 ms a frame, post-processing 15.0 (kept), "
        "against 2 threads: inference 12.0 ms a frame, post-processing 18.0"
    )


def test_the_threads_come_back_where_one_fewer_made_the_slower_stage_slower() -> None:
    planner = ThreadPlanner(4, Plan(1, 4), Clock())
    assert window(planner, inference_ms=10.0, postprocess_ms=9.0) == Plan(1, 3)
    assert window(planner, inference_ms=14.0, postprocess_ms=8.0) == Plan(1, 4)
    assert planner.plan.threads == 4
    assert planner.outcome is not None
    assert planner.outcome.startswith("4 threads: inference 10.0 ms")


def test_every_thread_is_tried_again_once_the_scene_empties_but_not_before_the_cooldown() -> None:
    clock = Clock()
    planner = ThreadPlanner(2, Plan(1, 2), clock)
    assert window(planner, inference_ms=12.0, postprocess_ms=18.0) == Plan(1, 1)
    assert window(planner, inference_ms=16.0, postprocess_ms=15.0) is None  # 1 thread kept
    clock.now += COOLDOWN_S - 1
    assert window(planner, inference_ms=16.0, postprocess_ms=2.0) is None
    clock.now += 2
    assert window(planner, inference_ms=16.0, postprocess_ms=2.0) == Plan(1, 2)
    assert window(planner, inference_ms=10.0, postprocess_ms=2.0) is None  # 2 threads kept
    assert planner.plan.threads == 2
    assert planner.outcome is not None
    assert planner.outcome == (
        "2 threads: inference 10.0 ms a frame, post-processing 2.0 (kept), "
        "against 1 thread: inference 16.0 ms a frame, post-processing 2.0"
    )


def test_a_window_short_of_post_processed_frames_decides_nothing() -> None:
    planner = ThreadPlanner(2, Plan(1, 2), Clock())
    for _ in range(MIN_POSTPROCESSED - 1):
        planner.postprocessed(50.0)
    for _ in range(GIVE_UP_FRAMES):
        assert planner.inferred(10.0) is None
    assert planner.plan.threads == 2
    assert planner.outcome == "2 threads kept: too few frames were post-processed"


@settings(max_examples=60, deadline=None)
@given(
    most=st.integers(2, 8),
    runs=st.booleans(),
    steps=st.lists(
        st.tuples(st.floats(0.0, 500.0), st.one_of(st.none(), st.floats(0.0, 500.0)), st.floats(0.0, 30.0)),
        max_size=6 * (SETTLE_FRAMES + WINDOW_FRAMES),
    ),
)
def test_the_planner_only_asks_for_every_thread_one_fewer_or_runs_and_at_most_five_times_a_cooldown(
    most: int, runs: bool, steps: list[tuple[float, float | None, float]]
) -> None:
    clock = Clock()
    planner = ThreadPlanner(most, Plan(1, most), clock, runs=runs)
    plans = (Plan(1, most - 1), Plan(1, most), *((Plan(most, 1),) if runs else ()))
    asked: list[float] = []
    for inference_ms, postprocess_ms, seconds in steps:
        clock.now += seconds
        if postprocess_ms is not None:
            planner.postprocessed(postprocess_ms)
        previous = planner.plan
        if (plan := planner.inferred(inference_ms)) is not None:
            assert plan in plans
            assert plan != previous
            assert planner.plan == plan
            asked.append(clock.now)
    # a trial of runs side by side asks for them, for the plan it started from again (twice each where their
    # windows read under a tenth apart), and for the one kept
    for k, t in enumerate(asked):
        assert sum(1 for u in asked[k:] if u - t < COOLDOWN_S) <= 5


def test_frames_waiting_for_inference_are_run_side_by_side_where_that_is_faster_by_a_tenth() -> None:
    clock = Clock()
    planner = ThreadPlanner(2, Plan(1, 2), clock, runs=True)
    assert window(planner, inference_ms=30.0, postprocess_ms=5.0, clock=clock) == Plan(2, 1)
    # two runs of one thread each: 45 ms a frame each, 22.5 a frame with both, against 30; each plan is
    # measured twice, the runs' windows between the other's
    assert window(planner, inference_ms=45.0, postprocess_ms=6.0, clock=clock) is None
    assert window(planner, inference_ms=45.0, postprocess_ms=6.0, clock=clock) == Plan(1, 2)
    assert (
        planner.outcome
        == "2 threads: inference 30.0 ms a frame, post-processing 5.0; trying 2 runs at once of 1 thread"
    )
    assert window(planner, inference_ms=30.0, postprocess_ms=5.0, clock=clock) == Plan(2, 1)
    assert planner.plan == Plan(2, 1)
    assert planner.outcome == (
        "2 runs at once of 1 thread: inference 45.0 ms a frame each (one every 22.5 ms from all), "
        "post-processing 6.0 (kept), against 2 threads: inference 30.0 ms a frame (one every 30.0 ms), "
        "post-processing 5.0"
    )


def test_runs_side_by_side_that_gain_under_a_tenth_over_two_rounds_of_windows_are_given_up() -> None:
    clock = Clock()
    planner = ThreadPlanner(2, Plan(1, 2), clock, runs=True)
    # two runs: 28 ms a frame against 30, within a tenth; each plan is measured twice more
    assert windows(planner, clock, 30.0, 56.0, 56.0, 30.0) == [Plan(2, 1), None, Plan(1, 2), None]
    assert planner.outcome is not None
    assert planner.outcome.endswith("under a tenth apart, measuring each twice more")
    assert windows(planner, clock, 30.0, 56.0, 56.0, 30.0) == [Plan(2, 1), None, Plan(1, 2), None]
    assert planner.plan == Plan(1, 2)
    assert planner.outcome is not None
    assert planner.outcome.startswith(
        "2 threads: inference 30.0 ms a frame (one every 30.0 ms), post-processing 5.0 (kept)"
    )
    assert planner.outcome.endswith("; over 4 windows of each")


def test_runs_side_by_side_read_as_slow_as_one_run_in_a_slow_moment_are_kept_once_measured_again() -> None:
    clock = Clock()
    planner = ThreadPlanner(2, Plan(1, 2), clock, runs=True)
    # the machine was slow while the runs ran: 31 ms a frame, against 30 with one run
    assert windows(planner, clock, 30.0, 62.0, 62.0, 30.0) == [Plan(2, 1), None, Plan(1, 2), None]
    # ... and not since: 20 ms a frame
    assert windows(planner, clock, 30.0, 40.0, 40.0, 30.0) == [Plan(2, 1), None, Plan(1, 2), Plan(2, 1)]
    assert planner.plan == Plan(2, 1)
    assert planner.outcome == (
        "2 runs at once of 1 thread: inference 51.0 ms a frame each (one every 25.5 ms from all), "
        "post-processing 5.0 (kept), against 2 threads: inference 30.0 ms a frame (one every 30.0 ms), "
        "post-processing 5.0; over 4 windows of each"
    )
    # and the next trial waits out the cooldown
    assert window(planner, inference_ms=40.0, postprocess_ms=30.0, clock=clock) is None


def test_a_machine_slowing_down_during_a_trial_favours_neither_plan() -> None:
    clock = Clock()
    planner = ThreadPlanner(2, Plan(1, 2), clock, runs=True)
    # two runs give a frame in 0.85 of one run's time throughout, while every window takes a tenth longer
    # than the one before: 30 ms a frame, then 28.05 and 30.6 with the runs, then 39 again without
    assert windows(planner, clock, 30.0, 2 * 28.05, 2 * 30.6, 39.0) == [
        Plan(2, 1),
        None,
        Plan(1, 2),
        Plan(2, 1),
    ]
    assert planner.outcome is not None
    # (the first window of each alone kept one run: 28.05 ms a frame is not a tenth under 30)
    assert planner.outcome == (
        "2 runs at once of 1 thread: inference 58.7 ms a frame each (one every 29.3 ms from all), "
        "post-processing 5.0 (kept), against 2 threads: inference 34.5 ms a frame (one every 34.5 ms), "
        "post-processing 5.0"
    )


def test_no_runs_side_by_side_while_frames_come_slower_than_inference_takes_them() -> None:
    clock = Clock()
    planner = ThreadPlanner(2, Plan(1, 2), clock, runs=True)
    for _ in range(SETTLE_FRAMES):
        planner.inferred(30.0)
    for _ in range(WINDOW_FRAMES):  # a camera at 10 fps: a frame every 100 ms, 30 of them inference's
        clock.now += 0.1
        planner.postprocessed(5.0)
        assert planner.inferred(30.0) is None
    assert planner.plan == Plan(1, 2)
    assert planner.outcome is not None
    assert planner.outcome.endswith("inference is the slower stage, idle 70% of the time, 2 threads kept")


def paced(planner: ThreadPlanner, clock: Clock, inference_ms: float, every_ms: float) -> Plan | None:
    """:func:`window` with one frame ending every ``every_ms``, post-processing 5 ms a frame."""
    return window(planner, inference_ms, 5.0, clock, every_ms)


def test_a_plan_that_lost_its_trial_is_not_tried_again_until_the_costs_move() -> None:
    clock = Clock()
    planner = ThreadPlanner(2, Plan(2, 1), clock, runs=True)
    # two runs of 30 ms a frame behind a camera at 30 fps: idle over half the time, so one run is tried; it
    # takes 40 ms a frame, slower than the camera, and the runs are kept
    assert paced(planner, clock, 30.0, 33.3) == Plan(1, 2)
    assert paced(planner, clock, 40.0, 40.0) is None
    assert paced(planner, clock, 40.0, 40.0) == Plan(2, 1)
    assert paced(planner, clock, 30.0, 33.3) is None
    assert planner.plan == Plan(2, 1)
    # a cooldown later, at the same costs, the trial would lose again: none is made, and that is said once
    clock.now += COOLDOWN_S
    assert paced(planner, clock, 31.0, 33.3) is None
    said = planner.outcome
    assert said is not None
    assert said.endswith("; 2 threads not tried again: it lost to 2 runs at once of 1 thread at these costs")
    assert paced(planner, clock, 30.0, 33.3) is None
    assert planner.outcome == said
    # the frames got lighter (a third less inference a frame): one run may keep up now, so it is tried
    assert paced(planner, clock, 20.0, 33.3) == Plan(1, 2)


def test_a_later_pipeline_on_the_same_backend_does_not_try_again_what_lost_the_earlier_ones_trial() -> None:
    clock, knob = Clock(), SleepKnob()
    knob.runs, knob.threads = 2, 1
    first = threadplan.planner_for(knob, clock)
    assert [paced(first, clock, *ms) for ms in ((30.0, 33.3), (40.0, 40.0), (40.0, 40.0), (30.0, 33.3))] == [
        Plan(1, 2),
        None,
        Plan(2, 1),
        None,
    ]
    later = threadplan.planner_for(knob, clock)
    clock.now += COOLDOWN_S
    assert paced(later, clock, 30.0, 33.3) is None
    assert later.outcome is not None
    assert later.outcome.endswith(
        "2 threads not tried again: it lost to 2 runs at once of 1 thread at these costs"
    )


def test_runs_side_by_side_are_given_up_once_post_processing_holds_the_frames_back() -> None:
    clock = Clock()
    planner = ThreadPlanner(2, Plan(1, 2), clock, runs=True)
    assert window(planner, inference_ms=30.0, postprocess_ms=5.0, clock=clock) == Plan(2, 1)
    assert window(planner, inference_ms=40.0, postprocess_ms=5.0, clock=clock) is None  # kept
    clock.now += COOLDOWN_S
    # the scene filled up: post-processing takes 18 ms a frame, against 20 ms of inference's with both runs
    assert window(planner, inference_ms=40.0, postprocess_ms=18.0, clock=clock) == Plan(1, 2)


def test_the_session_is_remade_with_fewer_threads_and_gives_the_same_outputs() -> None:
    model = Model.load(DEMO_MODEL, InferenceOptions(threads=0))
    backend = model.backend
    assert isinstance(backend, OrtBackend)
    frame = np.random.default_rng(3).integers(0, 256, backend.card.input.shape, np.uint8)
    before = backend.run_tensor(frame)
    backend.set_threads(1)
    after = backend.run_tensor(frame)
    assert backend.threads == 1
    assert "1 thread (not spinning)" in backend.description
    for name, values in before.items():
        np.testing.assert_allclose(after[name], values, rtol=1e-5, atol=1e-6)
    model.close()


def test_a_session_that_cannot_be_remade_leaves_the_running_one(tmp_path: Path) -> None:
    shutil.copy(DEMO_MODEL, tmp_path / "demo-parts.onnx")
    shutil.copy(DEMO_MODEL.with_suffix(".yaml"), tmp_path / "demo-parts.yaml")
    model = Model.load(tmp_path / "demo-parts.onnx", InferenceOptions(threads=2))
    backend = model.backend
    assert isinstance(backend, OrtBackend)
    (tmp_path / "demo-parts.onnx").write_bytes(b"replaced on disk by half an upload")
    backend.set_threads(1)
    assert backend.threads == 2
    assert "2 threads" in backend.description
    backend.run_tensor(np.zeros(backend.card.input.shape, np.uint8))
    model.close()


def test_a_session_that_cannot_be_made_again_with_either_thread_count_is_a_failure_a_restart_may_fix(
    tmp_path: Path,
) -> None:
    """The file made a session at start; failing now, neither its thread count nor the one before, is no
    configuration error (exit 2, which the unit does not restart) but a failure a restart may fix (exit 4)."""
    model_file = tmp_path / "demo-parts.onnx"
    shutil.copy(DEMO_MODEL, model_file)
    shutil.copy(DEMO_MODEL.with_suffix(".yaml"), tmp_path / "demo-parts.yaml")
    model = Model.load(model_file, InferenceOptions(threads=2))
    backend = model.backend
    assert isinstance(backend, OrtBackend)
    # rewritten in place with its size and time kept: the file the backend checks it against is "the same",
    # and no session can be made of it (a real onnxruntime failure, as one out of memory would be)
    st = model_file.stat()
    with model_file.open("r+b") as f:
        f.write(bytes(st.st_size))
    os.utime(model_file, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(SessionLostError, match=r"^model 'demo-parts': cannot load ") as err:
        backend.set_threads(1)
    assert isinstance(err.value, TransientError)
    model.close()


class SlowPostprocessing:
    """The demo model's stages, with ``extra_s`` of waiting added to each frame's decode."""

    def __init__(self, stages: ModelStages, extra_s: float, skip_decode: bool = False) -> None:
        self.stages, self.extra_s, self.skip_decode = stages, extra_s, skip_decode

    @property
    def thread_count(self) -> ThreadCount | None:
        return self.stages.thread_count

    def preprocess(self, frame: Frame, snapshot: Snapshot) -> Any:
        return self.stages.preprocess(frame, snapshot)

    def infer(self, prepared: Any) -> Any:
        return self.stages.infer(prepared)

    def decode(self, frame: Frame, prepared: Any, outputs: Any, snapshot: Snapshot) -> Instances:
        if self.skip_decode:
            return Instances.empty(frame.shape)
        time.sleep(self.extra_s)
        return self.stages.decode(frame, prepared, outputs, snapshot)

    def close(self) -> None:
        self.stages.close()


class SceneFrames:
    """``n`` frames of the demo's conveyor scene, as a file source delivers them: every one, when asked."""

    uri = "test:scene"
    live = False

    def __init__(self, n: int) -> None:
        scene = PartsScene(640, 480, seed=2)
        self.images = [scene.frame(i).image for i in range(4)]
        self.n, self.i = n, 0

    @property
    def frames_total(self) -> int:
        return self.n

    @property
    def stats(self) -> SourceStats:
        return SourceStats(frames=self.i)

    def open(self) -> None:
        pass

    def read(self) -> Frame | None:
        if self.i >= self.n:
            return None
        self.i += 1
        return Frame(self.i - 1, self.images[self.i % 4], time.monotonic_ns(), time.time())

    def close(self) -> None:
        pass


@pytest.fixture
def short_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows of a few frames, and two usable cores whatever the machine has."""
    monkeypatch.setattr(threadplan, "SETTLE_FRAMES", 2)
    monkeypatch.setattr(threadplan, "WINDOW_FRAMES", 8)
    monkeypatch.setattr(threadplan, "MIN_POSTPROCESSED", 4)
    monkeypatch.setattr("edgeseg.backends.ort.usable_cores", lambda: 2)


def demo_stages(**options: Any) -> ModelStages:
    return ModelStages(Model.load(DEMO_MODEL, InferenceOptions(**options)))


@pytest.mark.usefixtures("short_windows")
def test_a_pipeline_slowed_by_post_processing_gives_inference_one_thread_fewer_and_loses_no_frame() -> None:
    # post-processing waits 80 ms a frame: far more than the demo model's inference on one thread
    stages = SlowPostprocessing(demo_stages(), extra_s=0.08)
    pipe = Pipeline(SceneFrames(30), stages)
    stats = pipe.run()
    backend = stages.stages.model.backend
    assert isinstance(backend, OrtBackend)
    assert backend.threads == 1
    assert pipe.thread_plan is not None
    assert pipe.thread_plan.startswith("1 thread: ")
    assert "(kept), against 2 threads" in pipe.thread_plan
    assert stats.frames_done == 30
    assert stats.dropped_total == 0
    assert not stats.bad_frames
    stages.close()


class Frames:
    """Collects the frame indices of the results, in the order the sinks got them."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def send(self, result: Result) -> None:
        self.indices.append(result.frame.index)

    def close(self) -> None:
        pass


@pytest.mark.usefixtures("short_windows")
def test_a_pipeline_waiting_on_inference_tries_frames_side_by_side_and_keeps_their_order() -> None:
    stages = SlowPostprocessing(demo_stages(), extra_s=0.0, skip_decode=True)
    out = Frames()
    # (a trial of runs: the first 4 windows of 10 frames, 8 where it measures each plan twice more)
    pipe = Pipeline(SceneFrames(100), stages, {"frames": out})
    stats = pipe.run()
    assert stages.stages.model.backend.thread_count is not None
    assert pipe.thread_plan is not None
    # which plan wins is the machine's to say; that the runs were tried and judged is the planner's
    assert "2 runs at once of 1 thread: " in pipe.thread_plan
    assert "against" in pipe.thread_plan
    assert out.indices == list(range(100))
    assert stats.frames_done == 100
    assert not stats.bad_frames
    stages.close()


class SleepKnob:
    """A backend's thread count that costs nothing to change."""

    def __init__(self) -> None:
        self.threads = self.most_threads = 2
        self.runs = 1
        self.changes: list[int] = []

    def set_threads(self, threads: int) -> None:
        self.threads = threads
        self.changes.append(threads)


class SleepingInference:
    """Stages whose inference sleeps a random 5-25 ms (so runs side by side finish out of order, and two of
    them take half the time a frame) and fails on the frames in ``bad``; decode costs nothing."""

    def __init__(self, bad: set[int]) -> None:
        self.knob = SleepKnob()
        self.bad = bad
        self.rng = np.random.default_rng(5)
        self.lock = threading.Lock()
        self.active = 0
        self.most_active = 0

    @property
    def thread_count(self) -> ThreadCount:
        return self.knob

    def preprocess(self, frame: Frame, snapshot: Snapshot) -> Any:
        return frame.index

    def infer(self, prepared: Any) -> Any:
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            pause = float(self.rng.uniform(0.005, 0.025))
        try:
            time.sleep(pause)
            if prepared in self.bad:
                raise RuntimeError(f"frame {prepared} is bad")
            return prepared
        finally:
            with self.lock:
                self.active -= 1

    def decode(self, frame: Frame, prepared: Any, outputs: Any, snapshot: Snapshot) -> Instances:
        assert outputs == frame.index
        return Instances.empty(frame.shape)

    def close(self) -> None:
        pass


class SlowDecode(SleepingInference):
    """:class:`SleepingInference` whose decode sleeps ``decode_s`` a frame."""

    def __init__(self, decode_s: float) -> None:
        super().__init__(bad=set())
        self.decode_s = decode_s

    def decode(self, frame: Frame, prepared: Any, outputs: Any, snapshot: Snapshot) -> Instances:
        time.sleep(self.decode_s)
        return super().decode(frame, prepared, outputs, snapshot)


@pytest.mark.usefixtures("short_windows")
def test_a_later_pipeline_on_the_same_stages_starts_from_the_plan_kept_and_waits_out_the_cooldown() -> None:
    stages = SlowDecode(
        decode_s=0.04
    )  # post-processing the slower stage: one thread fewer is tried, and kept
    Pipeline(SceneFrames(40), stages).run()
    assert stages.knob.changes == [1]
    stages.decode_s = 0.0  # every thread would be worth a trial again, once the cooldown is over
    pipe = Pipeline(SceneFrames(40), stages)
    stats = pipe.run()
    assert stages.knob.changes == [1]
    assert stages.knob.threads == 1
    assert pipe.thread_plan is not None
    assert pipe.thread_plan.endswith(
        f"1 thread kept: an earlier pipeline's trial ended under {COOLDOWN_S:.0f} s ago"
    )
    assert stats.frames_done == 40


@pytest.mark.usefixtures("short_windows")
def test_runs_side_by_side_hand_on_every_frame_in_order_and_a_failing_one_holds_back_none() -> None:
    stages = SleepingInference(bad={3, 25, 26, 58})
    out = Frames()
    pipe = Pipeline(SceneFrames(80), stages, {"frames": out})
    stats = pipe.run()
    # one thread each for the two runs, two threads again for a second window of them, and one thread kept
    assert stages.knob.changes == [1, 2, 1]
    assert stages.most_active == 2
    assert pipe.thread_plan is not None
    assert pipe.thread_plan.startswith("2 runs at once of 1 thread: ")
    assert "(kept)" in pipe.thread_plan.split("against")[0]
    assert out.indices == [i for i in range(80) if i not in stages.bad]
    assert stats.bad_frames == {"infer": 4}
    # a later pipeline on the same stages starts from that plan: frames side by side from the first
    stages.most_active = 0
    again = Frames()
    pipe = Pipeline(SceneFrames(20), stages, {"frames": again})
    pipe.run()
    assert stages.knob.changes == [1, 2, 1]
    assert stages.most_active == 2
    assert pipe.thread_plan is not None
    assert pipe.thread_plan.endswith("frames wait for inference, 2 runs at once of 1 thread kept")
    assert again.indices == [i for i in range(20) if i not in stages.bad]


class BrokenKnob(SleepKnob):
    """A backend whose session cannot be made again with any thread count (out of memory, say)."""

    def set_threads(self, threads: int) -> None:
        raise ModelError("model 'm': cannot load m.onnx: not enough memory")


@pytest.mark.usefixtures("short_windows")
def test_a_model_that_can_no_longer_run_stops_a_file_run_with_its_error_instead_of_hanging(
    tmp_path: Path,
) -> None:
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(200):
        writer.write(np.full((48, 64, 3), i, np.uint8))
    writer.release()
    stages = SleepingInference(bad=set())
    stages.knob = BrokenKnob()
    out = Frames()
    pipe = Pipeline(make_source(str(clip)), stages, {"frames": out})
    pipe.start()
    try:
        # the source must not go on filling a queue that nothing takes from any more
        assert pipe.wait(15), "the pipeline did not end after its model failed"
    finally:
        pipe.stop()
        pipe.wait(5)
    assert isinstance(pipe.error, ModelError)
    assert "not enough memory" in str(pipe.error)
    assert 0 < len(out.indices) < 200


def test_a_run_ending_before_an_earlier_frame_takes_the_next_one_and_frames_still_leave_in_order() -> None:
    runs = _Runs(threads=2, active=2)
    frames = iter(Frame(i, np.zeros((2, 2, 3), np.uint8), 0, 0.0) for i in range(10))
    sent: list[int] = []
    sender = lambda n: lambda: sent.append(n)  # noqa: E731

    def take(worker: int) -> int:
        taken = runs.take(worker, lambda: next(frames))
        assert taken is not None
        return taken[1]

    assert take(0) == 0  # run A holds frame 0 from here on
    assert take(1) == 1
    ended = threading.Thread(target=runs.leave, args=(1, sender(1)), daemon=True)
    ended.start()  # run B ends first: it does not wait for frame 0 ...
    ended.join(2)
    assert not ended.is_alive()
    assert take(1) == 2  # ... and takes the next frame meanwhile
    runs.leave(2, sender(2))
    assert sent == []  # nothing leaves before frame 0
    # three frames in flight (one more than the runs): B waits for frame 0 before it takes a fourth
    fourth: list[int] = []
    waiting = threading.Thread(target=lambda: fourth.append(take(1)), daemon=True)
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive()
    assert fourth == []
    runs.leave(0, sender(0))  # frame 0 ends: it leaves, then the two that waited for it, in order
    waiting.join(5)
    assert sent == [0, 1, 2]
    assert fourth == [3]
    runs.leave(3, None)  # a dropped frame takes its turn too
    assert take(0) == 4
    runs.leave(4, sender(4))
    assert sent == [0, 1, 2, 4]


@pytest.mark.usefixtures("short_windows")
def test_a_thread_count_set_in_the_config_is_never_tried() -> None:
    stages = demo_stages(threads=2)
    assert stages.thread_count is None
    pipe = Pipeline(SceneFrames(30), stages)
    pipe.run()
    assert pipe.thread_plan is None
    stages.close()


# OpenCV's pool size is process-wide: each case runs the edgeseg command in a child process, after the child
# gave the pool 4 threads (what OpenCV itself makes on a 4-core device), and reports the size it ended with
POOL_PROBE = """
import cv2
from edgeseg.cli import main
cv2.setNumThreads(4)
main(["pipelines"])
print("opencv threads", cv2.getNumThreads())
"""


def opencv_threads_after_the_command(env: dict[str, str]) -> int:
    done = subprocess.run(
        [sys.executable, "-c", POOL_PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.strip().splitlines()[-1].split()[-1])


def test_the_edgeseg_command_makes_opencv_calls_without_its_pool_unless_the_user_sized_the_pool() -> None:
    env = {k: v for k, v in os.environ.items() if k != threadplan.OPENCV_THREADS_ENV}
    assert opencv_threads_after_the_command(env) == 1
    assert opencv_threads_after_the_command({**env, threadplan.OPENCV_THREADS_ENV: "3"}) == 4


@pytest.mark.parametrize(
    ("postprocess_ms", "asked"),
    [(15.0, Plan(1, 1)), (14.9, None)],  # (TRY_SHARE: post-processing at three quarters of inference's time)
)
def test_one_thread_fewer_is_tried_from_three_quarters_of_inferences_time_on(
    postprocess_ms: float, asked: Plan | None
) -> None:
    assert (
        window(ThreadPlanner(2, Plan(1, 2), Clock()), inference_ms=20.0, postprocess_ms=postprocess_ms)
        == asked
    )


@pytest.mark.parametrize(
    ("slower_ms", "kept"),
    [(22.0, Plan(1, 1)), (22.1, Plan(1, 2))],  # (TOLERANCE: a tenth slower than the 20.0 ms of every thread)
)
def test_one_thread_fewer_is_kept_while_the_slower_stage_is_at_most_a_tenth_slower(
    slower_ms: float, kept: Plan
) -> None:
    planner = ThreadPlanner(2, Plan(1, 2), Clock())
    assert window(planner, inference_ms=16.0, postprocess_ms=20.0) == Plan(1, 1)
    window(planner, inference_ms=slower_ms, postprocess_ms=12.0)
    assert planner.plan == kept


@pytest.mark.parametrize(
    ("postprocess_ms", "asked"),
    [(8.0, None), (7.9, Plan(1, 2))],  # (RETURN_SHARE: under half of inference's 16 ms)
)
def test_every_thread_is_tried_again_once_post_processing_takes_under_half_of_inferences_time(
    postprocess_ms: float, asked: Plan | None
) -> None:
    clock = Clock()
    planner = ThreadPlanner(2, Plan(1, 2), clock)
    assert window(planner, inference_ms=12.0, postprocess_ms=18.0) == Plan(1, 1)
    assert window(planner, inference_ms=16.0, postprocess_ms=15.0) is None  # 1 thread kept
    clock.now += COOLDOWN_S + 1
    assert window(planner, inference_ms=16.0, postprocess_ms=postprocess_ms) == asked
