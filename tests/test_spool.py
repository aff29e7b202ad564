"""The MQTT spool: a real SQLite file that keeps every message until it is acknowledged, within its bounds."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from edgeseg.errors import ConfigError
from edgeseg.mqtt.delivery import Delivery, HangUps, packet_size
from edgeseg.mqtt.spool import Clocks, Spool, SpoolEntry
from edgeseg.mqtt.topics import as_replay


def payloads(n: int, size: int = 100) -> list[tuple[str, bytes]]:
    return [("t", i.to_bytes(4, "big") + b"x" * (size - 4)) for i in range(n)]


def clocks(now: list[float], wall_offset: list[float] | None = None, boot: str = "boot-1") -> Clocks:
    """Clocks where time passes when a test adds to ``now[0]``; ``wall_offset[0]`` steps the wall clock
    alone (an NTP step)."""
    step = [0.0] if wall_offset is None else wall_offset
    return Clocks(wall=lambda: now[0] + step[0], since_boot=lambda: now[0], boot=lambda: boot)


def test_messages_survive_reopening_the_spool_in_order(tmp_path: Path) -> None:
    path = tmp_path / "state" / "spool.sqlite3"
    spool = Spool(path, 1 << 20, 3600)
    assert spool.append(payloads(5)) == 5
    spool.close()
    again = Spool(path, 1 << 20, 3600)
    entries = again.read(0, 100)
    assert [e.payload[:4] for e in entries] == [i.to_bytes(4, "big") for i in range(5)]
    assert [e.id for e in entries] == sorted(e.id for e in entries)
    assert again.stats().depth == 5
    assert again.stats().bytes == 5 * 101


def test_a_message_leaves_only_when_deleted_as_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite3", 1 << 20, 3600)
    spool.append(payloads(4))
    first = spool.read(0, 2)
    spool.delete([e.id for e in first])
    spool.delete([first[0].id])  # a duplicate PUBACK is harmless
    rest = spool.read(0, 10)
    assert [e.id for e in rest] == [first[1].id + 1, first[1].id + 2]
    assert spool.stats().depth == 2
    assert spool.stats().bytes == 2 * 101


def test_read_between_two_ids_gives_the_replay_window(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite3", 1 << 20, 3600)
    spool.append(payloads(10))
    ids = [e.id for e in spool.read(0, 10)]
    assert [e.id for e in spool.read(ids[2], 100, below_id=ids[6])] == ids[3:6]
    assert spool.last_id() == ids[-1]


def test_overflow_drops_the_oldest_and_counts_exactly_what_it_dropped(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite3", 1000, 3600)
    for batch in range(10):
        spool.append(payloads(3)[:3] if batch % 2 else payloads(1))
    stats = spool.stats()
    appended = 5 * 3 + 5 * 1
    assert stats.bytes <= 1000
    assert stats.depth == 1000 // 101
    assert stats.dropped_overflow == appended - stats.depth
    newest = spool.read(0, 100)
    assert newest[-1].id == spool.last_id()  # the newest are kept


def test_a_non_ascii_topic_counts_its_utf8_bytes_against_the_cap(tmp_path: Path) -> None:
    # sinks.mqtt.prefix takes any text: "Gießerei/Öfen" is more bytes on disk and on the wire than characters
    topic = "é" * 200  # 400 bytes
    spool = Spool(tmp_path / "s.sqlite3", 1000, 3600)
    spool.append([(topic, b"x" * 100)] * 3)
    with sqlite3.connect(spool.path) as db:
        sizes = "SELECT SUM(LENGTH(CAST(topic AS BLOB)) + LENGTH(payload)) FROM messages"
        (stored,) = db.execute(sizes).fetchone()
    stats = spool.stats()
    assert stored <= 1000
    assert (stats.depth, stats.bytes, stats.dropped_overflow) == (2, 1000, 1)


def test_a_message_larger_than_the_whole_cap_is_dropped_alone_not_with_the_backlog(tmp_path: Path) -> None:
    # making room for it would drop every stored message, and then it too, as it still would not fit
    spool = Spool(tmp_path / "s.sqlite3", 1000, 3600)
    spool.append(payloads(5))
    assert spool.append([("t", b"y" * 2000), *payloads(2)]) == 2
    stats = spool.stats()
    assert (stats.depth, stats.bytes, stats.dropped_overflow) == (7, 707, 1)
    assert [len(e.payload) for e in spool.read(0, 100)] == [100] * 7


def test_messages_older_than_the_age_bound_are_dropped_and_counted(tmp_path: Path) -> None:
    now = [1000.0]
    spool = Spool(tmp_path / "s.sqlite3", 1 << 20, 60, clocks=clocks(now))
    spool.append(payloads(3))
    now[0] += 30
    spool.append(payloads(2))
    now[0] += 40  # the first three are 70 s old, the last two 40 s
    assert spool.expire() == 3
    stats = spool.stats()
    assert (stats.depth, stats.dropped_expired, stats.oldest_age_s) == (2, 3, 40.0)


def test_messages_past_the_age_bound_are_never_read_even_with_no_append_since(tmp_path: Path) -> None:
    # a device powered off for longer than the bound, or a source stalled while the broker was away: the
    # next read (or opening the spool) drops them, and the count says so
    now = [1000.0]
    path = tmp_path / "s.sqlite3"
    spool = Spool(path, 1 << 20, 60, clocks=clocks(now))
    spool.append(payloads(3))
    now[0] += 30
    spool.append(payloads(2))
    now[0] += 40
    assert [e.payload[:4] for e in spool.read(0, 100)] == [i.to_bytes(4, "big") for i in (0, 1)]
    assert spool.stats().dropped_expired == 3
    spool.close()
    now[0] += 100
    again = Spool(path, 1 << 20, 60, clocks=clocks(now))
    stats = again.stats()
    assert (stats.depth, stats.bytes, stats.dropped_expired, stats.oldest_age_s) == (0, 0, 2, None)
    assert again.read(0, 100) == []


DAY = 86400.0


def test_a_wall_clock_step_after_boot_does_not_age_the_messages_stored_before_it(tmp_path: Path) -> None:
    # a Raspberry Pi boots at the time it last saved, after 30 days off, and NTP sets it right 10 s later
    now, wall = [1000.0], [0.0]
    spool = Spool(tmp_path / "s.sqlite3", 1 << 20, 3600, clocks=clocks(now, wall))
    spool.append(payloads(3))
    now[0] += 10
    wall[0] = 30 * DAY
    spool.append(payloads(2))
    now[0] += 10
    assert len(spool.read(0, 100)) == 5
    stats = spool.stats()
    assert (stats.depth, stats.dropped_expired, stats.oldest_age_s) == (5, 0, 20.0)
    now[0] += 3600 - 15  # the first three are 3605 s old: past the bound, the last two not
    assert spool.expire() == 3


def test_a_step_while_no_run_had_the_spool_open_is_found_by_the_next_run_in_the_same_boot(
    tmp_path: Path,
) -> None:
    now, wall = [1000.0], [0.0]
    path = tmp_path / "s.sqlite3"
    spool = Spool(path, 1 << 20, 3600, clocks=clocks(now, wall))
    spool.append(payloads(3))
    spool.close()
    now[0] += 10
    wall[0] = 30 * DAY
    again = Spool(path, 1 << 20, 3600, clocks=clocks(now, wall))
    stats = again.stats()
    assert (stats.depth, stats.dropped_expired, stats.oldest_age_s) == (3, 0, 10.0)


def test_a_step_first_seen_by_an_append_the_full_disk_refused_still_restamps_the_messages_before_it(
    tmp_path: Path,
) -> None:
    now, wall = [1000.0], [0.0]
    spool = Spool(tmp_path / "s.sqlite3", 1 << 30, 3600, clocks=clocks(now, wall))
    spool.append(payloads(3))
    now[0] += 10
    wall[0] = 30 * DAY  # NTP sets the clock right while the disk is full
    spool._db.execute("PRAGMA max_page_count=" + str(spool._db.execute("PRAGMA page_count").fetchone()[0]))
    assert spool.append(payloads(50, size=4000)) == 0
    spool._db.execute("PRAGMA max_page_count=1073741823")  # space is back
    now[0] += 10
    assert len(spool.read(0, 100)) == 3
    stats = spool.stats()
    assert (stats.depth, stats.dropped_expired, stats.oldest_age_s) == (3, 0, 20.0)


def test_messages_from_an_earlier_boot_age_by_the_wall_clock(tmp_path: Path) -> None:
    # stored with the clock right, then 30 days off: they are 30 days old
    now = [1000.0]
    path = tmp_path / "s.sqlite3"
    spool = Spool(path, 1 << 20, 3600, clocks=clocks(now, boot="boot-1"))
    spool.append(payloads(3))
    spool.close()
    later = [50.0]  # seconds since the new boot
    again = Spool(path, 1 << 20, 3600, clocks=clocks(later, [1000.0 + 30 * DAY - 50.0], boot="boot-2"))
    stats = again.stats()
    assert (stats.depth, stats.dropped_expired) == (0, 3)


def test_a_clock_set_back_ages_the_messages_by_the_time_that_passed(tmp_path: Path) -> None:
    now, wall = [1000.0], [DAY]  # booted a day ahead
    spool = Spool(tmp_path / "s.sqlite3", 1 << 20, 3600, clocks=clocks(now, wall))
    spool.append(payloads(2))
    wall[0] = 0.0
    now[0] += 3601
    assert spool.expire() == 2  # not kept for a day more


def test_a_spool_from_before_the_clock_table_opens_and_keeps_its_messages(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    now = [1000.0]
    Spool(path, 1 << 20, 3600, clocks=clocks(now)).append(payloads(2))
    db = sqlite3.connect(path)
    db.execute("DROP TABLE clock")
    db.commit()
    db.close()
    again = Spool(path, 1 << 20, 3600, clocks=clocks(now))
    assert [e.payload[:4] for e in again.read(0, 10)] == [i.to_bytes(4, "big") for i in (0, 1)]


def test_a_full_disk_loses_the_batch_counted_and_the_spool_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    spool = Spool(path, 1 << 30, 3600)
    spool.append(payloads(1))
    # SQLite's own page limit gives the exact error a full disk gives (SQLITE_FULL, "database or disk is
    # full"), without needing root to mount a tiny filesystem
    spool._db.execute("PRAGMA max_page_count=" + str(spool._db.execute("PRAGMA page_count").fetchone()[0]))
    assert spool.append(payloads(50, size=4000)) == 0
    stats = spool.stats()
    assert (stats.depth, stats.write_failed) == (1, 50)
    spool.delete([e.id for e in spool.read(0, 10)])  # space comes back as messages are acknowledged
    assert spool.append(payloads(1)) == 1
    assert [len(e.payload) for e in spool.read(0, 10)] == [100]


def test_the_file_on_disk_stays_near_the_byte_cap(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    spool = Spool(path, 200_000, 3600)
    for _ in range(200):
        spool.append(payloads(10, size=3000))
    stats = spool.stats()
    assert stats.bytes <= 200_000
    # pages freed by deletions are reused; the WAL is checkpointed every ~1 MB
    assert stats.file_bytes < 200_000 * 2 + 2 * 1024 * 1024, stats


def test_a_file_that_is_not_a_spool_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(ConfigError, match=r"^sinks.mqtt spool: cannot open .*s\.sqlite3"):
        Spool(path, 1000, 60)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 4), st.integers(0, 3), st.integers(0, 3), st.booleans()),
        min_size=1,
        max_size=30,
    )
)
def test_every_appended_message_is_stored_acknowledged_or_counted_as_dropped(
    steps: list[tuple[int, int, int, bool]],
) -> None:
    # each step: append, publish some (read), let time pass, maybe append again while they are in flight
    # (which may expire or overflow them), then their PUBACKs arrive
    now = [0.0]
    with tempfile.TemporaryDirectory() as folder:
        spool = Spool(Path(folder) / "s.sqlite3", 700, 5, clocks=clocks(now))
        acked = 0
        for n_append, n_ack, wait_s, again in steps:
            spool.append(payloads(n_append))
            in_flight = spool.read(0, n_ack)
            now[0] += wait_s
            if again:
                overflow = spool.stats().dropped_overflow
                spool.append(payloads(1))
                if spool.stats().dropped_overflow > overflow:  # no more than needed was dropped
                    assert spool.stats().bytes > 700 - 101
            spool.delete([e.id for e in in_flight])
            acked += len(in_flight)
        stats = spool.stats()
        assert stats.appended == stats.depth + acked + stats.dropped
        assert stats.bytes <= 700
        rows = sqlite3.connect(Path(folder) / "s.sqlite3").execute("SELECT COUNT(*), SUM(size) FROM messages")
        assert rows.fetchone() == (stats.depth, stats.bytes or None)
        spool.close()


@pytest.mark.parametrize("reason", ["overflow", "expired"])
def test_a_message_dropped_in_flight_and_then_acknowledged_is_not_counted_as_lost(
    tmp_path: Path, reason: str
) -> None:
    now = [0.0]
    spool = Spool(tmp_path / "s.sqlite3", 505, 60, clocks=clocks(now))
    spool.append(payloads(3))
    now[0] += 30
    spool.append(payloads(2))
    in_flight = spool.read(0, 2)  # published, PUBACK pending
    if reason == "overflow":
        spool.append(payloads(2))  # drops the two oldest: the ones in flight
    else:
        now[0] += 40  # the first three expire: two of them in flight
        spool.append(payloads(1))
    stats = spool.stats()
    assert (stats.dropped_overflow, stats.dropped_expired) == ((2, 0) if reason == "overflow" else (0, 3))
    spool.delete([e.id for e in in_flight])  # their PUBACKs arrive: they were delivered after all
    stats = spool.stats()
    assert (stats.dropped_overflow, stats.dropped_expired, stats.dropped) == (
        (0, 0, 0) if reason == "overflow" else (0, 1, 1)
    )


class Publishes:
    """Stands in for paho's ``Client.publish`` alone (``client.py``: it returns an ``MQTTMessageInfo`` with
    ``rc`` and ``mid``, queueing the message when the socket is busy), recording what was published."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.qos: set[int] = set()

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> SimpleNamespace:
        self.sent.append(payload)
        self.qos.add(qos)
        return SimpleNamespace(rc=MQTTErrorCode.MQTT_ERR_SUCCESS, mid=len(self.sent))


