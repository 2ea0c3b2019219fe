"""The store-and-forward queue between the drivers and the publisher: SQLite in WAL mode.

A reading's life:

1. ``put(device, readings)`` writes it and commits before returning, so it survives a
   crash or a power cut from that moment on.
2. ``take(device, n)`` hands out up to ``n`` of the device's queued readings, oldest
   first, as a ``Batch`` with the device's next sequence number. The counter and the
   assignment of the rows to that seq are committed in one transaction, so a restart
   re-sends exactly the same readings under the same seq, and never reuses a seq for
   other readings.
3. ``ack([(device, seq), ...])`` deletes the batches the server has (its receipt, or the
   broker's PUBACK for a publisher without receipts); ``take(..., ack=...)`` does it in
   the transaction of the next batch.
   Batches handed out and not acknowledged (the connection dropped, the agent died) come
   back from ``unacked()``, in seq order, to be sent again.

Bounds: at most ``max_readings`` queued; when full, ``drop_oldest`` deletes the oldest
queued readings (in queue order, including ones already handed out: a re-sent batch then
carries what is left of it) and ``refuse_newest`` does not store the new ones. The disk
is a bound too: while the queue's file system has less than ``min_free_bytes`` free the
queue does not grow, and the same policy applies to what a put would add (so a full SD
card costs the readings the policy gives up, counted, not every new reading uncounted);
a put that the disk refuses all the same (SQLite's "disk is full") is retried once under
that rule; when even that fails (the disk has nothing left at all), the put's readings
are refused and counted, the count written with the next put that commits. SQLite needs
room to work in (its write-ahead log grows to a few MB before a checkpoint copies it into
the file): keep ``min_free_bytes`` above 8 MB. Readings whose time is more than
``max_age_s`` old are dropped on ``put`` and by ``expire()``. Every dropped reading is
counted, persistently, by reason (``full``, queue or disk, and ``expired``).

One connection, guarded by a lock, serves every thread: drivers put, the publisher takes
and acks, the health loop reads statistics.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tidefield.protocol.messages import Batch, Reading

from .errors import QueueError

log = logging.getLogger(__name__)

WhenFull = Literal["drop_oldest", "refuse_newest"]
DEFAULT_MIN_FREE_BYTES = 32 * 1024 * 1024

# Group commit: a put that is about to commit first waits this long for the puts of other
# drivers to join it (drivers on one line, at one interval, poll within a few ms of each
# other). One fsync instead of several; each put still returns only once committed.
GATHER_S = 0.005

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id       INTEGER PRIMARY KEY,
    name     TEXT NOT NULL UNIQUE,
    next_seq INTEGER NOT NULL DEFAULT 0      -- the seq the next batch gets
);
CREATE TABLE IF NOT EXISTS metrics (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS readings (
    id      INTEGER PRIMARY KEY,             -- queue order
    device  INTEGER NOT NULL,
    metric  INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,                -- the device's own time, never rewritten
    value   REAL NOT NULL,
    seq     INTEGER                          -- the batch it was handed out in; NULL: not yet
);
-- take: a device's unassigned rows in time order; ack and unacked: a batch's rows
CREATE INDEX IF NOT EXISTS readings_batch ON readings (device, seq, time_ms);
-- expire and the age of the oldest reading
CREATE INDEX IF NOT EXISTS readings_time ON readings (time_ms);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,                  -- dropped_full, dropped_expired
    value INTEGER NOT NULL
);
PRAGMA user_version = 1;
"""


@dataclass(frozen=True, slots=True)
class PutResult:
    stored: int  # of the readings given
    refused: int  # of the readings given, not stored (queue full or too old)
    evicted: int  # older queued readings dropped to make room (drop_oldest)

    @property
    def dropped(self) -> int:
        return self.refused + self.evicted


@dataclass(slots=True)
class _Put:
    device: str
    readings: list[Reading]  # not too old
    expired: int
    result: PutResult | None = None
    error: str | None = None


# one put as planned in its transaction: the put, the rows inserted (device, metric,
# time_ms, value), how many of its readings were refused, and the rows evicted for them
# (device, seq)
_Plan = tuple[_Put, list[tuple[int, int, int, float]], int, list[tuple[int, int | None]]]


