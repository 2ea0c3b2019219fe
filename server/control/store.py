"""The device twin and the command log in the database (migration 0012): keyword-only
functions that bind every parameter. The API and the CLI write what people want; the
control service (``service.py``) publishes it and stores what devices answer.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tidefield.protocol.control import (
    FINAL_STATES,
    Action,
    Command,
    CommandResult,
    CommandState,
    ReportedConfig,
    Settings,
    check_command,
    settings_from_dict,
)

DEFAULT_EXPIRY_S = 3600.0
MAX_EXPIRY_S = 7 * 86_400.0


class ControlError(ValueError):
    """A request the store refuses; the message says why (the API answers 4xx)."""


class UnknownDevice(ControlError):
    pass


@dataclass(frozen=True, slots=True)
class Twin:
    device_id: str
    site_id: str
    desired_version: int | None
    desired: dict[str, Any] | None
    desired_at: datetime | None
    desired_by: str | None
    published_version: int
    reported_version: int | None
    reported: dict[str, Any] | None
    reported_at: datetime | None
    reported_error: str | None
    agent_version: str | None

    @property
    def in_sync(self) -> bool:
        return self.desired_version is None or self.reported_version == self.desired_version

    def difference(self) -> dict[str, dict[str, Any]]:
        """Setting -> {desired, reported} for every setting where the two differ."""
        desired, reported = self.desired or {}, self.reported or {}
        return {name: {"desired": desired.get(name), "reported": reported.get(name)}
                for name in sorted(set(desired) | set(reported))
                if desired.get(name) != reported.get(name)}


@dataclass(frozen=True, slots=True)
class CommandRow:
    id: str
    device_id: str
    site_id: str
    action: str
    params: dict[str, Any]
    state: str
    reason: str | None
    value: float | None
    issued_at: datetime
    expires_at: datetime
    issued_by: str
    sent_at: datetime | None
    delivered_at: datetime | None
    finished_at: datetime | None

    def to_command(self) -> Command:
        return Command(self.site_id, self.device_id, self.id, Action(self.action),
                       _ms(self.issued_at), _ms(self.expires_at), **self.params)


_COMMAND_COLUMNS = ", ".join(CommandRow.__dataclass_fields__)
_TWIN_SELECT = """SELECT d.id, d.site_id, c.desired_version, c.desired, c.desired_at,
    c.desired_by, coalesce(c.published_version, 0), c.reported_version, c.reported,
    c.reported_at, c.reported_error, c.agent_version
    FROM devices d LEFT JOIN device_config c ON c.device_id = d.id"""


def device_site(conn: psycopg.Connection, *, device_id: str) -> str:
    row = conn.execute("SELECT site_id FROM devices WHERE id = %s", (device_id,)).fetchone()
    if row is None:
        raise UnknownDevice(f"no device {device_id!r}")
    return str(row[0])


def twin(conn: psycopg.Connection, *, device_id: str) -> Twin:
    row = conn.execute(_TWIN_SELECT + " WHERE d.id = %s", (device_id,)).fetchone()
    if row is None:
        raise UnknownDevice(f"no device {device_id!r}")
    return Twin(*row)


def site_twins(conn: psycopg.Connection, *, site_id: str) -> list[Twin]:
    return [Twin(*row) for row in conn.execute(
        _TWIN_SELECT + " WHERE d.site_id = %s ORDER BY d.id", (site_id,))]


def set_desired(conn: psycopg.Connection, *, device_id: str, settings: dict[str, Any],
                actor: str) -> Twin:
    """A new desired version (the previous one plus one) holding ``settings``, validated
    as the wire contract validates them (ControlError says what is wrong)."""
    try:
        document = settings_from_dict(settings).to_dict()
    except ValueError as exc:
        raise ControlError(str(exc)) from None
    device_site(conn, device_id=device_id)
    conn.execute(
        """INSERT INTO device_config (device_id, desired_version, desired, desired_at,
                                      desired_by)
           VALUES (%(d)s, 1, %(doc)s, now(), %(by)s)
           ON CONFLICT (device_id) DO UPDATE SET
               desired_version = coalesce(device_config.desired_version, 0) + 1,
               desired = EXCLUDED.desired, desired_at = now(), desired_by = EXCLUDED.desired_by""",
        {"d": device_id, "doc": Jsonb(document), "by": actor})
    return twin(conn, device_id=device_id)


def unpublished_configs(conn: psycopg.Connection) -> list[tuple[str, str, int, Settings]]:
    """(site, device, version, settings) of every desired version not yet published."""
    rows = conn.execute(
        """SELECT d.site_id, c.device_id, c.desired_version, c.desired FROM device_config c
           JOIN devices d ON d.id = c.device_id
           WHERE c.published_version < c.desired_version ORDER BY c.device_id""").fetchall()
    return [(site, device, version, settings_from_dict(doc))
            for site, device, version, doc in rows]


def mark_published(conn: psycopg.Connection, *, device_id: str, version: int) -> None:
    conn.execute("UPDATE device_config SET published_version = greatest(published_version, %s) "
                 "WHERE device_id = %s", (version, device_id))


def record_reported(conn: psycopg.Connection, *, reported: ReportedConfig) -> bool:
    """Store a device's reported configuration; False when it is older than the one
    stored (answers can arrive out of order after a reconnect)."""
    row = conn.execute(
        """INSERT INTO device_config AS c (device_id, reported_version, reported,
                                           reported_at, reported_error, agent_version)
           SELECT id, %(v)s, %(doc)s, to_timestamp(%(t)s / 1000.0), %(err)s, %(agent)s
           FROM devices WHERE id = %(d)s
           ON CONFLICT (device_id) DO UPDATE SET
               reported_version = EXCLUDED.reported_version, reported = EXCLUDED.reported,
               reported_at = EXCLUDED.reported_at, reported_error = EXCLUDED.reported_error,
               agent_version = coalesce(EXCLUDED.agent_version, c.agent_version)
           WHERE c.reported_at IS NULL OR c.reported_at <= EXCLUDED.reported_at
           RETURNING 1""",
        {"v": reported.version, "doc": Jsonb(reported.settings.to_dict()),
         "t": reported.time_ms, "err": reported.error, "d": reported.device,
         "agent": reported.agent_version}).fetchone()
    return row is not None


def new_command_id() -> str:
    return "cmd-" + secrets.token_hex(12)


def create_command(conn: psycopg.Connection, *, device_id: str, action: str,
                   params: dict[str, Any], actor: str,
                   expires_in_s: float = DEFAULT_EXPIRY_S,
                   command_id: str | None = None) -> CommandRow:
    """Queue a command (state ``pending``) for the control service to send."""
    site = device_site(conn, device_id=device_id)
    if not 1 <= expires_in_s <= MAX_EXPIRY_S:
        raise ControlError(f"expires_in_s must be 1..{MAX_EXPIRY_S:g} s")
    try:
        kind = Action(action)
    except ValueError:
        raise ControlError(f"unknown action {action!r}; actions: "
                           f"{', '.join(a.value for a in Action)}") from None
    params = {k: v for k, v in params.items() if v is not None}
    allowed = {"actuator", "state", "value", "duration_s", "url", "version", "sha256",
               "signature"}
    if set(params) - allowed:
        raise ControlError(f"unknown parameter(s) {sorted(set(params) - allowed)}")
    now = datetime.now(UTC)
    command_id = command_id or new_command_id()
    try:
        check_command(Command(site, device_id, command_id, kind, _ms(now),
                              _ms(now + timedelta(seconds=expires_in_s)), **params))
    except (ValueError, TypeError) as exc:
        raise ControlError(str(exc)) from None
    row = conn.execute(
        f"""INSERT INTO device_commands (id, device_id, site_id, action, params, issued_at,
               expires_at, issued_by)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COMMAND_COLUMNS}""",
        (command_id, device_id, site, kind.value, Jsonb(params), now,
         now + timedelta(seconds=expires_in_s), actor)).fetchone()
    assert row is not None
    return CommandRow(*row)


def command(conn: psycopg.Connection, *, command_id: str) -> CommandRow | None:
    row = conn.execute(f"SELECT {_COMMAND_COLUMNS} FROM device_commands WHERE id = %s",
                       (command_id,)).fetchone()
    return CommandRow(*row) if row else None


def commands(conn: psycopg.Connection, *, site_id: str | None = None,
             device_id: str | None = None, limit: int = 100) -> list[CommandRow]:
    return [CommandRow(*row) for row in conn.execute(
        f"""SELECT {_COMMAND_COLUMNS} FROM device_commands
            WHERE (%(site)s::text IS NULL OR site_id = %(site)s)
              AND (%(device)s::text IS NULL OR device_id = %(device)s)
            ORDER BY issued_at DESC, id LIMIT %(limit)s""",
        {"site": site_id, "device": device_id, "limit": limit})]


def pending_commands(conn: psycopg.Connection) -> list[CommandRow]:
    """Commands to send now, oldest first (not yet expired)."""
    return [CommandRow(*row) for row in conn.execute(
        f"""SELECT {_COMMAND_COLUMNS} FROM device_commands
            WHERE state = 'pending' AND expires_at > now() ORDER BY issued_at, id""")]


def mark_sent(conn: psycopg.Connection, *, command_id: str) -> None:
    conn.execute("UPDATE device_commands SET state = 'sent', sent_at = now() "
                 "WHERE id = %s AND state = 'pending'", (command_id,))


def expire_overdue(conn: psycopg.Connection) -> int:
    """Commands not delivered before their expiry are expired; how many."""
    cursor = conn.execute(
        """UPDATE device_commands SET state = 'expired', finished_at = now(),
               reason = coalesce(reason, 'not delivered before it expired')
           WHERE state IN ('pending', 'sent') AND expires_at <= now()""")
    return cursor.rowcount


def record_result(conn: psycopg.Connection, *, result: CommandResult) -> bool:
    """Move a command on by a device's answer; False when the answer does not apply (an
    unknown id, another device's command, or a command already finished)."""
    final = result.state in FINAL_STATES
    at = datetime.fromtimestamp(result.time_ms / 1000, UTC)
    if result.state is CommandState.DELIVERED:
        row = conn.execute(
            """UPDATE device_commands SET state = 'delivered', delivered_at = %(at)s
               WHERE id = %(id)s AND device_id = %(d)s AND state IN ('pending', 'sent')
               RETURNING 1""", {"at": at, "id": result.id, "d": result.device}).fetchone()
        return row is not None
    assert final
    row = conn.execute(
        """UPDATE device_commands SET state = %(s)s, reason = %(r)s, value = %(v)s,
               finished_at = %(at)s, delivered_at = coalesce(delivered_at, %(at)s)
           WHERE id = %(id)s AND device_id = %(d)s
             AND state IN ('pending', 'sent', 'delivered')
           RETURNING 1""",
        {"s": result.state.value, "r": result.reason, "v": result.value, "at": at,
         "id": result.id, "d": result.device}).fetchone()
    return row is not None


