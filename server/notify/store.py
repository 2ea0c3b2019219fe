"""Every query of the notifier and of the notification routes.

Invariants a change must keep:

- **Set-based planning.** ``plan`` turns a batch of alert events into deliveries with a
  constant number of statements per batch (never one per alert): the bench's p99 depends
  on it.
- **The cursor moves with the plan.** ``plan`` inserts the batch's deliveries and moves
  ``notify_cursor`` in one transaction; deliveries' ``key`` is unique, so a batch planned
  twice (a crash before commit) plans once.
- **No event is skipped.** Events are read in (tx, id) order and only those whose
  transaction is older than every transaction still running (migration 0011).
- **Per-alert order.** ``due_deliveries`` never offers a delivery while an earlier one of
  the same (contact, alert) is still waiting.
- **Times are parameters.** Every function takes ``now``, so tests drive escalation,
  reminders, quiet hours and digests without waiting.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from .channels import describe
from .messages import Due
from .routing import ContactIn, GroupIn, NotifyConfig, RouteIn, parse_quiet_hours

# A route matches an alert ``a`` at site ``s`` when each of its non-null conditions holds,
# and the site is its organisation's (the platform office's routes see every site).
ROUTE_MATCHES = """
    r.enabled
    AND (s.organisation_id = r.organisation_id
         OR EXISTS (SELECT 1 FROM organisations o WHERE o.id = r.organisation_id
                                                    AND o.platform))
    AND (r.site_ids IS NULL OR a.site_id = ANY(r.site_ids))
    AND (r.kinds IS NULL OR s.kind = ANY(r.kinds))
    AND (r.districts IS NULL OR s.district = ANY(r.districts))
    AND (r.severities IS NULL OR a.severity = ANY(r.severities))
    AND (r.categories IS NULL OR a.category = ANY(r.categories))
    AND (r.rules IS NULL OR a.rule = ANY(r.rules))"""

# when a message to contact ``c`` about alert ``a`` may go: critical ones at once
DUE_AT = """CASE WHEN a.severity = 'critical' THEN %(now)s::timestamptz
                 ELSE notify_quiet_until(%(now)s::timestamptz, c.quiet_start, c.quiet_end,
                                         c.timezone) END"""


@dataclass(frozen=True, slots=True)
class PlanSettings:
    update_every: timedelta  # flapping: one 'updated' per alert and contact this often
    max_age: timedelta  # older events are not news (0: no limit)
    incident_window: timedelta  # 0: no incidents
    incident_km: float


# --- the cursor and the planner -----------------------------------------------------------

NOTIFIER_LOCK = 0x6E6F_7469  # "noti": one notifier per database


async def take_notifier_lock(conn: psycopg.AsyncConnection) -> bool:
    """Held while the connection lives: a second notifier would send everything twice."""
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (NOTIFIER_LOCK,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def init_cursor(conn: psycopg.AsyncConnection) -> None:
    """First start: begin after the events of every finished transaction (history is not
    news), but before those of transactions still running, which may commit later."""
    await conn.execute(
        """INSERT INTO notify_cursor (tx, event_id)
           VALUES (pg_snapshot_xmin(pg_current_snapshot()), 0)
           ON CONFLICT DO NOTHING""")


async def backlog(conn: psycopg.AsyncConnection) -> int:
    cur = await conn.execute(
        """SELECT count(*) FROM alert_events e, notify_cursor c
           WHERE (e.tx, e.id) > (c.tx, c.event_id)""")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def plan(conn: psycopg.AsyncConnection, *, now: datetime, limit: int,
               settings: PlanSettings) -> int:
    """Plan the next batch of events; returns how many were read (0: caught up). Runs in
    the caller's transaction."""
    cur = await conn.execute(
        """SELECT e.id, e.tx::text, e.action, a.id, a.rule, a.site_id, s.lat, s.lon,
                  s.organisation_id
           FROM alert_events e CROSS JOIN notify_cursor c
           JOIN alerts a ON a.id = e.alert_id JOIN sites s ON s.id = a.site_id
           WHERE (e.tx, e.id) > (c.tx, c.event_id)
             AND e.tx < pg_snapshot_xmin(pg_current_snapshot())
           ORDER BY e.tx, e.id LIMIT %s""", (limit,))
    events = await cur.fetchall()
    if not events:
        return 0
    ids = [row[0] for row in events]
    opened = [row for row in events if row[2] == "opened"]
    if opened and settings.incident_window > timedelta(0):
        await _group_incidents(conn, opened, now=now, settings=settings)
    oldest = now - settings.max_age if settings.max_age > timedelta(0) else None
    params: dict[str, Any] = {"ids": ids, "now": now, "oldest": oldest,
                              "update_every": settings.update_every,
                              "incident_every": settings.update_every}
    # openings: the tier-0 routes' contacts; an alert joining an incident that a contact
    # has a message waiting about rides on that message (rendered with the incident's
    # sites when sent), else waits for the incident's interval
    await conn.execute(
        f"""INSERT INTO notify_deliveries (key, contact_id, alert_id, event_id, incident_id,
                                           route_id, kind, tier, status, created_at, due_at)
            SELECT key, contact_id, alert_id, event_id, incident_id, route_id, 'opened', 0,
                   status, %(now)s, due_at
            FROM (SELECT DISTINCT ON (e.tx, e.id, c.id)
                         'e' || e.id || ':c' || c.id AS key, c.id AS contact_id,
                         a.id AS alert_id, e.id AS event_id, ia.incident_id, r.id AS route_id,
                         CASE WHEN r.digest <> 'none' THEN 'held' ELSE 'pending' END AS status,
                         greatest({DUE_AT}, (SELECT max(p.created_at) + %(incident_every)s
                                             FROM notify_deliveries p
                                             WHERE p.incident_id = ia.incident_id
                                               AND p.contact_id = c.id)) AS due_at,
                         e.tx, e.id AS eid
                  FROM alert_events e JOIN alerts a ON a.id = e.alert_id
                  JOIN sites s ON s.id = a.site_id
                  JOIN notify_routes r ON r.tier = 0 AND {ROUTE_MATCHES}
                  JOIN notify_group_members m ON m.group_id = r.group_id
                  JOIN notify_contacts c ON c.id = m.contact_id AND c.enabled
                  LEFT JOIN notify_incident_alerts ia ON ia.alert_id = a.id
                  WHERE e.id = ANY(%(ids)s) AND e.action = 'opened'
                    AND (%(oldest)s::timestamptz IS NULL OR e.at >= %(oldest)s)
                    AND NOT EXISTS (SELECT 1 FROM notify_deliveries p
                                    WHERE ia.incident_id IS NOT NULL
                                      AND p.incident_id = ia.incident_id
                                      AND p.contact_id = c.id AND p.status = 'pending'
                                      AND p.kind = 'opened')
                  ORDER BY e.tx, e.id, c.id, r.id) planned
            -- of an incident's alerts opening in one batch, a contact gets one message
            WHERE incident_id IS NULL OR (tx, eid) = (
                SELECT e2.tx, e2.id FROM alert_events e2
                JOIN notify_incident_alerts ia2 ON ia2.alert_id = e2.alert_id
                WHERE e2.id = ANY(%(ids)s) AND e2.action = 'opened'
                  AND ia2.incident_id = planned.incident_id
                ORDER BY e2.tx, e2.id LIMIT 1)
            ORDER BY tx, eid, contact_id
            ON CONFLICT (key) DO NOTHING""", params)
    # what follows an opening goes to whoever was told of it (not to digest readers);
    # 'updated' at most once per update_every (flapping); an incident's sites clearing
    # ride on one waiting 'closed' message per contact, like its sites joining
    await conn.execute(
        f"""INSERT INTO notify_deliveries (key, contact_id, alert_id, event_id, incident_id,
                                           route_id, kind, tier, status, created_at, due_at)
            SELECT key, contact_id, alert_id, event_id, incident_id, route_id, kind, tier,
                   'pending', %(now)s, due_at
            FROM (SELECT 'e' || e.id || ':c' || c.id AS key, c.id AS contact_id,
                         a.id AS alert_id, e.id AS eid, e.tx, e.id AS event_id,
                         told.incident_id, told.route_id, e.action AS kind, told.tier,
                         CASE WHEN e.action = 'closed' AND told.incident_id IS NOT NULL
                              THEN greatest({DUE_AT}, (
                                  SELECT max(p.created_at) + %(incident_every)s
                                  FROM notify_deliveries p
                                  WHERE p.incident_id = told.incident_id
                                    AND p.contact_id = c.id AND p.kind = 'closed'))
                              ELSE {DUE_AT} END AS due_at
                  FROM alert_events e JOIN alerts a ON a.id = e.alert_id
                  JOIN LATERAL (SELECT DISTINCT ON (d.contact_id) d.contact_id, d.route_id,
                                       d.tier, d.incident_id
                                FROM notify_deliveries d
                                WHERE (d.alert_id = a.id OR d.incident_id = (
                                          SELECT incident_id FROM notify_incident_alerts
                                          WHERE alert_id = a.id))
                                  AND d.status IN ('pending', 'sent') AND d.kind <> 'digest'
                                ORDER BY d.contact_id, d.id) told ON true
                  JOIN notify_contacts c ON c.id = told.contact_id AND c.enabled
                  WHERE e.id = ANY(%(ids)s) AND e.action <> 'opened'
                    AND (%(oldest)s::timestamptz IS NULL OR e.at >= %(oldest)s)
                    AND NOT (e.action = 'updated' AND EXISTS (
                        SELECT 1 FROM notify_deliveries u
                        WHERE u.alert_id = a.id AND u.contact_id = c.id
                          AND u.kind IN ('opened', 'updated')
                          AND u.created_at > %(now)s - %(update_every)s::interval))
                    AND NOT (e.action = 'closed' AND told.incident_id IS NOT NULL
                             AND EXISTS (SELECT 1 FROM notify_deliveries p
                                         WHERE p.incident_id = told.incident_id
                                           AND p.contact_id = c.id AND p.kind = 'closed'
                                           AND p.status = 'pending'))) planned
            -- of an incident's sites clearing in one batch, a contact gets one message
            WHERE kind <> 'closed' OR incident_id IS NULL OR (tx, eid) = (
                SELECT e2.tx, e2.id FROM alert_events e2
                JOIN notify_incident_alerts ia2 ON ia2.alert_id = e2.alert_id
                WHERE e2.id = ANY(%(ids)s) AND e2.action = 'closed'
                  AND ia2.incident_id = planned.incident_id
                ORDER BY e2.tx, e2.id LIMIT 1)
            ORDER BY tx, eid, contact_id
            ON CONFLICT (key) DO NOTHING""", params)
    last_id, last_tx = events[-1][0], events[-1][1]
    await conn.execute("UPDATE notify_cursor SET tx = %s::xid8, event_id = %s, updated_at = %s",
                       (last_tx, last_id, now))
    return len(events)


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(min(1.0, h)))


