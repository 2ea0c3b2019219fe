"""The ``tidefield`` command: one entry point that mounts each part's own command-line app.

No part imports another part's CLI; this package sits above them all and knows each only
by name (``COMMANDS``), importing a part's CLI module when one of its commands is asked
for. So ``tidefield edge run`` on a Raspberry Pi loads the edge agent's CLI and nothing of
the server, ``tidefield sim ...`` nothing of the edge, and a part's heavy machinery is
imported inside its commands, as before.

Adding a command: give it to a part's Typer app, then add one line here.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any

import typer
import typer.core
import typer.main


@dataclass(frozen=True, slots=True)
class Mount:
    """``module``'s Typer ``app`` is a part's command line; ``command``: mount only that
    one of its commands (under the same name) at the top level, else the whole app."""

    module: str
    command: str | None = None

    def load(self, ctx: Any, name: str) -> Any:
        # get_group, not get_command: a mounted app is no root and offers no completion
        part = typer.main.get_group(importlib.import_module(self.module).app)
        if self.command is not None:
            return part.get_command(ctx, self.command)
        part.name = name
        return part


SERVER = "tidefield.server.cli"
OPS = "tidefield.server.ops.cli"
COMMANDS: dict[str, Mount] = {
    "up": Mount(SERVER, command="up"),
    "status": Mount(SERVER, command="status"),
    "ingest": Mount(SERVER, command="ingest"),
    "api": Mount(SERVER, command="api"),
    "db": Mount(SERVER, command="db"),
    "registry": Mount(SERVER, command="registry"),
    "keys": Mount(SERVER, command="keys"),
    "devices": Mount(SERVER, command="devices"),
    "users": Mount(SERVER, command="users"),
    "orgs": Mount(SERVER, command="orgs"),
    "tls": Mount(SERVER, command="tls"),
    "backup": Mount(OPS, command="backup"), "restore": Mount(OPS, command="restore"),
    "replica": Mount(OPS, command="replica"),
    "detect": Mount("tidefield.server.detect.cli"),
    "notify": Mount("tidefield.server.notify.cli"),
    "dashboard": Mount("tidefield.dashboards.cli", command="dashboard"),
    "edge": Mount("tidefield.edge.cli"),
    "sim": Mount("tidefield.sim.cli"),
}


class PartsGroup(typer.core.TyperGroup):
    """A command group whose commands are imported from their parts when first used."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        mount = COMMANDS.get(cmd_name)
        return mount.load(ctx, cmd_name) if mount is not None else None


app = typer.Typer(cls=PartsGroup, no_args_is_help=True, pretty_exceptions_enable=False,
                  add_completion=False)


@app.callback()
def tidefield() -> None:
    """Tidefield: IoT platform for Qingdao's smart farms and ocean sites."""


def main() -> None:
    try:
        app(prog_name="tidefield")
    except KeyboardInterrupt:
        sys.exit(130)
