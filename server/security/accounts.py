"""Broker logins and what each may do: the one place where MQTT access is decided.

A **device** logs in with its registry id as user name, and as MQTT client id (the broker
refuses any other, so no device can take over another's session), and may publish only
its own telemetry, status and answers, and subscribe only to its own ``down/#``::

    tf/v1/{site}/{device}/up       write
    tf/v1/{site}/{device}/status   write
    tf/v1/{site}/{device}/reply/#  write   (configuration and command answers)
    tf/v1/{site}/{device}/down/#   read

Those four rules are the device's *role* (``device:<id>``). A site's **gateway**
(template ``gw``; what an edge agent logs in as) speaks for every device of its own site
over its one connection, so it holds the role of each of them, and nothing of any other
site.

An **organisation** (``org_<short name>``; role ``organisation:<short name>``) may read
the alert notices of the sites it may read (``tf/v1/{site}/alerts``: its own and those
granted to it; every site's for the platform office), and nothing else: its systems
follow their own alerts over MQTT without seeing another company's.

A **service** of the platform logs in as ``svc_<role>`` with the least it needs
(``SERVICES``; role ``service:<role>``), under any client id, since a service may run as
several processes. ``_`` never occurs in a device id (``protocol.topics.ID_PATTERN``), so
a service name can never be taken by a device. ``svc_admin`` may only use the broker's
dynamic-security API (``security.dynsec``), which is how logins change while the broker
runs.

Every rule names a topic in full except the services' ``+`` for site and device; a
device's rules never hold a wildcard for its site, so no device can write under another
site's prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import psycopg

from tidefield.protocol.topics import (
    ALL_ALERTS,
    ALL_COMMANDS,
    ALL_CONFIGS,
    ALL_RECEIPTS,
    ALL_REPLIES,
    ALL_STATUS,
    ALL_UP,
    ALL_UP_SHARED,
    PREFIX,
    alerts_topic,
    check_id,
    status_topic,
    up_topic,
)

from .passwords import hash_password, new_secret

SERVICE_PREFIX = "svc_"
ORGANISATION_PREFIX = "org_"
GATEWAY_TEMPLATES = frozenset({"gw"})


class ProvisioningError(ValueError):
    """A login cannot be created or revoked as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class Rule:
    access: Literal["read", "write", "share"]
    topic: str


# The broker's dynamic-security API (Mosquitto 2.0's plugin): requests and answers.
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
CONTROL_RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"

# Least privilege for each platform service.
SERVICES: dict[str, tuple[Rule, ...]] = {
    # ingest tells each device what it has stored (its receipts)
    "ingest": (Rule("read", ALL_UP), Rule("share", ALL_UP_SHARED), Rule("read", ALL_STATUS),
               Rule("write", ALL_RECEIPTS)),
    "detector": (Rule("write", ALL_ALERTS),),
    "dashboards": (Rule("read", ALL_ALERTS), Rule("read", ALL_STATUS)),
    # firmware-sim's fleet publishes for every site's gateway: development and load tests
    "simulator": (Rule("write", ALL_UP), Rule("write", ALL_STATUS),
                  Rule("read", ALL_RECEIPTS)),
    # the control service sends configuration and commands, and reads the answers
    "control": (Rule("write", ALL_CONFIGS), Rule("write", ALL_COMMANDS),
                Rule("read", ALL_REPLIES)),
    # the API only connects, for its /healthz broker probe
    "api": (),
    # `tidefield devices ...` changes the running broker's logins through this one
    "admin": (Rule("write", CONTROL_TOPIC), Rule("read", CONTROL_RESPONSE_TOPIC)),
}


def device_rules(site_id: str, device_id: str) -> tuple[Rule, ...]:
    return (Rule("write", up_topic(site_id, device_id)),
            Rule("write", status_topic(site_id, device_id)),
            Rule("write", f"{PREFIX}/{site_id}/{device_id}/reply/#"),
            Rule("read", f"{PREFIX}/{site_id}/{device_id}/down/#"))


def device_role(device_id: str) -> str:
    return f"device:{device_id}"


def service_role(role: str) -> str:
    return f"service:{role}"


def organisation_role(slug: str) -> str:
    return f"organisation:{slug}"


