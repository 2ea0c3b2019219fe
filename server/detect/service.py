"""The detector service (``tidefield detect run``): stored readings in, anomalies and
alerts out, state checkpointed with them.

**Finding new readings.** Readings reach the database in two ways that ``ingest_batches``
alone does not show: ``tidefield up`` writes simulated history straight into ``readings``,
and edge agents deliver backlogs late with their original timestamps. So the service
keeps a time watermark W per partition and, each step, reads the readings with time in
(W - overlap, E] by binary COPY (E at most ``now - lag``, so batches still in flight land
first), dropping those at or before their series' last scored time (kept in the detector
state). Series silent behind the watermark are probed now and then from their own last
time, which finds a backlog delivered hours late. Catch-up over days of history runs in
steps of ``detect_step_minutes`` (at most ``detect_max_rows`` readings), so memory stays
flat.

**Exactly once, across crashes.** The timeline is cut at fixed instants (every
``detect_slice_s``, on a grid from the epoch): the readings of a slice are scored and
run through the rules, silence is checked at the cut, and the rule transitions become
alert operations there. A step groups whole slices, and its anomalies, alert changes and
checkpoint (watermark, detector and rule state) are written in one transaction. So what
is stored depends only on the data, never on where steps or restarts fell: a process
stopped by SIGTERM, or killed with -9 mid-step, continues from its last commit and writes
what an uninterrupted run would have.

**Alerts.** ``DatabaseSink`` applies the ``AlertBook``'s operations to ``alerts`` and
``alert_events`` (actor ``detector``): one active row per condition (the
``alerts_one_active`` index), updated in place (value, peak, updated_at) and closed when
the condition clears; an operator's acknowledgement is never touched, and an acknowledged
alert still closes. The events table is the outbox of MQTT notices on
``tf/v1/{site}/alerts``: published after the commit, QoS 1, remembered by id.

**Partitions.** ``--partition i/n`` takes the sites with crc32(site id) mod n = i: the
same-site check needs every sensor of a site in one process.
"""

from __future__ import annotations

import io
import logging
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg

from tidefield.protocol.catalog import METRICS
from tidefield.protocol.messages import AlertAction, AlertNotice
from tidefield.server.db import binary, scalar
from tidefield.server.settings import DetectorSettings

from ._layout import CATEGORIES, COMPONENTS
from .alerts import ACTOR, Alert, AlertBook, AlertKey, AlertOp, Engine, finite_or_none
from .detector import Detector, SeriesInfo
from .maintenance import MaintenanceHold
from .rules import load_rules
from .tuning import DetectorParams

if TYPE_CHECKING:
    from .alert_publisher import AlertPublisher

log = logging.getLogger(__name__)

RETRY_S = 5.0  # wait before reconnecting after the database went away
PUBLISH_BATCH = 1000  # most notices offered to the broker per step
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class ServiceError(RuntimeError):
    """The service cannot run as configured; the message says why."""


def _ts(ms: float | int | None) -> datetime | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // _MS


# --- partitions and series ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Partition:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Partition:
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise ServiceError(f"partition {text!r} must look like i/n, e.g. 0/2") from None
        if not (count >= 1 and 0 <= index < count):
            raise ServiceError(f"partition {text!r}: need 0 <= i < n")
        return cls(index, count)

    def owns(self, site_id: str) -> bool:
        return zlib.crc32(site_id.encode()) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def load_series(conn: psycopg.Connection, partition: Partition) -> list[SeriesInfo]:
    """The partition's series, in id order; series of metrics the catalog does not know
    are left out with a warning (the detector has no limits for them)."""
    rows = conn.execute(
        """SELECT s.id, d.site_id, s.device_id, s.metric, d.interval_s, d.template, si.kind
           FROM series s JOIN devices d ON d.id = s.device_id JOIN sites si ON si.id = d.site_id
           WHERE d.retired_at IS NULL  -- retired: no data expected, no alert wanted
           ORDER BY s.id""").fetchall()
    series = []
    for sid, site, device, metric, interval_s, template, kind in rows:
        if not partition.owns(site):
            continue
        if metric not in METRICS:
            log.warning("series of an unknown metric is not scored",
                        extra={"series": sid, "metric": metric})
            continue
        series.append(SeriesInfo(sid, site, device, metric, float(interval_s), template, kind))
    return series