class CountedReads(Spool):
    reads = 0

    def read(self, after_id: int, limit: int, below_id: int | None = None) -> list[SpoolEntry]:
        self.reads += 1
        return super().read(after_id, limit, below_id)


def test_delivery_sends_the_backlog_as_replay_then_new_messages_and_reads_the_spool_only_for_more(
    tmp_path: Path,
) -> None:
    puback = ReasonCode(PacketTypes.PUBACK)
    spool = CountedReads(tmp_path / "s.sqlite3", 1 << 20, 3600)
    spool.append([("t", b'{"replay":false,"n":%d}' % i) for i in range(3)])  # an earlier run's
    delivery, client = Delivery(spool, max_inflight=2), Publishes()
    delivery.start()  # a connect: what the spool holds becomes the replay stream
    assert delivery.pump(client, None) is None
    assert delivery.in_flight == 2
    for mid in (1, 2):
        delivery.on_publish(mid, puback)
    delivery.flush()
    assert delivery.pump(client, None) is None
    delivery.on_publish(3, puback)
    delivery.flush()
    assert [json.loads(p) for p in client.sent] == [{"replay": True, "n": i} for i in range(3)]
    before = spool.reads
    for _ in range(3):  # a wake-up with nothing stored since: both streams were read to their end
        assert delivery.pump(client, None) is None
    assert spool.reads == before
    spool.append([("t", b'{"replay":false,"n":3}'), ("t", b'{"replay":false,"n":4}')])
    assert delivery.pump(client, None) is None
    assert [json.loads(p) for p in client.sent[3:]] == [{"replay": False, "n": 3}, {"replay": False, "n": 4}]
    assert spool.stats().depth == 2  # acknowledged ones left, the two in flight stay


