"""The schema on a real PostgreSQL+TimescaleDB cluster of the test's own."""

from __future__ import annotations

import subprocess
import sys

import psycopg

from tidefield.protocol.catalog import METRICS
from tidefield.protocol.registry import load_sites
from tidefield.server.db.migrate import available, migrate
from tidefield.server.db.registry import load_registry


def _schema_fingerprint(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            """SELECT table_name, column_name, data_type, is_nullable
               FROM information_schema.columns WHERE table_schema = 'public'
               ORDER BY table_name, column_name""").fetchall() + conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
            "ORDER BY indexname").fetchall() + conn.execute(
            "SELECT version, checksum, applied_at::text FROM schema_migrations "
            "ORDER BY version").fetchall()


def test_readings_is_a_hypertable(db_url):
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT hypertable_name FROM timescaledb_information.hypertables").fetchall()
        dims = conn.execute(
            "SELECT column_name FROM timescaledb_information.dimensions "
            "WHERE hypertable_name = 'readings'").fetchall()
    assert ("readings",) in rows
    assert dims == [("time",)]


def test_migrate_twice_changes_nothing(empty_db_url):
    first = migrate(empty_db_url)
    assert [m.version for m in first] == [m.version for m in available()]
    before = _schema_fingerprint(empty_db_url)
    assert migrate(empty_db_url) == []
    assert _schema_fingerprint(empty_db_url) == before


def test_cli_migrate_is_idempotent(empty_db_url):
    def run():
        return subprocess.run(
            [sys.executable, "-m", "tidefield.cli", "db", "migrate",
             "--database-url", empty_db_url], capture_output=True, text=True, check=True)

    assert "applied" in run().stdout
    assert run().stdout.strip() == "schema is up to date"


def test_edited_migration_is_refused(empty_db_url):
    migrate(empty_db_url)
    with psycopg.connect(empty_db_url) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
    try:
        migrate(empty_db_url)
    except RuntimeError as exc:
        assert "was changed after it was applied" in str(exc)
    else:
        raise AssertionError("an edited migration was accepted")


def test_registry_load_is_complete_and_idempotent(db_url):
    sites = load_sites()
    with psycopg.connect(db_url) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM sites), (SELECT count(*) FROM devices), "
            "(SELECT count(*) FROM series), (SELECT count(*) FROM metrics)").fetchone()
        series_before = conn.execute("SELECT id, device_id, metric FROM series "
                                     "ORDER BY id").fetchall()
        load_registry(conn, sites)
        series_after = conn.execute("SELECT id, device_id, metric FROM series "
                                    "ORDER BY id").fetchall()
        by_domain = dict(conn.execute("SELECT domain, count(*) FROM sites GROUP BY domain"))
    devices = [d for s in sites for d in s.devices]
    assert counts == (250, len(devices), sum(len(d.template.series_metrics) for d in devices),
                      len(METRICS))
    assert by_domain == {"agriculture": 170, "ocean": 80}
    assert series_after == series_before


def test_readings_refuse_a_duplicate_series_and_time(db_url):
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO readings VALUES (1, '2026-11-01T00:00Z', 1.0)")
        inserted = conn.execute(
            "INSERT INTO readings VALUES (1, '2026-11-01T00:00Z', 2.0) "
            "ON CONFLICT DO NOTHING").rowcount
        assert inserted == 0
        assert conn.execute("SELECT value FROM readings").fetchall() == [(1.0,)]
