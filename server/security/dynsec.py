"""What the broker enforces, generated from ``mqtt_credentials``: Mosquitto's
dynamic-security plugin, its JSON config written from the database, and live changes
through its API.

Why the plugin and not ``password_file`` + ``acl_file``: on Mosquitto 2.0 (Debian 12's
2.0.11) the ACL file cannot refuse a SUBSCRIBE (its check returns "allowed" for every
subscription, src/security_default.c: "FIXME - implement ACL subscription strings"), so a
device subscribing to another site's topics got a granted SUBACK and then silently
nothing. The plugin checks subscriptions (SUBACK 0x87, "not authorized"), binds a login
to a client id, and refuses by default whatever no role allows.

How a change reaches a running broker: the plugin does *not* re-read its file on SIGHUP
(2.0.11: a login removed from the file and SIGHUP, and it still logs in), but its API
takes effect at once: ``deleteClient`` and ``disableClient`` disconnect the client, so a
revoked device is cut off without a broker restart. So ``sync``:

1. builds the wanted state from the database (``accounts.access_state``);
2. when a broker is reachable with the admin login, reads its clients and roles and sends
   the difference (``plan``): new or changed roles, logins gone, roles of a login changed
   (a gateway whose site gained a device), and the login just created or rotated (the API
   takes a password, not a hash, and this is the only moment we have it);
3. writes the JSON config (atomically), last, so the file is what the database says even
   after the plugin saved its own copy; a broker (re)started later loads it.

The plugin saves its state to the same file after each change; ``tidefield up``
rewrites it from the database before it starts the broker.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from .accounts import AccessState, Credentials, Rule, access_state
from .control import ControlError, DynsecControl
from .passwords import dynsec_fields

log = logging.getLogger(__name__)

PLUGIN_GLOBS = ("/usr/lib/*/mosquitto_dynamic_security.so",
                "/usr/lib/mosquitto_dynamic_security.so",
                "/usr/local/lib/mosquitto_dynamic_security.so")
CONFIG_NAME = "dynamic-security.json"

# Nothing is allowed unless a role allows it (the plugin's own default lets every client
# receive whatever it may subscribe to; ours also needs a rule for that).
DEFAULT_ACCESS = {"publishClientSend": False, "publishClientReceive": False,
                  "subscribe": False, "unsubscribe": True}


def plugin_path() -> str:
    for pattern in PLUGIN_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    raise FileNotFoundError("Mosquitto's dynamic-security plugin "
                            "(mosquitto_dynamic_security.so) is not installed; "
                            "run scripts/setup.sh")


def rule_acls(rule: Rule) -> list[tuple[str, str]]:
    """A rule as the plugin's (acltype, topic) pairs: ``write`` is publishing; ``read`` is
    subscribing to the topic or a filter within it, and receiving what it matches;
    ``share`` is subscribing to a shared subscription filter (``$share/...``) only, since
    what it delivers is checked against the topic itself, which a ``read`` rule grants."""
    if rule.access == "write":
        return [("publishClientSend", rule.topic)]
    if rule.access == "share":
        return [("subscribePattern", rule.topic)]
    return [("subscribePattern", rule.topic), ("publishClientReceive", rule.topic)]


def role_acls(rules: tuple[Rule, ...]) -> set[tuple[str, str]]:
    return {acl for rule in rules for acl in rule_acls(rule)}


def _acl(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "allow": True}


def render_config(state: AccessState) -> dict[str, Any]:
    """The plugin's config file for ``state``."""
    clients = []
    for login in state.logins:
        client: dict[str, Any] = {"username": login.username,
                                  "roles": [{"rolename": r} for r in login.roles],
                                  **dynsec_fields(login.password_hash)}
        if login.client_id is not None:
            client["clientid"] = login.client_id
        clients.append(client)
    roles = [{"rolename": name,
              "acls": [_acl(t, topic) for t, topic in sorted(role_acls(rules))]}
             for name, rules in state.roles.items()]
    return {"defaultACLAccess": DEFAULT_ACCESS, "clients": clients, "groups": [],
            "roles": roles}


@dataclass(frozen=True, slots=True)
class BrokerView:
    """What a running broker holds: client -> (client id, roles), role -> ACLs."""

    clients: dict[str, tuple[str | None, frozenset[str]]]
    roles: dict[str, set[tuple[str, str]]]

    @classmethod
    def from_answers(cls, clients: dict[str, Any], roles: dict[str, Any]) -> BrokerView:
        return cls({c["username"]: (c.get("clientid"),
                                    frozenset(r["rolename"] for r in c.get("roles", ())))
                    for c in clients["data"]["clients"]},
                   {r["rolename"]: {(a["acltype"], a["topic"]) for a in r.get("acls", ())
                                    if a.get("allow", True)}
                    for r in roles["data"]["roles"]})


