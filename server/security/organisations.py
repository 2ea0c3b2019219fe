"""Organisations and the sites they own or may read.

A site belongs to exactly one organisation (``sites.organisation_id``; the platform
office, id 1, until an admin gives it to another). An organisation may be granted read
access to another's site (``site_grants``): a lab studying a marine ranch reads it, and
can do nothing else there. ``organisation_of_site`` is the seam other parts use to ask
whose a site is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg

from .api_keys import PLATFORM_ORGANISATION_ID
from .people import AccountError

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}$")


@dataclass(frozen=True, slots=True)
class Organisation:
    id: int
    slug: str
    name: str
    platform: bool
    sites: int
    granted: int
    people: int


def list_organisations(conn: psycopg.Connection, ids: list[int] | None = None
                       ) -> list[Organisation]:
    """Organisations (None: all) with how many sites they own, are granted, and people."""
    rows = conn.execute(
        """SELECT o.id, o.slug, o.name, o.platform,
                  (SELECT count(*) FROM sites s WHERE s.organisation_id = o.id),
                  (SELECT count(*) FROM site_grants g WHERE g.organisation_id = o.id),
                  (SELECT count(*) FROM memberships m WHERE m.organisation_id = o.id)
           FROM organisations o WHERE %(ids)s::int[] IS NULL OR o.id = ANY(%(ids)s)
           ORDER BY o.id""", {"ids": ids}).fetchall()
    return [Organisation(*row) for row in rows]


def find_organisation(conn: psycopg.Connection, slug_or_id: str | int) -> Organisation | None:
    rows = list_organisations(conn)
    return next((o for o in rows if o.slug == slug_or_id or o.id == slug_or_id
                 or str(o.id) == str(slug_or_id)), None)


def create_organisation(conn: psycopg.Connection, slug: str, name: str) -> int:
    if not SLUG.match(slug):
        raise AccountError("an organisation's short name is 2-40 characters of a-z, 0-9 "
                           "and '-'")
    if not name.strip():
        raise AccountError("an organisation needs a name")
    try:
        row = conn.execute("INSERT INTO organisations (slug, name) VALUES (%s, %s) "
                           "RETURNING id", (slug, name.strip())).fetchone()
    except psycopg.errors.UniqueViolation:
        raise AccountError(f"there is already an organisation {slug!r}") from None
    assert row is not None
    return int(row[0])


def organisation_of_site(conn: psycopg.Connection, site_id: str) -> int | None:
    row = conn.execute("SELECT organisation_id FROM sites WHERE id = %s",
                       (site_id,)).fetchone()
    return int(row[0]) if row else None


def assign_sites(conn: psycopg.Connection, organisation_id: int, site_ids: list[str]
                 ) -> dict[str, int]:
    """Make the organisation the owner of these sites; returns each site's owner before.
    A grant of a site to its new owner is dropped (it owns it now)."""
    before: dict[str, int] = dict(conn.execute(
        "SELECT id, organisation_id FROM sites WHERE id = ANY(%s) FOR UPDATE",
        (site_ids,)).fetchall())
    unknown = sorted(set(site_ids) - set(before))
    if unknown:
        raise AccountError(f"unknown sites: {', '.join(unknown)}")
    conn.execute("UPDATE sites SET organisation_id = %s WHERE id = ANY(%s)",
                 (organisation_id, site_ids))
    conn.execute("DELETE FROM site_grants WHERE organisation_id = %s AND site_id = ANY(%s)",
                 (organisation_id, site_ids))
    return before


def grant(conn: psycopg.Connection, organisation_id: int, site_id: str) -> bool:
    """Let the organisation read another's site; False when it already may."""
    owner = organisation_of_site(conn, site_id)
    if owner is None:
        raise AccountError(f"unknown site {site_id!r}")
    if owner == organisation_id:
        raise AccountError(f"site {site_id} is the organisation's own")
    return conn.execute("INSERT INTO site_grants (organisation_id, site_id) VALUES (%s, %s) "
                        "ON CONFLICT DO NOTHING", (organisation_id, site_id)).rowcount == 1


def revoke_grant(conn: psycopg.Connection, organisation_id: int, site_id: str) -> bool:
    return conn.execute("DELETE FROM site_grants WHERE organisation_id = %s AND site_id = %s",
                        (organisation_id, site_id)).rowcount == 1


def grants(conn: psycopg.Connection, organisation_id: int) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT site_id FROM site_grants WHERE organisation_id = %s ORDER BY site_id",
        (organisation_id,))]


def is_platform(organisation_id: int) -> bool:
    return organisation_id == PLATFORM_ORGANISATION_ID