async def _group_incidents(conn: psycopg.AsyncConnection, opened: Sequence[Sequence[Any]], *,
                           now: datetime, settings: PlanSettings) -> None:
    """Put each opened alert in an open incident of its rule and organisation that a site
    joined within the window and that has a site within the distance, else a new one.
    Three statements per batch, whatever its size."""
    rules = sorted({row[4] for row in opened})
    cur = await conn.execute(
        """SELECT i.id, i.rule, i.organisation_id, s.lat, s.lon
           FROM notify_incidents i JOIN notify_incident_alerts ia ON ia.incident_id = i.id
           JOIN alerts a ON a.id = ia.alert_id JOIN sites s ON s.id = a.site_id
           WHERE i.closed_at IS NULL AND i.rule = ANY(%s) AND i.joined_at >= %s""",
        (rules, now - settings.incident_window))
    incidents: dict[tuple[str, int], dict[int | str, list[tuple[float, float]]]] = {}
    for incident_id, rule, org, lat, lon in await cur.fetchall():
        incidents.setdefault((rule, org), {}).setdefault(incident_id, []).append((lat, lon))
    joins: list[tuple[int, int | str]] = []  # (alert, incident id or a new one's label)
    for _event, _tx, _action, alert_id, rule, _site, lat, lon, org in opened:
        candidates = incidents.setdefault((rule, org), {})
        found: int | str | None = None
        for incident, places in candidates.items():
            if any(distance_km(lat, lon, plat, plon) <= settings.incident_km
                   for plat, plon in places):
                found = incident
                break
        if found is None:
            found = f"new{len(joins)}"
            candidates[found] = []
        candidates[found].append((lat, lon))
        joins.append((alert_id, found))
    new_labels = list(dict.fromkeys(label for _, label in joins if isinstance(label, str)))
    label_rule = {label: (rule, org) for (rule, org), group in incidents.items()
                  for label in group if isinstance(label, str)}
    ids: dict[int | str, int] = {}
    if new_labels:
        cur = await conn.execute(
            """INSERT INTO notify_incidents (organisation_id, rule, opened_at, joined_at)
               SELECT o, r, %s, %s FROM unnest(%s::int[], %s::text[]) WITH ORDINALITY
                 AS u(o, r, n) ORDER BY n RETURNING id""",
            (now, now, [label_rule[label][1] for label in new_labels],
             [label_rule[label][0] for label in new_labels]))
        created = sorted(row[0] for row in await cur.fetchall())
        ids.update(zip(new_labels, created, strict=True))
    alert_ids = [alert for alert, _ in joins]
    incident_ids = [ids.get(label, label) for _, label in joins]
    await conn.execute(
        """WITH j AS (INSERT INTO notify_incident_alerts (alert_id, incident_id)
                      SELECT * FROM unnest(%s::bigint[], %s::bigint[])
                      ON CONFLICT (alert_id) DO NOTHING RETURNING incident_id)
           UPDATE notify_incidents SET joined_at = %s
           WHERE id IN (SELECT incident_id FROM j)""", (alert_ids, incident_ids, now))


