"""The ingest transaction: everything a window of messages changes, committed at once.

1. ``ingest_batches`` takes each (device, seq); a batch already there is a re-delivery
   and none of its rows or rejects are written again.
2. The rows of new batches go into ``readings``. Strategy ``copy`` (default) writes them
   by binary COPY straight into the hypertable inside a savepoint; should a row already be
   there (the same reading re-sent in another batch), the savepoint is rolled back and the
   rows go the ``staging`` way: binary COPY into a temporary table, then INSERT ... ON
   CONFLICT DO NOTHING RETURNING, which yields exactly the rows inserted.
3. The rollups are upserted from exactly the inserted rows.
4. Device status (sequence range, counts, last seen) and birth/last-will states.
5. Rejects, each once (by fingerprint).

Only after the commit does the caller acknowledge the messages, so a crash anywhere
leaves them unacknowledged, to be delivered again and recognised in step 1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import psycopg
from psycopg import errors as pgerrors

from tidefield.server.db import binary

from .pipeline import BatchRef, Prepared, Reject
from .rollups import BUCKETS_MS, aggregate

Cursor = psycopg.Cursor[Any]
Columns = tuple[np.ndarray, np.ndarray, np.ndarray]  # series ids, times (ms), values

log = logging.getLogger(__name__)


class LoadStrategy(StrEnum):
    COPY = "copy"
    STAGING = "staging"


@dataclass(frozen=True, slots=True)
class WriteResult:
    batches_new: int
    batches_duplicate: int
    readings_inserted: int
    readings_duplicate: int
    rejects: int


_SETUP = """
CREATE TEMP TABLE IF NOT EXISTS stage_readings
    (series_id integer, time timestamptz, value double precision) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_rollup
    (series_id integer, bucket timestamptz, count bigint, sum double precision,
     min double precision, max double precision, last double precision,
     last_time timestamptz) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_rejects
    (received_ms bigint, topic text, payload bytea, reason text, detail text,
     device_id text, fingerprint bytea, messages integer) ON COMMIT DELETE ROWS;
"""

_UPSERT_ROLLUP = """
INSERT INTO {table} AS r (series_id, bucket, count, sum, min, max, last, last_time)
SELECT series_id, bucket, count, sum, min, max, last, last_time FROM stage_rollup
ORDER BY series_id, bucket
ON CONFLICT (series_id, bucket) DO UPDATE SET
    count = r.count + EXCLUDED.count,
    sum = r.sum + EXCLUDED.sum,
    min = LEAST(r.min, EXCLUDED.min),
    max = GREATEST(r.max, EXCLUDED.max),
    last = CASE WHEN EXCLUDED.last_time >= r.last_time THEN EXCLUDED.last ELSE r.last END,
    last_time = GREATEST(r.last_time, EXCLUDED.last_time)
