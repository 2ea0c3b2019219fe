"""Upgrades: a database made by the first release (its migration set, applied the way its
migrate() applied it) with data in it is upgraded to the current schema, and every
reading is still there, rollups included; the current code then works on it, and the
payloads the first release's agents send (tests/fixtures/wire/v1) go through the current
ingest into it. Migrations stay forward only: an edited one is refused, and so is a
database a newer release has migrated."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tidefield.protocol import mqtt
from tidefield.protocol.catalog import METRICS
from tidefield.protocol.codec import Limits
from tidefield.protocol.registry import load_sites
from tidefield.server.api.app import create_app
from tidefield.server.db.migrate import MigrationError, available, migrate
from tidefield.server.db.registry import load_registry
from tidefield.server.ingest.directory import DeviceDirectory
from tidefield.server.ingest.pipeline import Envelope, prepare
from tidefield.server.ingest.store import Store
from tidefield.server.security.api_keys import Scope, create_key
from tidefield.server.settings import ApiSettings

from ..support.processes import IngestService
from .test_ingest_store import rollups_match_raw

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIRST_RELEASE = FIXTURES / "upgrade" / "first-release"
WIRE_V1 = json.loads((FIXTURES / "wire" / "v1" / "messages.json").read_text())
DEVICES = {"oc-001-sonde": "oc-001", "oc-001-tide": "oc-001", "ag-001-wx": "ag-001",
           "ag-001-soil": "ag-001", "oc-001-gw": "oc-001"}
OLD_DATA_END = datetime(2026, 11, 29, tzinfo=UTC)  # before the wire fixtures' times


def apply_first_release(url: str) -> None:
    """The first release's migrate(): each file in a transaction, recorded with its
    SHA-256 in the schema_migrations table it created."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                          version integer PRIMARY KEY, name text NOT NULL,
                          checksum text NOT NULL,
                          applied_at timestamptz NOT NULL DEFAULT now())""")
        for path in sorted(FIRST_RELEASE.glob("*.sql")):
            sql = path.read_text(encoding="utf-8")
            version, name = path.stem.split("_", 1)
            with conn.transaction():
                conn.execute(sql)
                conn.execute("INSERT INTO schema_migrations (version, name, checksum) "
                             "VALUES (%s, %s, %s)", (int(version), name,
                                                     hashlib.sha256(sql.encode()).hexdigest()))


def write_first_release_data(url: str) -> dict[str, int]:
    """A registry, two days of readings a minute, their rollups, batches, device status
    and rejects, in the first schema's own columns."""
    sites = {s.id: s for s in load_sites() if s.id in set(DEVICES.values())}
    devices = {d.id: d for s in sites.values() for d in s.devices if d.id in DEVICES}
    with psycopg.connect(url) as conn:
        conn.cursor().executemany(
            "INSERT INTO metrics (name, unit, physical_min, physical_max, typical_min, "
            "typical_max, resolution, name_zh, name_en, circular) VALUES "
            "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(m.name, m.unit, *m.physical, *m.typical, m.resolution, m.name_zh, m.name_en,
              m.circular) for m in METRICS.values()])
        conn.cursor().executemany(
            "INSERT INTO sites (id, name_zh, name_en, kind, domain, district, lat, lon) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [(s.id, s.name_zh, s.name_en, s.kind, str(s.domain), s.district, s.lat, s.lon)
             for s in sites.values()])
        conn.cursor().executemany(
            "INSERT INTO devices (id, site_id, template, model, interval_s) "
            "VALUES (%s, %s, %s, %s, %s)",
            [(d.id, d.site_id, d.template.name, d.template.model, d.template.interval_s)
             for d in devices.values()])
        conn.cursor().executemany(
            "INSERT INTO series (device_id, metric) VALUES (%s, %s)",
            [(d.id, m) for d in devices.values() for m in d.template.metrics])
        conn.execute(
            "INSERT INTO readings (series_id, time, value) "
            "SELECT s.id, %s - make_interval(mins => m), "
            "       greatest(least(0.5 * (me.typical_min + me.typical_max) "
            "                      + 0.001 * (m %% 97), me.typical_max), me.typical_min) "
            "FROM series s JOIN metrics me ON me.name = s.metric, "
            "     generate_series(1, 2 * 1440) m", (OLD_DATA_END,))
        for table, width in (("readings_5m", "5 minutes"), ("readings_1h", "1 hour")):
            conn.execute(f"""
                INSERT INTO {table} (series_id, bucket, count, sum, min, max, last, last_time)
                SELECT series_id, time_bucket(INTERVAL '{width}', time), count(*),
                       sum(value), min(value), max(value), last(value, time), max(time)
                FROM readings GROUP BY 1, 2""")
        conn.execute("INSERT INTO ingest_batches (device_id, seq, received_at, readings) "
                     "SELECT d, 1000 + b, %s, 60 FROM unnest(%s::text[]) d, "
                     "generate_series(0, 47) b", (OLD_DATA_END, list(devices)))
        conn.execute("INSERT INTO device_status (device_id, state, last_seen, last_reading, "
                     "min_seq, max_seq, batches, readings) SELECT d, 'online', %s, %s, 1000, "
                     "1047, 48, 2880 FROM unnest(%s::text[]) d",
                     (OLD_DATA_END, OLD_DATA_END, list(devices)))
        conn.execute("INSERT INTO ingest_rejects (topic, payload, reason, detail, device_id, "
                     "fingerprint) VALUES ('tf/v1/oc-001/oc-001-sonde/up', 'nope', "
                     "'malformed', 'payload is not valid JSON', 'oc-001-sonde', '\\x01')")
        return {"series": conn.execute("SELECT count(*) FROM series").fetchone()[0],
                "readings": conn.execute("SELECT count(*) FROM readings").fetchone()[0]}