async def close_incidents(conn: psycopg.AsyncConnection, now: datetime) -> None:
    await conn.execute(
        """UPDATE notify_incidents i SET closed_at = %s
           WHERE closed_at IS NULL AND NOT EXISTS (
               SELECT 1 FROM notify_incident_alerts ia JOIN alerts a ON a.id = ia.alert_id
               WHERE ia.incident_id = i.id AND a.state <> 'closed')""", (now,))


# --- escalation, reminders, digests -------------------------------------------------------

async def escalate(conn: psycopg.AsyncConnection, now: datetime) -> None:
    """An open (unacknowledged) alert whose tier n-1 was told ``escalate_after_minutes``
    ago (that route's setting) goes to the tier-n routes it matches."""
    await conn.execute(
        f"""INSERT INTO notify_deliveries (key, contact_id, alert_id, route_id, kind, tier,
                                           created_at, due_at)
            SELECT DISTINCT ON (a.id, c.id, r.tier)
                   'x' || a.id || ':t' || r.tier || ':c' || c.id, c.id, a.id, r.id,
                   'escalation', r.tier, %(now)s, {DUE_AT}
            FROM alerts a JOIN sites s ON s.id = a.site_id
            JOIN notify_routes r ON r.tier > 0 AND {ROUTE_MATCHES}
            JOIN notify_group_members m ON m.group_id = r.group_id
            JOIN notify_contacts c ON c.id = m.contact_id AND c.enabled
            WHERE a.state = 'open' AND EXISTS (
                SELECT 1 FROM notify_deliveries d JOIN notify_routes lower ON lower.id = d.route_id
                WHERE d.alert_id = a.id AND d.tier = r.tier - 1
                  AND d.kind IN ('opened', 'escalation') AND d.status IN ('pending', 'sent')
                  AND lower.escalate_after_minutes IS NOT NULL
                  AND d.created_at <= %(now)s - lower.escalate_after_minutes
                                                * interval '1 minute')
            ORDER BY a.id, c.id, r.tier, r.id
            ON CONFLICT (key) DO NOTHING""", {"now": now})


async def remind(conn: psycopg.AsyncConnection, now: datetime) -> None:
    """Every ``remind_every_minutes`` of its route, an open alert is told again to each
    contact it was told to, until someone acknowledges it."""
    await conn.execute(
        f"""INSERT INTO notify_deliveries (key, contact_id, alert_id, incident_id, route_id,
                                           kind, tier, created_at, due_at)
            SELECT 'r' || a.id || ':c' || c.id || ':' || (t.reminders + 1), c.id, a.id,
                   t.incident_id, r.id, 'reminder', t.tier, %(now)s, {DUE_AT}
            FROM alerts a
            JOIN LATERAL (SELECT d.contact_id, min(d.route_id) AS route_id,
                                 max(d.tier) AS tier, max(d.incident_id) AS incident_id,
                                 max(d.created_at) AS last,
                                 count(*) FILTER (WHERE d.kind = 'reminder') AS reminders
                          FROM notify_deliveries d
                          WHERE d.alert_id = a.id AND d.status IN ('pending', 'sent')
                            AND d.kind IN ('opened', 'reminder', 'escalation')
                          GROUP BY d.contact_id) t ON true
            JOIN notify_routes r ON r.id = t.route_id AND r.remind_every_minutes IS NOT NULL
            JOIN notify_contacts c ON c.id = t.contact_id AND c.enabled
            WHERE a.state = 'open'
              AND t.last <= %(now)s - r.remind_every_minutes * interval '1 minute'
            ON CONFLICT (key) DO NOTHING""", {"now": now})