def organisation_rules(conn: psycopg.Connection, organisation_id: int) -> tuple[Rule, ...]:
    """Read the alert notices of every site the organisation may read."""
    row = conn.execute("SELECT platform FROM organisations WHERE id = %s",
                       (organisation_id,)).fetchone()
    if row is None:
        raise ProvisioningError(f"no organisation {organisation_id}")
    if row[0]:
        return (Rule("read", ALL_ALERTS),)
    sites = [r[0] for r in conn.execute(
        "SELECT id FROM sites WHERE organisation_id = %(o)s UNION "
        "SELECT site_id FROM site_grants WHERE organisation_id = %(o)s ORDER BY 1",
        {"o": organisation_id})]
    return tuple(Rule("read", alerts_topic(site)) for site in sites)


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
    """An active login as the broker needs it: name, hash, the one client id it may use
    (None: any; services only) and the roles it holds."""

    username: str
    password_hash: str
    client_id: str | None
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AccessState:
    """Every active login, and every role they hold with its rules: what the broker
    enforces."""

    logins: tuple[Login, ...]
    roles: dict[str, tuple[Rule, ...]]

    def login(self, username: str) -> Login | None:
        return next((login for login in self.logins if login.username == username), None)


@dataclass(frozen=True, slots=True)
class LoginInfo:
    username: str
    kind: Literal["device", "gateway", "service", "organisation"]
    site_id: str | None
    created_at: object
    revoked_at: object


def _insert(conn: psycopg.Connection, username: str, password: str, *,
            device_id: str | None = None, service: str | None = None,
            organisation_id: int | None = None) -> None:
    conn.execute("INSERT INTO mqtt_credentials (username, device_id, service, "
                 "organisation_id, password_hash) VALUES (%s, %s, %s, %s, %s)",
                 (username, device_id, service, organisation_id, hash_password(password)))


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


def provision_organisation(conn: psycopg.Connection, organisation_id: int) -> Credentials:
    """Create (or replace) an organisation's login for its sites' alert notices."""
    row = conn.execute("SELECT slug FROM organisations WHERE id = %s",
                       (organisation_id,)).fetchone()
    if row is None:
        raise ProvisioningError(f"no organisation {organisation_id}")
    username = ORGANISATION_PREFIX + row[0]
    with conn.transaction():
        _revoke_active(conn, username)
        password = new_secret()
        _insert(conn, username, password, organisation_id=organisation_id)
    conn.commit()
    return Credentials(username, password, organisation_rules(conn, organisation_id))


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


def access_state(conn: psycopg.Connection) -> AccessState:
    """Every active login with its roles, in user-name order, and the rules of each role."""
    rows = conn.execute(
        "SELECT c.username, c.password_hash, c.service, d.id, d.site_id, d.template, "
        "c.organisation_id, o.slug FROM mqtt_credentials c "
        "LEFT JOIN devices d ON d.id = c.device_id "
        "LEFT JOIN organisations o ON o.id = c.organisation_id "
        "WHERE c.revoked_at IS NULL ORDER BY c.username").fetchall()
    gateway_sites = sorted({r[4] for r in rows if r[5] in GATEWAY_TEMPLATES})
    site_devices: dict[str, list[str]] = {}
    for site_id, device_id in conn.execute(
            "SELECT site_id, id FROM devices WHERE site_id = ANY(%s) ORDER BY id",
            (gateway_sites,)):
        site_devices.setdefault(site_id, []).append(device_id)
    logins: list[Login] = []
    roles: dict[str, tuple[Rule, ...]] = {}
    for (username, password_hash, service, device_id, site_id, template, organisation_id,
         slug) in rows:
        if organisation_id is not None:
            roles[organisation_role(slug)] = organisation_rules(conn, organisation_id)
            logins.append(Login(username, password_hash, None, (organisation_role(slug),)))
            continue
        if service is not None:
            # a role since retired may log in and do nothing
            roles[service_role(service)] = SERVICES.get(service, ())
            logins.append(Login(username, password_hash, None, (service_role(service),)))
            continue
        spoken_for = site_devices[site_id] if template in GATEWAY_TEMPLATES else [device_id]
        for device in spoken_for:
            roles[device_role(device)] = device_rules(site_id, device)
        logins.append(Login(username, password_hash, username,
                            tuple(device_role(d) for d in spoken_for)))
    return AccessState(tuple(logins), dict(sorted(roles.items())))


def list_logins(conn: psycopg.Connection, *, include_revoked: bool = False) -> list[LoginInfo]:
    rows = conn.execute(
        "SELECT c.username, c.service, d.site_id, d.template, c.created_at, c.revoked_at, "
        "c.organisation_id FROM mqtt_credentials c LEFT JOIN devices d ON d.id = c.device_id "
        "WHERE %s OR c.revoked_at IS NULL ORDER BY c.username, c.id",
        (include_revoked,)).fetchall()
    return [LoginInfo(username,
                      "organisation" if organisation_id else "service" if service else
                      "gateway" if template in GATEWAY_TEMPLATES else "device",
                      site_id, created, revoked)
            for username, service, site_id, template, created, revoked, organisation_id
            in rows]