# --- checkpoints ------------------------------------------------------------------------

def encode_state(engine: Engine) -> bytes:
    arrays = engine.state_arrays()
    arrays["series_keys"] = np.array([info.key for info in engine.detector.series],
                                     dtype=np.int64)
    arrays["rule_keys"] = _rule_keys(engine)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # names -> arrays, as savez takes
    # level 1: a third of the size at a tenth of savez_compressed's time (it is paid on
    # every step)
    return zlib.compress(buffer.getvalue(), 1)


def _rule_keys(engine: Engine) -> np.ndarray:
    series = engine.detector.series
    return np.array([f"{inst.rule}:{series[inst.row].key}" for inst in engine.rules.instances],
                    dtype=np.str_)


def load_state(engine: Engine, data: bytes) -> bool:
    """Restore ``engine`` from a checkpoint; True when it was taken over the same series
    and rules. When the registry or the rules changed since, the state of the series and
    rule instances still there is carried over and the rest starts fresh (False)."""
    with np.load(io.BytesIO(zlib.decompress(data))) as saved:
        saved = {name: saved[name] for name in saved.files}
    width = engine.detector.state.shape[1]
    taken_width = saved["state"].shape[1]
    if taken_width < width:
        # taken before the detector's state grew (columns are only ever appended,
        # ``_layout.STATE_COLUMNS``): the old ones carry over, the new ones start as a
        # fresh series' would
        grown, _ = Detector.initial_state(saved["state"].shape[0])
        grown[:, :saved["state"].shape[1]] = saved["state"]
        saved["state"] = grown
    keys = np.array([info.key for info in engine.detector.series], dtype=np.int64)
    rule_keys = _rule_keys(engine)
    if (np.array_equal(saved["series_keys"], keys)
            and np.array_equal(saved["rule_keys"], rule_keys)
            and saved["groups"].shape == engine.detector.groups.shape):
        engine.load_state(saved)
        engine.detector.upgrade_state(taken_width)
        return True
    fresh = engine.state_arrays()
    old_row = {int(k): i for i, k in enumerate(saved["series_keys"])}
    for i, key in enumerate(keys):
        j = old_row.get(int(key))
        if j is not None:
            fresh["state"][i] = saved["state"][j]
            fresh["profile"][i] = saved["profile"][j]
    old_rule = {str(k): i for i, k in enumerate(saved["rule_keys"])}
    for i, key in enumerate(rule_keys):
        j = old_rule.get(str(key))
        if j is not None:
            fresh["rules"][i] = saved["rules"][j]
    engine.load_state(fresh)  # cross-site group medians relearn within the hour
    engine.detector.upgrade_state(taken_width)
    return False


@dataclass(slots=True)
class Checkpoint:
    watermark_ms: int
    state: bytes | None
    published_event_id: int


def read_checkpoint(conn: psycopg.Connection, partition: Partition) -> Checkpoint | None:
    row = conn.execute("SELECT watermark, state, published_event_id FROM detector_checkpoints "
                       "WHERE partition = %s", (str(partition),)).fetchone()
    if row is None:
        return None
    return Checkpoint(_ms(row[0]), bytes(row[1]), row[2])


def write_checkpoint(conn: psycopg.Connection, partition: Partition, watermark_ms: int,
                     state: bytes, published_event_id: int) -> None:
    conn.execute(
        """INSERT INTO detector_checkpoints (partition, watermark, state, published_event_id)
           VALUES (%s, %s, %s, %s)
           ON CONFLICT (partition) DO UPDATE SET watermark = EXCLUDED.watermark,
             state = EXCLUDED.state, updated_at = now()""",
        (str(partition), _ts(watermark_ms), state, published_event_id))