async def digest(conn: psycopg.AsyncConnection, now: datetime) -> None:
    """Held messages (routes with a digest) go as one message per contact once the oldest
    has waited an hour (or a day)."""
    await conn.execute(
        """WITH ready AS (
               SELECT d.contact_id FROM notify_deliveries d
               JOIN notify_routes r ON r.id = d.route_id
               WHERE d.status = 'held' GROUP BY d.contact_id
               HAVING min(d.created_at) <= %(now)s - CASE WHEN bool_or(r.digest = 'hourly')
                                                          THEN interval '1 hour'
                                                          ELSE interval '1 day' END),
           taken AS (
               UPDATE notify_deliveries d SET status = 'digested' FROM ready
               WHERE d.contact_id = ready.contact_id AND d.status = 'held'
               RETURNING d.id, d.contact_id, d.alert_id, d.kind, d.created_at)
           INSERT INTO notify_deliveries (key, contact_id, kind, created_at, due_at, body)
           SELECT 'g' || t.contact_id || ':' || min(t.id), t.contact_id, 'digest', %(now)s,
                  %(now)s,
                  jsonb_agg(jsonb_build_object(
                      'alert_id', a.id, 'site', a.site_id,
                      'site_name', CASE c.language WHEN 'zh' THEN s.name_zh ELSE s.name_en END,
                      'rule', a.rule, 'severity', a.severity, 'action', t.kind,
                      'at', to_char(t.created_at AT TIME ZONE c.timezone, 'YYYY-MM-DD HH24:MI'))
                      ORDER BY t.id)
           FROM taken t JOIN alerts a ON a.id = t.alert_id JOIN sites s ON s.id = a.site_id
           JOIN notify_contacts c ON c.id = t.contact_id
           GROUP BY t.contact_id
           ON CONFLICT (key) DO NOTHING""", {"now": now})


# --- sending ------------------------------------------------------------------------------

async def due_deliveries(conn: psycopg.AsyncConnection, *, now: datetime, limit: int,
                         busy: Iterable[int]) -> list[Due]:
    cur = await conn.execute(
        """SELECT d.id, d.key, d.kind, d.tier, c.id, c.url, c.language, a.id, a.site_id,
                  CASE c.language WHEN 'zh' THEN s.name_zh ELSE s.name_en END, a.rule,
                  a.category, a.severity, a.state, a.message, a.opened_at, a.value,
                  a.peak_value, a.acknowledged_by, d.incident_id,
                  CASE WHEN d.incident_id IS NOT NULL THEN
                      (SELECT array_agg(CASE c.language WHEN 'zh' THEN s2.name_zh
                                        ELSE s2.name_en END ORDER BY s2.id)
                       FROM notify_incident_alerts ia JOIN alerts a2 ON a2.id = ia.alert_id
                       JOIN sites s2 ON s2.id = a2.site_id
                       WHERE ia.incident_id = d.incident_id AND a2.state <> 'closed') END,
                  d.body, d.attempts, trend.first, trend.last,
                  (SELECT count(*) FROM notify_incident_alerts ia
                   WHERE ia.incident_id = d.incident_id),
                  -- an 'updated' message tells how many updates it stands for (the ones
                  -- held back since this contact's previous message of the alert)
                  CASE WHEN d.kind = 'updated' THEN
                      (SELECT count(*) FROM alert_events x
                       WHERE x.alert_id = d.alert_id AND x.action = 'updated'
                         AND x.id <= d.event_id
                         AND x.id > coalesce((SELECT max(p.event_id) FROM notify_deliveries p
                                              WHERE p.alert_id = d.alert_id
                                                AND p.contact_id = d.contact_id
                                                AND p.id < d.id), 0)) END
           FROM notify_deliveries d JOIN notify_contacts c ON c.id = d.contact_id
           LEFT JOIN alerts a ON a.id = d.alert_id LEFT JOIN sites s ON s.id = a.site_id
           -- the trend of the last hour: the series' first and latest reading in it (two
           -- index probes on readings_series_time)
           LEFT JOIN LATERAL (
               SELECT (SELECT value FROM readings WHERE series_id = a.series_id
                         AND time >= %(now)s::timestamptz - interval '1 hour'
                       ORDER BY time LIMIT 1) AS first,
                      (SELECT value FROM readings WHERE series_id = a.series_id
                         AND time >= %(now)s::timestamptz - interval '1 hour'
                       ORDER BY time DESC LIMIT 1) AS last) trend ON a.series_id IS NOT NULL
           WHERE d.status = 'pending' AND d.due_at <= %(now)s AND c.enabled
             AND NOT (d.id = ANY(%(busy)s))
             AND NOT EXISTS (SELECT 1 FROM notify_deliveries p
                             WHERE p.alert_id = d.alert_id AND p.contact_id = d.contact_id
                               AND p.status = 'pending' AND p.id < d.id
                               AND p.due_at > %(now)s)
           ORDER BY d.id LIMIT %(limit)s""",
        {"now": now, "limit": limit, "busy": list(busy)})
    return [Due(delivery_id=r[0], key=r[1], kind=r[2], tier=r[3], contact_id=r[4], url=r[5],
                language=r[6], alert_id=r[7], site_id=r[8], site_name=r[9], rule=r[10],
                category=r[11], severity=r[12], state=r[13], text=r[14], opened_at=r[15],
                value=r[16], peak=r[17], acknowledged_by=r[18], incident_id=r[19],
                incident_sites=list(r[20] or []), items=list(r[21] or []), attempts=r[22],
                trend=(r[23], r[24]) if r[23] is not None else None, incident_size=r[25],
                updates=r[26] or 0)
            for r in await cur.fetchall()]


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def issue_tokens(conn: psycopg.AsyncConnection,
                       tokens: Sequence[tuple[str, int, int | None, int, int | None]],
                       expires_at: datetime) -> None:
    """(token, alert, incident, contact, response) each: a token with a response confirms
    it, one without acknowledges; one statement for the lot."""
    if not tokens:
        return
    await conn.execute(
        """INSERT INTO notify_ack_tokens (token_hash, alert_id, incident_id, contact_id,
                                          response_id, expires_at)
           SELECT h, a, i, c, r, %s FROM unnest(%s::bytea[], %s::bigint[], %s::bigint[],
                                                %s::int[], %s::bigint[]) AS u(h, a, i, c, r)""",
        (expires_at, [token_hash(t[0]) for t in tokens], [t[1] for t in tokens],
         [t[2] for t in tokens], [t[3] for t in tokens], [t[4] for t in tokens]))