"""

_READINGS_TYPES = ["int4", "timestamptz", "float8"]


class Store:
    def __init__(self, conn: psycopg.Connection,
                 strategy: LoadStrategy = LoadStrategy.COPY) -> None:
        self.conn = conn
        self.strategy = LoadStrategy(strategy)
        with conn.transaction():
            conn.execute(_SETUP)

    def write(self, prepared: Prepared) -> WriteResult:
        conn = self.conn
        with conn.transaction(), conn.cursor() as cur:
            new_batches = self._claim_batches(cur, prepared)
            keep = np.zeros(len(prepared.series_id), dtype=bool)
            for batch in new_batches:
                keep[batch.start:batch.end] = True
            sid, tms, val = (prepared.series_id[keep], prepared.time_ms[keep],
                             prepared.value[keep])
            inserted = self._insert_readings(cur, sid, tms, val)
            for name, bucket_ms in BUCKETS_MS.items():
                self._upsert_rollup(cur, f"readings_{name}", *inserted, bucket_ms)
            self._update_device_status(cur, new_batches)
            self._apply_statuses(cur, prepared)
            rejects = [*prepared.rejects, *(r for b in new_batches for r in b.rejects)]
            self._insert_rejects(cur, rejects)
        n_inserted = len(inserted[0])
        return WriteResult(len(new_batches), len(prepared.batches) - len(new_batches),
                           n_inserted, len(sid) - n_inserted, len(rejects))

    def write_history(self, sid: np.ndarray, tms: np.ndarray, val: np.ndarray) -> int:
        """Rows that came from no message (a simulated backfill, an import): readings and
        rollups only, no batch claims or device status, so they never stand in the way of
        a device's own sequence numbers. Rows already stored are skipped. Returns how many
        were inserted."""
        with self.conn.transaction(), self.conn.cursor() as cur:
            inserted = self._insert_readings(cur, sid, tms, val)
            for name, bucket_ms in BUCKETS_MS.items():
                self._upsert_rollup(cur, f"readings_{name}", *inserted, bucket_ms)
        return len(inserted[0])

    # --- steps ----------------------------------------------------------------------
    def _claim_batches(self, cur: Cursor, prepared: Prepared) -> list[BatchRef]:
        if not prepared.batches:
            return []
        # %b: arrays in binary, with no quoting test per element (which text[] costs)
        rows = cur.execute(
            """INSERT INTO ingest_batches (device_id, seq, readings, received_at)
               SELECT d, s, n, to_timestamp(r / 1000.0)
               FROM unnest(%b::text[], %b::int8[], %b::int4[], %b::int8[]) AS t(d, s, n, r)
               ON CONFLICT DO NOTHING RETURNING device_id, seq""",
            ([b.device_id for b in prepared.batches], [b.seq for b in prepared.batches],
             [b.end - b.start for b in prepared.batches],
             [b.received_ms for b in prepared.batches])).fetchall()
        claimed = set(rows)
        return [b for b in prepared.batches if (b.device_id, b.seq) in claimed]

    def _insert_readings(self, cur: Cursor, sid: np.ndarray, tms: np.ndarray, val: np.ndarray
                         ) -> Columns:
        """Insert rows, skipping any already stored; return the rows really inserted."""
        if len(sid) == 0:
            return sid, tms, val
        data = binary.encode([(sid, "int4"), (binary.ms_to_pg_us(tms), "timestamptz"),
                              (val, "float8")])
        if self.strategy is LoadStrategy.COPY:
            try:
                with self.conn.transaction(), cur.copy(  # the transaction is a savepoint
                        "COPY readings (series_id, time, value) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.write(data)
                return sid, tms, val
            except pgerrors.UniqueViolation:
                log.debug("readings already stored; falling back to the staging path")
        with cur.copy("COPY stage_readings FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(data)
        cur.execute("""INSERT INTO readings (series_id, time, value)
                       SELECT series_id, time, value FROM stage_readings
                       ON CONFLICT DO NOTHING RETURNING series_id, time, value""")
        rows = cur.fetchall()
        if not rows:
            return sid[:0], tms[:0], val[:0]
        r_sid, r_time, r_val = zip(*rows, strict=True)
        r_ms = np.array([int(t.timestamp() * 1000) for t in r_time], dtype=np.int64)
        return (np.array(r_sid, dtype=np.int32), r_ms, np.array(r_val, dtype=np.float64))

    def _upsert_rollup(self, cur: Cursor, table: str, sid: np.ndarray, tms: np.ndarray,
                       val: np.ndarray, bucket_ms: int) -> None:
        if len(sid) == 0:
            return
        rows = aggregate(sid, tms, val, bucket_ms)
        data = binary.encode([
            (rows.series_id, "int4"), (binary.ms_to_pg_us(rows.bucket_ms), "timestamptz"),
            (rows.count, "int8"), (rows.sum, "float8"), (rows.min, "float8"),
            (rows.max, "float8"), (rows.last, "float8"),
            (binary.ms_to_pg_us(rows.last_time_ms), "timestamptz")])
        cur.execute("TRUNCATE stage_rollup")
        with cur.copy("COPY stage_rollup FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(data)
        cur.execute(_UPSERT_ROLLUP.format(table=table))

    def _update_device_status(self, cur: Cursor, batches: list[BatchRef]) -> None:
        if not batches:
            return
        per_device: dict[str, list] = {}
        for b in batches:
            d = per_device.get(b.device_id)
            n, last = b.end - b.start, b.last_reading_ms
            if d is None:
                per_device[b.device_id] = [b.seq, b.seq, 1, n, last, b.received_ms,
                                           len(b.rejects)]
            else:
                d[0], d[1] = min(d[0], b.seq), max(d[1], b.seq)
                d[2] += 1
                d[3] += n
                d[4], d[5] = max(d[4], last), max(d[5], b.received_ms)
                d[6] += len(b.rejects)
        ids = sorted(per_device)  # a fixed lock order across workers
        cols = list(zip(*(per_device[i] for i in ids), strict=True))
        cur.execute(
            """INSERT INTO device_status AS s (device_id, min_seq, max_seq, batches, readings,
                                               last_reading, last_seen, rejected)
               SELECT d, lo, hi, nb, nr,
                      CASE WHEN lr >= 0 THEN to_timestamp(lr / 1000.0) END,
                      to_timestamp(ls / 1000.0), rj
               FROM unnest(%b::text[], %b::int8[], %b::int8[], %b::int8[], %b::int8[],
                           %b::int8[], %b::int8[], %b::int8[])
                    AS t(d, lo, hi, nb, nr, lr, ls, rj)
               ORDER BY d
               ON CONFLICT (device_id) DO UPDATE SET
                 min_seq = LEAST(s.min_seq, EXCLUDED.min_seq),
                 max_seq = GREATEST(s.max_seq, EXCLUDED.max_seq),
                 batches = s.batches + EXCLUDED.batches,
                 readings = s.readings + EXCLUDED.readings,
                 rejected = s.rejected + EXCLUDED.rejected,
                 last_reading = GREATEST(s.last_reading, EXCLUDED.last_reading),
                 last_seen = GREATEST(s.last_seen, EXCLUDED.last_seen)""",
            (ids, *map(list, cols)))

    def _apply_statuses(self, cur: Cursor, prepared: Prepared) -> None:
        """Birth and last will; the newest message wins, whatever order they arrive in
        (retained ones are delivered again at every reconnect)."""
        for status in sorted(prepared.statuses, key=lambda s: (s.device, s.time_ms)):
            online = status.state == "online"
            cur.execute(
                """INSERT INTO device_status AS s (device_id, state, state_changed, birth_at,
                                                   will_at, reported_interval_s)
                   SELECT %(d)s, %(state)s, to_timestamp(%(t)s / 1000.0),
                          CASE WHEN %(online)s THEN to_timestamp(%(t)s / 1000.0) END,
                          CASE WHEN NOT %(online)s THEN to_timestamp(%(t)s / 1000.0) END,
                          %(interval)s
                   WHERE EXISTS (SELECT 1 FROM devices WHERE id = %(d)s)
                   ON CONFLICT (device_id) DO UPDATE SET
                     state = EXCLUDED.state, state_changed = EXCLUDED.state_changed,
                     birth_at = COALESCE(EXCLUDED.birth_at, s.birth_at),
                     will_at = COALESCE(EXCLUDED.will_at, s.will_at),
                     reported_interval_s = COALESCE(EXCLUDED.reported_interval_s,
                                                    s.reported_interval_s)
                   WHERE s.state_changed IS NULL OR EXCLUDED.state_changed >= s.state_changed""",
                {"d": status.device, "state": str(status.state), "t": status.time_ms,
                 "online": online, "interval": status.interval_s})

    def _insert_rejects(self, cur: Cursor, rejects: list[Reject]) -> None:
        """COPY then INSERT: a flood of bad input must not slow ingest to a crawl."""
        if not rejects:
            return
        with cur.copy("COPY stage_rejects FROM STDIN") as copy:
            for r in rejects:
                copy.write_row((r.received_ms, r.topic, r.payload, r.reason, r.detail,
                                r.device_id, r.fingerprint, r.messages))
        cur.execute("""INSERT INTO ingest_rejects (received_at, topic, payload, reason, detail,
                                                   device_id, fingerprint, messages)
                       SELECT to_timestamp(received_ms / 1000.0), topic, payload, reason,
                              detail, device_id, fingerprint, messages FROM stage_rejects
                       ON CONFLICT (fingerprint) DO NOTHING""")