# --- reading readings ---------------------------------------------------------------------

_READING_COLUMNS = [("series_id", "int4"), ("time", "timestamptz"), ("value", "float8")]


def _fetch(conn: psycopg.Connection, query: str, params: Sequence[Any]) -> list[np.ndarray]:
    sid, pg_us, value = binary.fetch_columns(conn, query, params, _READING_COLUMNS)
    return [sid, binary.pg_us_to_ms(pg_us), value]


def read_window(conn: psycopg.Connection, series_ids: list[int], after_ms: int,
                until_ms: int) -> list[np.ndarray]:
    """Readings of these series with time in (after_ms, until_ms], unordered."""
    return _fetch(conn, """SELECT series_id, time, value FROM readings
                           WHERE series_id = ANY(%s) AND time > %s AND time <= %s""",
                  (series_ids, _ts(after_ms), _ts(until_ms)))


def read_since(conn: psycopg.Connection, series_ids: np.ndarray, since_ms: np.ndarray,
               until_ms: int) -> list[np.ndarray]:
    """Readings of each series after its own time, up to until_ms: one index probe each."""
    return _fetch(conn, """SELECT r.series_id, r.time, r.value
                           FROM unnest(%s::int4[], %s::int8[]) AS l(sid, since_ms)
                           JOIN readings r ON r.series_id = l.sid
                            AND r.time > 'epoch'::timestamptz
                                         + l.since_ms * interval '1 millisecond'
                            AND r.time <= %s""",
                  ([int(s) for s in series_ids], [int(t) for t in since_ms], _ts(until_ms)))


# --- alerts in the database -------------------------------------------------------------

_ALERT_ROW = """SELECT id, site_id, device_id, series_id, rule, category, severity, message,
                       opened_at, updated_at, value, peak_value FROM alerts"""


def active_alerts(conn: psycopg.Connection, sites: list[str]) -> list[Alert]:
    rows = conn.execute(_ALERT_ROW + " WHERE state <> 'closed' AND site_id = ANY(%s) "
                        "ORDER BY id", (sites,)).fetchall()
    return [Alert(AlertKey(site, rule, device, series), category, severity, message,
                  _ms(opened), _ms(updated), value, peak, id=alert_id)
            for alert_id, site, device, series, rule, category, severity, message, opened,
            updated, value, peak in rows]


