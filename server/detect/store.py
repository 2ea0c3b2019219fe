"""All the detector's SQL: series, checkpoints, readings, alerts and their events,
anomalies, notices. The service calls these inside its own transactions; nothing here
commits (see ``service`` for the order and why it is exactly once).

``DatabaseSink`` applies the alert book's operations to ``alerts`` and ``alert_events``
(actor ``detector``): one active row per condition (the ``alerts_one_active`` index),
updated in place (value, peak, updated_at) and closed when the condition clears; an
operator's acknowledgement is never touched, and an acknowledged alert still closes. The
events table is the outbox of MQTT notices on ``tf/v1/{site}/alerts``.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from tidefield.protocol.catalog import METRICS
from tidefield.protocol.messages import AlertAction, AlertNotice
from tidefield.server.db import binary, scalar

from ._layout import CATEGORIES, COMPONENTS
from .alerts import ACTOR, Alert, AlertKey, AlertOp, finite_or_none
from .detector import Readings, Scores, SeriesInfo
from .rules import Changes

log = logging.getLogger(__name__)

PUBLISH_BATCH = 1000  # most notices offered to the broker per step
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class PartitionError(ValueError):
    """A partition that is not i/n with 0 <= i < n."""


def ts(ms: float | int | None) -> datetime | None:
    """Epoch milliseconds as the database takes them (None stays None)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


def epoch_ms(moment: datetime) -> int:
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
            raise PartitionError(f"partition {text!r} must look like i/n, e.g. 0/2") from None
        if not (count >= 1 and 0 <= index < count):
            raise PartitionError(f"partition {text!r}: need 0 <= i < n")
        return cls(index, count)

    def owns(self, site_id: str) -> bool:
        return zlib.crc32(site_id.encode()) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


EVERY_SITE = Partition(0, 1)  # one process scores them all


def load_series(conn: psycopg.Connection, partition: Partition = EVERY_SITE
                ) -> list[SeriesInfo]:
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
    return Checkpoint(epoch_ms(row[0]), bytes(row[1]), row[2])


def write_checkpoint(conn: psycopg.Connection, partition: Partition, watermark_ms: int,
                     state: bytes, published_event_id: int) -> None:
    conn.execute(
        """INSERT INTO detector_checkpoints (partition, watermark, state, published_event_id)
           VALUES (%s, %s, %s, %s)
           ON CONFLICT (partition) DO UPDATE SET watermark = EXCLUDED.watermark,
             state = EXCLUDED.state, updated_at = now()""",
        (str(partition), ts(watermark_ms), state, published_event_id))


def mark_published(conn: psycopg.Connection, partition: Partition, event_id: int) -> None:
    conn.execute("UPDATE detector_checkpoints SET published_event_id = %s "
                 "WHERE partition = %s", (event_id, str(partition)))


def last_event_id(conn: psycopg.Connection) -> int:
    """The newest alert event's id (0 for none): a first start publishes none before."""
    return int(scalar(conn.execute("SELECT coalesce(max(id), 0) FROM alert_events")))


def oldest_history_ms(conn: psycopg.Connection, since_ms: int) -> int | None:
    """Start of the oldest hour with readings at or after ``since_ms``; None for none."""
    # the hourly rollup is small, so finding the oldest history is cheap
    oldest = scalar(conn.execute("SELECT min(bucket) FROM readings_1h WHERE bucket >= %s",
                                 (ts(since_ms),)))
    return None if oldest is None else epoch_ms(oldest)


# --- reading readings ---------------------------------------------------------------------

_READING_COLUMNS = [("series_id", "int4"), ("time", "timestamptz"), ("value", "float8")]


def _fetch(conn: psycopg.Connection, query: str, params: Sequence[Any]) -> Readings:
    sid, pg_us, value = binary.fetch_columns(conn, query, params, _READING_COLUMNS)
    return Readings(sid, binary.pg_us_to_ms(pg_us), value)


def read_window(conn: psycopg.Connection, series_ids: list[int], after_ms: int,
                until_ms: int) -> Readings:
    """Readings of these series with time in (after_ms, until_ms], unordered."""
    return _fetch(conn, """SELECT series_id, time, value FROM readings
                           WHERE series_id = ANY(%s) AND time > %s AND time <= %s""",
                  (series_ids, ts(after_ms), ts(until_ms)))


