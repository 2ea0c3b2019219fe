"""The server's commands (`tidefield up`, `api`, `ingest`, `db`, `keys`, ...), a Typer app
that the `tidefield` command (``tidefield.cli``) mounts beside the other parts' commands.
Each command imports its machinery when it runs, so `--help` is instant."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    import psycopg

    from tidefield.server.security import people
    from tidefield.server.security.accounts import Credentials
    from tidefield.server.settings import ServerSettings

SettingsT = TypeVar("SettingsT", bound="ServerSettings")

app = typer.Typer(help="Tidefield: IoT platform for Qingdao's smart farms and ocean sites.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
registry_app = typer.Typer(help="The site registry (sites, devices, series).",
                           no_args_is_help=True)
keys_app = typer.Typer(help="API keys (stored hashed; shown once).", no_args_is_help=True)
devices_app = typer.Typer(help="Broker logins of devices and services (stored hashed; "
                               "shown once) and their access rules.", no_args_is_help=True)
tls_app = typer.Typer(help="TLS certificates for development.", no_args_is_help=True)
users_app = typer.Typer(help="People: accounts, roles in organisations, password resets.",
                        no_args_is_help=True)
orgs_app = typer.Typer(help="Organisations: the sites they own, grants, single sign-on.",
                       no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(registry_app, name="registry")
app.add_typer(keys_app, name="keys")
app.add_typer(devices_app, name="devices")
app.add_typer(tls_app, name="tls")
app.add_typer(users_app, name="users")
app.add_typer(orgs_app, name="orgs")


DatabaseUrl = Annotated[str | None, typer.Option(
    "--database-url", envvar="TIDEFIELD_DATABASE_URL",
    help="postgresql:// URL (default: TIDEFIELD_DATABASE_URL)")]


def _settings(cls: type[SettingsT], **options: Any) -> SettingsT:
    """The process's settings, or exit 2 naming each bad variable (or option); logging set
    up from them."""
    from tidefield.protocol.settings import load
    from tidefield.server import logs

    settings = load(cls, **options)
    logs.configure(settings.log_level, settings.log_format)
    return settings


def _require_db(settings: ServerSettings) -> str:
    if not settings.database_url:
        typer.echo("error: no database: set TIDEFIELD_DATABASE_URL or pass --database-url "
                   "(`tidefield up` runs an embedded one)", err=True)
        raise typer.Exit(2)
    return settings.database_url


@db_app.command("migrate")
def db_migrate(database_url: DatabaseUrl = None) -> None:
    """Apply the schema migrations that are missing (safe to run any time)."""
    from tidefield.server.db.migrate import migrate
    from tidefield.server.settings import AdminSettings

    url = _require_db(_settings(AdminSettings, database_url=database_url))
    applied = migrate(url)
    typer.echo(f"applied {len(applied)} migration(s)" if applied else "schema is up to date")


@registry_app.command("load")
def registry_load(database_url: DatabaseUrl = None,
                  sites_csv: Annotated[Path | None, typer.Option(
                      "--sites", help="a sites CSV instead of the bundled registry")] = None,
                  ) -> None:
    """Upsert the metric catalog, the sites, their devices and series."""
    import psycopg

    from tidefield.protocol.registry import load_sites
    from tidefield.server.db.registry import load_registry
    from tidefield.server.settings import AdminSettings

    url = _require_db(_settings(AdminSettings, database_url=database_url))
    with psycopg.connect(url) as conn:
        summary = load_registry(conn, load_sites(sites_csv))
    typer.echo(f"registry: {summary.sites} sites, {summary.devices} devices, "
               f"{summary.series} series")


@registry_app.command("list")
def registry_list(kind: Annotated[str | None, typer.Option(help="only this site kind")] = None,
                  ) -> None:
    """Print the bundled registry's sites (id, kind, district, name)."""
    from tidefield.protocol.registry import load_sites

    for site in load_sites():
        if kind is None or site.kind == kind:
            typer.echo(f"{site.id}\t{site.kind}\t{site.district}\t{site.name_en}\t{site.name_zh}")