class DatabaseSink:
    """``AlertSink`` over ``alerts`` and ``alert_events``: ``apply`` collects a step's
    operations, ``flush`` writes them inside the caller's transaction.

    Rows are written once per step with the alert's latest values; every open and close
    is an event, an update at most every ``update_every_ms`` of data time per alert (at
    one-minute slices an hour-long hypoxia would otherwise leave 60 events). Event times
    are data times, so a replay writes the same history.
    """

    def __init__(self, update_every_ms: int, last_event_ms: dict[AlertKey, int] | None = None
                 ) -> None:
        self.update_every_ms = update_every_ms
        self.last_event_ms: dict[AlertKey, int] = dict(last_event_ms or {})
        self.pending: list[AlertOp] = []

    @classmethod
    def restored(cls, conn: psycopg.Connection, update_every_ms: int,
                 active: list[Alert]) -> DatabaseSink:
        ids = [a.id for a in active]
        last: dict[int, datetime] = dict(conn.execute(
            "SELECT alert_id, max(at) FROM alert_events WHERE alert_id = ANY(%s) AND "
            "actor = %s AND action IN ('opened', 'updated') GROUP BY alert_id",
            (ids, ACTOR)).fetchall())
        return cls(update_every_ms, {a.key: _ms(last[a.id]) for a in active if a.id in last})

    def apply(self, ops: list[AlertOp]) -> None:
        self.pending.extend(ops)

    def flush(self, conn: psycopg.Connection) -> int:
        """Write the collected operations; returns how many events were recorded."""
        ops, self.pending = self.pending, []
        if not ops:
            return 0
        touched: dict[int, Alert] = {}
        events: list[tuple[Alert, str, int, float | None]] = []
        for op in ops:
            alert = op.alert
            touched.setdefault(id(alert), alert)
            if op.action == "updated":
                last = self.last_event_ms.get(alert.key)
                if last is not None and op.time_ms - last < self.update_every_ms:
                    continue
            events.append((alert, op.action, op.time_ms, op.value))
            if op.action == "closed":
                self.last_event_ms.pop(alert.key, None)
            else:
                self.last_event_ms[alert.key] = op.time_ms
        with conn.cursor() as cur:
            updates = []
            for alert in touched.values():
                if alert.id is None:
                    self._insert(cur, alert)
                else:
                    updates.append(self._update_params(alert))
            if updates:
                cur.executemany(
                    """UPDATE alerts SET updated_at = %s, value = %s, peak_value = %s,
                         state = CASE WHEN %s::timestamptz IS NULL THEN state
                                      ELSE 'closed' END,
                         closed_at = coalesce(%s, closed_at)
                       WHERE id = %s""", updates)
            cur.executemany(
                "INSERT INTO alert_events (alert_id, at, action, actor, value) "
                "VALUES (%s, %s, %s, %s, %s)",
                [(alert.id, _ts(at), action, ACTOR, finite_or_none(value))
                 for alert, action, at, value in events])
        return len(events)

    @staticmethod
    def _update_params(alert: Alert) -> tuple:
        closed = _ts(alert.closed_ms)
        return (_ts(alert.updated_ms), finite_or_none(alert.value),
                finite_or_none(alert.peak), closed, closed, alert.id)

    def _insert(self, cur: psycopg.Cursor[Any], alert: Alert) -> None:
        key = alert.key
        row = cur.execute(
            """INSERT INTO alerts (site_id, device_id, series_id, rule, category, severity,
                                   state, message, opened_at, updated_at, closed_at, value,
                                   peak_value)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (site_id, rule, coalesce(device_id, ''), coalesce(series_id, 0))
                 WHERE state <> 'closed' DO NOTHING
               RETURNING id""",
            (key.site_id, key.device_id, key.series_key, key.rule, alert.category,
             alert.severity, "closed" if alert.closed_ms is not None else "open",
             alert.message, _ts(alert.opened_ms), _ts(alert.updated_ms), _ts(alert.closed_ms),
             finite_or_none(alert.value), finite_or_none(alert.peak))).fetchone()
        if row is not None:
            alert.id = row[0]
            return
        # An alert of this condition is already active (left by an earlier run whose
        # state was lost): this episode continues it rather than opening a second one.
        alert.id = scalar(cur.execute(
            """SELECT id FROM alerts WHERE site_id = %s AND rule = %s
                 AND coalesce(device_id, '') = coalesce(%s, '')
                 AND coalesce(series_id, 0) = coalesce(%s, 0) AND state <> 'closed'""",
            (key.site_id, key.rule, key.device_id, key.series_key)))
        cur.execute("""UPDATE alerts SET updated_at = %s, value = %s, peak_value = %s,
                         state = CASE WHEN %s::timestamptz IS NULL THEN state
                                      ELSE 'closed' END,
                         closed_at = coalesce(%s, closed_at)
                       WHERE id = %s""", self._update_params(alert))


