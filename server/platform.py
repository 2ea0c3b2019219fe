"""`tidefield up`: the whole platform on one machine, started in order and stopped in
reverse.

0. The data folder's lock (``server.instance``): a second `tidefield up` on the same
   folder waits for the first to let go (``up_lock_wait_s``) or refuses, and servers an
   instance killed with `kill -9` left running are stopped first.
1. Services: PostgreSQL+TimescaleDB and Mosquitto, embedded under ``settings.data_dir``
   (initialised on first use, reused after) unless ``TIDEFIELD_DATABASE_URL`` /
   ``TIDEFIELD_MQTT_URL`` point to existing ones. Both run in the foreground as the
   supervisor's first children (``database``, ``broker``), so one that dies is restarted
   with backoff like any other part, and stopped last. Migrations, the site registry, and
   the operator's API key (created once, kept in ``data_dir/operator.key``).
2. Processes, supervised (``supervisor.Supervisor``), in the order of ``COMPONENTS``:
   ingest workers, the API, the dashboard, the live simulated fleet, and, once the
   backfill is written, the detector (so it scores history in time order before live
   readings). A component is one entry in ``COMPONENTS``; flags and settings leave any
   of them out. Beside them (tidefield.server.ops): the backup schedule, while the
   embedded database archives its WAL to the repository from its first start, and with
   ``--replica`` a streaming read replica that the API reads from.
3. The backfill: simulated history of the last ``up_backfill_days`` (or since the newest
   stored reading, after a restart) written straight to the database, with a progress
   bar, while the live parts already run.

Stopping (Ctrl-C, SIGTERM): the processes in reverse order, then the broker, then the
database; nothing is left running, and then the lock goes.
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import psycopg

from tidefield.protocol.registry import load_sites
from tidefield.protocol.units import DAY_MS
from tidefield.server.db.migrate import migrate
from tidefield.server.db.registry import load_registry
from tidefield.server.embedded import MosquittoBroker, PostgresCluster
from tidefield.server.embedded.ports import port_open
from tidefield.server.instance import reap_orphans, take_lock
from tidefield.server.ops import wiring as ops
from tidefield.server.security.bootstrap import FirstSignIn
from tidefield.server.security.wiring import EmbeddedBroker, client_ca_file, prepare_embedded_broker
from tidefield.server.settings import UpSettings
from tidefield.server.supervisor import Child, Supervisor

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 120.0  # first start compiles Numba kernels and imports Streamlit
SERVICE_READY_TIMEOUT_S = 120.0  # a database recovering after a crash replays its WAL
# the embedded servers are restarted for as long as they die no faster than this allows
SERVICE_MAX_RESTARTS = 20
OPERATOR_KEY_FILE = "operator.key"
FIRST_SIGN_IN_FILE = "first-sign-in.txt"
STATE_FILE = "up.json"
NOTIFY_SINK_SECRET_FILE = "notify-sink.secret"
LOCAL_SINK = "local webhook sink"


def _http_ok(url: str, ca_file: str | None = None) -> Callable[[], bool]:
    verify = ssl.create_default_context(cafile=ca_file) if ca_file else True
    return lambda: httpx.get(url, timeout=2, verify=verify).status_code == 200


def _http_health(url: str, ca_file: str | None) -> dict[str, str]:
    """How `tidefield status` checks a part that answers HTTP."""
    return {"http": url, **({"ca_file": ca_file} if ca_file else {})}


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


@dataclass(frozen=True)
class Component:
    """A supervised part of the platform: whether it runs, and how to start it."""

    name: str
    enabled: Callable[[UpSettings], bool]
    child: Callable[[Platform], Child]
    wait_ready: bool = False  # the next components need it serving first
    after_backfill: bool = False


def _ingest(p: Platform) -> Child:
    s = p.settings
    url = f"{p.http_scheme}://{s.ingest_host}:{s.ingest_port}"
    return Child("ingest", _python("tidefield.cli", "ingest"),
                 env=p.child_env(mqtt_login="ingest"),
                 ready=_http_ok(f"{url}/healthz", p.ca_file), url=url,
                 health=_http_health(f"{url}/healthz", p.ca_file))


def _api(p: Platform) -> Child:
    env = p.child_env(mqtt_login="api")
    if p.settings.up_replica:  # reads go to the replica (to the primary while it is down)
        env["TIDEFIELD_DATABASE_READ_URL"] = ops.replica_url(p.settings)
    return Child("api", _python("tidefield.cli", "api"), env=env,
                 ready=_http_ok(f"{p.api_url}/healthz", p.ca_file), url=f"{p.api_url}/docs",
                 health=_http_health(f"{p.api_url}/healthz", p.ca_file))


def _backup(p: Platform) -> Child:
    return Child("backup", _python("tidefield.cli", "backup", "schedule"), env=p.child_env())


def _replica(p: Platform) -> Child:
    return Child("replica", _python("tidefield.cli", "replica", "run"), env=p.child_env(),
                 url=ops.replica_url(p.settings), health={"postgres": ops.replica_url(p.settings)})


def _dashboard(p: Platform) -> Child:
    s = p.settings
    return Child("dashboard", _python("tidefield.cli", "dashboard"),
                 # no key: each person signs in, and the dashboard holds their session
                 env={**p.child_env(), "TIDEFIELD_API_URL": p.api_url,
                      "TIDEFIELD_DASHBOARD_HOST": "127.0.0.1",
                      "TIDEFIELD_DASHBOARD_PORT": str(s.dashboard_port)},
                 ready=_http_ok(f"http://127.0.0.1:{s.dashboard_port}/_stcore/health"),
                 url=f"http://127.0.0.1:{s.dashboard_port}",
                 health=_http_health(f"http://127.0.0.1:{s.dashboard_port}/_stcore/health",
                                     None))


def _fleet(p: Platform) -> Child:
    s = p.settings
    return Child("fleet", _python(
        # the broker URL (with the simulator's login) goes by environment, not argv
        "tidefield.sim.cli", "fleet", "--seed", str(s.sim_seed),
        "--tick", str(s.sim_tick_s), "--events-per-site", str(s.sim_events_per_site),
        "--faults-per-series", str(s.sim_faults_per_series),
        "--state", str(p.data_dir / "sim-sequences.json")),
        env=p.child_env(mqtt_login="simulator"))


def _notify_sink(p: Platform) -> Child:
    port = p.settings.up_notify_sink_port
    return Child("notify-sink", _python("tidefield.cli", "notify", "sink", "--port", str(port)),
                 # the secret by environment, not argv (ps shows argv)
                 env={**p.child_env(), "TIDEFIELD_NOTIFY_SINK_SECRET": p.sink_secret},
                 url=f"http://127.0.0.1:{port}/")


def _notifier(p: Platform) -> Child:
    s = p.settings
    return Child("notifier", _python("tidefield.cli", "notify", "run"),
                 env={**p.child_env(), "TIDEFIELD_NOTIFY_PUBLIC_URL": p.api_url,
                      "TIDEFIELD_NOTIFY_DASHBOARD_URL": f"http://127.0.0.1:{s.dashboard_port}"})


def _detector(p: Platform) -> Child:
    return Child("detector", _python("tidefield.cli", "detect", "run"),
                 env=p.child_env(mqtt_login="detector"))


COMPONENTS: tuple[Component, ...] = (
    Component("backup", ops.archives, _backup),
    Component("replica", lambda s: s.up_replica, _replica),
    Component("ingest", lambda s: True, _ingest, wait_ready=True),
    Component("api", lambda s: True, _api, wait_ready=True),
    Component("dashboard", lambda s: s.up_dashboard, _dashboard),
    Component("fleet", lambda s: s.up_fleet, _fleet),
    Component("notify-sink", lambda s: s.up_notify, _notify_sink),
    Component("notifier", lambda s: s.up_notify, _notifier),
    Component("detector", lambda s: s.up_detector, _detector, after_backfill=True),
)


class Platform:
    def __init__(self, settings: UpSettings, supervisor: Supervisor | None = None) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.database_url = settings.database_url
        self.mqtt_url = settings.mqtt_url
        self.http_scheme = "https" if settings.tls else "http"
        self.api_url = f"{self.http_scheme}://{settings.api_host}:{settings.api_port}"
        self.ca_file: str | None = None  # what children trust when TLS is on
        self._access: EmbeddedBroker | None = None  # the embedded broker's logins
        self.operator_key = ""
        self.sink_secret = ""  # the local webhook sink's (tidefield.server.notify)
        self.backup_repo: Path | None = None  # where the database is backed up, if it is
        # the platform admin's first sign-in, when made by this start
        self.first_sign_in: FirstSignIn | None = None
        self.supervisor = supervisor or Supervisor(state_file=self.data_dir / STATE_FILE)
        self._postgres: PostgresCluster | None = None
        self._broker: MosquittoBroker | None = None
        self._lock: IO[str] | None = None  # the data folder's, while this instance runs

    # --- start --------------------------------------------------------------------------

    def take_data_dir(self) -> None:
        """The data folder's lock (waiting for an instance still stopping), then the
        servers a killed instance left behind are stopped."""
        say = lambda text: self.supervisor.say("up", text)  # noqa: E731
        self._lock = take_lock(self.data_dir, self.settings.up_lock_wait_s, say)
        reap_orphans(self.data_dir, self.data_dir / STATE_FILE, say)

    def _start_service(self, child: Child, stop: threading.Event | None) -> None:
        supervisor = self.supervisor
        supervisor.add(child)
        supervisor.start(child)
        if not supervisor.wait_ready(child, SERVICE_READY_TIMEOUT_S,
                                     stop or threading.Event()):
            raise RuntimeError(f"{child.name} did not start; see its output above")

    def start_services(self, stop: threading.Event | None = None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.database_url is None:
            self._postgres = postgres = PostgresCluster(
                self.data_dir / "postgres", port=self.settings.embedded_pg_port,
                conf=ops.primary_conf(self.settings, self.data_dir))
            self._start_service(Child(
                "database", postgres.prepare(), ready=postgres.accepting,
                url=postgres.url(), health={"postgres": postgres.url()},
                max_restarts=SERVICE_MAX_RESTARTS,
                stop_signal=signal.SIGINT), stop)  # fast shutdown, not "smart"
            self.database_url = postgres.create_database("tidefield")
        if ops.archives(self.settings):
            self.backup_repo = ops.prepare_repository(self.settings, self.data_dir,
                                                      self.database_url)
        migrate(self.database_url)
        with psycopg.connect(self.database_url) as conn:
            load_registry(conn, load_sites())
            self.operator_key = self._operator_key(conn)
            self._people(conn)
            if self.settings.up_notify:
                self._local_sink(conn)
        if self.mqtt_url is None:
            # Anonymous clients refused; service logins and device ACLs from the database,
            # TLS when settings.tls (tidefield.server.security).
            self._access = prepare_embedded_broker(self.settings, self.database_url)
            self._broker = broker = MosquittoBroker(self.data_dir / "mosquitto",
                                                    port=self.settings.embedded_mqtt_port,
                                                    extra_conf=self._access.extra_conf,
                                                    allow_anonymous=False,
                                                    tls=self._access.tls is not None)
            self._start_service(Child(
                "broker", broker.prepare(),
                ready=lambda: port_open(broker.port), url=broker.url,
                health={"tcp": f"127.0.0.1:{broker.port}"},
                max_restarts=SERVICE_MAX_RESTARTS), stop)
            self._access.write_service_urls(broker.port)
            self.mqtt_url = self._broker.url
        self.ca_file = client_ca_file(self.settings) if self.settings.tls else None
        self.supervisor.info = {"database_url": self.database_url, "mqtt_url": self.mqtt_url,
                                "api_url": self.api_url,
                                "database_read_url": ops.replica_url(self.settings)
                                if self.settings.up_replica else None,
                                "backup_repo": str(self.backup_repo) if self.backup_repo
                                else None}

    def _operator_key(self, conn: psycopg.Connection) -> str:
        """The key printed for the operator and given to the dashboard: created once,
        reused while it stays valid (not revoked)."""
        from tidefield.server.security.api_keys import Scope, authenticate, create_key

        path = self.data_dir / OPERATOR_KEY_FILE
        if path.exists():
            key = path.read_text().strip()
            if authenticate(conn, key) is not None:
                return key
        key = create_key(conn, "operator (tidefield up)", [Scope.READ, Scope.OPERATE])
        path.touch(mode=0o600)
        path.write_text(key + "\n")
        return key

    def _local_sink(self, conn: psycopg.Connection) -> None:
        """A contact for the local webhook sink and a route of every alert to it, so a new
        user sees notifications flow without an account anywhere (upserted each start:
        the port may have changed). Other contacts and routes are the user's."""
        import secrets

        from tidefield.server.notify import store
        from tidefield.server.notify.routing import ContactIn, GroupIn, NotifyConfig, RouteIn

        path = self.data_dir / NOTIFY_SINK_SECRET_FILE
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(24) + "\n")
        self.sink_secret = path.read_text().strip()
        url = (f"tfhook://127.0.0.1:{self.settings.up_notify_sink_port}/"
               f"?secret={self.sink_secret}")
        store.load_config(conn, NotifyConfig(
            organisation="platform", contacts=[ContactIn(name=LOCAL_SINK, url=url,
                                                         language="en")],
            groups=[GroupIn(name=LOCAL_SINK, members=[LOCAL_SINK])],
            routes=[RouteIn(name=f"every alert to the {LOCAL_SINK}", group=LOCAL_SINK)]))
        conn.commit()

    def _people(self, conn: psycopg.Connection) -> None:
        """The platform admin and the demo organisations, the first time; their first
        sign-ins are printed once and kept in ``data_dir/first-sign-in.txt`` (0600)."""
        from tidefield.server.security.bootstrap import (
            ensure_demo_organisations,
            ensure_platform_admin,
        )

        admin = ensure_platform_admin(conn)
        demos = ensure_demo_organisations(conn)
        if admin is None and not demos:
            return
        lines = [f"{f.username}\t{f.temporary_password}\t{f.organisation}"
                 for f in ([admin] if admin else []) + demos]
        path = self.data_dir / FIRST_SIGN_IN_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write("# user\ttemporary password (change it at the first sign-in)\t"
                         "organisation\n" + "\n".join(lines) + "\n")
        self.first_sign_in = admin

    def child_env(self, mqtt_login: str | None = None) -> dict[str, str]:
        """What every child needs to find the services (the rest of the settings it reads
        from the environment it inherits). ``mqtt_login``: the service whose broker login
        the child uses on the embedded broker (none: the URL without credentials)."""
        s = self.settings
        mqtt_url = self.mqtt_url
        if self._access is not None and mqtt_login is not None and self._broker is not None:
            mqtt_url = self._access.url(mqtt_login, self._broker.port)
        assert self.database_url is not None and mqtt_url is not None  # services started
        env = {"TIDEFIELD_DATABASE_URL": self.database_url, "TIDEFIELD_MQTT_URL": mqtt_url,
               "TIDEFIELD_DATA_DIR": str(self.data_dir), "TIDEFIELD_API_PORT": str(s.api_port),
               "TIDEFIELD_API_HOST": s.api_host, "TIDEFIELD_LOG_LEVEL": s.log_level}
        if self.ca_file:  # httpx and paho's default contexts then trust the development CA
            env["SSL_CERT_FILE"] = self.ca_file
        return env

    def describe(self) -> str:
        broker = str(self.mqtt_url)
        if self._access is not None:
            broker += (f"  (no anonymous clients; service logins in "
                       f"{self._access.files.directory / 'logins'}/<service>.url)")
        lines = [f"database   {self.database_url}", f"broker     {broker}",
                 f"API        {self.api_url}/api/v1 (docs: {self.api_url}/docs)"]
        if self.settings.up_dashboard:
            lines.append(f"dashboard  http://127.0.0.1:{self.settings.dashboard_port}")
        if self.settings.up_notify:
            lines.append(f"notify     every alert to the local webhook sink "
                         f"http://127.0.0.1:{self.settings.up_notify_sink_port}/ (its lines "
                         f"below, 'notify-sink'); add contacts and routes: "
                         f"docs/notifications.md")
        lines.append(f"API key    {self.operator_key}  (scripts of the platform office: read, "
                     f"acknowledge alerts; kept in {self.data_dir / OPERATOR_KEY_FILE})")
        first = self.data_dir / FIRST_SIGN_IN_FILE
        if self.first_sign_in is not None:
            lines.append(f"sign in    as {self.first_sign_in.username} with the temporary "
                         f"password {self.first_sign_in.temporary_password} (you choose a "
                         f"new one at once); demo organisations' operators are in {first}")
        else:
            lines.append(f"sign in    as a person (first sign-ins of this data folder: "
                         f"{first}; `tidefield users reset-password admin` for a new one)")
        return "\n".join(lines)

    def run(self, stop: threading.Event, *, announce: Callable[[str], None] = print) -> None:
        """Start everything, watch it until ``stop`` is set, then stop everything."""
        supervisor = self.supervisor
        try:
            self.take_data_dir()
            self.start_services(stop)
            later = []
            for component in COMPONENTS:
                if stop.is_set():
                    return
                if not component.enabled(self.settings):
                    continue
                child = supervisor.add(component.child(self))
                if component.after_backfill:
                    later.append(child)
                    continue
                supervisor.start(child)
                if component.wait_ready and not supervisor.wait_ready(
                        child, READY_TIMEOUT_S, stop) and not stop.is_set():
                    raise RuntimeError(f"{child.name} did not become ready; see its "
                                       f"output above")
            announce(self.describe())
            backfill = threading.Thread(target=self._backfill, args=(stop,), name="backfill",
                                        daemon=True)
            backfill.start()
            while not stop.wait(0.25):
                supervisor.watch()
                if later and not backfill.is_alive():
                    for child in later:
                        supervisor.start(child)
                    later = []
        finally:
            self.stop()

    # --- the backfill -------------------------------------------------------------------

    def _backfill(self, stop: threading.Event) -> None:
        from tidefield.server.backfill import backfill, latest_history_ms
        from tidefield.sim.events import InjectionPlan
        from tidefield.sim.fleet import Fleet

        s = self.settings
        end_ms = int(time.time() * 1000)
        start_ms = end_ms - int(s.up_backfill_days * DAY_MS)
        assert self.database_url is not None  # services started
        with psycopg.connect(self.database_url) as conn:
            newest = latest_history_ms(conn, start_ms)
        if newest is not None:
            start_ms = max(start_ms, newest + 1)  # a restart: only the gap since the stop
        if end_ms - start_ms < 60_000:
            return
        fleet = Fleet(load_sites(), seed=s.sim_seed, plan=InjectionPlan(
            events_per_site=s.sim_events_per_site, faults_per_series=s.sim_faults_per_series))
        say = self.supervisor.say
        say("backfill", f"writing simulated history from "
                        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(start_ms / 1000))} UTC "
                        f"({(end_ms - start_ms) / DAY_MS:.2f} days)")
        report = _ProgressReport(say, end_ms - start_ms)
        try:
            result = backfill(self.database_url, fleet, start_ms, end_ms, stop=stop,
                              progress=report.update)
        except Exception as exc:  # the live platform keeps running without history
            say("backfill", f"failed: {exc}")
            log.exception("backfill failed")
            return
        finally:
            report.close()
        outcome = "interrupted" if stop.is_set() else "done"
        say("backfill", f"{outcome}: {result.inserted:,} readings written "
                        f"in {time.monotonic() - report.started:.0f} s")

    # --- stop ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Every child, the database and the broker last (they were started first), then
        the lock."""
        self.supervisor.stop_all()
        self._broker = self._postgres = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None


class _ProgressReport:
    """A progress bar on a terminal; otherwise a line every 10 %."""

    def __init__(self, say: Callable[[str, str], None], total_ms: int) -> None:
        self.say, self.total_ms = say, total_ms
        self.started = time.monotonic()
        self._next_tenth = 1
        self._bar = None
        if sys.stderr.isatty():
            from rich.progress import Progress

            self._bar = Progress(transient=True)
            self._bar.start()
            self._task = self._bar.add_task("backfill", total=total_ms)

    def update(self, readings: int, done_ms: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done_ms,
                             description=f"backfill: {readings:,} readings")
            return
        while done_ms * 10 >= self._next_tenth * self.total_ms and self._next_tenth <= 10:
            rate = readings / max(time.monotonic() - self.started, 1e-3)
            self.say("backfill", f"{self._next_tenth * 10:3d} %  {readings:,} readings "
                                 f"({rate:,.0f}/s)")
            self._next_tenth += 1

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