@keys_app.command("create")
def keys_create(name: Annotated[str, typer.Argument(help="who or what the key is for")],
                scope: Annotated[list[str], typer.Option(
                    "--scope", "-s",
                    help="read, ingest, operate (acknowledge alerts) or admin; repeat")],
                site: Annotated[list[str] | None, typer.Option(
                    "--site", help="limit the key to this site (repeat for several)")] = None,
                organisation: Annotated[str | None, typer.Option(
                    "--org", help="the organisation that owns the key (short name; "
                                  "default: the platform office)")] = None,
                database_url: DatabaseUrl = None) -> None:
    """Create a key and print it (the only time it is shown)."""
    import psycopg

    from tidefield.server.security.api_keys import Scope, create_key
    from tidefield.server.settings import AdminSettings

    url = _require_db(_settings(AdminSettings, database_url=database_url))
    try:
        scopes = [Scope(s) for s in scope]
    except ValueError as exc:
        typer.echo(f"error: {exc}; scopes are {', '.join(Scope)}", err=True)
        raise typer.Exit(2) from None
    with psycopg.connect(url) as conn:
        owner = _organisation_id(conn, organisation) if organisation else None
        try:
            key = create_key(conn, name, scopes, site or None, organisation_id=owner)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        _audit(conn, "api_key.created", f"key:{key.split('_')[1]}",
               after={"name": name, "scopes": [str(s) for s in scopes], "sites": site or None,
                      "organisation_id": owner or 1},
               organisations=[owner or 1])
    typer.echo(key)


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="the key's prefix or name")],
                database_url: DatabaseUrl = None) -> None:
    """Revoke a key at once."""
    import psycopg

    from tidefield.server.security.api_keys import key_prefix, revoke_key
    from tidefield.server.settings import AdminSettings

    url = _require_db(_settings(AdminSettings, database_url=database_url))
    with psycopg.connect(url) as conn:
        count = revoke_key(conn, key.split("_")[1] if key.startswith("tf_") else key)
        if count:
            _audit(conn, "api_key.revoked", f"key:{key_prefix(key)}")
    if not count:
        typer.echo(f"error: no active key {key!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {count} key(s)")


@keys_app.command("list")
def keys_list(database_url: DatabaseUrl = None) -> None:
    """List keys (prefix, name, scopes, sites, created, revoked)."""
    import psycopg

    from tidefield.server.security.api_keys import list_keys
    from tidefield.server.settings import AdminSettings

    url = _require_db(_settings(AdminSettings, database_url=database_url))
    with psycopg.connect(url) as conn:
        for prefix, name, scopes, sites, created, revoked in list_keys(conn):
            typer.echo(f"{prefix}\t{name}\t{','.join(scopes)}\t{','.join(sites or ['*'])}\t"
                       f"{created:%Y-%m-%d}\t{'revoked' if revoked else 'active'}")


def _audit(conn: psycopg.Connection, action: str, target: str, **details: Any) -> None:
    """One audit row for an operator's command: the actor is the operating-system user
    who ran it (``cli:<user>``), as nobody signs in to the command line."""
    import getpass

    from tidefield.server.security import audit

    audit.record(conn, actor=f"cli:{getpass.getuser()}", action=action, target=target,
                 **details)
    conn.commit()


def _organisation_id(conn: psycopg.Connection, slug: str) -> int:
    from tidefield.server.security.organisations import find_organisation

    found = find_organisation(conn, slug)
    if found is None:
        typer.echo(f"error: no organisation {slug!r} (`tidefield orgs list`)", err=True)
        raise typer.Exit(2)
    return found.id


