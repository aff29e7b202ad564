"""What a stage left out to keep its cost bounded: counted, said at most once a minute, summed for the run."""

from __future__ import annotations

import logging
import threading

import pytest
from conftest import FakeClock

from edgeseg import logtally
from edgeseg.logtally import LogTally


def _said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "edgeseg.test_logtally"]


def test_the_first_count_is_said_at_once_and_later_ones_summed_into_one_line_a_minute(
    fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    tally = LogTally(logging.getLogger("edgeseg.test_logtally"), "left %d whole and dropped %d (minute test)")
    tally.add(2, 1)
    assert _said(caplog) == ["left 2 whole and dropped 1 (minute test)"]
    for _ in range(5):
        fake_clock.now += 10.0
        tally.add(1, 3)
    tally.add(0, 0)  # (nothing to count: no line, no sum)
    assert len(_said(caplog)) == 1
    fake_clock.now += 9.999  # 59.999 s after the first line
    tally.add(1, 0)
    assert len(_said(caplog)) == 1
    fake_clock.now += 0.001
    tally.add(0, 2)
    assert _said(caplog)[1:] == ["left 6 whole and dropped 17 (minute test)"]
    fake_clock.now += 60.0
    tally.add(1, 1)  # (the sums start again after each line)
    assert _said(caplog)[2:] == ["left 1 whole and dropped 1 (minute test)"]


def test_the_runs_summary_says_what_was_counted_since_its_mark_by_every_tally_of_a_message(
    fake_clock: FakeClock,
) -> None:
    log = logging.getLogger("edgeseg.test_logtally")
    message, other = "skipped %d looks (summary test)", "kept %d unsplit (summary test)"
    LogTally(log, message).add(4)
    mark = logtally.totals()
    assert logtally.since(mark) == []
    a, b = LogTally(log, message), LogTally(log, message)  # (two pipelines' trackers, say)
    a.add(2)
    b.add(3)
    LogTally(log, other).add(0)
    assert logtally.since(mark) == ["skipped 5 looks (summary test)"]
    assert logtally.totals()[message] == (9,)


def test_counts_added_from_many_threads_at_once_are_summed_exactly(fake_clock: FakeClock) -> None:
    log = logging.getLogger("edgeseg.test_logtally")
    message = "dropped %d and %d (threads test)"
    mark = logtally.totals()
    tally = LogTally(log, message, every_s=1e9)

    def add() -> None:
        for _ in range(2000):
            tally.add(1, 2)

    threads = [threading.Thread(target=add) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert logtally.since(mark) == ["dropped 8000 and 16000 (threads test)"]
