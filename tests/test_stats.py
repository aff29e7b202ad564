"""A pipeline's run-time figures: rates and percentiles over a bounded window, counters over the run."""

from __future__ import annotations

import math

import pytest

from edgeseg import stats
from edgeseg.stats import PipelineStats, StatsRecorder

MS = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.ns = 5_000 * MS

    def __call__(self) -> int:
        return self.ns


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(stats.time, "monotonic_ns", c)
    return c


def test_before_two_results_there_is_no_rate_and_no_latency(clock: Clock) -> None:
    rec = StatsRecorder()
    first = rec.snapshot()
    assert math.isnan(first.fps)
    assert math.isnan(first.fps_mean)
    assert math.isnan(first.latency_ms_p50)
    clock.ns += 100 * MS
    rec.frame_done(clock.ns - 30 * MS, clock.ns)
    one = rec.snapshot()
    assert math.isnan(one.fps)
    assert one.fps_mean == pytest.approx(10.0)  # one result in 0.1 s
    assert one.latency_ms_p50 == one.latency_ms_p99 == pytest.approx(30.0)
    rec.frame_done(clock.ns - 30 * MS, clock.ns)  # (two results at one instant: no span to divide by)
    assert math.isnan(rec.snapshot().fps)
    idle = StatsRecorder()
    clock.ns += 1_000 * MS
    assert math.isnan(idle.snapshot().fps_mean)  # (time passed, no result: no rate, not 0)
    clock.ns += 50 * MS
    idle.frame_done(clock.ns, clock.ns)
    clock.ns += 50 * MS
    idle.frame_done(clock.ns, clock.ns)
    assert idle.snapshot().fps == pytest.approx(20.0)  # two results 50 ms apart
    empty = PipelineStats()  # (what a run that never started reports)
    assert (empty.frames_read, empty.frames_done, empty.discarded, empty.dropped_total) == (0, 0, 0, 0)
    assert math.isnan(empty.fps)


def test_rate_latency_and_stage_times_come_from_the_last_window_of_frames_only(clock: Clock) -> None:
    rec = StatsRecorder(window=10)
    for k in range(30):  # 20 frames 100 ms apart, then 10 frames 40 ms apart
        clock.ns += (100 if k < 20 else 40) * MS
        rec.stage("decode", clock.ns - (9 if k < 20 else 3) * MS, clock.ns)
        rec.frame_done(clock.ns - (k + 1) * MS, clock.ns)
    s = rec.snapshot()
    assert s.fps == pytest.approx(25.0)  # (the 10 kept: 9 gaps of 40 ms)
    assert s.stage_ms == {"decode": pytest.approx(3.0)}
    # latencies 21..30 ms kept: numpy's linear percentiles of them
    assert s.latency_ms_p50 == pytest.approx(25.5)
    assert s.latency_ms_p99 == pytest.approx(29.91)
    assert s.frames_done == 30
    assert s.fps_mean == pytest.approx(30 / 2.4)


def test_counters_add_up_over_the_run_and_only_the_first_failure_is_kept(clock: Clock) -> None:
    rec = StatsRecorder()
    for _ in range(3):
        rec.frame_read()
    rec.dropped("infer")
    rec.dropped("infer", 4)
    rec.dropped("sink:mqtt", 2)
    rec.bad_frame("decode")
    rec.bad_frame("decode")
    rec.discarded(2)
    rec.discarded(1)
    rec.failed("source failed to open")
    rec.failed("later")
    s = rec.snapshot()
    assert (s.frames_read, s.discarded, s.error) == (3, 3, "source failed to open")
    assert s.drops == {"infer": 5, "sink:mqtt": 2}
    assert s.dropped_total == 7
    assert s.bad_frames == {"decode": 2}


def test_idle_time_runs_from_the_last_result_and_the_clock_restarts_on_demand(clock: Clock) -> None:
    rec = StatsRecorder()
    clock.ns += 2_000 * MS
    assert rec.idle_s() == pytest.approx(2.0)  # (no result yet: since the start)
    rec.frame_done(clock.ns, clock.ns)
    clock.ns += 500 * MS
    assert rec.idle_s() == pytest.approx(0.5)
    assert rec.snapshot().idle_s == pytest.approx(0.5)
    assert rec.snapshot().elapsed_s == pytest.approx(2.5)
    rec.restart_clock()
    clock.ns += 250 * MS
    s = rec.snapshot()
    assert s.elapsed_s == pytest.approx(0.25)
    assert s.idle_s == pytest.approx(0.25)