def _sync_broker(conn: psycopg.Connection, settings: ServerSettings,
                 fresh: Credentials | None = None) -> None:
    """Make the running broker (through its admin API) and its config file what the
    database says; ``fresh``: the credentials just created, which the broker needs."""
    from tidefield.server.security.wiring import broker_access

    access = broker_access(settings)
    result = access.sync(conn, fresh)
    where = (f"applied to the running broker ({result.changes} change(s))" if result.live
             else "no running broker reachable with an admin login; it reads the file "
                  "when it starts")
    typer.echo(f"broker access: {result.logins} login(s), {result.roles} role(s) in "
               f"{access.config_file} ({where})", err=True)
    for problem in result.problems:
        typer.echo(f"warning: {problem}", err=True)


@devices_app.command("provision")
def devices_provision(
        site: Annotated[str, typer.Argument(help="the device's site, e.g. ag-001")],
        device: Annotated[str, typer.Argument(help="a registered device of the site; its "
                                                   "gateway (SITE-gw) speaks for them all")],
        rotate: Annotated[bool, typer.Option(
            "--rotate", help="replace an existing login (the old password stops working)")]
        = False,
        database_url: DatabaseUrl = None) -> None:
    """Create a device's broker login, print it (the only time it is shown) and update
    the broker."""
    import psycopg

    from tidefield.server.security.accounts import ProvisioningError, provision_device
    from tidefield.server.settings import AdminSettings

    settings = _settings(AdminSettings, database_url=database_url)
    with psycopg.connect(_require_db(settings)) as conn:
        try:
            credentials = provision_device(conn, site, device, rotate=rotate)
        except ProvisioningError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        _audit(conn, "device.provisioned", f"device:{device}", site_id=site,
               after={"username": credentials.username, "rotated": rotate})
        # shown before the broker is told: should that fail, `--rotate` makes a new one
        typer.echo(f"username: {credentials.username}\npassword: {credentials.password}")
        _sync_broker(conn, settings, credentials)
    typer.echo("may: " + ", ".join(f"{r.access} {r.topic}" for r in credentials.rules[:3])
               + (f" (and the same for {len(credentials.rules) // 3 - 1} more devices of "
                  f"{site})" if len(credentials.rules) > 3 else ""), err=True)


@devices_app.command("service")
def devices_service(role: Annotated[str, typer.Argument(
                        help="ingest, api, detector, dashboards, simulator or admin")],
                    database_url: DatabaseUrl = None) -> None:
    """Create (or replace) a platform service's broker login and print it once."""
    import psycopg

    from tidefield.server.security.accounts import ProvisioningError, provision_service
    from tidefield.server.settings import AdminSettings

    settings = _settings(AdminSettings, database_url=database_url)
    with psycopg.connect(_require_db(settings)) as conn:
        try:
            credentials = provision_service(conn, role)
        except ProvisioningError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        _audit(conn, "service.provisioned", f"service:{role}",
               after={"username": credentials.username})
        typer.echo(f"username: {credentials.username}\npassword: {credentials.password}")
        _sync_broker(conn, settings, credentials)


@devices_app.command("revoke")
def devices_revoke(username: Annotated[str, typer.Argument(
                       help="a device id, or svc_<role> for a service")],
                   database_url: DatabaseUrl = None) -> None:
    """Revoke a login; a client connected with it is cut off at once."""
    import psycopg

    from tidefield.server.security.accounts import revoke
    from tidefield.server.settings import AdminSettings

    settings = _settings(AdminSettings, database_url=database_url)
    with psycopg.connect(_require_db(settings)) as conn:
        if not revoke(conn, username):
            typer.echo(f"error: no active login {username!r}", err=True)
            raise typer.Exit(1)
        site = conn.execute("SELECT site_id FROM devices WHERE id = %s", (username,)).fetchone()
        _audit(conn, "device.revoked", f"device:{username}", site_id=site[0] if site else None)
        _sync_broker(conn, settings)
    typer.echo(f"revoked {username}")