def read_since(conn: psycopg.Connection, series_ids: np.ndarray, since_ms: np.ndarray,
               until_ms: int) -> Readings:
    """Readings of each series after its own time, up to until_ms: one index probe each."""
    return _fetch(conn, """SELECT r.series_id, r.time, r.value
                           FROM unnest(%s::int4[], %s::int8[]) AS l(sid, since_ms)
                           JOIN readings r ON r.series_id = l.sid
                            AND r.time > 'epoch'::timestamptz
                                         + l.since_ms * interval '1 millisecond'
                            AND r.time <= %s""",
                  ([int(s) for s in series_ids], [int(t) for t in since_ms], ts(until_ms)))


# --- alerts in the database -------------------------------------------------------------

_ALERT_ROW = """SELECT id, site_id, device_id, series_id, rule, category, severity, message,
                       opened_at, updated_at, value, peak_value FROM alerts"""


def active_alerts(conn: psycopg.Connection, sites: list[str]) -> list[Alert]:
    rows = conn.execute(_ALERT_ROW + " WHERE state <> 'closed' AND site_id = ANY(%s) "
                        "ORDER BY id", (sites,)).fetchall()
    return [Alert(AlertKey(site, rule, device, series), category, severity, message,
                  epoch_ms(opened), epoch_ms(updated), value, peak, id=alert_id)
            for alert_id, site, device, series, rule, category, severity, message, opened,
            updated, value, peak in rows]


# the latest values of an alert; closes it when closed_at (given twice) is set
_UPDATE_ALERT = """UPDATE alerts SET updated_at = %s, value = %s, peak_value = %s,
                     state = CASE WHEN %s::timestamptz IS NULL THEN state ELSE 'closed' END,
                     closed_at = coalesce(%s, closed_at),
                     escalated_to = coalesce(%s, escalated_to)
                   WHERE id = %s"""


def actuator_runs(conn: psycopg.Connection, sites: list[str], since_ms: int
                  ) -> list[tuple[str, str, int]]:
    """(site, actuator, end of its latest run, ms) of the actuators switched on at these
    sites by commands issued after ``since_ms``: automatic responses, confirmed ones and
    commands sent by hand alike (the water does not care who switched the aerator on). A
    command that failed or expired never ran; one without a duration ran at least until it
    was issued. A restarted detector rebuilds its cool-down memory from these."""
    rows = conn.execute(
        """SELECT site_id, params->>'actuator',
                  max(issued_at + make_interval(
                      secs => coalesce((params->>'duration_s')::double precision, 0)))
           FROM device_commands
           WHERE site_id = ANY(%s) AND issued_at > %s AND action = 'set'
             AND params->>'state' = 'on' AND params ? 'actuator'
             AND state NOT IN ('failed', 'expired')
           GROUP BY 1, 2""", (sites, ts(since_ms))).fetchall()
    return [(site, actuator, epoch_ms(end)) for site, actuator, end in rows]


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
        return cls(update_every_ms, {a.key: epoch_ms(last[a.id]) for a in active if a.id in last})

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
                cur.executemany(_UPDATE_ALERT, updates)
            cur.executemany(
                "INSERT INTO alert_events (alert_id, at, action, actor, value) "
                "VALUES (%s, %s, %s, %s, %s)",
                [(alert.id, ts(at), action, ACTOR, finite_or_none(value))
                 for alert, action, at, value in events])
        return len(events)

    @staticmethod
    def _update_params(alert: Alert) -> tuple[Any, ...]:
        closed = ts(alert.closed_ms)
        return (ts(alert.updated_ms), finite_or_none(alert.value),
                finite_or_none(alert.peak), closed, closed, alert.escalated_to, alert.id)

    def _insert(self, cur: psycopg.Cursor[Any], alert: Alert) -> None:
        key = alert.key
        row = cur.execute(
            """INSERT INTO alerts (site_id, device_id, series_id, rule, category, severity,
                                   state, message, opened_at, updated_at, closed_at, value,
                                   peak_value, escalated_to)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (site_id, rule, coalesce(device_id, ''), coalesce(series_id, 0))
                 WHERE state <> 'closed' DO NOTHING
               RETURNING id""",
            (key.site_id, key.device_id, key.series_key, key.rule, alert.category,
             alert.severity, "closed" if alert.closed_ms is not None else "open",
             alert.message, ts(alert.opened_ms), ts(alert.updated_ms), ts(alert.closed_ms),
             finite_or_none(alert.value), finite_or_none(alert.peak),
             alert.escalated_to)).fetchone()
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
        cur.execute(_UPDATE_ALERT, self._update_params(alert))


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
                        state=r[11], message=r[12], time_ms=epoch_ms(r[3]),
                        opened_ms=epoch_ms(r[13]),
                        closed_ms=epoch_ms(r[14]) if r[14] is not None else None,
                        value=r[4], peak=r[15]) for r in rows]


