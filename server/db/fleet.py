"""Changes an operator makes to the registry in the database: sites and devices created,
edited, moved and retired (the API's fleet routes call these; rights and the audit are
theirs). Checked as the registry file is checked (``protocol.registry``): a site made
here could be a row of sites.csv, and a device has one of its site kind's templates.

Each function changes rows in the caller's transaction and returns what it changed as a
plain dict (``before``/``after`` for the audit log). ``FleetError`` carries the HTTP
status the refusal deserves, so the routes only translate it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from tidefield.protocol.catalog import DEVICE_TEMPLATES, DeviceTemplate
from tidefield.protocol.registry import RegistryError, Site, site_from_fields
from tidefield.protocol.topics import check_id

from .registry import load_registry

SITE_COLUMNS = ("id", "name_zh", "name_en", "kind", "domain", "district", "lat", "lon")
EDITABLE_SITE_FIELDS = ("name_zh", "name_en", "district", "lat", "lon")


class FleetError(ValueError):
    """A change refused; ``status`` is the HTTP status that says why (404 unknown, 409 in
    conflict with what exists, 422 invalid)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class DeviceRow:
    id: str
    site_id: str
    template: str
    model: str
    interval_s: int
    retired: bool

    def as_dict(self) -> dict[str, Any]:
        return {"site_id": self.site_id, "template": self.template, "model": self.model,
                "interval_s": self.interval_s, "retired": self.retired}


def site_dict(site: Site) -> dict[str, Any]:
    return {column: getattr(site, column) for column in SITE_COLUMNS}


def get_site(conn: psycopg.Connection, site_id: str, *, lock: bool = False
             ) -> tuple[Site, int, bool] | None:
    """The site, its organisation and whether it is retired."""
    row = conn.execute(f"SELECT {', '.join(SITE_COLUMNS)}, organisation_id, "
                       f"retired_at IS NOT NULL FROM sites WHERE id = %s"
                       + (" FOR UPDATE" if lock else ""), (site_id,)).fetchone()
    if row is None:
        return None
    return Site(*row[:8]), int(row[8]), bool(row[9])


def get_device(conn: psycopg.Connection, device_id: str, *, lock: bool = False
               ) -> DeviceRow | None:
    row = conn.execute("SELECT id, site_id, template, model, interval_s, "
                       "retired_at IS NOT NULL FROM devices WHERE id = %s"
                       + (" FOR UPDATE" if lock else ""), (device_id,)).fetchone()
    return DeviceRow(*row) if row else None


def _validated_site(fields: dict[str, Any]) -> Site:
    try:
        return site_from_fields({k: "" if v is None else str(v) for k, v in fields.items()},
                                source="site")
    except RegistryError as exc:
        raise FleetError(422, str(exc)) from None


def create_site(conn: psycopg.Connection, fields: dict[str, Any], *, organisation_id: int,
                with_devices: bool) -> Site:
    """A new site of the organisation; with ``with_devices``, the devices (and series) of
    every template of its kind, as ``registry load`` gives a site of sites.csv."""
    site = _validated_site(fields)
    if get_site(conn, site.id) is not None:
        raise FleetError(409, f"a site {site.id!r} exists already")
    conn.execute(f"INSERT INTO sites ({', '.join(SITE_COLUMNS)}, organisation_id) "
                 f"VALUES ({', '.join(['%s'] * len(SITE_COLUMNS))}, %s)",
                 (*site_dict(site).values(), organisation_id))
    if with_devices:
        for template in DEVICE_TEMPLATES[site.kind]:
            _insert_device(conn, f"{site.id}-{template.name}", site.id, template)
    return site


def edit_site(conn: psycopg.Connection, site_id: str, changes: dict[str, Any]
              ) -> tuple[Site, Site]:
    """(before, after) of a change to a site's names, district or position. The kind
    stays: it decides which devices the site may carry."""
    found = get_site(conn, site_id, lock=True)
    if found is None:
        raise FleetError(404, f"no site {site_id!r}")
    before = found[0]
    refused = sorted(set(changes) - set(EDITABLE_SITE_FIELDS))
    if refused:
        raise FleetError(422, f"{', '.join(refused)} cannot be changed (a site's kind "
                              f"decides its devices: create a new site instead)")
    after = _validated_site({**site_dict(before), **changes})
    conn.execute(f"UPDATE sites SET {', '.join(f'{k} = %s' for k in EDITABLE_SITE_FIELDS)}, "
                 f"updated_at = now() WHERE id = %s",
                 (*(getattr(after, k) for k in EDITABLE_SITE_FIELDS), site_id))
    return before, after


def retire_site(conn: psycopg.Connection, site_id: str) -> list[str]:
    """Retire a site and its devices still in service; returns those devices."""
    found = get_site(conn, site_id, lock=True)
    if found is None:
        raise FleetError(404, f"no site {site_id!r}")
    if found[2]:
        raise FleetError(409, f"site {site_id} is retired already")
    conn.execute("UPDATE sites SET retired_at = now(), updated_at = now() WHERE id = %s",
                 (site_id,))
    return [r[0] for r in conn.execute(
        "UPDATE devices SET retired_at = now(), updated_at = now() "
        "WHERE site_id = %s AND retired_at IS NULL RETURNING id", (site_id,))]


def template_of(kind: str, name: str) -> DeviceTemplate:
    for template in DEVICE_TEMPLATES[kind]:
        if template.name == name:
            return template
    names = ", ".join(t.name for t in DEVICE_TEMPLATES[kind])
    raise FleetError(422, f"unknown template {name!r} for a {kind} site "
                          f"(its templates: {names})")