@devices_app.command("list")
def devices_list(all_: Annotated[bool, typer.Option("--all", help="revoked ones too")] = False,
                 database_url: DatabaseUrl = None) -> None:
    """List broker logins (user, kind, site, created, state)."""
    import psycopg

    from tidefield.server.security.accounts import list_logins
    from tidefield.server.settings import AdminSettings

    url = _require_db(_settings(AdminSettings, database_url=database_url))
    with psycopg.connect(url) as conn:
        for login in list_logins(conn, include_revoked=all_):
            typer.echo(f"{login.username}\t{login.kind}\t{login.site_id or '*'}\t"
                       f"{login.created_at:%Y-%m-%d}\t"
                       f"{'revoked' if login.revoked_at else 'active'}")


@devices_app.command("sync")
def devices_sync(database_url: DatabaseUrl = None) -> None:
    """Make the running broker and its config file what the database says (after a
    registry load added devices to a site whose gateway has a login)."""
    import psycopg

    from tidefield.server.settings import AdminSettings

    settings = _settings(AdminSettings, database_url=database_url)
    with psycopg.connect(_require_db(settings)) as conn:
        _sync_broker(conn, settings)


@tls_app.command("init")
def tls_init(out: Annotated[Path, typer.Option(help="folder for ca.pem, server.pem/.key")]
             = Path(".tidefield/tls"),
             host: Annotated[list[str] | None, typer.Option(
                 "--host", help="another name or address of the server (repeat)")] = None,
             ) -> None:
    """Make a development CA and a server certificate (kept if already there). Give edge
    agents ca.pem as broker.ca_file; `tidefield up` with TIDEFIELD_TLS=true uses these."""
    from tidefield.server.security.tls import ensure_dev_pki

    files = ensure_dev_pki(out, host or ())
    typer.echo(f"CA          {files.ca_file}\ncertificate {files.cert_file}\n"
               f"key         {files.key_file}")


def _uvicorn_tls(settings: ServerSettings) -> dict[str, Any]:
    """uvicorn's TLS options when TIDEFIELD_TLS is on."""
    from tidefield.server.security.wiring import server_tls

    files = server_tls(settings)
    if files is None:
        return {}
    return {"ssl_certfile": str(files.cert_file), "ssl_keyfile": str(files.key_file)}


@app.command()
def api(database_url: DatabaseUrl = None,
        host: Annotated[str | None, typer.Option(help="default: TIDEFIELD_API_HOST")] = None,
        port: Annotated[int | None, typer.Option(help="default: TIDEFIELD_API_PORT")] = None,
        workers: Annotated[int | None, typer.Option(
            help="default: TIDEFIELD_API_WORKERS")] = None) -> None:
    """Run the HTTP API (/api/v1, OpenAPI docs at /docs)."""
    import os

    import uvicorn

    from tidefield.server.settings import ApiSettings

    settings = _settings(ApiSettings, database_url=database_url, api_host=host, api_port=port,
                         api_workers=workers)
    _require_db(settings)
    # worker processes build their own Settings from the environment
    os.environ["TIDEFIELD_DATABASE_URL"] = _require_db(settings)
    uvicorn.run("tidefield.server.api.app:create_app", factory=True, host=settings.api_host,
                port=settings.api_port, workers=settings.api_workers,
                log_level=settings.log_level.lower(), access_log=False,
                **_uvicorn_tls(settings))


@app.command()
def ingest(database_url: DatabaseUrl = None,
           mqtt_url: Annotated[str | None, typer.Option(
               envvar="TIDEFIELD_MQTT_URL", help="broker to consume from")] = None,
           workers: Annotated[int | None, typer.Option(
               "--workers", "-w", envvar="TIDEFIELD_INGEST_WORKERS",
               help="processes (default 2)")] = None,
           port: Annotated[int | None, typer.Option(envvar="TIDEFIELD_INGEST_PORT")] = None,
           ) -> None:
    """Run the ingest service: N processes, each a FastAPI app consuming MQTT and serving
    /healthz, /metrics and HTTP ingest (POST /ingest/{site}/{device})."""
    import os
    import shutil

    import uvicorn

    from tidefield.server.settings import IngestSettings

    settings = _settings(IngestSettings, database_url=database_url, mqtt_url=mqtt_url,
                         ingest_workers=workers, ingest_port=port)
    _require_db(settings)
    # The worker processes read the same settings from the environment.
    for name, value in settings.model_dump(exclude_none=True).items():
        os.environ[f"TIDEFIELD_{name.upper()}"] = str(value)
    metrics_dir = settings.data_dir.resolve() / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    uvicorn.run("tidefield.server.ingest.app:create_app", factory=True,
                host=settings.ingest_host, port=settings.ingest_port,
                workers=settings.ingest_workers, log_level=settings.log_level.lower(),
                access_log=False, **_uvicorn_tls(settings))