def pending_notices(conn: psycopg.Connection, sites: list[str], after_event_id: int,
                    limit: int = PUBLISH_BATCH) -> list[AlertNotice]:
    rows = conn.execute(
        """SELECT e.id, e.alert_id, e.action, e.at, e.value, a.site_id, a.device_id,
                  a.series_id, a.rule, a.category, a.severity, a.state, a.message,
                  a.opened_at, a.closed_at, a.peak_value
           FROM alert_events e JOIN alerts a ON a.id = e.alert_id
           WHERE e.id > %s AND e.actor = %s AND a.site_id = ANY(%s)
           ORDER BY e.id LIMIT %s""", (after_event_id, ACTOR, sites, limit)).fetchall()
    return [AlertNotice(event_id=r[0], alert_id=r[1], action=AlertAction(r[2]), site=r[5],
                        device=r[6], series_id=r[7], rule=r[8], category=r[9], severity=r[10],
                        state=r[11], message=r[12], time_ms=_ms(r[3]), opened_ms=_ms(r[13]),
                        closed_ms=_ms(r[14]) if r[14] is not None else None, value=r[4],
                        peak=r[15]) for r in rows]


# --- anomalies ----------------------------------------------------------------------------

_STAGE_ANOMALIES = """CREATE TEMP TABLE IF NOT EXISTS stage_anomalies
    (series_id int4, time timestamptz, value float8, score float8, component int4,
     category int4) ON COMMIT DELETE ROWS"""


