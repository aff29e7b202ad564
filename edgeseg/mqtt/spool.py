"""A bounded on-disk queue of outgoing MQTT messages that survives process restarts and power cuts.

SQLite in WAL mode with ``synchronous=FULL``: a batch is durable once :meth:`Spool.append` returns, and a
crash mid-write leaves the previous state, never a torn one. A message leaves the spool only through
:meth:`Spool.delete`, which the publisher calls when the broker has acknowledged it (PUBACK), so every
accepted message is either delivered or counted as dropped:

- **overflow**: the spool holds at most ``max_bytes`` of messages (topic + payload); appending past that
  drops the oldest messages first (AWS Greengrass' ``OverwriteOldestData``, EMQX's disk queue); a message
  larger than ``max_bytes`` on its own is dropped alone, never stored;
- **expiry**: messages older than ``max_age_s`` are dropped, when the spool opens and before every append
  and read: one stored before a long power-off, or while nothing was appended, is never sent late. A
  message's age is the time that passed since it was stored, not a step of the wall clock: a device without
  a clock of its own (a Raspberry Pi has none) boots at the time it last saved and jumps to the right time
  when NTP reaches it, and the messages stored in that boot before the jump are re-stamped by it (the spool
  keeps the boot's id and the offset of the wall clock from the time since boot; :class:`Clocks`);
- a message dropped while it was in flight, whose PUBACK then arrives, was delivered after all: it is taken
  off the dropped counts (the ids of recent drops are remembered for this). One that the broker received
  but could not acknowledge before the link broke stays counted: the counts never under-state a loss;
- **write failure**: a disk that is full (``SQLITE_FULL``) or failing makes :meth:`append` write nothing and
  count the batch as lost; the caller goes on, and a later append succeeds once space is back.

Each kind is counted in :class:`SpoolStats` and logged (the first time, then at most every
``LOG_EVERY_S``). The file's size follows the stored bytes (``max_bytes`` plus SQLite's page overhead and a
WAL kept under ``journal_size_limit``); pages freed by deletions are reused, not returned to the system.

One connection, guarded by a lock: the sink thread appends while the publisher thread reads and deletes.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgeseg.errors import ConfigError

log = logging.getLogger(__name__)

LOG_EVERY_S = 10.0
RECENT_DROPS = 4096  # ids of dropped messages remembered, to spot the in-flight ones acknowledged later
# a change of the wall clock against the time since boot larger than this is a step (NTP slews by 0.5 ms a
# second at most: an hour of it moves the clock 1.8 s)
STEP_S = 60.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    size INTEGER NOT NULL
)
"""
# one row: the boot the newest messages were stored in, the wall clock's offset from the time since boot
# they were stamped with, and the first id stored in that boot
_CLOCK_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS clock (boot TEXT NOT NULL, skew REAL NOT NULL, first_id INTEGER NOT NULL)"
)


def _since_boot() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)  # (suspend included, as the wall clock goes on through it)


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def message_size(topic: str, payload: bytes) -> int:
    """What a message counts against ``max_bytes``: its topic's UTF-8 bytes (a prefix may be any text:
    'Gießerei' is 8 characters and 9 bytes) and its payload's."""
    return len(topic.encode()) + len(payload)


@dataclass(frozen=True)
class Clocks:
    """Where the spool reads the time: the wall clock it stamps messages with, the seconds since boot it
    checks that clock against, and the boot's id (None where unknown: every opening is then a new boot)."""

    wall: Callable[[], float] = time.time
    since_boot: Callable[[], float] = _since_boot
    boot: Callable[[], str | None] = _boot_id


@dataclass(frozen=True)
class SpoolEntry:
    """One stored message; ``id`` increases with the order of :meth:`Spool.append`."""

    id: int
    topic: str
    payload: bytes


@dataclass(frozen=True)
class SpoolStats:
    """A snapshot of the spool.

    Attributes:
        depth: messages stored (not yet acknowledged by the broker).
        depth_by_topic: those of each topic.
        bytes: their size (topic + payload), the quantity ``max_bytes`` bounds.
        oldest_age_s: age of the oldest stored message (``None`` when empty).
        appended: messages stored since this process opened the spool.
        dropped_overflow: oldest messages dropped to stay within ``max_bytes``.
        dropped_expired: messages dropped for being older than ``max_age_s``.
        write_failed: messages that could not be stored at all (disk full, I/O error).
        file_bytes: size of the database file and its WAL on disk.
        dropped_by_topic: the dropped messages (all three kinds) of each topic (results and events share
            the spool, and each is counted apart).
    """

    depth: int
    depth_by_topic: Mapping[str, int]
    bytes: int
    oldest_age_s: float | None
    appended: int
    dropped_overflow: int
    dropped_expired: int
    write_failed: int
    file_bytes: int
    dropped_by_topic: Mapping[str, int]

    @property
    def dropped(self) -> int:
        """Every message the spool accepted or was offered and will never deliver."""
        return self.dropped_overflow + self.dropped_expired + self.write_failed