@app.command()
def up(database_url: DatabaseUrl = None,
       mqtt_url: Annotated[str | None, typer.Option(help="use this broker (default: "
                                                    "TIDEFIELD_MQTT_URL, else embedded)")] = None,
       data_dir: Annotated[Path | None, typer.Option(
           help="where embedded services keep data (default: TIDEFIELD_DATA_DIR)")] = None,
       backfill_days: Annotated[float | None, typer.Option(
           help="simulated history to write at start (default 7)")] = None,
       fleet: Annotated[bool | None, typer.Option(
           "--fleet/--no-fleet", help="stream the simulated fleet")] = None,
       dashboard: Annotated[bool | None, typer.Option(
           "--dashboard/--no-dashboard", help="run the dashboard")] = None,
       detector: Annotated[bool | None, typer.Option(
           "--detector/--no-detector", help="run the anomaly detector")] = None,
       replica: Annotated[bool | None, typer.Option(
           "--replica/--no-replica", help="run a streaming read replica for the API's "
                                          "reads")] = None,
       notify: Annotated[bool | None, typer.Option(
           "--notify/--no-notify", help="run the notifier and a local webhook sink that "
                                        "prints each notification")] = None,
       ) -> None:
    """Run the whole platform on this machine until Ctrl-C: database and broker (embedded
    unless URLs are given), ingest, API, dashboard, detector and a simulated fleet."""
    from tidefield.server.platform import Platform
    from tidefield.server.settings import UpSettings

    settings = _settings(UpSettings, database_url=database_url, mqtt_url=mqtt_url,
                         data_dir=data_dir, up_backfill_days=backfill_days, up_fleet=fleet,
                         up_dashboard=dashboard, up_detector=detector, up_replica=replica,
                         up_notify=notify)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    platform = Platform(settings)

    def announce(text: str) -> None:
        typer.echo(f"\n{text}\npress Ctrl-C to stop\n", err=True)

    try:
        platform.run(stop, announce=announce)
    except Exception as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("stopped", err=True)


@app.command()
def status(data_dir: Annotated[Path | None, typer.Option(
        help="the data folder of `tidefield up` (default: TIDEFIELD_DATA_DIR)")] = None,
           as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
           ) -> None:
    """What `tidefield up` runs, the ingest rate, ingest queue depth and open alerts."""
    import json

    from tidefield.server.settings import UpSettings
    from tidefield.server.status import collect, render

    settings = _settings(UpSettings, data_dir=data_dir)
    report = collect(settings.data_dir.resolve())
    typer.echo(json.dumps(report, indent=1, default=str) if as_json else render(report))
    if not report["running"]:
        raise typer.Exit(3)



# --- people and organisations --------------------------------------------------------------

def _people_conn(database_url: str | None) -> psycopg.Connection:
    import psycopg

    from tidefield.server.settings import AdminSettings

    return psycopg.connect(_require_db(_settings(AdminSettings, database_url=database_url)))


def _user_or_exit(conn: psycopg.Connection, username: str) -> people.User:
    from tidefield.server.security.people import find_user

    user = find_user(conn, username)
    if user is None:
        typer.echo(f"error: no user {username!r}", err=True)
        raise typer.Exit(2)
    return user


