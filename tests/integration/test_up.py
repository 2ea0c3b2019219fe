"""`tidefield up` end to end, as a user runs it: the whole platform in a subprocess, data
flowing, an alert from an injected event, the dashboard serving; then Ctrl-C leaves no
process behind, and the next start finds a consistent database."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tidefield.server.embedded import free_port

from ..conftest import scratch_dir
from .test_ingest_store import rollups_match_raw

pytestmark = pytest.mark.timeout(900)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _processes_using(folder: Path) -> list[str]:
    """Command lines of live processes that mention ``folder`` (embedded PostgreSQL and
    Mosquitto run from it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(folder) in cmdline and _alive(int(entry.name)):
            found.append(f"{entry.name}: {cmdline}")
    return found


class Up:
    def __init__(self, folder: Path, *args: str) -> None:
        self.data = folder / "data"
        self.ports = {name: free_port() for name in
                      ("EMBEDDED_PG_PORT", "EMBEDDED_MQTT_PORT", "API_PORT", "INGEST_PORT",
                       "DASHBOARD_PORT", "UP_NOTIFY_SINK_PORT")}
        env = {**os.environ, "TIDEFIELD_DATA_DIR": str(self.data),
               **{f"TIDEFIELD_{k}": str(v) for k, v in self.ports.items()},
               "TIDEFIELD_UP_BACKFILL_DAYS": "0.25",
               # more faults than by default, so that the backfilled hours hold some for
               # the detector to find (denser events would make planning slow)
               "TIDEFIELD_SIM_FAULTS_PER_SERIES": "2", "TIDEFIELD_SIM_TICK_S": "2"}
        env.pop("TIDEFIELD_DATABASE_URL", None)
        env.pop("TIDEFIELD_MQTT_URL", None)
        self.log = folder / "up.log"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tidefield.cli", "up", *args], env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self.api = f"http://127.0.0.1:{self.ports['API_PORT']}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, condition, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"up exited early:\n{self.output()[-4000:]}"
            try:
                result = condition()
            except (httpx.HTTPError, OSError, ValueError, KeyError):
                result = None
            if result:
                return result
            time.sleep(1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.output()[-4000:]}")

    def get(self, path: str, **params):
        key = (self.data / "operator.key").read_text().strip()
        response = httpx.get(f"{self.api}/api/v1{path}", params=params,
                             headers={"X-API-Key": key}, timeout=10)
        response.raise_for_status()
        return response.json()

    def state(self) -> dict:
        return json.loads((self.data / "up.json").read_text())

    def interrupt(self, timeout: float = 90) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)


def _newest_reading(up: Up, site: str) -> str:
    times = [item["time"] for item in up.get(f"/sites/{site}/latest") if item["time"]]
    return max(times) if times else ""


