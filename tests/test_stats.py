"""A pipeline's run-time figures: rates and percentiles over a bounded window, counters over the run."""

from __future__ import annotations

import math

import pytest
from conftest import FakeClock

from edgeseg.stats import PipelineStats, StatsRecorder

MS = 1_000_000


def test_before_two_results_there_is_no_rate_and_no_latency(fake_clock: FakeClock) -> None:
    rec = StatsRecorder()
    first = rec.snapshot()
    assert math.isnan(first.fps)
    assert math.isnan(first.fps_mean)
    assert math.isnan(first.latency_ms_p50)
    fake_clock.now += 0.1
    rec.frame_done(fake_clock.monotonic_ns() - 30 * MS, fake_clock.monotonic_ns())
    one = rec.snapshot()
    assert math.isnan(one.fps)
    assert one.fps_mean == pytest.approx(10.0)  # one result in 0.1 s
    assert one.latency_ms_p50 == one.latency_ms_p99 == pytest.approx(30.0)
    # (two results at one instant: no span to divide by)
    rec.frame_done(fake_clock.monotonic_ns() - 30 * MS, fake_clock.monotonic_ns())
    assert math.isnan(rec.snapshot().fps)
    idle = StatsRecorder()
    fake_clock.now += 1.0
    assert math.isnan(idle.snapshot().fps_mean)  # (time passed, no result: no rate, not 0)
    fake_clock.now += 0.05
    idle.frame_done(fake_clock.monotonic_ns(), fake_clock.monotonic_ns())
    fake_clock.now += 0.05
    idle.frame_done(fake_clock.monotonic_ns(), fake_clock.monotonic_ns())
    assert idle.snapshot().fps == pytest.approx(20.0)  # two results 50 ms apart
    empty = PipelineStats()  # (what a run that never started reports)
    assert (empty.frames_read, empty.frames_done, empty.discarded, empty.dropped_total) == (0, 0, 0, 0)
    assert math.isnan(empty.fps)


def test_rate_latency_and_stage_times_come_from_the_last_window_of_frames_only(fake_clock: FakeClock) -> None:
    rec = StatsRecorder(window=10)
    for k in range(30):  # 20 frames 100 ms apart, then 10 frames 40 ms apart
        fake_clock.now += 0.1 if k < 20 else 0.04
        now = fake_clock.monotonic_ns()
        rec.stage("decode", now - (9 if k < 20 else 3) * MS, now)
        rec.frame_done(now - (k + 1) * MS, now)
    s = rec.snapshot()
    assert s.fps == pytest.approx(25.0)  # (the 10 kept: 9 gaps of 40 ms)
    assert s.stage_ms == {"decode": pytest.approx(3.0)}
    # latencies 21..30 ms kept: numpy's linear percentiles of them
    assert s.latency_ms_p50 == pytest.approx(25.5)
    assert s.latency_ms_p99 == pytest.approx(29.91)
    assert s.frames_done == 30
    assert s.fps_mean == pytest.approx(30 / 2.4)


def test_counters_add_up_over_the_run_and_only_the_first_failure_is_kept(fake_clock: FakeClock) -> None:
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


def test_idle_time_runs_from_the_last_result_and_the_clock_restarts_on_demand(fake_clock: FakeClock) -> None:
    rec = StatsRecorder()
    fake_clock.now += 2.0
    assert rec.idle_s() == pytest.approx(2.0)  # (no result yet: since the start)
    rec.frame_done(fake_clock.monotonic_ns(), fake_clock.monotonic_ns())
    fake_clock.now += 0.5
    assert rec.idle_s() == pytest.approx(0.5)
    assert rec.snapshot().idle_s == pytest.approx(0.5)
    assert rec.snapshot().elapsed_s == pytest.approx(2.5)
    rec.restart_clock()
    fake_clock.now += 0.25
    s = rec.snapshot()
    assert s.elapsed_s == pytest.approx(0.25)
    assert s.idle_s == pytest.approx(0.25)


def test_the_rate_after_a_pause_of_the_stream_is_the_rate_since_it_came_back(fake_clock: FakeClock) -> None:
    rec = StatsRecorder()
    for _ in range(100):  # 4 s at 25 fps
        fake_clock.now += 0.04
        rec.frame_done(fake_clock.monotonic_ns() - 30 * MS, fake_clock.monotonic_ns())
    fake_clock.now += 600.0  # the camera was gone for 10 minutes
    for _ in range(50):  # and has been back for 2 s, at 25 fps again
        fake_clock.now += 0.04
        rec.frame_done(fake_clock.monotonic_ns() - 30 * MS, fake_clock.monotonic_ns())
    assert rec.snapshot().fps == pytest.approx(25.0)  # (not 149 results over the 606 s the window spans)
    assert rec.snapshot().frames_done == 150
    slow = StatsRecorder()  # a stream that is slow by nature is no pause: its rate stays measured
    for _ in range(5):
        fake_clock.now += 20.0
        slow.frame_done(fake_clock.monotonic_ns() - 30 * MS, fake_clock.monotonic_ns())
    assert slow.snapshot().fps == pytest.approx(0.05)


def test_the_rate_now_is_0_once_the_stream_paused_and_a_slow_stream_keeps_its_rate(
    fake_clock: FakeClock,
) -> None:
    rec = StatsRecorder()
    for _ in range(100):  # 25 fps
        fake_clock.now += 0.04
        rec.frame_done(fake_clock.monotonic_ns() - 30 * MS, fake_clock.monotonic_ns())
    fake_clock.now += 1.0  # a hiccup is no pause
    assert rec.snapshot().fps_now == pytest.approx(25.0)
    fake_clock.now += 5.0  # the camera is gone: nothing comes at 25 fps
    assert rec.snapshot().fps_now == 0.0
    assert rec.snapshot().fps == pytest.approx(25.0)  # (the rate it had)
    slow = StatsRecorder()
    for _ in range(5):  # a frame every 20 s: 30 s since the last one is its pace, not a pause
        fake_clock.now += 20.0
        slow.frame_done(fake_clock.monotonic_ns() - 30 * MS, fake_clock.monotonic_ns())
    fake_clock.now += 30.0
    assert slow.snapshot().fps_now == pytest.approx(0.05)
    fake_clock.now += 60.0
    assert slow.snapshot().fps_now == 0.0
    assert math.isnan(StatsRecorder().snapshot().fps_now)  # before two results: unmeasured
    once = StatsRecorder()  # one result and then none: a pause too (a camera gone after one frame)
    once.frame_done(fake_clock.monotonic_ns() - 30 * MS, fake_clock.monotonic_ns())
    assert not once.snapshot().paused
    fake_clock.now += 6.0
    assert once.snapshot().paused
    assert once.snapshot().fps_now == 0.0
