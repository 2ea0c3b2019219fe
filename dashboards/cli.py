"""``tidefield dashboard``: the operators' dashboards (Streamlit), as a Typer app the
``tidefield`` command mounts."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

app = typer.Typer(help="The operators' dashboards.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


@app.command()
def dashboard(host: Annotated[str | None, typer.Option(
                  help="default: TIDEFIELD_DASHBOARD_HOST")] = None,
              port: Annotated[int | None, typer.Option(
                  help="default: TIDEFIELD_DASHBOARD_PORT")] = None) -> None:
    """Run the operators' dashboards (Streamlit) on the API at TIDEFIELD_API_URL; each
    person signs in with their own account."""
    from importlib.resources import files

    from tidefield.protocol.settings import load

    from .settings import DashboardSettings

    settings = load(DashboardSettings, dashboard_host=host, dashboard_port=port)
    entry = files("tidefield.dashboards") / "app.py"
    # Streamlit takes over this process; it reads the same TIDEFIELD_ environment.
    os.execv(sys.executable, [
        sys.executable, "-m", "streamlit", "run", str(entry),
        "--server.address", settings.dashboard_host,
        "--server.port", str(settings.dashboard_port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.runOnSave", "false",
        "--client.toolbarMode", "viewer", "--client.showErrorDetails", "type",
        "--theme.base", "light"])


@app.callback()
def _group() -> None:
    """Keeps ``dashboard`` a named command of this app (Typer folds a lone command)."""