PUBACK = ReasonCode(PacketTypes.PUBACK)


def numbered(first: int, n: int) -> list[tuple[str, bytes]]:
    return [("t", b'{"replay":false,"n":%d}' % i) for i in range(first, first + n)]


def connected(tmp_path: Path, max_inflight: int) -> tuple[Spool, Delivery, Publishes]:
    """An empty spool and its delivery, just connected."""
    spool = Spool(tmp_path / "s.sqlite3", 1 << 20, 3600)
    delivery = Delivery(spool, max_inflight)
    delivery.start()
    return spool, delivery, Publishes()


def sent_numbers(client: Publishes) -> list[tuple[int, bool]]:
    return [(json.loads(p)["n"], json.loads(p)["replay"]) for p in client.sent]


def test_delivery_keeps_at_most_max_inflight_unacknowledged_at_qos_1_and_counts_what_it_sends(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "s.sqlite3", 1 << 20, 3600)
    spool.append(numbered(0, 7))
    delivery, client = Delivery(spool, max_inflight=3), Publishes()
    delivery.start()
    delivery.pump(client, None)
    assert (delivery.in_flight, len(client.sent)) == (3, 3)
    delivery.on_publish(2, PUBACK)  # acknowledgements may come in any order
    delivery.pump(client, None)
    assert (delivery.in_flight, len(client.sent)) == (3, 4)
    for mid in (1, 3, 4):
        delivery.on_publish(mid, PUBACK)
    delivery.flush()
    delivery.pump(client, None)
    assert client.qos == {1}
    assert sent_numbers(client) == [(i, True) for i in range(7)]
    figures = delivery.figures()
    assert (figures.acked, figures.replayed, spool.stats().depth) == (4, 7, 3)
    assert figures.publish_ms_p50 >= 0