# --- anomalies ----------------------------------------------------------------------------

_STAGE_ANOMALIES = """CREATE TEMP TABLE IF NOT EXISTS stage_anomalies
    (series_id int4, time timestamptz, value float8, score float8, component int4,
     category int4) ON COMMIT DELETE ROWS"""


def write_anomalies(conn: psycopg.Connection, readings: Readings, scores: Scores) -> None:
    """Insert (re-scored readings overwrite: the primary key is (series, time))."""
    if len(readings) == 0:
        return
    data = binary.encode([(readings.series_ids.astype(np.int32), "int4"),
                          (binary.ms_to_pg_us(readings.times_ms), "timestamptz"),
                          (readings.values, "float8"),
                          (scores.score.astype(np.float64), "float8"),
                          (scores.component.astype(np.int32), "int4"),
                          (scores.category.astype(np.int32), "int4")])
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


# --- live rules -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RuleOverride:
    """One version of the live changes at a site or a kind (``rule_overrides``)."""

    scope: str  # site or kind
    target: str
    version: int
    rules: dict[str, dict[str, Any]]
    changed_at: datetime
    changed_by: str


_OVERRIDE_COLUMNS = "scope, target, version, rules, changed_at, changed_by"


def rules_version(conn: psycopg.Connection) -> int:
    """Moves with every change of the live rules (0: none ever); cheap to poll."""
    return int(scalar(conn.execute("SELECT coalesce(max(id), 0) FROM rule_overrides")))


def current_overrides(conn: psycopg.Connection) -> list[RuleOverride]:
    """The newest version of each (scope, target)."""
    rows = conn.execute(f"""SELECT DISTINCT ON (scope, target) {_OVERRIDE_COLUMNS}
                            FROM rule_overrides ORDER BY scope, target, version DESC""")
    return [RuleOverride(*row) for row in rows.fetchall()]


def override_history(conn: psycopg.Connection, scope: str, target: str) -> list[RuleOverride]:
    """Every version of one (scope, target), newest first."""
    rows = conn.execute(f"""SELECT {_OVERRIDE_COLUMNS} FROM rule_overrides
                            WHERE scope = %s AND target = %s ORDER BY version DESC""",
                        (scope, target))
    return [RuleOverride(*row) for row in rows.fetchall()]


def save_override(conn: psycopg.Connection, scope: str, target: str,
                  rules: dict[str, dict[str, Any]], changed_by: str) -> RuleOverride:
    """Append the next version (the caller has validated ``rules``); concurrent writers
    of one target serialise on the unique (scope, target, version)."""
    row = conn.execute(
        f"""INSERT INTO rule_overrides (scope, target, version, rules, changed_by)
            SELECT %s, %s, coalesce(max(version), 0) + 1, %s, %s FROM rule_overrides
            WHERE scope = %s AND target = %s
            RETURNING {_OVERRIDE_COLUMNS}""",
        (scope, target, Jsonb(rules), changed_by, scope, target)).fetchone()
    assert row is not None  # INSERT ... RETURNING returns its row
    return RuleOverride(*row)


def live_changes(overrides: Sequence[RuleOverride]) -> tuple[Changes, Changes]:
    """The current overrides as (per-site, per-kind) changes for ``RuleSet.with_changes``."""
    sites = {o.target: o.rules for o in overrides if o.scope == "site"}
    kinds = {o.target: o.rules for o in overrides if o.scope == "kind"}
    return sites, kinds