def plan(state: AccessState, broker: BrokerView, fresh: dict[str, str] | None = None,
         ) -> tuple[list[dict[str, Any]], list[str]]:
    """The API commands that turn ``broker`` into ``state``, and what they cannot do.

    ``fresh``: logins just created or rotated, user name -> password; they are replaced
    whole (which disconnects anyone using the old password). A login the broker lacks
    and that is not fresh cannot be added (the database keeps no password), so it is
    reported: the broker gets it when it next starts from the file."""
    fresh = fresh or {}
    commands: list[dict[str, Any]] = []
    problems: list[str] = []
    for name, rules in state.roles.items():
        want = role_acls(rules)
        have = broker.roles.get(name)
        if have is None:
            commands.append({"command": "createRole", "rolename": name,
                             "acls": [_acl(t, topic) for t, topic in sorted(want)]})
            continue
        commands += [{"command": "removeRoleACL", "rolename": name, "acltype": t,
                      "topic": topic} for t, topic in sorted(have - want)]
        commands += [{"command": "addRoleACL", "rolename": name, **_acl(t, topic)}
                     for t, topic in sorted(want - have)]
    wanted = {login.username: login for login in state.logins}
    commands += [{"command": "deleteClient", "username": name}
                 for name in sorted(set(broker.clients) - set(wanted))]
    for login in state.logins:
        roles = [{"rolename": r} for r in login.roles]
        current = broker.clients.get(login.username)
        if login.username in fresh:
            if current is not None:
                commands.append({"command": "deleteClient", "username": login.username})
            create = {"command": "createClient", "username": login.username,
                      "password": fresh[login.username], "roles": roles}
            if login.client_id is not None:
                create["clientid"] = login.client_id
            commands.append(create)
        elif current is None:
            problems.append(f"{login.username}: in the database but not in the running "
                            f"broker, which gets it when it next starts (or rotate it now)")
        elif current != (login.client_id, frozenset(login.roles)):
            commands.append({"command": "modifyClient", "username": login.username,
                             "clientid": login.client_id or "", "roles": roles})
    commands += [{"command": "deleteRole", "rolename": name}
                 for name in sorted(set(broker.roles) - set(state.roles))]
    return commands, problems


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class SyncResult:
    logins: int
    roles: int
    live: bool  # a running broker took the changes through its API
    changes: int  # API commands sent
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BrokerAccess:
    """The plugin's config file in ``directory``, and how to reach the running broker
    (``admin_url``: the ``svc_admin`` login; None: no live changes)."""

    directory: Path
    admin_url: str | None = field(default=None, repr=False)
    ca_file: str | None = None

    @property
    def config_file(self) -> Path:
        return self.directory / CONFIG_NAME

    def conf_lines(self) -> list[str]:
        """mosquitto.conf lines that make the broker enforce this config (with
        ``allow_anonymous false``, which MosquittoBroker writes itself)."""
        return [f"plugin {plugin_path()}", f"plugin_opt_config_file {self.config_file}"]

    def write(self, conn: psycopg.Connection, state: AccessState | None = None,
              ) -> AccessState:
        state = access_state(conn) if state is None else state
        self.directory.mkdir(parents=True, exist_ok=True)
        _write_atomically(self.config_file, json.dumps(render_config(state), indent=1))
        return state

    def sync(self, conn: psycopg.Connection,
             fresh: Credentials | None = None) -> SyncResult:
        """Make the running broker (if reachable) and the file what the database says."""
        state = access_state(conn)
        live, changes, problems = False, 0, list[str]()
        if self.admin_url is not None:
            try:
                changes, problems = self._apply(state, fresh)
                live = True
            except ControlError as exc:
                problems.append(f"no live change: {exc}; the broker reads the file when "
                                f"it starts")
        self.write(conn, state)
        result = SyncResult(len(state.logins), len(state.roles), live, changes,
                            tuple(problems))
        log.info("broker access synced", extra={"logins": result.logins,
                                                "roles": result.roles, "live": live,
                                                "changes": changes})
        return result

    def _apply(self, state: AccessState, fresh: Credentials | None,
               ) -> tuple[int, list[str]]:
        assert self.admin_url is not None  # _apply runs only with an admin login
        with DynsecControl(self.admin_url, ca_file=self.ca_file) as control:
            clients, roles = control.run([{"command": "listClients", "verbose": True},
                                          {"command": "listRoles", "verbose": True}])
            for answer in (clients, roles):
                if "error" in answer:
                    raise ControlError(f"{answer['command']}: {answer['error']}")
            view = BrokerView.from_answers(clients, roles)
            commands, problems = plan(state, view, {fresh.username: fresh.password}
                                      if fresh is not None else None)
            for command, answer in zip(commands, control.run(commands), strict=True):
                if "error" in answer:
                    problems.append(f"{command['command']} "
                                    f"{command.get('username') or command.get('rolename')}: "
                                    f"{answer['error']}")
        return len(commands), problems