def digests(url: str) -> dict[str, tuple]:
    """Count and an order-free checksum of each table whose rows must survive."""
    found = {}
    with psycopg.connect(url) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        for table in ("readings", "readings_5m", "readings_1h", "series", "ingest_batches",
                      "device_status"):
            found[table] = conn.execute(
                f"SELECT count(*), coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)"
                f"::bigint::numeric), 0)::text FROM {table} t").fetchone()
    return found


@pytest.fixture
def first_release_db(empty_db_url):
    apply_first_release(empty_db_url)
    return empty_db_url


def test_the_first_release_matches_the_migrations_it_shipped(first_release_db):
    """The fixture is that release: its files are the current ones of the same numbers
    (an edited migration would fail every upgrade in the field; migrate() refuses it)."""
    shipped = {int(p.stem[:4]): p.read_text(encoding="utf-8")
               for p in FIRST_RELEASE.glob("*.sql")}
    current = {m.version: m.sql for m in available()}
    assert shipped and all(current[v] == sql for v, sql in shipped.items())


def test_a_database_of_the_first_release_upgrades_with_every_reading(first_release_db):
    url = first_release_db
    made = write_first_release_data(url)
    before = digests(url)
    assert before["readings"][0] == made["readings"] == made["series"] * 2 * 1440

    applied = migrate(url)
    assert [m.version for m in applied] == [m.version for m in available()
                                            if m.version > 2]
    assert migrate(url) == []  # once
    assert digests(url) == before  # every reading, rollup, batch and status unchanged
    with psycopg.connect(url) as conn:
        versions = [v for (v,) in conn.execute(
            "SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == [m.version for m in available()]
        rollups_match_raw(conn)
        # the current registry loader adds the rest beside what was there
        load_registry(conn, load_sites())
        kept = conn.execute("SELECT count(*) FROM series s JOIN readings r ON r.series_id = "
                            "s.id WHERE s.device_id = 'oc-001-sonde'").fetchone()[0]
        assert kept == 6 * 2 * 1440

    # the first release's agents' payloads go through the current ingest into it
    directory = DeviceDirectory(url)
    envelopes = [Envelope(m["topic"], _payload(m), m["content_type"], WIRE_V1["now_ms"])
                 for m in WIRE_V1["messages"]]
    prepared = prepare(envelopes, directory, limits=Limits(max_age_ms=10**13),
                       now_ms=WIRE_V1["now_ms"])
    assert prepared.rejects == []
    with psycopg.connect(url) as conn:
        result = Store(conn).write(prepared)
        assert result.readings_inserted == _wire_readings()
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == \
            made["readings"] + _wire_readings()
        rollups_match_raw(conn)
        key = create_key(conn, "after the upgrade", [Scope.READ])
        series = conn.execute("SELECT id FROM series WHERE device_id = 'oc-001-sonde' AND "
                              "metric = 'salinity'").fetchone()[0]
    directory.close()

    # and the current API reads the old readings
    with TestClient(create_app(ApiSettings(database_url=url))) as client:
        old = client.get(f"/api/v1/series/{series}/readings", headers={"X-API-Key": key},
                         params={"start": (OLD_DATA_END - timedelta(days=2)).isoformat(),
                                 "end": OLD_DATA_END.isoformat(), "limit": 5000})
    assert old.status_code == 200, old.text
    assert len(old.json()["points"]) == 2 * 1440


def _payload(message: dict) -> bytes:
    if "payload_base64" in message:
        return base64.b64decode(message["payload_base64"])
    return message["payload"].encode()


def _wire_readings() -> int:
    return sum(len(m["readings"]) for m in WIRE_V1["messages"])


def test_an_edited_migration_and_a_newer_database_are_refused(first_release_db):
    url = first_release_db
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 2")
    with pytest.raises(MigrationError, match="0002_ingest was changed after it was applied"):
        migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = %s WHERE version = 2",
                     (next(m.checksum for m in available() if m.version == 2),))
        conn.execute("INSERT INTO schema_migrations (version, name, checksum) "
                     "VALUES (9999, 'from_the_future', 'x')")
    with pytest.raises(MigrationError, match=r"does not know \(9999\).*forward only"):
        migrate(url)


def test_an_older_agent_keeps_working_with_this_server(db_url, own_broker, tmp_path):
    """The first release's payloads, published to a real broker, stored by the current
    ingest service, every reading of them. (A broker of its own: the shared one keeps
    other tests' ingest sessions, with what was queued for them.)"""
    broker = own_broker
    service = IngestService(db_url, broker.url, tmp_path / "ingest", workers=1,
                            extra_env={"TIDEFIELD_INGEST_MAX_AGE_DAYS": "36500"})
    try:
        service.wait_healthy()
        address = mqtt.parse_mqtt_url(broker.url)
        client = mqtt.new_client(f"first-release-agent-{os.getpid()}", address)
        client.connect(address.host, address.port)
        client.loop_start()
        try:
            for message in WIRE_V1["messages"]:
                properties = Properties(PacketTypes.PUBLISH)
                if message["content_type"]:
                    properties.ContentType = message["content_type"]
                client.publish(message["topic"], _payload(message), qos=1,
                               properties=properties).wait_for_publish(10)
        finally:
            client.disconnect()
            client.loop_stop()
        deadline = time.monotonic() + 60
        stored = 0
        while time.monotonic() < deadline:
            with psycopg.connect(db_url) as conn:
                stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
                state = conn.execute("SELECT state FROM device_status WHERE device_id = "
                                     "'oc-001-gw'").fetchone()
            if stored == _wire_readings() and state == ("online",):
                break
            time.sleep(0.5)
        assert stored == _wire_readings()
        assert state == ("online",)
        with psycopg.connect(db_url) as conn:
            assert conn.execute("SELECT count(*) FROM ingest_rejects").fetchone()[0] == 0
    finally:
        service.stop()