@dataclass(frozen=True, slots=True)
class QueueStats:
    depth: int  # readings queued, handed out or not
    oldest_time_ms: int | None  # the oldest queued reading's own time
    dropped_full: int
    dropped_expired: int

    @property
    def dropped(self) -> int:
        return self.dropped_full + self.dropped_expired


class DiskQueue:
    def __init__(self, path: Path | str, *, site: str, max_readings: int = 1_000_000,
                 max_age_s: float = 30 * 86_400.0, when_full: WhenFull = "drop_oldest",
                 min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
                 clock: Callable[[], float] = time.time) -> None:
        if when_full not in ("drop_oldest", "refuse_newest"):
            raise ValueError(f"when_full must be drop_oldest or refuse_newest, not {when_full!r}")
        self.path = Path(path)
        self.site = site
        self.max_readings = max_readings
        self.max_age_ms = int(max_age_s * 1000)
        self.when_full = when_full
        self.min_free_bytes = min_free_bytes
        self.disk_low = False  # the last put found less than min_free_bytes free
        self._uncounted_full = 0  # refused when not even the count could be written
        self._clock = clock
        self._lock = threading.Lock()  # the connection, and everything below
        self._arrivals_lock = threading.Lock()
        self._arrivals: list[_Put] = []  # puts waiting for a commit
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None,
                                       check_same_thread=False, timeout=30)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise QueueError(f"{self.path}: the file system does not allow WAL mode")
            # FULL: every commit (put, take, ack) is fsynced before it returns. NORMAL would
            # survive a crashed process but not a power cut, which could lose readings
            # already counted as stored, or roll back a seq that was already published
            # and then reuse it for other readings. Field devices lose power without
            # warning; the cost is one fsync per poll, and per batch.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA journal_size_limit=4194304")  # truncate the WAL file
            self._db.execute("PRAGMA cache_size=-512")  # KiB: the hot pages are the tail
            self._db.executescript(_SCHEMA)
            self._load()
        except (sqlite3.Error, OSError) as exc:
            raise QueueError(f"cannot open the queue {self.path}: {exc}") from exc

    def _load(self) -> None:
        db = self._db
        self._load_names()
        counters = dict(db.execute("SELECT name, value FROM counters"))
        self._dropped_full = counters.get("dropped_full", 0)
        self._dropped_expired = counters.get("dropped_expired", 0)
        self._depth = db.execute("SELECT count(*) FROM readings").fetchone()[0]
        # Readings not handed out yet, per device id, and since when (monotonic) the
        # oldest of them waits: what the publisher's batching decides on. Whatever a
        # restart finds is old enough to go at once.
        self._pending: dict[int, int] = dict(db.execute(
            "SELECT device, count(*) FROM readings WHERE seq IS NULL GROUP BY device"))
        # ... and when they were put: [monotonic time, readings left of that put], oldest
        # first; taking and dropping consume from the front.
        self._arrived: dict[int, deque[list[float]]] = {
            device: deque([[float("-inf"), n]]) for device, n in self._pending.items()}

    def _load_names(self) -> None:
        self._device_ids = dict(self._db.execute("SELECT name, id FROM devices"))
        self._device_names = {i: n for n, i in self._device_ids.items()}
        self._metric_ids = dict(self._db.execute("SELECT name, id FROM metrics"))
        self._metric_names = {i: n for n, i in self._metric_ids.items()}

    # --- transactions ------------------------------------------------------------------

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; sqlite errors become QueueError."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise QueueError(f"queue {self.path}: {what} failed: {exc}") from exc

    def _intern(self, device: str, metrics: Iterable[str]) -> None:
        """Give new device and metric names their ids, in a transaction of their own (so
        the caches never hold an id of a rolled-back insert)."""
        new_metrics = {m for m in metrics if m not in self._metric_ids}
        if device in self._device_ids and not new_metrics:
            return
        with self._transaction("adding names") as db:
            db.execute("INSERT OR IGNORE INTO devices (name) VALUES (?)", (device,))
            db.executemany("INSERT OR IGNORE INTO metrics (name) VALUES (?)",
                           [(m,) for m in sorted(new_metrics)])
        self._load_names()

    # --- the contract ---------------------------------------------------------------

    def put(self, device: str, readings: Sequence[Reading]) -> PutResult:
        """Store readings of ``device``; committed (fsynced) when this returns.

        Group commit: puts arriving within ``GATHER_S`` of each other, or while another
        commit is in progress, share one transaction (one fsync), applied in arrival
        order with the same result as one after the other.
        """
        if not readings:
            return PutResult(0, 0, 0)
        cutoff = int(self._clock() * 1000) - self.max_age_ms
        fresh = [r for r in readings if r.time_ms >= cutoff]
        job = _Put(device, fresh, len(readings) - len(fresh))
        with self._arrivals_lock:
            self._arrivals.append(job)
        time.sleep(GATHER_S)  # let the puts of other drivers arrive (the lock stays free)
        with self._lock:
            if job.result is None and job.error is None:  # not committed by an earlier put
                with self._arrivals_lock:
                    jobs, self._arrivals = self._arrivals, []
                self._commit_puts(jobs)
        if job.error is not None:
            raise QueueError(job.error)
        assert job.result is not None  # committed: by this put or an earlier one
        return job.result

    def _commit_puts(self, jobs: list[_Put]) -> None:
        """One transaction for the puts of ``jobs`` (call with ``_lock`` held)."""
        try:
            for job in jobs:
                self._intern(job.device, {r.metric for r in job.readings})
            grow = not self._disk_is_low()
            try:
                plans = self._put_transaction(jobs, grow=grow)
            except QueueError as exc:
                if "disk is full" not in str(exc):
                    raise
                self._note_disk(low=True, why=str(exc))
                try:
                    plans = self._put_transaction(jobs, grow=False)  # the policy makes room
                except QueueError as again:
                    if "disk is full" not in str(again):
                        raise
                    self._refuse_uncounted(jobs)
                    return
        except QueueError as exc:
            for job in jobs:
                job.error = str(exc)
            return
        self._uncounted_full = 0  # written with this transaction
        # committed: bring the in-memory view along, put by put
        for job, rows, refused_full, evicted in plans:
            self._depth += len(rows) - len(evicted)
            self._forget(evicted)
            if rows:
                device_id = rows[0][0]
                self._pending[device_id] = self._pending.get(device_id, 0) + len(rows)
                self._arrived.setdefault(device_id, deque()).append(
                    [time.monotonic(), len(rows)])
            self._dropped_full += refused_full + len(evicted)
            self._dropped_expired += job.expired
            job.result = PutResult(len(rows), refused_full + job.expired, len(evicted))

    def _put_transaction(self, jobs: list[_Put], *, grow: bool) -> list[_Plan]:
        """Plan and insert every put in one transaction; ``grow``: the queue may hold
        more than it does now (else the policy keeps it at its depth)."""
        plans = []
        with self._transaction("put") as db:
            depth = self._depth
            limit = self.max_readings if grow else min(self.max_readings, depth)
            for job in jobs:
                plan = self._plan_put(db, job, depth, limit)
                depth += len(plan[1]) - len(plan[3])
                plans.append(plan)
            self._count(db, full=sum(p[2] + len(p[3]) for p in plans) + self._uncounted_full,
                        expired=sum(job.expired for job in jobs))
        return plans

    def _refuse_uncounted(self, jobs: list[_Put]) -> None:
        """Nothing can be written, not even a count: refuse the puts, count them here,
        and write the count with the next put that commits."""
        for job in jobs:
            refused = len(job.readings)
            self._uncounted_full += refused
            self._dropped_full += refused
            self._dropped_expired += job.expired  # (counted here only: a rare pair)
            job.result = PutResult(0, refused + job.expired, 0)
        log.warning("queue %s: the disk is full: %d readings refused (counted)", self.path,
                    sum(len(job.readings) for job in jobs))

    def _disk_is_low(self) -> bool:
        try:
            stats = os.statvfs(self.path.parent)
        except OSError:
            return False  # cannot tell: the disk's own refusal is still caught
        free = stats.f_bavail * stats.f_frsize
        self._note_disk(low=free < self.min_free_bytes, why=f"{free / 2**20:.1f} MiB free")
        return self.disk_low

    def _note_disk(self, *, low: bool, why: str) -> None:
        if low and not self.disk_low:
            log.warning("queue %s: the disk is nearly full (%s, the floor is %.1f MiB): the "
                        "queue stops growing and %s makes room (counted as dropped, full)",
                        self.path, why, self.min_free_bytes / 2**20, self.when_full)
        elif self.disk_low and not low:
            log.warning("queue %s: disk space is back (%s); the queue grows again",
                        self.path, why)
        self.disk_low = low

    def _plan_put(self, db: sqlite3.Connection, job: _Put, depth: int, limit: int) -> _Plan:
        """Apply the bound (``limit`` readings) and insert one put's rows: (job, rows,
        refused, evicted)."""
        device_id = self._device_ids[job.device]
        metric_ids = self._metric_ids
        rows = [(device_id, metric_ids[r.metric], r.time_ms, r.value) for r in job.readings]
        refused_full = 0
        evicted: list[tuple[int, int | None]] = []
        room = limit - depth
        if len(rows) > room:
            if self.when_full == "refuse_newest":
                keep = max(room, 0)
                refused_full, rows = len(rows) - keep, rows[:keep]
            else:
                if len(rows) > limit:  # the oldest of them go first
                    refused_full = len(rows) - limit
                    rows = rows[refused_full:]
                evicted = db.execute(
                    "DELETE FROM readings WHERE id IN "
                    "(SELECT id FROM readings ORDER BY id LIMIT ?) RETURNING device, seq",
                    (depth + len(rows) - limit,)).fetchall()
        db.executemany("INSERT INTO readings (device, metric, time_ms, value) "
                       "VALUES (?, ?, ?, ?)", rows)
        return job, rows, refused_full, evicted

    def pending(self) -> dict[str, tuple[int, float]]:
        """Devices with readings not handed out yet -> (how many, since when the oldest
        waits, on the ``time.monotonic`` clock; -inf for what was queued before a restart)."""
        with self._lock:
            return {self._device_names[d]: (n, self._arrived[d][0][0])
                    for d, n in self._pending.items()}

    def take(self, device: str, max_readings: int, *,
             ack: Iterable[tuple[str, int]] = ()) -> Batch | None:
        """The device's oldest queued readings (up to ``max_readings``, in time order) as a
        batch with the device's next seq; None when it has none waiting.

        ``ack``: batches acknowledged meanwhile, deleted in the same transaction (one
        commit instead of two); they are deleted even when there is nothing to take.
        """
        ack = list(ack)
        with self._lock:
            device_id = self._device_ids.get(device)
            if device_id is None or not self._pending.get(device_id):
                if ack:
                    self._delete_batches(ack)
                return None
            with self._transaction("take") as db:
                deleted = self._delete(db, ack)
                seq = db.execute("UPDATE devices SET next_seq = next_seq + 1 WHERE id = ? "
                                 "RETURNING next_seq - 1", (device_id,)).fetchone()[0]
                db.execute("UPDATE readings SET seq = ? WHERE id IN (SELECT id FROM readings "
                           "WHERE device = ? AND seq IS NULL ORDER BY time_ms, id LIMIT ?)",
                           (seq, device_id, max_readings))
                rows = db.execute("SELECT metric, time_ms, value FROM readings "
                                  "WHERE device = ? AND seq = ? ORDER BY time_ms, id",
                                  (device_id, seq)).fetchall()
                if not rows:  # cannot happen while _pending is right; keep the seq unused
                    raise QueueError(f"queue {self.path}: no readings of {device} to take")
            self._depth -= deleted
            self._consume(device_id, len(rows))
            return self._batch(device, seq, rows)

    def unacked(self) -> list[Batch]:
        """Every batch handed out and not acknowledged, by device, then seq."""
        with self._lock:
            batches = []
            for device_id, device in sorted(self._device_names.items()):
                rows = self._db.execute(
                    "SELECT seq, metric, time_ms, value FROM readings "
                    "WHERE device = ? AND seq >= 0 ORDER BY seq, time_ms, id",
                    (device_id,)).fetchall()
                start = 0
                for i in range(1, len(rows) + 1):
                    if i == len(rows) or rows[i][0] != rows[start][0]:
                        batches.append(self._batch(device, rows[start][0],
                                                   [r[1:] for r in rows[start:i]]))
                        start = i
            return batches

    def devices(self) -> list[str]:
        """Every device the queue has held readings of (its readings may be from a run
        with another config)."""
        with self._lock:
            return sorted(self._device_names.values())

    def handed_out(self) -> list[tuple[str, int]]:
        """(device, seq) of every batch handed out and not acknowledged, by device, then
        seq: what ``unacked`` returns, without holding every reading in memory (a
        publisher that waits for receipts may have thousands out)."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT device, seq FROM readings "
                                    "WHERE seq >= 0 ORDER BY device, seq").fetchall()
            return [(self._device_names[d], seq) for d, seq in rows]

    def batch(self, device: str, seq: int) -> Batch | None:
        """A batch handed out before, with what is left of it (None: nothing is; the
        policy dropped it or it was acknowledged)."""
        with self._lock:
            device_id = self._device_ids.get(device)
            if device_id is None:
                return None
            rows = self._db.execute("SELECT metric, time_ms, value FROM readings "
                                    "WHERE device = ? AND seq = ? ORDER BY time_ms, id",
                                    (device_id, seq)).fetchall()
            return self._batch(device, seq, rows) if rows else None

    def ack(self, batches: Iterable[tuple[str, int]]) -> int:
        """Delete acknowledged batches, given as (device, seq); returns readings deleted."""
        batches = list(batches)
        with self._lock:
            return self._delete_batches(batches)

    def _delete_batches(self, batches: list[tuple[str, int]]) -> int:
        if not any(device in self._device_ids for device, _ in batches):
            return 0
        with self._transaction("ack") as db:
            deleted = self._delete(db, batches)
        self._depth -= deleted
        return deleted

    def _delete(self, db: sqlite3.Connection, batches: list[tuple[str, int]]) -> int:
        keys = [(self._device_ids[device], seq) for device, seq in batches
                if device in self._device_ids]
        if not keys:
            return 0
        return db.executemany("DELETE FROM readings WHERE device = ? AND seq = ?",
                              keys).rowcount

    def expire(self) -> int:
        """Drop readings older than ``max_age_s``; returns how many."""
        cutoff = int(self._clock() * 1000) - self.max_age_ms
        with self._lock:
            with self._transaction("expire") as db:
                gone = db.execute("DELETE FROM readings WHERE time_ms < ? RETURNING device, seq",
                                  (cutoff,)).fetchall()
                self._count(db, expired=len(gone))
            self._depth -= len(gone)
            self._forget(gone)
            self._dropped_expired += len(gone)
            return len(gone)

    def stats(self) -> QueueStats:
        with self._lock:
            try:
                oldest = self._db.execute("SELECT min(time_ms) FROM readings").fetchone()[0]
            except sqlite3.Error as exc:
                raise QueueError(f"queue {self.path}: stats failed: {exc}") from exc
            return QueueStats(self._depth, oldest, self._dropped_full, self._dropped_expired)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> DiskQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- helpers --------------------------------------------------------------------

    def _batch(self, device: str, seq: int, rows: Sequence[tuple[int, int, float]]) -> Batch:
        names = self._metric_names
        return Batch(self.site, device, seq,
                     tuple(Reading(names[m], t, v) for m, t, v in rows))

    def _forget(self, deleted: Sequence[tuple[int, int | None]]) -> None:
        """Deleted rows that were not handed out leave the pending counts."""
        for device_id, seq in deleted:
            if seq is None:
                self._consume(device_id, 1)

    def _consume(self, device_id: int, n: int) -> None:
        """``n`` of the device's pending readings are gone (taken or dropped): the oldest."""
        left = self._pending[device_id] - n
        if left <= 0:
            del self._pending[device_id]
            del self._arrived[device_id]
            return
        self._pending[device_id] = left
        arrived = self._arrived[device_id]
        while n:
            first = arrived[0]
            used = min(n, int(first[1]))
            first[1] -= used
            n -= used
            if not first[1]:
                arrived.popleft()

    @staticmethod
    def _count(db: sqlite3.Connection, *, full: int = 0, expired: int = 0) -> None:
        updates = [(name, n) for name, n in (("dropped_full", full),
                                             ("dropped_expired", expired)) if n]
        if not updates:
            return
        db.executemany("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) "
                       "DO UPDATE SET value = value + excluded.value", updates)