@dataclass(frozen=True, slots=True)
class Waiting:
    """A suggested response a message may carry a confirm link for."""

    alert_id: int
    contact_id: int
    response_id: int
    what: str


async def waiting_responses(conn: psycopg.AsyncConnection,
                            pairs: Sequence[tuple[int, int]]) -> list[Waiting]:
    """The suggestions still waiting of these (alert, contact) pairs' alerts, for the
    contacts of the organisation owning the site only: confirming runs a machine there, a
    right a read-only grant to another organisation does not give."""
    if not pairs:
        return []
    cur = await conn.execute(
        """SELECT p.a, p.c, r.id, r.actuator || ' on for ' || (r.duration_s / 60.0)::float8
                  || ' min at ' || r.device_id
           FROM unnest(%s::bigint[], %s::int[]) AS p(a, c)
           JOIN alert_responses r ON r.alert_id = p.a AND r.state = 'suggested'
           JOIN alerts a ON a.id = r.alert_id AND a.state <> 'closed'
           JOIN sites s ON s.id = r.site_id
           JOIN notify_contacts k ON k.id = p.c AND k.organisation_id = s.organisation_id
           ORDER BY p.a, p.c, r.id""",
        ([p[0] for p in pairs], [p[1] for p in pairs]))
    return [Waiting(*row) for row in await cur.fetchall()]


@dataclass(frozen=True, slots=True)
class Outcome:
    delivery_id: int
    at: datetime
    latency_ms: float
    error: str | None  # None: sent
    retry_at: datetime | None = None


async def record(conn: psycopg.AsyncConnection, outcomes: Sequence[Outcome]) -> None:
    """The attempts of a round, in three statements."""
    sent = [o for o in outcomes if o.error is None]
    failed = [o for o in outcomes if o.error is not None]
    if sent:
        await conn.execute(
            """UPDATE notify_deliveries d SET status = 'sent', sent_at = u.at,
                                             attempts = attempts + 1
               FROM unnest(%s::bigint[], %s::timestamptz[]) AS u(id, at) WHERE d.id = u.id""",
            ([o.delivery_id for o in sent], [o.at for o in sent]))
    if failed:
        await conn.execute(
            """UPDATE notify_deliveries d SET due_at = u.retry_at, attempts = attempts + 1
               FROM unnest(%s::bigint[], %s::timestamptz[]) AS u(id, retry_at)
               WHERE d.id = u.id""",
            ([o.delivery_id for o in failed], [o.retry_at for o in failed]))
    await conn.execute(
        """INSERT INTO notify_attempts (delivery_id, at, ok, latency_ms, error)
           SELECT * FROM unnest(%s::bigint[], %s::timestamptz[], %s::bool[], %s::float8[],
                                %s::text[])""",
        ([o.delivery_id for o in outcomes], [o.at for o in outcomes],
         [o.error is None for o in outcomes], [o.latency_ms for o in outcomes],
         [o.error for o in outcomes]))


async def attempts_of(conn: psycopg.AsyncConnection, delivery_ids: Sequence[int]
                      ) -> dict[int, int]:
    cur = await conn.execute("SELECT id, attempts FROM notify_deliveries WHERE id = ANY(%s)",
                             (list(delivery_ids),))
    return {row[0]: row[1] for row in await cur.fetchall()}


# --- contacts, groups, routes (the API and `tidefield notify load`) -----------------------

CONTACT_COLUMNS = ("id", "organisation_id", "name", "url", "language", "quiet_start",
                   "quiet_end", "timezone", "enabled")
ROUTE_COLUMNS = ("id", "organisation_id", "name", "group_id", "site_ids", "kinds",
                 "districts", "severities", "categories", "rules", "tier",
                 "escalate_after_minutes", "remind_every_minutes", "digest", "enabled")


