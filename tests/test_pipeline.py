"""The threaded pipeline: no loss on files, counted drops on live sources, isolated failures, clean stops."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeseg.backends import InferenceOptions
from edgeseg.errors import SourceError
from edgeseg.frame import Frame, Result
from edgeseg.heads import semantic as semantic_head
from edgeseg.instances import Instances
from edgeseg.live import Snapshot
from edgeseg.model import Model
from edgeseg.pipeline import ModelStages, Pipeline, StageQueue, _Throttle
from edgeseg.sources import SourceStats
from edgeseg.stats import StatsRecorder
from edgeseg.synthetic import PartsScene


class ListSource:
    """A source of ``n`` small frames; live ones are paced at ``period_s`` and never wait for the consumer."""

    def __init__(self, n: int, live: bool = False, period_s: float = 0.0, fail_open: bool = False) -> None:
        self.uri = "test:list"
        self.live = live
        self.n = n
        self.period_s = period_s
        self.fail_open = fail_open
        self.closed = threading.Event()
        self._i = 0

    @property
    def frames_total(self) -> int | None:
        return None if self.live else self.n

    @property
    def stats(self) -> SourceStats:
        return SourceStats(frames=self._i)

    def open(self) -> None:
        if self.fail_open:
            raise SourceError("cannot open test:list: no such camera")

    def read(self) -> Frame | None:
        if self._i >= self.n or self.closed.is_set():
            return None
        if self.period_s:
            time.sleep(self.period_s)
        img = np.full((24, 32, 3), self._i % 256, np.uint8)
        frame = Frame(self._i, img, time.monotonic_ns(), time.time(), source=self.uri)
        self._i += 1
        return frame

    def close(self) -> None:
        self.closed.set()


class SquareStages:
    """Finds one 4x4 'object' per frame; sleeps ``infer_s`` to stand for a model; raises on chosen frames."""

    def __init__(self, infer_s: float = 0.0, bad: frozenset[int] = frozenset()) -> None:
        self.infer_s = infer_s
        self.bad = bad
        self.closed = False

    def preprocess(self, frame: Frame, snapshot: Snapshot) -> Any:
        if frame.index in self.bad:
            raise ValueError(f"corrupt frame {frame.index}")
        return frame.image

    def infer(self, prepared: Any) -> Any:
        if self.infer_s:
            time.sleep(self.infer_s)
        return prepared

    def decode(self, frame: Frame, prepared: Any, outputs: Any, snapshot: Snapshot) -> Instances:
        return Instances.from_crops(frame.shape, [1], [0.9], [(2, 3)], [np.ones((4, 4), bool)])

    def close(self) -> None:
        self.closed = True


class CollectSink:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.results: list[Result] = []
        self.closed = False
        self.delay_s = delay_s

    def send(self, result: Result) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        self.results.append(result)

    def close(self) -> None:
        self.closed = True


class RaisingSink:
    def __init__(self) -> None:
        self.calls = 0
        self.closed = False

    def send(self, result: Result) -> None:
        self.calls += 1
        raise RuntimeError("disk full")

    def close(self) -> None:
        self.closed = True


def test_file_source_loses_no_frame_even_with_a_slow_sink() -> None:
    sink = CollectSink(delay_s=0.002)
    stages = SquareStages(infer_s=0.001)
    pipe = Pipeline(ListSource(60), stages, {"collect": sink}, queue_size=2, owns_stages=True)
    stats = pipe.run()
    assert [r.frame.index for r in sink.results] == list(range(60))
    assert stats.frames_read == stats.frames_done == 60
    assert stats.dropped_total == 0
    assert sink.closed
    assert stages.closed


def test_results_carry_monotonic_stage_stamps_and_full_frame_instances() -> None:
    sink = CollectSink()
    Pipeline(ListSource(5), SquareStages(), {"c": sink}).run()
    for r in sink.results:
        t = r.times
        assert t.captured <= t.preprocessed <= t.inferred <= t.decoded <= t.published
        assert r.instances.image_shape == (24, 32)
        assert r.instances.xyxy[0].tolist() == [2, 3, 6, 7]


def test_live_source_faster_than_inference_drops_oldest_frames_and_counts_them() -> None:
    sink = CollectSink()
    source = ListSource(200, live=True, period_s=0.0005)
    stats = Pipeline(source, SquareStages(infer_s=0.01), {"c": sink}).run()
    indices = [r.frame.index for r in sink.results]
    assert stats.drops.get("infer", 0) > 0
    assert stats.frames_read == 200
    # every frame is either delivered, dropped at a queue, or counted as discarded: none vanish silently
    dropped = stats.drops.get("infer", 0) + stats.drops.get("decode", 0)
    assert len(indices) + dropped == 200
    assert indices == sorted(indices)
    assert indices[-1] == 199  # the newest frame survives; the old ones were dropped


def test_bad_frame_is_counted_and_the_run_goes_on() -> None:
    sink = CollectSink()
    stats = Pipeline(ListSource(20), SquareStages(bad=frozenset({3, 7})), {"c": sink}).run()
    assert [r.frame.index for r in sink.results] == [i for i in range(20) if i not in (3, 7)]
    assert stats.bad_frames == {"preprocess": 2}


def test_a_sink_that_raises_is_isolated_from_the_pipeline_and_other_sinks() -> None:
    good, bad = CollectSink(), RaisingSink()
    stats = Pipeline(ListSource(30), SquareStages(), {"bad": bad, "good": good}).run()
    assert len(good.results) == 30
    assert bad.calls == 30
    assert stats.bad_frames == {"sink:bad": 30}
    assert bad.closed
    assert good.closed


def test_a_source_that_cannot_open_fails_start_and_closes_sinks() -> None:
    sink = CollectSink()
    pipe = Pipeline(ListSource(10, fail_open=True), SquareStages(), {"c": sink})
    with pytest.raises(SourceError, match=r"^cannot open test:list: no such camera$"):
        pipe.start()
    assert sink.closed
    assert pipe.stats().frames_done == 0


def test_stop_ends_an_endless_live_run_and_closes_source_and_sinks() -> None:
    sink = CollectSink()
    source = ListSource(10**9, live=True, period_s=0.001)
    pipe = Pipeline(source, SquareStages(infer_s=0.002), {"c": sink})
    pipe.start()
    while pipe.stats().frames_done < 5:
        time.sleep(0.01)
    pipe.stop()
    assert pipe.wait(timeout=5.0)
    assert source.closed.is_set()
    assert sink.closed


def test_max_frames_limits_what_is_read() -> None:
    sink = CollectSink()
    stats = Pipeline(ListSource(50), SquareStages(), {"c": sink}, max_frames=12).run()
    assert stats.frames_read == 12
    assert len(sink.results) == 12


@pytest.mark.parametrize("drop_oldest", [True, False])
def test_stage_queue_never_holds_more_than_its_size(drop_oldest: bool) -> None:
    stats = StatsRecorder()
    q: StageQueue[int] = StageQueue("q", 3, drop_oldest, stats)
    if drop_oldest:
        for i in range(10):
            assert q.put(i)
        assert len(q) == 3
        assert stats.snapshot().drops == {"q": 7}
        q.close()
        assert [q.get(), q.get(), q.get(), q.get()] == [7, 8, 9, None]
    else:
        for i in range(3):
            q.put(i)
        blocked = threading.Thread(target=q.put, args=(3,))
        blocked.start()
        blocked.join(0.05)
        assert blocked.is_alive()  # a file queue waits for room instead of dropping
        assert q.get() == 0
        blocked.join(2)
        assert not blocked.is_alive()
        assert q.abort() == 3


def test_a_batch_lingers_for_items_that_follow_the_first_but_not_once_the_queue_is_closed() -> None:
    q: StageQueue[int] = StageQueue("q", 16, False, StatsRecorder())
    q.put(0)
    later = threading.Timer(0.05, lambda: [q.put(i) for i in (1, 2)])
    later.start()
    assert q.get_batch(16, linger_s=0.5) == [0, 1, 2]  # the two that came within the linger go with the first
    q.put(3)
    q.close()  # a stop: what waits goes at once
    got: list[list[int]] = []
    taker = threading.Thread(target=lambda: got.append(q.get_batch(16, linger_s=60.0)))
    taker.start()
    taker.join(5)
    assert not taker.is_alive()
    assert got == [[3]]
    assert q.get_batch(16, linger_s=60.0) == []


def test_stats_windows_stay_bounded_over_many_frames() -> None:
    rec = StatsRecorder(window=16)
    for i in range(10_000):
        rec.frame_done(i * 1_000_000, i * 1_000_000 + 5_000_000)
        rec.stage("infer", 0, 2_000_000)
    snap = rec.snapshot()
    assert snap.frames_done == 10_000
    assert snap.latency_ms_p50 == pytest.approx(5.0)
    assert snap.stage_ms["infer"] == pytest.approx(2.0)
    assert len(rec._latency_ms) == 16


class FlakyLosslessSink:
    """A sink that must not lose results and whose every other batch raises."""

    def __init__(self) -> None:
        self.got: list[int] = []
        self.calls = 0

    def send(self, result: Result) -> None:
        self.send_batch([result])

    def send_batch(self, results: Any) -> None:
        self.calls += 1
        if self.calls % 2 == 0:
            raise OSError("disk on fire")
        self.got.extend(r.frame.index for r in results)

    def close(self) -> None:
        return None

    def report(self) -> Any:
        from edgeseg.sinks import SinkReport

        return SinkReport(("flaky: fine",), 0)


def test_results_a_lossless_sink_raised_on_are_reported_lost_not_just_counted_as_bad_frames() -> None:
    sink = FlakyLosslessSink()
    pipe = Pipeline(ListSource(12), SquareStages(), {"flaky": sink})
    stats = pipe.run()
    (report,) = pipe.reports()
    failed = stats.bad_frames["sink:flaky"]
    assert failed == 12 - len(sink.got) > 0
    assert report.lost == failed
    assert report.lines[-1] == f"flaky: LOST {failed} results it failed on (last error: disk on fire)"


class InputWatch:
    """The real demo model's stages, recording whether the input tensor reached decode with each frame."""

    def __init__(self) -> None:
        model = Path(__file__).parents[1] / "models" / "demo-parts.onnx"
        self.stages = ModelStages(Model.load(model, InferenceOptions(threads=1)))
        self.inferred_with_tensor = 0
        self.decoded_with_tensor: list[bool] = []

    def preprocess(self, frame: Frame, snapshot: Snapshot) -> Any:
        return self.stages.preprocess(frame, snapshot)

    def infer(self, prepared: Any) -> Any:
        self.inferred_with_tensor += prepared.tensor is not None
        return self.stages.infer(prepared)

    def decode(self, frame: Frame, prepared: Any, outputs: Any, snapshot: Snapshot) -> Instances:
        self.decoded_with_tensor.append(prepared.tensor is not None)
        return self.stages.decode(frame, prepared, outputs, snapshot)

    def close(self) -> None:
        self.stages.close()


