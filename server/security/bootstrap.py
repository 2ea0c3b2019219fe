"""The people a fresh platform starts with (``tidefield up``): one platform admin, and a
demo organisation per kind of site, so that a newcomer sees isolation at work.

- ``admin`` (the platform office's admin) gets a temporary password, which ``up``
  prints; the first sign-in must replace it. Made once; never touched again (an admin
  who lost the password resets it with ``tidefield users reset-password admin``).
- ``demo-<kind>`` owns every site of that kind that the platform office still owns, and
  has one operator, ``<kind>.operator``, with a temporary password of its own. The
  marine-ranch demo grants the ecological-buoy demo read access to its first site (a lab
  studying a ranch). Made only on a database that has no organisation but the office.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from tidefield.protocol.catalog import SITE_KINDS

from . import audit, organisations, people
from .api_keys import PLATFORM_ORGANISATION_ID

ADMIN_USERNAME = "admin"
ACTOR = "system:bootstrap"


@dataclass(frozen=True, slots=True)
class FirstSignIn:
    username: str
    temporary_password: str
    organisation: str


def ensure_platform_admin(conn: psycopg.Connection) -> FirstSignIn | None:
    """Make the platform admin when there is none; its first sign-in, or None."""
    if people.find_user(conn, ADMIN_USERNAME) is not None:
        return None
    password = people.temporary_password()
    with conn.transaction():
        user_id = people.create_user(conn, ADMIN_USERNAME, password=password,
                                     display_name="Platform admin")
        people.set_role(conn, user_id, PLATFORM_ORGANISATION_ID, "admin")
        audit.record(conn, actor=ACTOR, action="user.created",
                     target=f"user:{ADMIN_USERNAME}", organisations=[PLATFORM_ORGANISATION_ID])
        audit.record(conn, actor=ACTOR, action="role.changed",
                     target=f"user:{ADMIN_USERNAME}", organisations=[PLATFORM_ORGANISATION_ID],
                     after={"organisation_id": PLATFORM_ORGANISATION_ID, "role": "admin"})
    return FirstSignIn(ADMIN_USERNAME, password, "platform")


def demo_slug(kind: str) -> str:
    return "demo-" + kind.replace("_", "-")


def ensure_demo_organisations(conn: psycopg.Connection) -> list[FirstSignIn]:
    """A demo organisation per kind of site with its operator, on a database that has
    none yet; the operators' first sign-ins (none when nothing was made)."""
    if conn.execute("SELECT count(*) FROM organisations WHERE NOT platform"
                    ).fetchone()[0]:  # type: ignore[index]
        return []
    made: list[FirstSignIn] = []
    with conn.transaction():
        org_of_kind: dict[str, int] = {}
        for kind in SITE_KINDS.values():
            slug = demo_slug(kind.name)
            org_id = organisations.create_organisation(conn, slug,
                                                       f"Demo {kind.name_en} company")
            org_of_kind[kind.name] = org_id
            sites = [r[0] for r in conn.execute(
                "SELECT id FROM sites WHERE kind = %s AND organisation_id = %s ORDER BY id",
                (kind.name, PLATFORM_ORGANISATION_ID))]
            if sites:
                organisations.assign_sites(conn, org_id, sites)
            username = f"{kind.name.replace('_', '-')}.operator"
            password = people.temporary_password()
            user_id = people.create_user(conn, username, password=password,
                                         display_name=f"Demo {kind.name_en} operator")
            people.set_role(conn, user_id, org_id, "operator")
            audit.record(conn, actor=ACTOR, action="organisation.created",
                         target=f"organisation:{slug}", organisations=[org_id],
                         after={"sites": len(sites)})
            audit.record(conn, actor=ACTOR, action="user.created", target=f"user:{username}",
                         organisations=[org_id],
                         after={"organisation_id": org_id, "role": "operator"})
            made.append(FirstSignIn(username, password, slug))
        ranch = conn.execute("SELECT id FROM sites WHERE kind = 'marine_ranch' ORDER BY id "
                             "LIMIT 1").fetchone()
        if ranch and "ecological_buoy" in org_of_kind:
            organisations.grant(conn, org_of_kind["ecological_buoy"], ranch[0])
            audit.record(conn, actor=ACTOR, action="grant.added", target=f"site:{ranch[0]}",
                         organisations=[org_of_kind["ecological_buoy"],
                                        org_of_kind["marine_ranch"]],
                         after={"organisation_id": org_of_kind["ecological_buoy"],
                                "access": "read"})
    return made