@users_app.command("create")
def users_create(username: Annotated[str, typer.Argument(help="a-z, 0-9, . _ @ -")],
                 organisation: Annotated[str, typer.Option(
                     "--org", help="the organisation (short name)")],
                 role: Annotated[str, typer.Option(
                     help="viewer, operator or admin")] = "viewer",
                 name: Annotated[str, typer.Option(help="display name")] = "",
                 email: Annotated[str | None, typer.Option(
                     help="matched at single sign-on")] = None,
                 database_url: DatabaseUrl = None) -> None:
    """Create an account with a role and print its temporary password (changed at the
    first sign-in)."""
    from tidefield.server.security import people

    with _people_conn(database_url) as conn:
        org = _organisation_id(conn, organisation)
        password = people.temporary_password()
        try:
            user_id = people.create_user(conn, username, password=password,
                                         display_name=name, email=email)
            people.set_role(conn, user_id, org, role)
        except people.AccountError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        _audit(conn, "user.created", f"user:{username}", organisations=[org],
               after={"display_name": name, "email": email})
        _audit(conn, "role.changed", f"user:{username}", organisations=[org],
               before={"organisation_id": org, "role": None},
               after={"organisation_id": org, "role": role})
    typer.echo(f"user: {username}\ntemporary password: {password}\n"
               f"(to be changed at the first sign-in)")


@users_app.command("role")
def users_role(username: str,
               organisation: Annotated[str, typer.Option("--org", help="short name")],
               role: Annotated[str, typer.Option(
                   help="viewer, operator, admin, or none to take the role away")],
               database_url: DatabaseUrl = None) -> None:
    """Give someone a role in an organisation (or take it away)."""
    from tidefield.server.security import people

    with _people_conn(database_url) as conn:
        user = _user_or_exit(conn, username)
        org = _organisation_id(conn, organisation)
        wanted = None if role == "none" else role
        try:
            before = people.set_role(conn, user.id, org, wanted)
        except people.AccountError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        if before != wanted:
            _audit(conn, "role.changed" if wanted else "role.removed", f"user:{username}",
                   organisations=[org], before={"organisation_id": org, "role": before},
                   after={"organisation_id": org, "role": wanted})
    typer.echo(f"{username}: {before or 'no role'} -> {wanted or 'no role'} in {organisation}")


@users_app.command("reset-password")
def users_reset_password(username: str, database_url: DatabaseUrl = None) -> None:
    """A new temporary password (printed), the lock-out lifted, every session ended."""
    from tidefield.server.security import people, sessions

    with _people_conn(database_url) as conn:
        user = _user_or_exit(conn, username)
        password = people.temporary_password()
        people.set_password(conn, user.id, password, must_change=True)
        ended = sessions.end_sessions(conn, user.id, "password reset by an admin")
        conn.execute("DELETE FROM sign_in_throttle WHERE subject = %s", (f"user:{username}",))
        _audit(conn, "password.reset", f"user:{username}", organisations=list(user.roles),
               after={"sessions_ended": ended})
    typer.echo(f"user: {username}\ntemporary password: {password}\n"
               f"(to be changed at the next sign-in)")


@users_app.command("list")
def users_list(database_url: DatabaseUrl = None) -> None:
    """People with their roles (user, organisation:role..., state)."""
    from tidefield.server.security import people
    from tidefield.server.security.organisations import list_organisations

    with _people_conn(database_url) as conn:
        slugs = {o.id: o.slug for o in list_organisations(conn)}
        for user in people.list_users(conn, None):
            roles = ",".join(f"{slugs[o]}:{r}" for o, r in sorted(user.roles.items()))
            state = "disabled" if user.disabled_at else (
                "must change password" if user.must_change_password else "active")
            typer.echo(f"{user.username}\t{roles or '-'}\t{state}")


@orgs_app.command("list")
def orgs_list(database_url: DatabaseUrl = None) -> None:
    """Organisations (id, short name, sites owned, granted, people, name)."""
    from tidefield.server.security.organisations import list_organisations

    with _people_conn(database_url) as conn:
        for o in list_organisations(conn):
            typer.echo(f"{o.id}\t{o.slug}\t{o.sites}\t{o.granted}\t{o.people}\t{o.name}"
                       + ("\t(platform: sees every site)" if o.platform else ""))