def test_a_frame_waiting_for_decode_no_longer_holds_its_model_input() -> None:
    # decoding needs the frame's geometry, not the tensor the model read: 0.9 MB a queued frame on the demo
    stages = InputWatch()
    sink = CollectSink()
    stats = Pipeline(ListSource(6), stages, {"c": sink}).run()
    assert stats.frames_done == 6
    assert len(sink.results) == 6
    assert stages.inferred_with_tensor == 6
    assert stages.decoded_with_tensor == [False] * 6


class SceneSource(ListSource):
    """``n`` frames of the demo's conveyor scene, as a file source gives them."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.scene = PartsScene(640, 480, seed=3)  # once: setting up its belt takes ~0.2 s

    def read(self) -> Frame | None:
        if self._i >= self.n:
            return None
        image = self.scene.frame(5 * self._i).image
        frame = Frame(self._i, image, time.monotonic_ns(), time.time(), source=self.uri)
        self._i += 1
        return frame


def test_a_frame_with_the_splits_view_is_split_once_and_gets_the_instances_decode_gives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stages = ModelStages(Model.load(Path(__file__).parents[1] / "models" / "demo-parts.onnx"))
    plain, tuned = CollectSink(), CollectSink()
    Pipeline(SceneSource(4), stages, {"c": plain}).run()
    splits: list[int] = []
    split = semantic_head.semantic_to_instances

    def counted(*args: Any, **kwargs: Any) -> Instances:
        splits.append(1)
        return split(*args, **kwargs)

    monkeypatch.setattr(semantic_head, "semantic_to_instances", counted)
    Pipeline(SceneSource(4), stages, {"c": tuned}, explain=True, owns_stages=True).run()
    assert splits == []  # the view's split gave the instances
    assert all(r.split_view is not None for r in tuned.results)
    assert [r.instances.to_dict() for r in tuned.results] == [r.instances.to_dict() for r in plain.results]
    assert sum(len(r.instances) for r in plain.results) > 0


def test_a_stages_failures_are_logged_three_times_then_once_a_hundred_with_the_latest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    throttle = _Throttle("decode")
    with caplog.at_level(logging.WARNING, logger="edgeseg.pipeline"):
        for k in range(1, 251):
            throttle(k, ValueError(f"bad map {k}"))
        throttle(None, RuntimeError())
    lines = [r.getMessage() for r in caplog.records if r.name == "edgeseg.pipeline"]
    assert lines == [
        "decode failed on frame 1: bad map 1",
        "decode failed on frame 2: bad map 2",
        "decode failed on frame 3: bad map 3",
        "decode has failed 100 times (latest on frame 100: bad map 100)",
        "decode has failed 200 times (latest on frame 200: bad map 200)",
    ]
    assert (throttle.count, throttle.last) == (251, "RuntimeError")  # (for the summary)


class StuckLosslessSink:
    """A lossless sink whose first batch hangs (a spool on a stalled disk) until ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.took = threading.Event()
        self.got: list[int] = []

    def send(self, result: Result) -> None:
        self.send_batch([result])

    def send_batch(self, results: Any) -> None:
        self.took.set()
        self.release.wait(30)
        self.got.extend(r.frame.index for r in results)

    def close(self) -> None:
        return None

    def describe(self) -> str:
        return "a spool"

    def report(self) -> Any:
        from edgeseg.sinks import SinkReport

        return SinkReport((), 0)