def write_anomalies(conn: psycopg.Connection, sid: np.ndarray, tms: np.ndarray,
                    value: np.ndarray, score: np.ndarray, component: np.ndarray,
                    category: np.ndarray) -> None:
    """Insert (re-scored readings overwrite: the primary key is (series, time))."""
    if sid.shape[0] == 0:
        return
    data = binary.encode([(sid.astype(np.int32), "int4"),
                          (binary.ms_to_pg_us(tms), "timestamptz"), (value, "float8"),
                          (score.astype(np.float64), "float8"),
                          (component.astype(np.int32), "int4"),
                          (category.astype(np.int32), "int4")])
    with conn.cursor() as cur:
        cur.execute(_STAGE_ANOMALIES)
        with cur.copy("COPY stage_anomalies FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(data)
        cur.execute(
            """INSERT INTO anomalies (series_id, time, value, score, component, category)
               SELECT series_id, time, value, score::real, (%s::text[])[component + 1],
                      (%s::text[])[category + 1]
               FROM stage_anomalies
               ON CONFLICT (series_id, time) DO UPDATE SET value = EXCLUDED.value,
                 score = EXCLUDED.score, component = EXCLUDED.component,
                 category = EXCLUDED.category""", (list(COMPONENTS), list(CATEGORIES)))


# --- the service --------------------------------------------------------------------------

@dataclass
class StepResult:
    readings: int
    anomalies: int
    events: int
    watermark_ms: int


class DetectorService:
    """One partition's detector. ``run`` loops until ``stop`` is set (or, with
    ``until_ms``, until every reading up to it is scored)."""

    def __init__(self, settings: DetectorSettings, partition: Partition = Partition(0, 1), *,
                 since_ms: int | None = None, until_ms: int | None = None,
                 params: DetectorParams | None = None,
                 publisher: AlertPublisher | None = None) -> None:
        if not settings.database_url:
            raise ServiceError("no database: set TIDEFIELD_DATABASE_URL")
        self.database_url = settings.database_url
        self.settings = settings
        self.partition = partition
        self.since_ms = since_ms
        self.until_ms = until_ms
        self.params = params
        self.ruleset = load_rules(settings.detect_rules)
        self.slice_ms = settings.detect_slice_s * 1000
        self.step_ms = max(self.slice_ms,
                           int(settings.detect_step_minutes * 60_000) // self.slice_ms
                           * self.slice_ms)
        self.publisher = publisher
        self.maintenance = MaintenanceHold()
        self.readings_scored = 0
        self.busy_s = 0.0

    # --- time grid ---------------------------------------------------------------------

    def _floor(self, t_ms: float) -> int:
        return int(t_ms // self.slice_ms * self.slice_ms)

    def _horizon(self) -> int:
        now = time.time() * 1000 - self.settings.detect_lag_s * 1000
        if self.until_ms is not None:
            now = min(now, self.until_ms)
        return self._floor(now)

    # --- set-up ------------------------------------------------------------------------

    def _start(self, conn: psycopg.Connection
               ) -> tuple[Engine, AlertBook, DatabaseSink, int, int]:
        series = load_series(conn, self.partition)
        if not series:
            raise ServiceError(f"partition {self.partition} has no series to score")
        engine = Engine(Detector(series, self.params), self.ruleset)
        checkpoint = read_checkpoint(conn, self.partition)
        if checkpoint is not None:
            if checkpoint.state is None or not load_state(engine, checkpoint.state):
                log.warning("registry or rules changed since the checkpoint; state of "
                            "series and rules that remain carried over",
                            extra={"partition": str(self.partition)})
            watermark = checkpoint.watermark_ms
            published = checkpoint.published_event_id
        else:
            watermark = self._first_watermark(conn)
            published = scalar(conn.execute("SELECT coalesce(max(id), 0) FROM alert_events"))
            with conn.transaction():
                write_checkpoint(conn, self.partition, watermark, encode_state(engine),
                                 published)
        self.sites = sorted({info.site_id for info in series})
        self.keys = [info.key for info in series]
        active = active_alerts(conn, self.sites)
        book = AlertBook(engine, active)
        sink = DatabaseSink.restored(conn, int(self.settings.detect_update_every_s * 1000),
                                     active)
        orphans = [a for a in book.active.values() if not a.members]
        if orphans:
            # active in the table but held by no rule instance (state lost or reset):
            # nothing would ever close them
            for alert in orphans:
                alert.closed_ms = max(alert.updated_ms, watermark)
                del book.active[alert.key]
                sink.apply([AlertOp("closed", alert, alert.closed_ms, alert.value)])
            with conn.transaction():
                sink.flush(conn)
            log.warning("closed alerts no rule state holds open",
                        extra={"alerts": len(orphans)})
        log.info("detector started", extra={
            "partition": str(self.partition), "series": len(series),
            "rule_instances": len(engine.rules.instances), "watermark": _ts(watermark),
            "active_alerts": len(book.active)})
        return engine, book, sink, watermark, published

    def _first_watermark(self, conn: psycopg.Connection) -> int:
        if self.since_ms is not None:
            return self._floor(self.since_ms - 1)  # readings at since_ms are scored
        now_ms = time.time() * 1000
        earliest = now_ms - self.settings.detect_history_days * 86_400_000
        # the hourly rollup is small, so finding the oldest history is cheap
        oldest = scalar(conn.execute("SELECT min(bucket) FROM readings_1h WHERE bucket >= %s",
                                     (_ts(self._floor(earliest)),)))
        if oldest is None:
            return self._horizon()
        return self._floor(max(earliest, _ms(oldest)) - 1)

    # --- the loop ----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                if self._session(stop):
                    return
            except psycopg.OperationalError as exc:
                log.warning("database unavailable; resuming from the checkpoint",
                            extra={"error": str(exc).splitlines()[0] if str(exc) else ""})
                stop.wait(RETRY_S)

    def _session(self, stop: threading.Event) -> bool:
        """Run from the last checkpoint; True when done (``until_ms`` reached)."""
        # autocommit: each ``conn.transaction()`` below is a real transaction (inside an
        # implicit one it would only be a savepoint, and nothing would commit per step)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            engine, book, sink, watermark, published = self._start(conn)
            next_late_scan = 0.0
            while not stop.is_set():
                horizon = self._horizon()
                if horizon <= watermark:
                    if self.until_ms is not None and watermark >= self._floor(self.until_ms):
                        published = self._publish(conn, published)
                        return True
                    published = self._publish(conn, published)
                    stop.wait(self.settings.detect_poll_s)
                    continue
                end = min(horizon, watermark + self.step_ms)
                late = end == horizon and time.monotonic() >= next_late_scan
                if late:
                    next_late_scan = time.monotonic() + self.settings.detect_late_scan_s
                result = self._step(conn, engine, book, sink, watermark, end, late)
                watermark = result.watermark_ms
                published = self._publish(conn, published)
        return False

    def _read(self, conn: psycopg.Connection, engine: Engine, watermark: int, end: int,
              late: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        overlap_ms = int(self.settings.detect_overlap_s * 1000)
        sid, tms, val = read_window(conn, self.keys, watermark - overlap_ms, end)
        detector = engine.detector
        last = detector.last_times()
        if late:
            behind = watermark - overlap_ms
            lagging = np.flatnonzero(last < behind)
            if lagging.size:
                floor = behind - int(self.settings.detect_late_days * 86_400_000)
                since = np.maximum(last[lagging], floor).astype(np.int64)
                keys = np.array(self.keys, dtype=np.int64)[lagging]
                more = read_since(conn, keys, since, behind)
                if more[0].size:
                    log.info("late readings found", extra={"readings": int(more[0].size)})
                    sid, tms, val = (np.concatenate([a, b]) for a, b in
                                     zip((sid, tms, val), more, strict=True))
        rows = detector.rows_of(sid)
        fresh = tms > last[rows]
        sid, rows, tms, val = sid[fresh], rows[fresh], tms[fresh], val[fresh]
        order = np.lexsort((sid, tms))  # time order, ties by series id
        return sid[order], rows[order], tms[order], val[order]

    def _step(self, conn: psycopg.Connection, engine: Engine, book: AlertBook,
              sink: DatabaseSink,
              watermark: int, end: int, late: bool) -> StepResult:
        while True:
            sid, rows, tms, val = self._read(conn, engine, watermark, end, late)
            if sid.shape[0] <= self.settings.detect_max_rows or end - watermark <= self.slice_ms:
                break
            end = watermark + max(self.slice_ms, self._floor((end - watermark) // 2))
        began = time.perf_counter()
        n = sid.shape[0]
        score = np.zeros(n, dtype=np.float32)
        component = np.zeros(n, dtype=np.int8)
        category = np.zeros(n, dtype=np.int8)
        self.maintenance.refresh(conn, self.sites, end)
        cuts = np.arange(watermark + self.slice_ms, end + 1, self.slice_ms, dtype=np.int64)
        bounds = np.searchsorted(tms, cuts, side="right")
        lo = 0
        for cut, hi in zip(cuts.tolist(), bounds.tolist(), strict=True):
            scores, transitions = engine.process(rows[lo:hi], tms[lo:hi], val[lo:hi])
            score[lo:hi], component[lo:hi], category[lo:hi] = (
                scores.score, scores.component, scores.category)
            transitions += engine.tick(cut)
            sink.apply(self.maintenance.hold_in_maintenance(book, book.apply(transitions)))
            lo = hi
        keep = (score >= self.settings.detect_threshold) & (category > 0)
        state = encode_state(engine)
        self.busy_s += time.perf_counter() - began
        with conn.transaction():
            write_anomalies(conn, sid[keep], tms[keep], val[keep], score[keep],
                            component[keep], category[keep])
            events = sink.flush(conn)
            write_checkpoint(conn, self.partition, end, state, 0)
        self.readings_scored += n
        log.debug("step", extra={"watermark": _ts(end), "readings": n,
                                 "anomalies": int(keep.sum()), "events": events})
        return StepResult(n, int(keep.sum()), events, end)

    def _publish(self, conn: psycopg.Connection, published: int) -> int:
        if self.publisher is None:
            return published
        notices = pending_notices(conn, self.sites, published)
        if not notices:
            return published
        done = self.publisher.publish(notices)
        if done:
            published = notices[done - 1].event_id
            with conn.transaction():
                conn.execute("UPDATE detector_checkpoints SET published_event_id = %s "
                             "WHERE partition = %s", (published, str(self.partition)))
        return published
