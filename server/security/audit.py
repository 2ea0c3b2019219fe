"""The audit log: who did what, when, from where, and what it changed.

One call, ``record(conn, actor=..., action=..., target=...)``, writes one row in the
caller's transaction, so the row exists exactly when the action does (a route that
rolls back leaves no row; on an autocommit connection the row is written at once, which
is what a refused sign-in needs). The table is append-only: the database refuses UPDATE,
DELETE and TRUNCATE on it (migration 0010), so nothing here or elsewhere can rewrite it.

``actor`` is the ``Principal`` that acted (a person signed in, or an API key) or, for
what no person did over the API, a plain name (``"system"``, ``cli:<os user>``).

Who may read a row: platform admins every row; an organisation's admins the rows whose
``organisation_ids`` hold their organisation: the organisations of the person who acted,
of the site acted on (``site_id``), and any named by the caller (``organisations``).

Actions are dotted lower-case names, ``<thing>.<what happened>``: ``sign_in.succeeded``,
``alert.acknowledged``, ``api_key.created``, ``rule.changed``... (``ACTIONS`` lists the
ones this package writes; other parts add their own.)
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .api_keys import Principal

ACTION_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")

ACTIONS = (
    "sign_in.succeeded", "sign_in.failed", "sign_in.locked", "sign_out",
    "password.changed", "password.reset", "totp.enabled", "totp.disabled",
    "alert.acknowledged", "alert.response_confirmed",
    "api_key.created", "api_key.revoked",
    "device.provisioned", "device.revoked", "service.provisioned",
    "organisation.created", "site.moved", "grant.added", "grant.removed",
    "user.created", "user.disabled", "user.enabled", "role.changed", "role.removed",
    "identity_provider.added",
    "rule.changed", "threshold.changed",
)

COLUMNS = ("id", "at", "actor", "actor_user_id", "action", "target", "organisation_ids",
           "source_address", "before", "after")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    actor_user_id: int | None
    action: str
    target: str
    organisation_ids: list[int]
    source_address: str | None
    before: Any
    after: Any


def record(conn: psycopg.Connection, *, actor: Principal | str, action: str, target: str,
           before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None,
           source_address: str | None = None, site_id: str | None = None,
           organisations: Iterable[int] = ()) -> int:
    """Append one row and return its id. ``before``/``after``: what changed, as JSON."""
    if not ACTION_PATTERN.match(action):
        raise ValueError(f"audit action {action!r} is not a dotted lower-case name")
    if isinstance(actor, Principal):
        name, user_id = actor.name, actor.user_id
        organisation_ids = set(actor.organisations)
    else:
        name, user_id, organisation_ids = actor, None, set()
    organisation_ids.update(organisations)
    if site_id is not None:
        row = conn.execute("SELECT organisation_id FROM sites WHERE id = %s",
                           (site_id,)).fetchone()
        if row is not None:
            organisation_ids.add(row[0])
    row = conn.execute(
        "INSERT INTO audit_log (actor, actor_user_id, action, target, organisation_ids, "
        "source_address, before, after) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (name, user_id, action, target, sorted(organisation_ids), source_address,
         Jsonb(before) if before is not None else None,
         Jsonb(after) if after is not None else None)).fetchone()
    assert row is not None  # INSERT ... RETURNING returns its row
    return int(row[0])


def entries(conn: psycopg.Connection, *, organisations: Iterable[int] | None,
            action: str | None = None, actor: str | None = None, target: str | None = None,
            since: datetime | None = None, until: datetime | None = None,
            before_id: int | None = None, limit: int = 100) -> list[AuditEntry]:
    """Rows newest first. ``organisations``: only rows concerning one of these (None: all,
    for platform admins). ``action`` may end in ``.*`` for a family (``sign_in.*``)."""
    family = action[:-2] + "." if action and action.endswith(".*") else None
    rows = conn.execute(
        f"""SELECT {', '.join(COLUMNS)} FROM audit_log
            WHERE (%(orgs)s::int[] IS NULL OR organisation_ids && %(orgs)s::int[])
              AND (%(action)s::text IS NULL OR action = %(action)s)
              AND (%(family)s::text IS NULL OR starts_with(action, %(family)s))
              AND (%(actor)s::text IS NULL OR actor = %(actor)s)
              AND (%(target)s::text IS NULL OR target = %(target)s)
              AND (%(since)s::timestamptz IS NULL OR at >= %(since)s)
              AND (%(until)s::timestamptz IS NULL OR at < %(until)s)
              AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s)
            ORDER BY id DESC LIMIT %(limit)s""",
        {"orgs": sorted(organisations) if organisations is not None else None,
         "action": None if family else action, "family": family, "actor": actor,
         "target": target, "since": since, "until": until, "before_id": before_id,
         "limit": limit}).fetchall()
    return [AuditEntry(*row) for row in rows]


def csv_lines(items: Iterable[AuditEntry]) -> Iterator[str]:
    """The rows as CSV text (a header first), one chunk per row, for streaming."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(["id", "at", "actor", "action", "target", "source_address", "before",
                     "after"])
    yield flush()
    for item in items:
        writer.writerow([item.id, item.at.isoformat(), item.actor, item.action, item.target,
                         item.source_address or "", _json(item.before), _json(item.after)])
        yield flush()


def _json(value: Any) -> str:
    import json

    return "" if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)
