"""Maintenance windows: a technician's period of work on a site or one device.

What a window does is decided elsewhere, from these rows: export flags the readings in it
(``api.routes.export``), the detector holds the alerts it would open in it
(``detect.maintenance``), the dashboards shade it on the site's charts. A window is ended
early by moving its end to now; rows are never deleted, so what was flagged stays
explained.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

# A window longer than this is a typo (a year instead of a day), not maintenance.
MAX_WINDOW_DAYS = 31


@dataclass(frozen=True, slots=True)
class Window:
    id: int
    site_id: str
    device_id: str | None  # None: the whole site
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str

    def covers(self, site_id: str, device_ids: frozenset[str] | set[str], at: datetime
               ) -> bool:
        """Whether a reading (or an alert) of these devices of ``site_id`` at ``at`` falls
        in this window."""
        return (self.site_id == site_id and self.starts_at <= at < self.ends_at
                and (self.device_id is None or self.device_id in device_ids))


_COLUMNS = "id, site_id, device_id, starts_at, ends_at, reason, created_by"


def create_window(conn: psycopg.Connection, *, site_id: str, device_id: str | None,
                  starts_at: datetime, ends_at: datetime, reason: str,
                  created_by: str) -> Window:
    row = conn.execute(
        f"INSERT INTO maintenance_windows (site_id, device_id, starts_at, ends_at, reason, "
        f"created_by) VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
        (site_id, device_id, starts_at, ends_at, reason, created_by)).fetchone()
    assert row is not None  # INSERT ... RETURNING
    return Window(*row)


def get_window(conn: psycopg.Connection, window_id: int) -> Window | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM maintenance_windows WHERE id = %s",
                       (window_id,)).fetchone()
    return Window(*row) if row else None


def end_window(conn: psycopg.Connection, window_id: int, at: datetime) -> Window:
    """End a window at ``at`` (not before its start: a window not begun yet ends as it
    starts, which is the smallest period the table allows, a microsecond)."""
    row = conn.execute(
        f"UPDATE maintenance_windows SET ends_at = greatest(%s, starts_at "
        f"+ interval '1 microsecond') WHERE id = %s RETURNING {_COLUMNS}",
        (at, window_id)).fetchone()
    assert row is not None  # the caller found the window
    return Window(*row)


def windows(conn: psycopg.Connection, *, sites: list[str] | None, since: datetime | None,
            until: datetime | None, device_id: str | None = None) -> list[Window]:
    """Windows of these sites (None: every site) that overlap [since, until)."""
    rows = conn.execute(
        f"""SELECT {_COLUMNS} FROM maintenance_windows
            WHERE (%(sites)s::text[] IS NULL OR site_id = ANY(%(sites)s))
              AND (%(device)s::text IS NULL OR device_id = %(device)s OR device_id IS NULL)
              AND (%(since)s::timestamptz IS NULL OR ends_at > %(since)s)
              AND (%(until)s::timestamptz IS NULL OR starts_at < %(until)s)
            ORDER BY starts_at, id""",
        {"sites": sites, "device": device_id, "since": since, "until": until}).fetchall()
    return [Window(*row) for row in rows]