def _insert_device(conn: psycopg.Connection, device_id: str, site_id: str,
                   template: DeviceTemplate) -> None:
    conn.execute("INSERT INTO devices (id, site_id, template, model, interval_s) "
                 "VALUES (%s, %s, %s, %s, %s)",
                 (device_id, site_id, template.name, template.model, template.interval_s))
    conn.execute("INSERT INTO series (device_id, metric) SELECT %s, unnest(%s::text[]) "
                 "ON CONFLICT DO NOTHING", (device_id, list(template.series_metrics)))


def create_device(conn: psycopg.Connection, site_id: str, template_name: str,
                  device_id: str | None = None) -> DeviceRow:
    """A device of one of the site kind's templates, with a series per metric it reports.
    Its id defaults to ``{site}-{template}``, as the registry names devices."""
    found = get_site(conn, site_id)
    if found is None:
        raise FleetError(404, f"no site {site_id!r}")
    site, _, retired = found
    if retired:
        raise FleetError(409, f"site {site_id} is retired")
    template = template_of(site.kind, template_name)
    device_id = device_id or f"{site_id}-{template.name}"
    try:
        check_id(device_id, "device")
    except ValueError as exc:
        raise FleetError(422, str(exc)) from None
    if get_device(conn, device_id) is not None:
        raise FleetError(409, f"a device {device_id!r} exists already")
    _insert_device(conn, device_id, site_id, template)
    created = get_device(conn, device_id)
    assert created is not None  # inserted just now
    return created


def edit_device(conn: psycopg.Connection, device_id: str, *, model: str | None,
                interval_s: int | None) -> tuple[DeviceRow, DeviceRow]:
    before = get_device(conn, device_id, lock=True)
    if before is None:
        raise FleetError(404, f"no device {device_id!r}")
    conn.execute("UPDATE devices SET model = coalesce(%s, model), "
                 "interval_s = coalesce(%s, interval_s), updated_at = now() WHERE id = %s",
                 (model, interval_s, device_id))
    after = get_device(conn, device_id)
    assert after is not None
    return before, after


def move_device(conn: psycopg.Connection, device_id: str, to_site: str
                ) -> tuple[DeviceRow, DeviceRow]:
    """The device (its id, series and history) now reports for another site of the same
    organisation, whose kind has the device's template."""
    before = get_device(conn, device_id, lock=True)
    if before is None:
        raise FleetError(404, f"no device {device_id!r}")
    if before.retired:
        raise FleetError(409, f"device {device_id} is retired")
    source = get_site(conn, before.site_id)
    target = get_site(conn, to_site)
    if target is None:
        raise FleetError(404, f"no site {to_site!r}")
    assert source is not None  # devices.site_id references sites
    if target[1] != source[1]:
        raise FleetError(409, f"site {to_site} belongs to another organisation: a device "
                              f"moves only between sites of its own organisation")
    if target[2]:
        raise FleetError(409, f"site {to_site} is retired")
    if to_site == before.site_id:
        raise FleetError(409, f"device {device_id} is at site {to_site} already")
    template_of(target[0].kind, before.template)
    conn.execute("UPDATE devices SET site_id = %s, updated_at = now() WHERE id = %s",
                 (to_site, device_id))
    after = get_device(conn, device_id)
    assert after is not None
    return before, after


def retire_device(conn: psycopg.Connection, device_id: str) -> DeviceRow:
    before = get_device(conn, device_id, lock=True)
    if before is None:
        raise FleetError(404, f"no device {device_id!r}")
    if before.retired:
        raise FleetError(409, f"device {device_id} is retired already")
    conn.execute("UPDATE devices SET retired_at = now(), updated_at = now() WHERE id = %s",
                 (device_id,))
    return before


def organisation_sites(conn: psycopg.Connection, organisation_ids: list[int] | None
                       ) -> list[Site]:
    """The sites (retired ones left out) of these organisations (None: all), in id order:
    what the registry export writes."""
    rows = conn.execute(
        f"SELECT {', '.join(SITE_COLUMNS)} FROM sites WHERE retired_at IS NULL "
        f"AND (%(orgs)s::int[] IS NULL OR organisation_id = ANY(%(orgs)s)) ORDER BY id",
        {"orgs": organisation_ids}).fetchall()
    return [Site(*row) for row in rows]


def import_sites(conn: psycopg.Connection, sites: list[Site], *, organisation_id: int
                 ) -> tuple[list[str], list[str]]:
    """Load a sites CSV as ``registry load`` does (its devices and series included);
    new sites go to ``organisation_id``. Returns (created, updated) site ids. A site of
    another organisation in the file is refused (409) before anything is written."""
    ids = [s.id for s in sites]
    owners: dict[str, int] = dict(conn.execute(
        "SELECT id, organisation_id FROM sites WHERE id = ANY(%s)",
        (ids,)).fetchall())
    foreign = sorted(i for i, org in owners.items() if org != organisation_id)
    if foreign:
        raise FleetError(409, f"sites of another organisation: {', '.join(foreign[:10])}")
    load_registry(conn, sites)
    created = [i for i in ids if i not in owners]
    conn.execute("UPDATE sites SET organisation_id = %s WHERE id = ANY(%s)",
                 (organisation_id, created))
    return created, [i for i in ids if i in owners]
