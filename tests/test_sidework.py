"""The helper threads that share out one call's work among the usable cores (edgeseg.sidework)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from edgeseg import sidework


@pytest.fixture(params=[0, 1, 3], ids=["one_core", "two_cores", "four_cores"])
def helpers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sidework, "helpers", lambda: request.param)
    monkeypatch.setattr(sidework, "_pool", None)  # (a pool of as many helpers)
    return int(request.param)


def test_side_by_side_gives_every_result_in_order_and_runs_calls_on_the_helpers(helpers: int) -> None:
    ran_on: list[str] = []

    def call(i: int) -> int:
        ran_on.append(threading.current_thread().name)
        time.sleep(0.02)  # (long enough that a helper takes some of them)
        return i * i

    assert sidework.side_by_side([lambda i=i: call(i) for i in range(8)]) == [i * i for i in range(8)]
    assert len(ran_on) == 8
    on_helpers = {name for name in ran_on if name.startswith("edgeseg-side")}
    assert threading.current_thread().name in ran_on  # the caller takes its share
    assert bool(on_helpers) == (helpers > 0)


def test_side_by_side_raises_the_first_error_once_every_call_taken_has_ended_and_makes_no_more(
    helpers: int,
) -> None:
    ended: list[int] = []

    def slow(i: int) -> int:
        time.sleep(0.05)
        ended.append(i)
        return i

    def bad() -> int:
        raise ValueError("bad call")

    calls = [lambda: slow(0), bad, *[lambda i=i: slow(i) for i in range(1, 20)]]
    with pytest.raises(ValueError, match="bad call"):
        sidework.side_by_side(calls)
    finished = list(ended)
    time.sleep(0.2)
    assert ended == finished  # nothing of it still running
    assert len(ended) <= 1 + helpers  # the calls not yet taken were not made


def test_side_by_side_of_no_call_or_one_runs_here() -> None:
    assert sidework.side_by_side([]) == []
    assert sidework.side_by_side([threading.current_thread]) == [threading.current_thread()]


def test_on_helper_runs_beside_the_caller_or_here_on_one_core_and_hands_errors_to_the_future(
    helpers: int,
) -> None:
    future = sidework.on_helper(threading.current_thread)
    here = threading.current_thread()
    assert (future.result(timeout=10) is here) == (helpers == 0)

    def bad() -> None:
        raise ValueError("bad job")

    failed = sidework.on_helper(bad)  # (no error at the call: it comes from result())
    with pytest.raises(ValueError, match="bad job"):
        failed.result(timeout=10)


def test_helpers_are_one_fewer_than_the_usable_cores() -> None:
    assert sidework.helpers() == len(os.sched_getaffinity(0)) - 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_makes_helpers_of_its_own() -> None:
    # A child forked after the parent's helpers started has their pool but none of their threads: a job
    # handed to that pool would wait forever.
    code = """
import os, sys
from edgeseg import sidework
sidework.helpers = lambda: 1
assert sidework.on_helper(lambda: 1).result(timeout=10) == 1
pid = os.fork()
if pid == 0:
    ok = False
    try:
        ok = sidework.on_helper(lambda: 2).result(timeout=10) == 2
        ok = ok and sidework.side_by_side([lambda: 3, lambda: 4]) == [3, 4]
    finally:
        os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""
    done = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_side_by_side_does_not_wait_for_a_helper_busy_with_a_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sidework, "helpers", lambda: 1)
    monkeypatch.setattr(sidework, "_pool", None)
    release = threading.Event()
    job = sidework.on_helper(lambda: release.wait(30))
    try:
        names = sidework.side_by_side([lambda: threading.current_thread().name] * 3)
        assert not job.done()  # it returned while the helper was still busy
    finally:
        release.set()
    assert job.result(timeout=10)
    assert set(names) == {threading.current_thread().name}  # the caller made every call itself