@dataclass
class _Drop:
    """Rows one statement dropped, and why (``overflow`` or ``expired``)."""

    reason: str
    ids: list[int] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    size: int = 0


class _RateLimitedLog:
    def __init__(self) -> None:
        self._next = 0.0

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + LOG_EVERY_S
            log.warning(message, *args)


class Spool:
    """The on-disk queue. ``path`` is created (with its folder) when missing; an existing spool is reopened
    with everything it held, so messages from a previous run are delivered after a restart.

    Raises:
        ConfigError: the file cannot be created or opened, or is not a spool.
    """

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        max_age_s: float,
        clocks: Clocks = Clocks(),
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._clocks = clocks
        self._lock = threading.Lock()
        self._appended = self._overflow = self._expired = self._failed = 0
        self._log_overflow, self._log_failed = _RateLimitedLog(), _RateLimitedLog()
        self._recent_drops: OrderedDict[int, tuple[str, str]] = OrderedDict()  # id -> (reason, topic)
        self._dropped_by_topic: Counter[str] = Counter()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA journal_size_limit=1048576")
            self._db.execute("PRAGMA wal_autocheckpoint=250")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute(_SCHEMA)
            self._db.execute(_CLOCK_SCHEMA)
            rows = self._db.execute(
                "SELECT topic, COUNT(*), SUM(size) FROM messages GROUP BY topic"
            ).fetchall()
            self._file = self._identity()
            self._skew, self._first_id = self._boot_clock()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"sinks.mqtt spool: cannot open {self.path}: {exc}") from None
        # (results and events share the spool: what it holds is counted by topic)
        self._depth_by_topic: Counter[str] = Counter({str(t): int(n) for t, n, _ in rows})
        self._bytes = sum(int(size) for *_, size in rows)
        self._expire_now_locked()  # (no other thread has the spool yet)
        if depth := self._depth():
            log.info("spool %s holds %d messages from an earlier run", self.path, depth)

    def _boot_clock(self) -> tuple[float, int]:
        """The wall clock's offset from the time since boot that this boot's messages were stamped with, and
        the first id stored in this boot: kept from an earlier run in the same boot, else begun now."""
        boot = self._clocks.boot()
        row = self._db.execute("SELECT boot, skew, first_id FROM clock").fetchone()
        if boot is not None and row is not None and row[0] == boot:
            return float(row[1]), int(row[2])
        skew = self._clocks.wall() - self._clocks.since_boot()
        seq = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        first_id = (0 if seq is None else int(seq[0])) + 1
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("DELETE FROM clock")
        self._db.execute("INSERT INTO clock VALUES (?, ?, ?)", (boot or "", skew, first_id))
        self._db.execute("COMMIT")
        return skew, first_id

    def _now_locked(self) -> float:
        """The wall clock's time; where it stepped since this boot's messages were stamped, they are
        re-stamped by the step first (in the caller's transaction, if any)."""
        now = self._clocks.wall()
        skew = now - self._clocks.since_boot()
        step = skew - self._skew
        if abs(step) > STEP_S:
            self._db.execute("SAVEPOINT restamp")  # (a transaction of its own, or part of the caller's)
            try:
                stamped = (step, self._first_id)
                self._db.execute("UPDATE messages SET created = created + ? WHERE id >= ?", stamped)
                self._db.execute("UPDATE clock SET skew = ?", (skew,))
            except sqlite3.Error:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK TO restamp")
                    self._db.execute("RELEASE restamp")
                raise
            self._db.execute("RELEASE restamp")
            self._skew = skew
            log.info("the wall clock stepped by %+.0f s: the messages stored since boot are re-stamped", step)
        return now

    # writing --------------------------------------------------------------------------------------

    def append(self, messages: Sequence[tuple[str, bytes]]) -> int:
        """Store ``(topic, payload)`` messages in one transaction, in order; returns how many were stored.

        Never raises for a full or failing disk: the batch is counted in ``write_failed`` and logged.
        """
        if not messages:
            return 0
        with self._lock:
            skew = self._skew  # a re-stamp in this transaction is undone with it: then it is still to do
            try:
                self._db.execute("BEGIN IMMEDIATE")
                now = self._now_locked()
                rows = [(t, p, now, message_size(t, p)) for t, p in messages if self.fits(t, p)]
                too_big = len(messages) - len(rows)
                self._db.executemany(
                    "INSERT INTO messages (topic, payload, created, size) VALUES (?, ?, ?, ?)", rows
                )
                added = sum(r[3] for r in rows)
                expired = self._expire_locked(now)
                overflow = self._trim_locked(self._bytes + added - expired.size)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                self._skew = skew
                self._failed += len(messages)
                self._dropped_by_topic.update(t for t, _ in messages)
                self._log_failed(
                    "spool %s: cannot store %d message(s), they are lost (%d so far): %s",
                    self.path,
                    len(messages),
                    self._failed,
                    exc,
                )
                return 0
            self._appended += len(rows)
            self._depth_by_topic.update(r[0] for r in rows)
            self._bytes += added
            self._dropped_locked(expired)
            self._dropped_locked(overflow)
            if overflow.ids:
                self._log_overflow(
                    "spool %s is full (%d bytes): dropped the %d oldest message(s) (%d so far)",
                    self.path,
                    self.max_bytes,
                    len(overflow.ids),
                    self._overflow,
                )
            if too_big:
                self._overflow += too_big
                self._dropped_by_topic.update(t for t, p in messages if not self.fits(t, p))
                log.warning(
                    "spool %s: %d message(s) larger than its cap of %d bytes dropped (%d dropped so far)",
                    self.path,
                    too_big,
                    self.max_bytes,
                    self._overflow,
                )
            return len(rows)

    def fits(self, topic: str, payload: bytes) -> bool:
        """Whether the message can be stored at all: one larger than the whole cap never is (making room for
        it would drop every message the spool holds, and then itself); :meth:`append` drops it as overflow."""
        return message_size(topic, payload) <= self.max_bytes

    def _depth(self) -> int:
        return sum(self._depth_by_topic.values())

    def _dropped_locked(self, drop: _Drop) -> None:
        self._depth_by_topic.subtract(drop.topics)
        self._bytes -= drop.size
        if drop.reason == "overflow":
            self._overflow += len(drop.ids)
        else:
            self._expired += len(drop.ids)
        self._dropped_by_topic.update(drop.topics)
        for i, topic in zip(drop.ids, drop.topics, strict=True):
            self._recent_drops[i] = (drop.reason, topic)
        while len(self._recent_drops) > RECENT_DROPS:
            self._recent_drops.popitem(last=False)

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # SQLite may have ended the transaction itself
            self._db.execute("ROLLBACK")

    def _oldest_locked(self) -> float | None:
        # messages are appended in time order, so the first id is the oldest (no index on created needed)
        row = self._db.execute("SELECT created FROM messages ORDER BY id LIMIT 1").fetchone()
        return None if row is None else float(row[0])

    def _expire_locked(self, now: float) -> _Drop:
        cutoff = now - self.max_age_s
        oldest = self._oldest_locked()
        if oldest is None or oldest >= cutoff:
            return _Drop("expired")
        rows = self._db.execute(
            "SELECT id, topic, size FROM messages WHERE created < ?", (cutoff,)
        ).fetchall()
        self._db.executemany("DELETE FROM messages WHERE id = ?", ((i,) for i, _, _ in rows))
        if rows:
            log.warning(
                "spool %s: dropped %d message(s) older than %g s", self.path, len(rows), self.max_age_s
            )
        return _Drop(
            "expired",
            [int(i) for i, _, _ in rows],
            [str(t) for _, t, _ in rows],
            sum(int(s) for *_, s in rows),
        )

    def _trim_locked(self, total: int) -> _Drop:
        """Delete the oldest rows until ``total`` bytes fit in ``max_bytes``."""
        drop = _Drop("overflow")
        if total <= self.max_bytes:
            return drop
        excess = total - self.max_bytes
        for row_id, topic, size in self._db.execute("SELECT id, topic, size FROM messages ORDER BY id"):
            drop.ids.append(int(row_id))
            drop.topics.append(str(topic))
            drop.size += int(size)
            if drop.size >= excess:
                break
        self._db.executemany("DELETE FROM messages WHERE id = ?", ((i,) for i in drop.ids))
        return drop

    # reading and acknowledging --------------------------------------------------------------------

    @property
    def appended(self) -> int:
        """Messages stored since this process opened the spool. :meth:`append` is the only way in, and counts
        them after its commit: a reader that took this count before it read the spool to its end has seen
        everything stored until the count changes (read without the lock)."""
        return self._appended

    def read(self, after_id: int, limit: int, below_id: int | None = None) -> list[SpoolEntry]:
        """Up to ``limit`` messages with ``after_id < id`` (``< below_id`` when given), oldest first."""
        upper = below_id if below_id is not None else 2**63 - 1
        with self._lock:
            self._expire_now_locked()
            try:
                rows = self._db.execute(
                    "SELECT id, topic, payload FROM messages WHERE id > ? AND id < ? ORDER BY id LIMIT ?",
                    (after_id, upper, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                self._log_failed("spool %s: cannot read: %s", self.path, exc)
                return []
        return [SpoolEntry(int(i), str(t), bytes(p)) for i, t, p in rows]

    def last_id(self) -> int:
        """The id of the newest stored message (0 when empty)."""
        with self._lock:
            try:
                row = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()
            except sqlite3.Error as exc:
                self._log_failed("spool %s: cannot read: %s", self.path, exc)
                return 0
        return int(row[0])

    def delete(self, ids: Iterable[int]) -> None:
        """Remove acknowledged messages (ids no longer stored are ignored)."""
        keys = [(i,) for i in ids]
        if not keys:
            return
        with self._lock:
            try:
                # a delete lost in a power cut only means a duplicate later, so it skips the fsync that
                # every append pays (in WAL mode NORMAL syncs at checkpoints only)
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("BEGIN IMMEDIATE")
                topics, size = [], 0
                for key in keys:
                    row = self._db.execute(
                        "DELETE FROM messages WHERE id = ? RETURNING topic, size", key
                    ).fetchone()
                    if row is not None:
                        topics.append(str(row[0]))
                        size += int(row[1])
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                # the rows stay and are sent again after a reconnect: a duplicate, never a loss
                self._rollback()
                self._log_failed("spool %s: cannot delete acknowledged messages: %s", self.path, exc)
                return
            finally:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("PRAGMA synchronous=FULL")
            self._depth_by_topic.subtract(topics)
            self._bytes -= size
            for (i,) in keys:
                # acknowledged after it was dropped (it was in flight): delivered, so not a loss
                dropped = self._recent_drops.pop(i, None)
                if dropped is None:
                    continue
                reason, topic = dropped
                if reason == "overflow":
                    self._overflow -= 1
                else:
                    self._expired -= 1
                self._dropped_by_topic[topic] -= 1

    def expire(self) -> int:
        """Drop messages older than ``max_age_s`` now (also done on opening, and on every append and read);
        how many."""
        with self._lock:
            return self._expire_now_locked()

    def _expire_now_locked(self) -> int:
        try:
            now = self._now_locked()
            # the oldest row's time alone decides, so a read with nothing to expire writes nothing
            oldest = self._oldest_locked()
            if oldest is None or oldest >= now - self.max_age_s:
                return 0
            self._db.execute("BEGIN IMMEDIATE")
            drop = self._expire_locked(now)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            self._log_failed("spool %s: cannot expire messages: %s", self.path, exc)
            return 0
        self._dropped_locked(drop)
        return len(drop.ids)

    def _identity(self) -> tuple[int, int] | None:
        """The (device, inode) of the file at ``path`` now (None: there is none)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def deleted(self) -> bool:
        """Whether the file was deleted (or replaced) since the spool opened it: SQLite goes on writing into
        the open one, which then vanishes at the close, with every message still in it."""
        try:
            return self._identity() != self._file
        except OSError:  # (unknown: a folder that cannot be read, say)
            return False

    def stats(self) -> SpoolStats:
        with self._lock:
            try:
                now, created = self._now_locked(), self._oldest_locked()
            except sqlite3.Error:
                now, created = self._clocks.wall(), None
            oldest = None if created is None else max(0.0, now - created)
            return SpoolStats(
                depth=self._depth(),
                depth_by_topic={t: n for t, n in self._depth_by_topic.items() if n},
                bytes=self._bytes,
                oldest_age_s=oldest,
                appended=self._appended,
                dropped_overflow=self._overflow,
                dropped_expired=self._expired,
                write_failed=self._failed,
                dropped_by_topic=dict(self._dropped_by_topic),
                file_bytes=sum(
                    p.stat().st_size
                    for p in (self.path, self.path.with_name(self.path.name + "-wal"))
                    if p.exists()
                ),
            )

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):  # the WAL is replayed at the next open
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
