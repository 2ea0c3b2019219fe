"""No message can stop ingest (issue 17): a payload that once killed the worker's prepare
thread (200 KB of nested arrays: RecursionError in json.loads) is a reject while its
neighbours are stored, over MQTT and over HTTP, before and after a restart."""

from __future__ import annotations

import json
import time

import httpx
import psycopg
from fastapi.testclient import TestClient

from tidefield.protocol.registry import load_sites
from tidefield.server.api.app import create_app
from tidefield.server.security.api_keys import Scope, create_key
from tidefield.server.settings import ApiSettings

from ..support.processes import IngestService
from .test_ingest_service import _raw_publish

MIN = 60_000


def nested(depth: int) -> bytes:
    """What killed the thread: arrays nested ``depth`` deep, far under the size limit."""
    return b"[" * depth + b"]" * depth


def _site():
    site = next(s for s in load_sites() if s.kind == "cage_farm")
    return site, site.devices[0]


def _good(site, device, seq: int, now: int) -> bytes:
    return json.dumps({"v": 1, "site": site.id, "device": device.id, "seq": seq,
                       "readings": [{"m": "water_temperature", "t": now - seq * MIN,
                                     "v": 15.5}]}).encode()


def _wait_for(url: str, readings: int, rejects: int, timeout: float = 30
              ) -> tuple[int, list[tuple[str, str]]]:
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(url) as conn:
            stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
            found = conn.execute("SELECT reason, detail FROM ingest_rejects ORDER BY id"
                                 ).fetchall()
        if (stored >= readings and len(found) >= rejects) or time.monotonic() > deadline:
            return stored, found
        time.sleep(0.2)


def test_nested_arrays_between_good_messages_are_a_reject_before_and_after_a_restart(
        db_url, own_broker, tmp_path):
    site, device = _site()
    topic = f"tf/v1/{site.id}/{device.id}/up"
    now = int(time.time() * 1000)
    for round_, depth in enumerate((100_000, 99_999)):  # a restart between the rounds
        first = round_ * 10
        messages = [(topic, _good(site, device, first + n, now)) for n in range(3)]
        messages.append((topic, nested(depth)))
        messages += [(topic, _good(site, device, first + n, now)) for n in range(3, 6)]
        service = IngestService(db_url, own_broker.url, tmp_path / "ingest", workers=1)
        try:
            service.wait_healthy()
            started = time.monotonic()
            _raw_publish(own_broker.url, messages)
            stored, rejects = _wait_for(db_url, 6 * (round_ + 1), round_ + 1)
            took = time.monotonic() - started
            health = httpx.get(f"{service.url}/healthz", timeout=5)
        finally:
            service.stop()
        assert stored == 6 * (round_ + 1), service.log_path.read_text()[-3000:]
        assert took < 15  # within seconds, not after a restart of anything
        assert [reason for reason, _ in rejects] == ["malformed"] * (round_ + 1)
        assert "not valid application/json" in rejects[-1][1]
        assert health.status_code == 200, health.text
    with psycopg.connect(db_url) as conn:
        payloads = [bytes(p) for (p,) in conn.execute(
            "SELECT payload FROM ingest_rejects ORDER BY id")]
    assert payloads == [nested(100_000), nested(99_999)]  # kept with its payload


def test_http_ingest_answers_422_for_nested_arrays_on_both_services(db_url, tmp_path):
    site, device = _site()
    with psycopg.connect(db_url) as conn:
        key = {"X-API-Key": create_key(conn, "gateway", [Scope.INGEST], [site.id])}
    now = int(time.time() * 1000)
    service = IngestService(db_url, None, tmp_path / "ingest", workers=1)
    try:
        service.wait_healthy()
        url = f"{service.url}/ingest/{site.id}/{device.id}"
        bad = httpx.post(url, content=nested(100_000), headers=key, timeout=30)
        good = httpx.post(url, content=_good(site, device, 1, now), headers=key, timeout=30)
        assert httpx.get(f"{service.url}/healthz", timeout=5).status_code == 200
    finally:
        service.stop()
    assert bad.status_code == 422, bad.text
    assert bad.json()["error"]["message"].startswith("malformed: payload is not valid")
    assert good.status_code == 200, good.text
    with TestClient(create_app(ApiSettings(database_url=db_url))) as client:
        url = f"/api/v1/ingest/{site.id}/{device.id}"
        bad = client.post(url, content=nested(99_999), headers=key)
        good = client.post(url, content=_good(site, device, 2, now), headers=key)
    assert bad.status_code == 422, bad.text
    assert good.status_code == 200, good.text
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 2
        reasons = [r for (r,) in conn.execute("SELECT reason FROM ingest_rejects")]
    assert reasons == ["malformed", "malformed"]
