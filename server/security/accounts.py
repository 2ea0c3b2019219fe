"""Broker logins and what each may do: the one place where MQTT access is decided.

A **device** logs in with its registry id as user name and may publish only its own
telemetry and status, and subscribe only to its own ``down/#``::

    tf/v1/{site}/{device}/up       write
    tf/v1/{site}/{device}/status   write
    tf/v1/{site}/{device}/down/#   read

A site's **gateway** (template ``gw``; what an edge agent logs in as) speaks for every
device of its own site over its one connection, so it gets those three rules for each of
them, and nothing of any other site.

A **service** of the platform logs in as ``svc_<role>`` with the least it needs
(``SERVICES``). ``_`` never occurs in a device id (``protocol.topics.ID_PATTERN``), so a
service name can never be taken by a device.

Rules name every topic in full rather than being Mosquitto ``pattern`` lines: a pattern
can substitute only the user name or client id (``%u``, ``%c``), not the site, so
``tf/v1/+/%u/up`` would let a device write under any site's prefix. Full topics are
exact, and the file is generated from the database anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import psycopg

from tidefield.protocol.topics import (
    ALL_ALERTS,
    ALL_STATUS,
    ALL_UP,
    PREFIX,
    check_id,
    status_topic,
    up_topic,
)

from .passwords import hash_password, new_secret

SERVICE_PREFIX = "svc_"
GATEWAY_TEMPLATES = frozenset({"gw"})


class ProvisioningError(ValueError):
    """A login cannot be created or revoked as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class Rule:
    access: Literal["read", "write"]
    topic: str


# Least privilege for each platform service.
SERVICES: dict[str, tuple[Rule, ...]] = {
    "ingest": (Rule("read", ALL_UP), Rule("read", ALL_STATUS)),
    "detector": (Rule("write", ALL_ALERTS),),
    "dashboards": (Rule("read", ALL_ALERTS), Rule("read", ALL_STATUS)),
    # firmware-sim's fleet publishes for every site's gateway: development and load tests
    "simulator": (Rule("write", ALL_UP), Rule("write", ALL_STATUS)),
    # the API only connects, for its /healthz broker probe
    "api": (),
}


def device_rules(site_id: str, device_id: str) -> tuple[Rule, ...]:
    return (Rule("write", up_topic(site_id, device_id)),
            Rule("write", status_topic(site_id, device_id)),
            Rule("read", f"{PREFIX}/{site_id}/{device_id}/down/#"))


def service_username(role: str) -> str:
    if role not in SERVICES:
        raise ProvisioningError(f"unknown service {role!r}; services are "
                                f"{', '.join(SERVICES)}")
    return SERVICE_PREFIX + role


@dataclass(frozen=True, slots=True)
class Credentials:
    """A login just created: the only time its password is seen."""

    username: str
    password: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class Login:
    """An active login as the broker files need it: name, hash and rules."""

    username: str
    password_hash: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class LoginInfo:
    username: str
    kind: Literal["device", "gateway", "service"]
    site_id: str | None
    created_at: object
    revoked_at: object


def _insert(conn: psycopg.Connection, username: str, password: str, *,
            device_id: str | None = None, service: str | None = None) -> None:
    conn.execute("INSERT INTO mqtt_credentials (username, device_id, service, password_hash) "
                 "VALUES (%s, %s, %s, %s)",
                 (username, device_id, service, hash_password(password)))


def _revoke_active(conn: psycopg.Connection, username: str) -> int:
    return conn.execute("UPDATE mqtt_credentials SET revoked_at = now() "
                        "WHERE username = %s AND revoked_at IS NULL", (username,)).rowcount