def save_contact(conn: psycopg.Connection, organisation_id: int, contact: ContactIn,
                 contact_id: int | None = None) -> int:
    """Insert (or, with ``contact_id``, replace) a contact; returns its id."""
    quiet = parse_quiet_hours(contact.quiet_hours)
    values = (contact.name, contact.url, contact.language, quiet[0] if quiet else None,
              quiet[1] if quiet else None, contact.timezone, contact.enabled)
    if contact_id is None:
        row = conn.execute(
            """INSERT INTO notify_contacts (name, url, language, quiet_start, quiet_end,
                                            timezone, enabled, organisation_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (organisation_id, name) DO UPDATE SET url = EXCLUDED.url,
                 language = EXCLUDED.language, quiet_start = EXCLUDED.quiet_start,
                 quiet_end = EXCLUDED.quiet_end, timezone = EXCLUDED.timezone,
                 enabled = EXCLUDED.enabled
               RETURNING id""", (*values, organisation_id)).fetchone()
    else:
        row = conn.execute(
            """UPDATE notify_contacts SET name = %s, url = %s, language = %s,
                 quiet_start = %s, quiet_end = %s, timezone = %s, enabled = %s
               WHERE id = %s AND organisation_id = %s RETURNING id""",
            (*values, contact_id, organisation_id)).fetchone()
    if row is None:
        raise LookupError(f"no contact {contact_id}")
    return int(row[0])


def contacts(conn: psycopg.Connection, organisations: list[int] | None,
             contact_id: int | None = None) -> list[dict[str, Any]]:
    """Contacts of these organisations (None: all); ``url`` shown as ``describe`` does."""
    rows = conn.execute(
        f"""SELECT {', '.join(CONTACT_COLUMNS)} FROM notify_contacts
            WHERE (%(orgs)s::int[] IS NULL OR organisation_id = ANY(%(orgs)s))
              AND (%(id)s::int IS NULL OR id = %(id)s)
            ORDER BY organisation_id, name""",
        {"orgs": organisations, "id": contact_id}).fetchall()
    found = []
    for row in rows:
        item = dict(zip(CONTACT_COLUMNS, row, strict=True))
        item["channel"] = describe(item.pop("url"))
        start, end = item.pop("quiet_start"), item.pop("quiet_end")
        item["quiet_hours"] = f"{start:%H:%M}-{end:%H:%M}" if start else None
        found.append(item)
    return found


def save_group(conn: psycopg.Connection, organisation_id: int, group: GroupIn,
               group_id: int | None = None) -> int:
    members = conn.execute(
        "SELECT name, id FROM notify_contacts WHERE organisation_id = %s AND name = ANY(%s)",
        (organisation_id, group.members)).fetchall()
    missing = sorted(set(group.members) - {name for name, _ in members})
    if missing:
        raise ValueError(f"no contact named {', '.join(missing)} in this organisation")
    if group_id is None:
        row = conn.execute(
            """INSERT INTO notify_groups (organisation_id, name) VALUES (%s, %s)
               ON CONFLICT (organisation_id, name) DO UPDATE SET name = EXCLUDED.name
               RETURNING id""", (organisation_id, group.name)).fetchone()
    else:
        row = conn.execute("UPDATE notify_groups SET name = %s WHERE id = %s AND "
                           "organisation_id = %s RETURNING id",
                           (group.name, group_id, organisation_id)).fetchone()
    if row is None:
        raise LookupError(f"no group {group_id}")
    conn.execute("DELETE FROM notify_group_members WHERE group_id = %s", (row[0],))
    conn.execute("INSERT INTO notify_group_members (group_id, contact_id) "
                 "SELECT %s, unnest(%s::int[])", (row[0], [i for _, i in members]))
    return int(row[0])


def groups(conn: psycopg.Connection, organisations: list[int] | None,
           group_id: int | None = None) -> list[dict[str, Any]]:
    rows = conn.execute(
        """SELECT g.id, g.organisation_id, g.name,
                  coalesce(array_agg(c.name ORDER BY c.name) FILTER (WHERE c.id IS NOT NULL),
                           '{}')
           FROM notify_groups g LEFT JOIN notify_group_members m ON m.group_id = g.id
           LEFT JOIN notify_contacts c ON c.id = m.contact_id
           WHERE (%(orgs)s::int[] IS NULL OR g.organisation_id = ANY(%(orgs)s))
             AND (%(id)s::int IS NULL OR g.id = %(id)s)
           GROUP BY g.id ORDER BY g.organisation_id, g.name""",
        {"orgs": organisations, "id": group_id}).fetchall()
    return [{"id": r[0], "organisation_id": r[1], "name": r[2], "members": list(r[3])}
            for r in rows]


def save_route(conn: psycopg.Connection, organisation_id: int, route: RouteIn,
               route_id: int | None = None) -> int:
    group = conn.execute("SELECT id FROM notify_groups WHERE organisation_id = %s AND "
                         "name = %s", (organisation_id, route.group)).fetchone()
    if group is None:
        raise ValueError(f"no group named {route.group} in this organisation")
    values = (route.name, group[0], route.site_ids, route.kinds, route.districts,
              route.severities, route.categories, route.rules, route.tier,
              route.escalate_after_minutes, route.remind_every_minutes, route.digest,
              route.enabled)
    if route_id is None:
        row = conn.execute(
            """INSERT INTO notify_routes (name, group_id, site_ids, kinds, districts,
                 severities, categories, rules, tier, escalate_after_minutes,
                 remind_every_minutes, digest, enabled, organisation_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (organisation_id, name) DO UPDATE SET group_id = EXCLUDED.group_id,
                 site_ids = EXCLUDED.site_ids, kinds = EXCLUDED.kinds,
                 districts = EXCLUDED.districts, severities = EXCLUDED.severities,
                 categories = EXCLUDED.categories, rules = EXCLUDED.rules,
                 tier = EXCLUDED.tier, escalate_after_minutes = EXCLUDED.escalate_after_minutes,
                 remind_every_minutes = EXCLUDED.remind_every_minutes,
                 digest = EXCLUDED.digest, enabled = EXCLUDED.enabled
               RETURNING id""", (*values, organisation_id)).fetchone()
    else:
        row = conn.execute(
            """UPDATE notify_routes SET name = %s, group_id = %s, site_ids = %s, kinds = %s,
                 districts = %s, severities = %s, categories = %s, rules = %s, tier = %s,
                 escalate_after_minutes = %s, remind_every_minutes = %s, digest = %s,
                 enabled = %s
               WHERE id = %s AND organisation_id = %s RETURNING id""",
            (*values, route_id, organisation_id)).fetchone()
    if row is None:
        raise LookupError(f"no route {route_id}")
    return int(row[0])