def _wait_done(pipe: Pipeline, frames: int) -> None:
    """Until ``pipe`` has processed ``frames`` frames (10 s at most)."""
    deadline = time.monotonic() + 10
    while pipe.stats().frames_done < frames and time.monotonic() < deadline:
        time.sleep(0.01)


def test_results_a_lossless_sink_could_not_take_before_its_drain_at_stop_ended_are_reported_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import edgeseg.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "LOSSLESS_DRAIN_TIMEOUT_S", 0.2)
    sink = StuckLosslessSink()
    pipe = Pipeline(ListSource(10), SquareStages(), {"spool": sink})
    pipe.start()
    assert sink.took.wait(10)
    _wait_done(pipe, 10)
    pipe.stop()  # SIGTERM while the spool is stuck
    assert not pipe.wait(timeout=1.0)  # (the drain has ended; the sink is still inside its batch)
    sink.release.set()
    assert pipe.wait(timeout=10)
    stats = pipe.stats()
    (report,) = pipe.reports()
    assert stats.frames_done == 10
    # the results the sink never got were handed to it to keep: lost, and the run says so (exit 3)
    assert report.lost == 10 - len(sink.got) > 0
    assert report.lines == (
        f"spool: LOST {report.lost} results its queue could not hold (the sink was stuck)",
    )


def test_the_summary_does_not_call_the_results_a_lossless_sinks_queue_could_not_hold_not_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import edgeseg.pipeline as pipeline_module
    from edgeseg.cli import summary

    monkeypatch.setattr(pipeline_module, "LOSSLESS_PUT_TIMEOUT_S", 0.05)
    sink = StuckLosslessSink()
    pipe = Pipeline(ListSource(30), SquareStages(), {"spool": sink})
    pipe.start()
    _wait_done(pipe, 30)
    sink.release.set()
    assert pipe.wait(timeout=10)
    stats, reports = pipe.stats(), pipe.reports()
    lost = sum(r.lost for r in reports)
    assert lost == stats.drops["sink:spool"] == 30 - len(sink.got) > 0
    lines = summary(stats, pipe.source.stats, reports, "done", {"at spool": lost}, lossless=("spool",))
    assert f"spool: LOST {lost} results its queue could not hold (the sink was stuck)" in lines
    assert not any("not lost" in line for line in lines), lines