def provision_device(conn: psycopg.Connection, site_id: str, device_id: str, *,
                     rotate: bool = False) -> Credentials:
    """Create the login of a registered device (or, with ``rotate``, replace it)."""
    for value, what in ((site_id, "site"), (device_id, "device")):
        try:
            check_id(value, what)
        except ValueError as exc:
            raise ProvisioningError(str(exc)) from None
    row = conn.execute("SELECT site_id, template FROM devices WHERE id = %s",
                       (device_id,)).fetchone()
    if row is None:
        raise ProvisioningError(f"device {device_id!r} is not in the registry "
                                f"(`tidefield registry load` adds the registry's devices)")
    if row[0] != site_id:
        raise ProvisioningError(f"device {device_id} belongs to site {row[0]}, not {site_id}")
    with conn.transaction():
        if _revoke_active(conn, device_id) and not rotate:
            raise ProvisioningError(f"device {device_id} already has a login; pass --rotate "
                                    f"to replace it (the old password stops working)")
        password = new_secret()
        _insert(conn, device_id, password, device_id=device_id)
    conn.commit()
    return Credentials(device_id, password, _rules_of(conn, device_id, site_id, row[1]))


def provision_service(conn: psycopg.Connection, role: str) -> Credentials:
    """Create (or replace) a service's login."""
    username = service_username(role)
    with conn.transaction():
        _revoke_active(conn, username)
        password = new_secret()
        _insert(conn, username, password, service=role)
    conn.commit()
    return Credentials(username, password, SERVICES[role])


def revoke(conn: psycopg.Connection, username: str) -> int:
    """Revoke the active login of a device (by id) or a service (``svc_<role>``)."""
    count = _revoke_active(conn, username)
    conn.commit()
    return count


def _rules_of(conn: psycopg.Connection, device_id: str, site_id: str,
              template: str) -> tuple[Rule, ...]:
    if template not in GATEWAY_TEMPLATES:
        return device_rules(site_id, device_id)
    devices = [r[0] for r in conn.execute(
        "SELECT id FROM devices WHERE site_id = %s ORDER BY id", (site_id,))]
    return tuple(rule for d in devices for rule in device_rules(site_id, d))


def active_logins(conn: psycopg.Connection) -> Iterator[Login]:
    """Every active login with its rules, in user-name order (what the broker files hold)."""
    rows = conn.execute(
        "SELECT c.username, c.password_hash, c.service, d.id, d.site_id, d.template "
        "FROM mqtt_credentials c LEFT JOIN devices d ON d.id = c.device_id "
        "WHERE c.revoked_at IS NULL ORDER BY c.username").fetchall()
    gateway_sites = sorted({r[4] for r in rows if r[5] in GATEWAY_TEMPLATES})
    site_devices: dict[str, list[str]] = {}
    for site_id, device_id in conn.execute(
            "SELECT site_id, id FROM devices WHERE site_id = ANY(%s) ORDER BY id",
            (gateway_sites,)):
        site_devices.setdefault(site_id, []).append(device_id)
    for username, password_hash, service, device_id, site_id, template in rows:
        if service is not None:
            rules = SERVICES.get(service, ())  # a role since retired: may log in, do nothing
        elif template in GATEWAY_TEMPLATES:
            rules = tuple(rule for d in site_devices[site_id] for rule in device_rules(site_id, d))
        else:
            rules = device_rules(site_id, device_id)
        yield Login(username, password_hash, rules)


def list_logins(conn: psycopg.Connection, *, include_revoked: bool = False) -> list[LoginInfo]:
    rows = conn.execute(
        "SELECT c.username, c.service, d.site_id, d.template, c.created_at, c.revoked_at "
        "FROM mqtt_credentials c LEFT JOIN devices d ON d.id = c.device_id "
        "WHERE %s OR c.revoked_at IS NULL ORDER BY c.username, c.id",
        (include_revoked,)).fetchall()
    return [LoginInfo(username,
                      "service" if service else
                      "gateway" if template in GATEWAY_TEMPLATES else "device",
                      site_id, created, revoked)
            for username, service, site_id, template, created, revoked in rows]
