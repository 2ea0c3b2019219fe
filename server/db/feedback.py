"""Operators' feedback on alerts: what an alert turned out to be, and the platform's own
precision on real operations, week by week, per rule and component.

A verdict is ``real`` (the condition was there), ``false_alarm`` (it was not) or
``sensor_fault_fixed`` (a sensor was at fault, and someone fixed it: right for a fault
alert). Every verdict is kept; the newest per alert counts. Precision is the share of
judged alerts that were right: (real + sensor_fault_fixed) / judged.

The component of an alert is what the detector found at the reading that opened it (its
stored anomaly: range, stuck, spike...); alerts of a whole site (hypoxia, frost...) have
none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

VERDICTS = ("real", "false_alarm", "sensor_fault_fixed")


@dataclass(frozen=True, slots=True)
class Feedback:
    id: int
    alert_id: int
    verdict: str
    note: str
    actor: str
    at: datetime


@dataclass(frozen=True, slots=True)
class WeekRow:
    week: datetime  # Monday 00:00 UTC of the week the alerts opened
    rule: str
    component: str
    alerts: int  # opened that week
    judged: int
    real: int
    false_alarm: int
    sensor_fault_fixed: int

    @property
    def precision(self) -> float | None:
        return (self.real + self.sensor_fault_fixed) / self.judged if self.judged else None


_COLUMNS = "id, alert_id, verdict, note, actor, at"

# the component of alert ``a``: the anomaly stored at (or just before) its opening reading
COMPONENT_SQL = """coalesce((SELECT an.component FROM anomalies an
                             WHERE a.series_id IS NOT NULL AND an.series_id = a.series_id
                               AND an.time <= a.opened_at
                               AND an.time > a.opened_at - interval '1 day'
                             ORDER BY an.time DESC LIMIT 1), '')"""


def add_feedback(conn: psycopg.Connection, *, alert_id: int, verdict: str, note: str,
                 actor: str, actor_user_id: int | None) -> Feedback:
    if verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r} (one of {', '.join(VERDICTS)})")
    row = conn.execute(
        f"INSERT INTO alert_feedback (alert_id, verdict, note, actor, actor_user_id) "
        f"VALUES (%s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
        (alert_id, verdict, note, actor, actor_user_id)).fetchone()
    assert row is not None  # INSERT ... RETURNING
    return Feedback(*row)


def feedback_of(conn: psycopg.Connection, alert_id: int) -> list[Feedback]:
    """Every verdict on the alert, newest first."""
    return [Feedback(*row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM alert_feedback WHERE alert_id = %s ORDER BY id DESC",
        (alert_id,))]


def weekly_report(conn: psycopg.Connection, *, sites: list[str] | None,
                  since: datetime, until: datetime) -> list[WeekRow]:
    """Per week (of opening), rule and component: alerts, judged, and each verdict."""
    rows = conn.execute(
        f"""WITH judged AS (
              SELECT a.id, a.rule, a.opened_at, {COMPONENT_SQL} AS component,
                     (SELECT f.verdict FROM alert_feedback f WHERE f.alert_id = a.id
                      ORDER BY f.id DESC LIMIT 1) AS verdict
              FROM alerts a
              WHERE a.opened_at >= %(since)s AND a.opened_at < %(until)s
                AND (%(sites)s::text[] IS NULL OR a.site_id = ANY(%(sites)s)))
            SELECT date_trunc('week', opened_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
                   rule, component, count(*), count(verdict),
                   count(*) FILTER (WHERE verdict = 'real'),
                   count(*) FILTER (WHERE verdict = 'false_alarm'),
                   count(*) FILTER (WHERE verdict = 'sensor_fault_fixed')
            FROM judged GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
        {"sites": sites, "since": since, "until": until}).fetchall()
    return [WeekRow(*row) for row in rows]