def test_live_results_go_before_the_rest_of_the_backlog(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite3", 1 << 20, 3600)
    spool.append(numbered(0, 4))  # the outage's backlog
    delivery, client = Delivery(spool, max_inflight=2), Publishes()
    delivery.start()
    delivery.pump(client, None)
    spool.append(numbered(4, 1))  # a live result while the backlog is being sent
    for mid in (1, 2):
        delivery.on_publish(mid, PUBACK)
    delivery.pump(client, None)
    delivery.on_publish(3, PUBACK)
    delivery.on_publish(4, PUBACK)
    delivery.pump(client, None)
    assert sent_numbers(client) == [(0, True), (1, True), (4, False), (2, True), (3, True)]


def test_messages_in_flight_when_the_link_broke_are_sent_again_after_the_connect(tmp_path: Path) -> None:
    spool, delivery, client = connected(tmp_path, max_inflight=4)
    spool.append(numbered(0, 3))
    delivery.pump(client, None)
    delivery.on_publish(1, PUBACK)
    delivery.start()  # the link broke with 1 and 2 unacknowledged: a reconnect
    assert delivery.in_flight == 0
    delivery.pump(client, None)
    assert sent_numbers(client) == [(0, False), (1, False), (2, False), (1, True), (2, True)]
    assert spool.stats().depth == 2


@pytest.mark.parametrize("over", [0, 1])
def test_a_message_over_the_broker_packet_limit_is_dropped_counted_and_the_rest_go_on(
    tmp_path: Path, over: int
) -> None:
    spool = Spool(tmp_path / "s.sqlite3", 1 << 20, 3600)
    big = b'{"replay":false,"n":1,"pad":"' + b"x" * 2000 + b'"}'
    spool.append([*numbered(0, 1), ("t", big), *numbered(2, 1)])
    delivery, client = Delivery(spool, max_inflight=8), Publishes()
    delivery.start()
    limit = packet_size("t", as_replay(big)) - over  # the replayed payload is what is sent
    delivery.pump(client, limit)
    assert [n for n, _ in sent_numbers(client)] == ([0, 2] if over else [0, 1, 2])
    assert delivery.figures().too_large == over
    assert spool.stats().depth == 3 - over  # the dropped one left the spool; the rest wait for PUBACKs


def test_a_message_is_blamed_for_hang_ups_only_at_three_in_a_row_with_no_puback_confirming_it() -> None:
    hang_ups = HangUps()

    def link(confirmed: bool) -> tuple[object, int] | None:
        hang_ups.connected()
        hang_ups.sent(1, 7, 5000)
        hang_ups.sent(None, ("snapshot", 0), 900)  # QoS 0: nothing confirms it but a later PUBACK
        hang_ups.sent(2, 8, 100)
        if confirmed:
            hang_ups.acked(2)  # the broker read everything sent before it too
        return hang_ups.lost()

    assert [link(False), link(False), link(True), link(False), link(False)] == [None] * 5
    assert link(False) == (7, 5000)
    assert link(False) is None  # blamed once: the count starts again


def test_a_broker_that_hangs_up_at_once_without_reading_anything_gets_no_message_blamed() -> None:
    # (a listener that answers CONNECT and hangs up: the largest of the backlog's first results, replayed at
    # each connect, was deleted as over the packet limit every three links)
    hang_ups = HangUps()

    def link(heard: bool) -> tuple[object, int] | None:
        hang_ups.connected()
        hang_ups.sent(1, ("status", 0), 6)
        hang_ups.sent(None, ("counts", 0), 50)  # QoS 0: paho's on_publish once written is no PUBACK
        hang_ups.acked(9)
        hang_ups.sent(2, 7, 5000)
        hang_ups.sent(3, 8, 100)
        if heard:
            hang_ups.acked(1)  # the broker read the status, then hung up on what came after it
        return hang_ups.lost()

    assert [link(False) for _ in range(6)] == [None] * 6
    assert [link(True), link(True), link(True)] == [None, None, (7, 5000)]


def test_a_message_the_broker_refuses_is_dropped_counted_and_never_sent_again(tmp_path: Path) -> None:
    spool, delivery, client = connected(tmp_path, max_inflight=4)
    spool.append(numbered(0, 2))
    delivery.pump(client, None)
    delivery.on_publish(1, ReasonCode(PacketTypes.PUBACK, "Not authorized"))
    delivery.on_publish(2, PUBACK)
    delivery.flush()
    figures = delivery.figures()
    assert (figures.refused, figures.acked, spool.stats().depth) == (1, 1, 0)
    delivery.start()  # a reconnect replays nothing: the refused one is gone
    delivery.pump(client, None)
    assert len(client.sent) == 2


def test_a_live_backlog_larger_than_the_window_goes_out_without_waiting_for_another_result(
    tmp_path: Path,
) -> None:
    spool, delivery, client = connected(tmp_path, max_inflight=2)
    spool.append(numbered(0, 4))  # a burst of results while the window is full
    delivery.pump(client, None)
    for mid in (1, 2):
        delivery.on_publish(mid, PUBACK)
    delivery.pump(client, None)  # nothing stored since the last pump: the rest of the burst still goes
    assert sent_numbers(client) == [(i, False) for i in range(4)]


def test_delivery_is_idle_only_with_nothing_in_flight_and_nothing_stored(tmp_path: Path) -> None:
    spool, delivery, client = connected(tmp_path, max_inflight=1)
    assert delivery.idle()
    spool.append(numbered(0, 2))
    assert not delivery.idle()  # stored, not sent
    delivery.pump(client, None)
    delivery.on_publish(1, PUBACK)
    delivery.flush()
    assert not delivery.idle()  # one acknowledged, one still stored
    delivery.pump(client, None)
    assert not delivery.idle()  # the last one in flight
    delivery.on_publish(2, PUBACK)
    delivery.flush()
    assert delivery.idle()