def routes(conn: psycopg.Connection, organisations: list[int] | None,
           route_id: int | None = None) -> list[dict[str, Any]]:
    rows = conn.execute(
        f"""SELECT {', '.join('r.' + c for c in ROUTE_COLUMNS)}, g.name
            FROM notify_routes r JOIN notify_groups g ON g.id = r.group_id
            WHERE (%(orgs)s::int[] IS NULL OR r.organisation_id = ANY(%(orgs)s))
              AND (%(id)s::int IS NULL OR r.id = %(id)s)
            ORDER BY r.organisation_id, r.tier, r.name""",
        {"orgs": organisations, "id": route_id}).fetchall()
    found = []
    for row in rows:
        item = dict(zip(ROUTE_COLUMNS, row[:-1], strict=True))
        item["group"] = row[-1]
        found.append(item)
    return found


def delete(conn: psycopg.Connection, table: str, organisations: list[int] | None,
           item_id: int) -> bool:
    if table not in ("notify_contacts", "notify_groups", "notify_routes"):
        raise ValueError(table)
    row = conn.execute(f"DELETE FROM {table} WHERE id = %s AND "  # a fixed name
                       "(%s::int[] IS NULL OR organisation_id = ANY(%s)) RETURNING id",
                       (item_id, organisations, organisations)).fetchone()
    return row is not None


def load_config(conn: psycopg.Connection, config: NotifyConfig) -> int:
    """Upsert a configuration file's contacts, groups and routes (by name) into its
    organisation; returns the organisation's id. The caller commits."""
    row = conn.execute("SELECT id FROM organisations WHERE slug = %s",
                       (config.organisation,)).fetchone()
    if row is None:
        raise ValueError(f"no organisation {config.organisation!r}")
    org = int(row[0])
    for contact in config.contacts:
        save_contact(conn, org, contact)
    for group in config.groups:
        save_group(conn, org, group)
    for route in config.routes:
        save_route(conn, org, route)
    return org


# --- the delivery log ---------------------------------------------------------------------

LOG_COLUMNS = ("attempt_id", "at", "ok", "latency_ms", "error", "delivery_id", "key", "kind",
               "tier", "status", "alert_id", "incident_id", "site_id", "contact_id",
               "contact", "channel")


def delivery_log(conn: psycopg.Connection, *, sites: list[str] | None,
                 organisations: list[int] | None, alert_id: int | None, limit: int,
                 before: int | None) -> list[dict[str, Any]]:
    """Attempts, newest first, of deliveries about sites the caller sees (a digest: of
    contacts of the caller's organisations)."""
    rows = conn.execute(
        """SELECT t.id, t.at, t.ok, t.latency_ms, t.error, d.id, d.key, d.kind, d.tier,
                  d.status, d.alert_id, d.incident_id, a.site_id, c.id, c.name, c.url
           FROM notify_attempts t JOIN notify_deliveries d ON d.id = t.delivery_id
           JOIN notify_contacts c ON c.id = d.contact_id
           LEFT JOIN alerts a ON a.id = d.alert_id
           WHERE (%(alert)s::bigint IS NULL OR d.alert_id = %(alert)s)
             AND (%(before)s::bigint IS NULL OR t.id < %(before)s)
             AND (CASE WHEN a.id IS NULL
                       THEN %(orgs)s::int[] IS NULL OR c.organisation_id = ANY(%(orgs)s)
                       ELSE %(sites)s::text[] IS NULL OR a.site_id = ANY(%(sites)s) END)
             AND (%(orgs)s::int[] IS NULL OR c.organisation_id = ANY(%(orgs)s))
           ORDER BY t.id DESC LIMIT %(limit)s""",
        {"alert": alert_id, "before": before, "orgs": organisations, "sites": sites,
         "limit": limit}).fetchall()
    found = []
    for row in rows:
        item = dict(zip(LOG_COLUMNS, row, strict=True))
        item["channel"] = describe(item["channel"])
        found.append(item)
    return found


# --- acknowledge links --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Redeemed:
    alert_ids: list[int]  # the alerts acknowledged now (an incident's: all still open)
    site_ids: list[str]
    contact: str
    channel: str