def test_up_runs_the_platform_and_stops_cleanly():
    # /var/tmp, not pytest's private tmp_path: the embedded PostgreSQL runs as `postgres`
    folder = scratch_dir("tidefield-test-up-")
    os.chmod(folder, 0o755)
    up = Up(folder)
    try:
        up.wait(lambda: httpx.get(f"{up.api}/healthz", timeout=2).status_code == 200
                and (up.data / "operator.key").exists(), 240, "the API")
        # the platform admin's first sign-in is printed (in the summary, once every part is
        # ready); it must choose a new password
        first = up.wait(lambda: re.search(r"sign in\s+as admin with the temporary "
                                          r"password (\S+)", up.output()),
                        240, "the summary with the first sign-in")
        signed = httpx.post(f"{up.api}/api/v1/auth/sign-in", timeout=30, json={
            "username": "admin", "password": first.group(1)}).json()
        assert signed["must_change_password"] is True and signed["me"]["platform_admin"]
        assert (up.data / "first-sign-in.txt").stat().st_mode & 0o077 == 0
        demos = (up.data / "first-sign-in.txt").read_text()
        assert "greenhouse.operator" in demos and "demo-cage-farm" in demos
        # readings flow: the newest reading of a site moves forward
        site = "oc-001"
        first = up.wait(lambda: _newest_reading(up, site), 120, "a first live reading")
        up.wait(lambda: _newest_reading(up, site) > first, 60, "newer readings")
        assert up.get("/overview")["readings_per_second"] > 0
        # the backfill writes history beside the live stream (on a busy machine it may still
        # be writing when live readings arrive): >= 3 of the 6 hours, in 5-minute buckets
        day = up.get("/series", site=site, metric="dissolved_oxygen")["items"][0]["id"]
        up.wait(lambda: len(up.get(f"/series/{day}/readings", bucket="5m")["buckets"]) >= 36,
                180, "the backfilled history")
        # the detector raised an alert from an injected event or fault
        alerts = up.wait(lambda: up.get("/alerts")["items"], 300, "an alert")
        assert {a["category"] for a in alerts} <= {"fault", "event"}
        # where notifications go is printed, and they reach the local webhook sink
        assert "notify     every alert to the local webhook sink" in up.output()
        up.wait(lambda: re.search(r"notify-sink.*\"kind\": \"opened\"", up.output()), 300,
                "a notification at the local webhook sink")
        # the dashboard answers
        dashboard = f"http://127.0.0.1:{up.ports['DASHBOARD_PORT']}"
        up.wait(lambda: httpx.get(dashboard, timeout=5).status_code == 200, 120,
                "the dashboard")
        state = up.state()
        children = state["children"]
        assert {"ingest", "api", "dashboard", "fleet", "detector", "notifier",
                "notify-sink"} <= set(children)
        assert all(child["state"] == "running" for child in children.values()), children
        status = subprocess.run([sys.executable, "-m", "tidefield.cli", "status"],
                                env={**os.environ, "TIDEFIELD_DATA_DIR": str(up.data)},
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        assert "running" in status.stdout and "readings/s" in status.stdout
    finally:
        code = up.interrupt()
    output = up.output()
    assert code == 0, output[-4000:]
    assert "Traceback" not in output, output[-6000:]
    pids = [child["pid"] for child in state["children"].values()]
    assert not [pid for pid in pids if _alive(pid)]
    assert _processes_using(up.data) == []
    assert "stopped" in output.splitlines()[-1]

    # the next start: the same data folder, consistent, the key still valid
    again = Up(folder, "--no-fleet", "--no-dashboard", "--no-detector",
               "--backfill-days", "0")
    try:
        again.wait(lambda: httpx.get(f"{again.api}/healthz", timeout=2).status_code == 200,
                   240, "the API after a restart")
        assert again.get("/sites", limit=1)["items"]
        url = again.state()["database_url"]
        with psycopg.connect(url) as conn:
            rollups_match_raw(conn)
            applied = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
        from tidefield.server.db.migrate import available
        assert applied == len(available())
    finally:
        assert again.interrupt() == 0, again.output()[-4000:]
    assert _processes_using(again.data) == []
    shutil.rmtree(folder, ignore_errors=True)


def _status(up: Up) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tidefield.cli", "status"],
                          env={**os.environ, "TIDEFIELD_DATA_DIR": str(up.data)},
                          capture_output=True, text=True, timeout=60)


def _restarted(up: Up, name: str, old_pid: int) -> bool:
    child = up.state()["children"][name]
    return child["pid"] != old_pid and child["state"] == "running" and child["restarts"] >= 1


def _missing_batches(url: str) -> int:
    with psycopg.connect(url, connect_timeout=3) as conn:
        return conn.execute("SELECT coalesce(sum(missing_batches), 0) "
                            "FROM device_sequence_gaps").fetchone()[0]