def fleet_versions(conn: psycopg.Connection, *, sites: list[str] | None
                   ) -> list[tuple[str, int, list[str]]]:
    """(agent version, gateways, their sites) over the gateways of ``sites`` (None: all),
    most common first; 'unknown' for gateways that never reported one."""
    rows = conn.execute(
        """SELECT coalesce(c.agent_version, 'unknown'), count(*),
                  array_agg(DISTINCT d.site_id ORDER BY d.site_id)
           FROM devices d LEFT JOIN device_config c ON c.device_id = d.id
           WHERE d.template = 'gw' AND (%(s)s::text[] IS NULL OR d.site_id = ANY(%(s)s))
           GROUP BY 1 ORDER BY 2 DESC, 1""", {"s": sites}).fetchall()
    return [(str(v), int(n), list(s)) for v, n, s in rows]


def offer_release(conn: psycopg.Connection, *, params: dict[str, Any], sites: list[str],
                  first: int | None, actor: str, expires_in_s: float = 86_400.0
                  ) -> list[CommandRow]:
    """A staged roll-out: ``update`` commands for the gateways of ``sites`` not already
    on the release and not offered it yet, at most ``first`` of them (in site order).
    Run again with a larger ``first`` (or none) for the next stage."""
    version = params.get("version")
    gateways = [r[0] for r in conn.execute(
        """SELECT d.id FROM devices d LEFT JOIN device_config c ON c.device_id = d.id
           WHERE d.template = 'gw' AND d.site_id = ANY(%(s)s)
             AND c.agent_version IS DISTINCT FROM %(v)s
             AND NOT EXISTS (SELECT 1 FROM device_commands k WHERE k.device_id = d.id
                             AND k.action = 'update' AND k.params->>'version' = %(v)s
                             AND k.state NOT IN ('failed', 'expired'))
           ORDER BY d.site_id, d.id""", {"s": sites, "v": version})]
    already = conn.execute(
        """SELECT count(DISTINCT k.device_id) FROM device_commands k
           JOIN devices d ON d.id = k.device_id
           WHERE d.site_id = ANY(%(s)s) AND k.action = 'update'
             AND k.params->>'version' = %(v)s AND k.state NOT IN ('failed', 'expired')""",
        {"s": sites, "v": version}).fetchone()
    room = len(gateways) if first is None else max(0, first - int(already[0] if already else 0))
    return [create_command(conn, device_id=gateway, action="update", params=params,
                           actor=actor, expires_in_s=expires_in_s)
            for gateway in gateways[:room]]


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)