class TokenRefused(Exception):
    """``reason``: 'unknown', 'used' or 'expired'."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def token_alert(conn: psycopg.Connection, token: str) -> tuple[int, str, str] | None:
    """(alert id, site id, state) of a token, to show before acknowledging."""
    row = conn.execute(
        """SELECT a.id, a.site_id, a.state FROM notify_ack_tokens t
           JOIN alerts a ON a.id = t.alert_id
           WHERE t.token_hash = %s AND t.response_id IS NULL""",
        (token_hash(token),)).fetchone()
    return (int(row[0]), str(row[1]), str(row[2])) if row else None


def redeem(conn: psycopg.Connection, token: str, now: datetime) -> Redeemed:
    """Use a token (once, before it expires) to acknowledge its alert, or its incident's
    open alerts, as its contact. Runs in the caller's transaction."""
    row = conn.execute(
        """UPDATE notify_ack_tokens SET used_at = %(now)s
           WHERE token_hash = %(hash)s AND used_at IS NULL AND expires_at > %(now)s
             AND response_id IS NULL
           RETURNING alert_id, incident_id, contact_id""",
        {"now": now, "hash": token_hash(token)}).fetchone()
    if row is None:
        known = conn.execute("SELECT used_at FROM notify_ack_tokens WHERE token_hash = %s "
                             "AND response_id IS NULL", (token_hash(token),)).fetchone()
        if known is None:
            raise TokenRefused("unknown")
        raise TokenRefused("used" if known[0] is not None else "expired")
    alert_id, incident_id, contact_id = row
    contact = conn.execute("SELECT name, url FROM notify_contacts WHERE id = %s",
                           (contact_id,)).fetchone()
    assert contact is not None  # the token's foreign key holds it
    who, channel = f"contact:{contact[0]}", describe(contact[1])
    acknowledged = conn.execute(
        """UPDATE alerts SET state = 'acknowledged', acknowledged_by = %(who)s,
                             acknowledged_at = %(now)s, acknowledged_via = %(channel)s
           WHERE state = 'open' AND (id = %(alert)s OR id IN (
               SELECT alert_id FROM notify_incident_alerts
               WHERE incident_id = %(incident)s))
           RETURNING id, site_id""",
        {"who": who, "now": now, "channel": channel, "alert": alert_id,
         "incident": incident_id}).fetchall()
    if acknowledged:
        conn.execute(
            """INSERT INTO alert_events (alert_id, at, action, actor, note)
               SELECT unnest(%s::bigint[]), %s, 'acknowledged', %s, %s""",
            ([r[0] for r in acknowledged], now, who, f"through {channel}"))
    return Redeemed([r[0] for r in acknowledged], [r[1] for r in acknowledged], who, channel)


def token_response(conn: psycopg.Connection, token: str) -> int | None:
    """The suggested response a confirm link is for, to show before confirming."""
    row = conn.execute("SELECT response_id FROM notify_ack_tokens WHERE token_hash = %s "
                       "AND response_id IS NOT NULL", (token_hash(token),)).fetchone()
    return int(row[0]) if row else None


@dataclass(frozen=True, slots=True)
class ConfirmRight:
    response_id: int
    contact: str  # the actor: ``contact:<name>``
    channel: str


def redeem_confirm(conn: psycopg.Connection, token: str, now: datetime) -> ConfirmRight:
    """Use a confirm link's token (once, before it expires): the right of its contact to
    confirm its response, while the contact's organisation still owns the site (a site
    moved since is not theirs to run). Runs in the caller's transaction; the caller
    confirms (``detect.responses.confirm``)."""
    row = conn.execute(
        """UPDATE notify_ack_tokens SET used_at = %(now)s
           WHERE token_hash = %(hash)s AND used_at IS NULL AND expires_at > %(now)s
             AND response_id IS NOT NULL
           RETURNING response_id, contact_id""",
        {"now": now, "hash": token_hash(token)}).fetchone()
    if row is None:
        known = conn.execute("SELECT used_at FROM notify_ack_tokens WHERE token_hash = %s "
                             "AND response_id IS NOT NULL", (token_hash(token),)).fetchone()
        if known is None:
            raise TokenRefused("unknown")
        raise TokenRefused("used" if known[0] is not None else "expired")
    response_id, contact_id = row
    contact = conn.execute(
        """SELECT k.name, k.url FROM notify_contacts k, alert_responses r, sites s
           WHERE k.id = %s AND r.id = %s AND s.id = r.site_id
             AND s.organisation_id = k.organisation_id""",
        (contact_id, response_id)).fetchone()
    if contact is None:
        raise TokenRefused("unknown")
    return ConfirmRight(int(response_id), f"contact:{contact[0]}", describe(contact[1]))


# --- incidents (the API and the dashboard) ------------------------------------------------

def incidents(conn: psycopg.Connection, *, sites: list[str] | None,
              incident_id: int | None = None) -> list[dict[str, Any]]:
    """Open incidents of more than one alert, newest first, with the alerts of the sites
    the caller sees (an incident of none of them is not listed)."""
    rows = conn.execute(
        """SELECT i.id, i.rule, i.opened_at, i.joined_at,
                  jsonb_agg(jsonb_build_object('id', a.id, 'site_id', a.site_id,
                                               'state', a.state, 'severity', a.severity,
                                               'acknowledged_by', a.acknowledged_by)
                            ORDER BY a.site_id)
           FROM notify_incidents i JOIN notify_incident_alerts ia ON ia.incident_id = i.id
           JOIN alerts a ON a.id = ia.alert_id
           WHERE i.closed_at IS NULL AND a.state <> 'closed'
             AND (%(sites)s::text[] IS NULL OR a.site_id = ANY(%(sites)s))
             AND (%(id)s::bigint IS NULL OR i.id = %(id)s)
           GROUP BY i.id HAVING count(*) > 1 OR %(id)s::bigint IS NOT NULL
           ORDER BY i.joined_at DESC LIMIT 200""",
        {"sites": sites, "id": incident_id}).fetchall()
    return [{"id": r[0], "rule": r[1], "opened_at": r[2], "joined_at": r[3], "alerts": r[4]}
            for r in rows]


def acknowledge_alerts(conn: psycopg.Connection, alert_ids: list[int], *, who: str,
                       comment: str | None, via: str) -> list[tuple[int, str]]:
    """Acknowledge those of ``alert_ids`` still open; returns (id, site) of each."""
    done = conn.execute(
        """UPDATE alerts SET state = 'acknowledged', acknowledged_by = %s,
                             acknowledged_at = now(), ack_comment = %s, acknowledged_via = %s
           WHERE id = ANY(%s) AND state = 'open' RETURNING id, site_id""",
        (who, comment, via, alert_ids)).fetchall()
    if done:
        conn.execute("""INSERT INTO alert_events (alert_id, action, actor, note)
                        SELECT unnest(%s::bigint[]), 'acknowledged', %s, %s""",
                     ([r[0] for r in done], who, comment))
    return [(int(r[0]), str(r[1])) for r in done]
