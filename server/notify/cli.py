"""``tidefield notify``: the notifier and its configuration.

    tidefield notify run                 tell people of alert changes (until SIGTERM)
    tidefield notify check [FILE]        validate a configuration file; list where
                                         notifications go (no message is sent)
    tidefield notify load FILE           upsert a file's contacts, groups and routes
    tidefield notify sink [--port N]     a local signed-webhook receiver that prints them

Heavy imports happen inside the commands, so ``--help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Notifications: alerts to WeCom, DingTalk, Feishu, mail, SMS and "
                       "webhooks, with routing, escalation and incidents.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

DatabaseUrl = Annotated[str | None, typer.Option(envvar="TIDEFIELD_DATABASE_URL",
                                                 help="postgresql:// URL")]


def _read_config(path: Path) -> object:
    import yaml
    from pydantic import ValidationError

    from .routing import NotifyConfig

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return NotifyConfig.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        typer.echo(f"error: {path}: {exc}", err=True)
        raise typer.Exit(2) from None
    except ValidationError as exc:
        # pydantic's message would quote the input, and a contact's url holds secrets
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        typer.echo(f"error: {path}:\n" + "\n".join(lines), err=True)
        raise typer.Exit(2) from None


@app.command()
def run(database_url: DatabaseUrl = None) -> None:
    """Read alert changes, plan, send, escalate, remind, digest; a restart continues
    where the last committed step stopped. SIGTERM or Ctrl-C stops it after the
    messages in flight are recorded."""
    import asyncio
    import signal

    import psycopg

    from tidefield.protocol.settings import load
    from tidefield.server import logs
    from tidefield.server.settings import NotifierSettings

    from . import store
    from .service import Notifier

    settings = load(NotifierSettings, database_url=database_url)
    logs.configure(settings.log_level, settings.log_format)
    if not settings.database_url:
        typer.echo("error: no database: set TIDEFIELD_DATABASE_URL", err=True)
        raise typer.Exit(2)
    if settings.notify_config is not None:
        config = _read_config(settings.notify_config)
        with psycopg.connect(settings.database_url) as conn:
            store.load_config(conn, config)  # type: ignore[arg-type]  # validated above

    if settings.notify_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.notify_metrics_port, addr="127.0.0.1")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await Notifier(settings).run(stop)

    asyncio.run(main())


@app.command()
def check(path: Annotated[Path | None, typer.Argument(help="a configuration file")] = None,
          database_url: DatabaseUrl = None) -> None:
    """Validate a configuration file (if given) and list the contacts and routes in the
    database, each contact's channel shown without its secrets."""
    import psycopg

    from . import store

    if path is not None:
        config = _read_config(path)
        typer.echo(f"{path}: valid ({len(config.contacts)} contacts, "  # type: ignore[attr-defined]
                   f"{len(config.groups)} groups, {len(config.routes)} routes)")  # type: ignore[attr-defined]
    if not database_url:
        return
    with psycopg.connect(database_url) as conn:
        for contact in store.contacts(conn, None):
            state = "" if contact["enabled"] else " (disabled)"
            typer.echo(f"contact {contact['name']:<24} {contact['channel']}{state}")
        for route in store.routes(conn, None):
            typer.echo(f"route   {route['name']:<24} tier {route['tier']} -> group "
                       f"{route['group']}")


@app.command("load")
def load_file(path: Annotated[Path, typer.Argument(help="a configuration file")],
              database_url: DatabaseUrl = None) -> None:
    """Upsert a file's contacts, groups and routes by name (audited as cli:<user>)."""
    import getpass

    import psycopg

    from tidefield.server.security import audit

    from . import store

    if not database_url:
        typer.echo("error: no database: set TIDEFIELD_DATABASE_URL", err=True)
        raise typer.Exit(2)
    config = _read_config(path)
    with psycopg.connect(database_url) as conn:
        try:
            org = store.load_config(conn, config)  # type: ignore[arg-type]  # validated above
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        audit.record(conn, actor=f"cli:{getpass.getuser()}", action="notify.config_loaded",
                     target=f"organisation:{org}", organisations=[org],
                     after={"file": str(path)})
    typer.echo(f"loaded {path}")


@app.command()
def sink(port: Annotated[int, typer.Option(help="0: any free port")] = 0,
         secret: Annotated[str | None, typer.Option(
             envvar="TIDEFIELD_NOTIFY_SINK_SECRET",
             help="the webhook's secret (default: a new one, printed)")] = None) -> None:
    """Receive signed webhooks locally and print each notification on one line."""
    import json
    import secrets as random
    import signal
    import threading

    from .sink import WebhookSink

    def show(data: dict[str, object]) -> None:
        typer.echo(json.dumps({k: data.get(k) for k in (
            "kind", "severity", "site", "rule", "title", "ack_url")}, ensure_ascii=False))

    receiver = WebhookSink(secret or random.token_urlsafe(24), show, port=port).start()
    typer.echo(f"webhook sink listening; contact URL: {receiver.url}")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    receiver.stop()