def test_a_killed_broker_and_database_are_restarted_and_nothing_is_missing():
    """`kill -9` of the embedded broker, then of the database: each is back within
    seconds, `tidefield status` shows the restart and each part's health, and once the
    fleet has caught up (its receipts) the device gap view shows no missing batch."""
    folder = scratch_dir("tidefield-test-up-")
    os.chmod(folder, 0o755)
    up = Up(folder, "--no-dashboard", "--no-detector", "--backfill-days", "0")
    try:
        up.wait(lambda: httpx.get(f"{up.api}/healthz", timeout=2).status_code == 200,
                240, "the API")
        site = "oc-001"
        first = up.wait(lambda: _newest_reading(up, site), 120, "a first live reading")
        children = up.state()["children"]
        assert {"database", "broker", "ingest", "api", "fleet"} <= set(children)
        status = _status(up)
        assert re.search(r"broker\s+running\s+\d+\s+0\s+ok", status.stdout), status.stdout
        assert re.search(r"ingest\s+running\s+\d+\s+0\s+ok", status.stdout), status.stdout

        broker_pid = children["broker"]["pid"]
        os.kill(broker_pid, signal.SIGKILL)
        killed = time.monotonic()
        up.wait(lambda: _restarted(up, "broker", broker_pid), 30, "the broker restarted")
        assert time.monotonic() - killed < 15
        ingest = f"http://127.0.0.1:{up.ports['INGEST_PORT']}/healthz"
        up.wait(lambda: httpx.get(ingest, timeout=2).status_code == 200, 60,
                "ingest back on the broker")
        status = _status(up)
        assert re.search(r"broker\s+running\s+\d+\s+1\s+ok", status.stdout), status.stdout

        pid_file = up.data / "postgres" / "data" / "postmaster.pid"
        database_pid = children["database"]["pid"]
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        killed = time.monotonic()
        up.wait(lambda: _restarted(up, "database", database_pid), 60,
                "the database restarted")
        assert time.monotonic() - killed < 30  # crash recovery included
        up.wait(lambda: httpx.get(ingest, timeout=2).status_code == 200, 60,
                "ingest back on the database")
        status = _status(up)
        assert re.search(r"database\s+running\s+\d+\s+1\s+ok", status.stdout), status.stdout
        # readings flow again, and the fleet's re-sends fill whatever the kills lost
        up.wait(lambda: _newest_reading(up, site) > first, 60, "newer readings")
        url = up.state()["database_url"]
        up.wait(lambda: _missing_batches(url) == 0, 240, "no missing batch")
        with psycopg.connect(url) as conn:
            rollups_match_raw(conn)
    finally:
        code = up.interrupt()
    assert code == 0, up.output()[-4000:]
    assert "Traceback" not in up.output(), up.output()[-6000:]
    assert _processes_using(up.data) == []
    shutil.rmtree(folder, ignore_errors=True)


def test_a_second_up_in_the_same_folder_waits_or_refuses():
    folder = scratch_dir("tidefield-test-up-")
    os.chmod(folder, 0o755)
    minimal = ("--no-fleet", "--no-dashboard", "--no-detector", "--backfill-days", "0")
    first = Up(folder, *minimal)
    try:
        first.wait(lambda: httpx.get(f"{first.api}/healthz", timeout=2).status_code == 200,
                   240, "the first instance")
        os.environ["TIDEFIELD_UP_LOCK_WAIT_S"] = "2"
        try:
            refused = Up(folder, *minimal)
        finally:
            del os.environ["TIDEFIELD_UP_LOCK_WAIT_S"]
        assert refused.proc.wait(60) == 1
        assert "another `tidefield up`" in refused.output(), refused.output()[-3000:]
        assert f"pid {first.proc.pid}" in refused.output()
        # the first one never noticed
        assert httpx.get(f"{first.api}/healthz", timeout=5).status_code == 200
        assert first.state()["supervisor_pid"] == first.proc.pid

        waiting = Up(folder, *minimal)  # waits (120 s by default) while the first stops
        waiting.wait(lambda: "waiting up to" in waiting.output(), 60, "the second waiting")
        assert first.interrupt() == 0, first.output()[-4000:]
        waiting.wait(lambda: httpx.get(f"{waiting.api}/healthz", timeout=2).status_code
                     == 200, 240, "the second instance, with its database")
        url = waiting.state()["database_url"]
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM sites").fetchone()[0] > 0
    finally:
        if first.proc.poll() is None:
            first.interrupt()
    assert waiting.interrupt() == 0, waiting.output()[-4000:]
    assert _processes_using(waiting.data) == []
    shutil.rmtree(folder, ignore_errors=True)
