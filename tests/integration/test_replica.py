"""The read replica, as `tidefield up --replica` runs it (`tidefield replica run`): readings
written to the primary appear on it; the API's read-only routes read from it (shown by
pausing its replay: new readings stay out of the API's answers until it resumes); its lag
is in /metrics; with the replica stopped, reads go to the primary, with a warning, and
come back to the replica when it does; promoted, it takes writes."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from tidefield.server.api.app import create_app
from tidefield.server.embedded import free_port
from tidefield.server.ops import report as ops_report
from tidefield.server.ops.deployment import DATABASE
from tidefield.server.ops.replica import replica_state
from tidefield.server.security.api_keys import Scope, create_key
from tidefield.server.settings import ApiSettings
from tidefield.server.web import database

from ..conftest import scratch_dir
from ..support.ops import platform_db, series_ids, write_readings

pytestmark = pytest.mark.timeout(600)


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class ReplicaProcess:
    """`tidefield replica run` in a subprocess, as `tidefield up --replica` starts it."""

    def __init__(self, platform, port: int) -> None:
        self.log = platform.data_dir.parent / "replica.log"
        env = {**platform.env, "TIDEFIELD_DATABASE_URL": platform.url,
               "TIDEFIELD_EMBEDDED_REPLICA_PORT": str(port), "TIDEFIELD_LOG_LEVEL": "INFO"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "tidefield.cli", "replica",
                                          "run"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.url = f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}"

    def wait_streaming(self, primary_url: str, timeout: float = 180) -> None:
        def streaming() -> bool:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            return replica_state(self.url, primary_url).streaming
        wait_for(streaming, timeout, "the replica to stream")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(60)


@pytest.fixture(scope="module")
def primary():
    folder = scratch_dir("tidefield-test-replica-")
    folder.chmod(0o755)
    try:
        with platform_db(folder / "data") as db:
            yield db
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _count(url: str, series_id: int) -> int:
    with psycopg.connect(url, connect_timeout=3) as conn:
        return conn.execute("SELECT count(*) FROM readings WHERE series_id = %s",
                            (series_id,)).fetchone()[0]


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_the_api_reads_from_the_replica_and_falls_back_to_the_primary(primary, caplog,
                                                                      monkeypatch):
    replica = ReplicaProcess(primary, free_port())
    try:
        replica.wait_streaming(primary.url)
        series = series_ids(primary.url, 3)
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
        write_readings(primary.url, series, start, 60)
        # readings written to the primary appear on the replica
        wait_for(lambda: _count(replica.url, series[0]) == 60, 30, "readings on the replica")

        with psycopg.connect(primary.url) as conn:
            key = create_key(conn, "lab", [Scope.READ])
        app = create_app(ApiSettings(database_url=primary.url, database_read_url=replica.url,
                                     data_dir=primary.data_dir))
        headers = {"X-API-Key": key}
        path = f"/api/v1/series/{series[0]}/readings"
        window = {"start": start.isoformat(), "end": (start + timedelta(hours=2)).isoformat()}
        with TestClient(app) as client:
            first = client.get(path, params=window, headers=headers)
            assert first.status_code == 200
            assert first.headers["X-Tidefield-Read-From"] == "replica"
            assert len(first.json()["points"]) == 60

            # the API's answers are the replica's: with its replay paused, readings new on
            # the primary are not in them; resumed, they are
            with psycopg.connect(replica.url, autocommit=True) as conn:
                conn.execute("SELECT pg_wal_replay_pause()")
            try:
                write_readings(primary.url, series, start + timedelta(hours=1), 30)
                assert _count(primary.url, series[0]) == 90
                time.sleep(1.0)
                paused = client.get(path, params=window, headers=headers)
                assert paused.headers["X-Tidefield-Read-From"] == "replica"
                assert len(paused.json()["points"]) == 60
                metrics = client.get("/metrics").text
                assert _metric(metrics, "tidefield_replica_up") == 1.0
                assert _metric(metrics, "tidefield_replica_lag_bytes") > 0
                assert _metric(metrics, "tidefield_replica_lag_seconds") > 0
            finally:
                with psycopg.connect(replica.url, autocommit=True) as conn:
                    conn.execute("SELECT pg_wal_replay_resume()")
            wait_for(lambda: len(client.get(path, params=window, headers=headers).json()[
                "points"]) == 90, 30, "the replica to catch up")
            caught_up = client.get("/metrics").text
            wait_for(lambda: _metric(client.get("/metrics").text,
                                     "tidefield_replica_lag_bytes") == 0, 30, "no lag")
            assert _metric(caught_up, "tidefield_replica_streaming") == 1.0
            # exports and SensorThings read from it too
            export = client.get("/api/v1/export", headers=headers,
                                params={"series": series[0], **window})
            assert export.headers["X-Tidefield-Read-From"] == "replica"
            assert len(export.text.strip().splitlines()) == 1 + 90
            sta = client.get("/sta/v1.1/Datastreams", headers=headers, params={"$top": 1})
            assert sta.status_code == 200, sta.text
            assert sta.headers["X-Tidefield-Read-From"] == "replica"
            # what `tidefield status` shows
            assert any(line.startswith("replica    streaming") for line in ops_report.render(
                ops_report.collect(primary.url, read_url=replica.url)))

            # the replica stops: reads go to the primary, with a warning, and still answer
            assert replica.stop() == 0
            write_readings(primary.url, series, start + timedelta(hours=1, minutes=30), 10)
            with caplog.at_level(logging.WARNING, logger=database.__name__):
                fallback = client.get(path, params=window, headers=headers)
            assert fallback.status_code == 200
            assert fallback.headers["X-Tidefield-Read-From"] == "primary"
            assert len(fallback.json()["points"]) == 100  # the primary's newest rows
            assert any("read replica does not answer" in r.getMessage()
                       for r in caplog.records)
            health = client.get("/healthz")
            assert health.status_code == 200  # degraded, not down
            assert health.json()["read_replica"] is False
            assert any("reads go to the primary" in d for d in health.json()["detail"])
            metrics = client.get("/metrics").text
            assert _metric(metrics, "tidefield_api_read_fallbacks_total") >= 1
            assert _metric(metrics, "tidefield_replica_up") == 0.0
            assert _metric(metrics, "tidefield_api_read_replica_in_use") == 0.0

            # it comes back (the copy is kept): reads return to it
            replica = ReplicaProcess(primary, int(replica.url.rsplit(":", 1)[1].split("/")[0]))
            replica.wait_streaming(primary.url)
            monkeypatch.setattr(database, "REPLICA_RETRY_S", 0.0)

            def back() -> bool:
                response = client.get(path, params=window, headers=headers)
                return response.headers["X-Tidefield-Read-From"] == "replica" and \
                    len(response.json()["points"]) == 100
            wait_for(back, 60, "reads to return to the replica")
            assert client.get("/healthz").json()["read_replica"] is True

        # the primary is lost: the replica is promoted and takes writes
        promoted = primary.tidefield("replica", "promote", env={
            "TIDEFIELD_DATABASE_READ_URL": replica.url})
        assert promoted.returncode == 0, promoted.stderr
        with psycopg.connect(replica.url, autocommit=True) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
            write_readings(replica.url, series, start + timedelta(hours=2), 5)
        assert _count(replica.url, series[0]) == 105
        again = primary.tidefield("replica", "promote", env={
            "TIDEFIELD_DATABASE_READ_URL": replica.url})
        assert again.returncode == 1 and "no standby" in again.stderr
    finally:
        replica.stop()