@orgs_app.command("create")
def orgs_create(slug: Annotated[str, typer.Argument(help="short name, a-z 0-9 -")],
                name: Annotated[str, typer.Argument(help="the full name")],
                database_url: DatabaseUrl = None) -> None:
    """Create an organisation."""
    from tidefield.server.security import organisations, people

    with _people_conn(database_url) as conn:
        try:
            org = organisations.create_organisation(conn, slug, name)
        except people.AccountError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        _audit(conn, "organisation.created", f"organisation:{slug}", organisations=[org],
               after={"slug": slug, "name": name})
    typer.echo(f"organisation {org}: {slug}")


@orgs_app.command("assign")
def orgs_assign(organisation: Annotated[str, typer.Argument(help="short name")],
                site: Annotated[list[str], typer.Argument(help="site ids")],
                database_url: DatabaseUrl = None) -> None:
    """Make the organisation the owner of these sites."""
    from tidefield.server.security import organisations, people

    with _people_conn(database_url) as conn:
        org = _organisation_id(conn, organisation)
        try:
            before = organisations.assign_sites(conn, org, site)
        except people.AccountError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        for site_id, owner in sorted(before.items()):
            if owner != org:
                _audit(conn, "site.moved", f"site:{site_id}", site_id=site_id,
                       organisations=[owner], before={"organisation_id": owner},
                       after={"organisation_id": org})
        _sync_organisation_logins(conn, database_url)
    typer.echo(f"{organisation} owns {len(site)} more site(s)")


def _sync_organisation_logins(conn: psycopg.Connection, database_url: str | None) -> None:
    """Organisations' broker logins read their sites' alerts: the broker learns of a
    moved site or a grant."""
    from tidefield.server.settings import AdminSettings

    if conn.execute("SELECT 1 FROM mqtt_credentials WHERE organisation_id IS NOT NULL "
                    "AND revoked_at IS NULL").fetchone():
        _sync_broker(conn, _settings(AdminSettings, database_url=database_url))


@orgs_app.command("mqtt-login")
def orgs_mqtt_login(organisation: Annotated[str, typer.Argument(help="short name")],
                    database_url: DatabaseUrl = None) -> None:
    """Create (or replace) the organisation's broker login, which reads the alert notices
    of its sites only, print it once and update the broker."""
    from tidefield.server.security.accounts import ProvisioningError, provision_organisation
    from tidefield.server.settings import AdminSettings

    settings = _settings(AdminSettings, database_url=database_url)
    with _people_conn(database_url) as conn:
        org = _organisation_id(conn, organisation)
        try:
            credentials = provision_organisation(conn, org)
        except ProvisioningError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        _audit(conn, "service.provisioned", f"mqtt:{credentials.username}",
               organisations=[org], after={"reads": len(credentials.rules)})
        typer.echo(f"username: {credentials.username}\npassword: {credentials.password}")
        _sync_broker(conn, settings, credentials)


@orgs_app.command("grant")
def orgs_grant(organisation: Annotated[str, typer.Argument(help="who may read")],
               site: Annotated[str, typer.Argument(help="another organisation's site")],
               revoke: Annotated[bool, typer.Option("--revoke", help="withdraw it")] = False,
               database_url: DatabaseUrl = None) -> None:
    """Let an organisation read another's site (or, with --revoke, no longer)."""
    from tidefield.server.security import organisations, people

    with _people_conn(database_url) as conn:
        org = _organisation_id(conn, organisation)
        try:
            changed = (organisations.revoke_grant(conn, org, site) if revoke
                       else organisations.grant(conn, org, site))
        except people.AccountError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        if changed:
            _audit(conn, "grant.removed" if revoke else "grant.added", f"site:{site}",
                   site_id=site, organisations=[org],
                   **({"before" if revoke else "after": {"organisation_id": org,
                                                          "access": "read"}}))
            _sync_organisation_logins(conn, database_url)
    typer.echo(f"{organisation} {'may no longer' if revoke else 'may'} read {site}"
               if changed else "nothing changed")
