"""``tidefield edge ...``: the agent's commands as a Typer app (the ``tidefield`` command,
``tidefield.cli``, mounts it). The agent's machinery is imported only when a command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The edge agent: drivers, disk queue, MQTT publisher.",
                  no_args_is_help=True)

ConfigPath = Annotated[Path, typer.Option("--config", help="the agent's YAML config")]


@app.command()
def run(config: ConfigPath,
        log_level: Annotated[str | None, typer.Option(
            "--log-level", help="DEBUG, INFO, WARNING or ERROR (overrides the config)")] = None,
        ) -> None:
    """Run the agent until SIGTERM or SIGINT (exit 2 on a bad config)."""
    from .main import run as run_agent

    level = log_level.upper() if log_level else None
    if level not in (None, "DEBUG", "INFO", "WARNING", "ERROR"):
        raise typer.BadParameter(f"{log_level!r} is not DEBUG, INFO, WARNING or ERROR",
                                 param_hint="--log-level")
    raise typer.Exit(run_agent(config, level))


@app.command()
def check(config: ConfigPath) -> None:
    """Validate a config file and exit (2 when it is invalid)."""
    from .main import check as check_config

    raise typer.Exit(check_config(config))
