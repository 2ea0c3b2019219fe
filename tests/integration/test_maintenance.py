"""Maintenance mode end to end: an operator puts a site (or one device) in maintenance
through the API; `tidefield detect run` then scores readings where dissolved oxygen falls
under the hypoxia limit at three cage farms at once (as it does when a sonde is lifted
out of the water for cleaning):

- the farm with no window gets its hypoxia alert (so the readings do raise one);
- the farm in maintenance for the whole dip gets none;
- the farm whose sonde is in maintenance for the first part of the dip gets its alert
  after the window, not before.

The export flags the readings in each window (``maintenance`` true, QARTOD flag 3 with
the test ``maintenance``) and no others."""

from __future__ import annotations

import csv
import io
import math
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.support.people import PASSWORD, add_person
from tidefield.server.api.app import create_app
from tidefield.server.settings import ApiSettings

from .test_detect_service import START, run_to

PLAIN, WHOLE, PART = "oc-021", "oc-022", "oc-023"  # cage farms, as in test_detect_service
DIP_START = START + timedelta(hours=6)
DIP_END = START + timedelta(hours=9)
END = START + timedelta(hours=12)
PART_WINDOW_END = START + timedelta(hours=7, minutes=30)


def _oxygen(t: datetime) -> float:
    """Healthy water with a daily swing and a little ripple; under 2 mg/L in the dip
    (the hypoxia limit is 3.0), reached and left over ten minutes."""
    hours = (t - START).total_seconds() / 3600
    healthy = 7.0 + 0.6 * math.sin(hours / 24 * 2 * math.pi) + 0.05 * math.sin(hours * 7.3)
    into = (t - DIP_START).total_seconds() / 600
    out_of = (DIP_END - t).total_seconds() / 600
    depth = max(0.0, min(1.0, into, out_of))
    return healthy - depth * (healthy - 1.8)


@pytest.fixture
def farms(db_url):
    with psycopg.connect(db_url) as conn:
        series = dict(conn.execute(
            "SELECT d.site_id, s.id FROM series s JOIN devices d ON d.id = s.device_id "
            "WHERE d.site_id = ANY(%s) AND d.template = 'sonde' "
            "AND s.metric = 'dissolved_oxygen'", ([PLAIN, WHOLE, PART],)).fetchall())
        rows = []
        t = START
        while t < END:
            rows.extend((sid, t, _oxygen(t)) for sid in series.values())
            t += timedelta(minutes=1)
        with conn.cursor() as cur, cur.copy("COPY readings (series_id, time, value) "
                                            "FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        add_person(conn, "tina", {1: "operator"})
    with TestClient(create_app(ApiSettings(database_url=db_url))) as client:
        token = client.post("/api/v1/auth/sign-in", json={
            "username": "tina", "password": PASSWORD}).json()["token"]
        yield {"client": client, "headers": {"Authorization": f"Bearer {token}"},
               "series": series}


def _export(client, headers, site: str) -> list[dict[str, str]]:
    answer = client.get("/api/v1/export", headers=headers, params={
        "site": site, "start": START.isoformat(), "end": END.isoformat()})
    assert answer.status_code == 200, answer.text
    return [row for row in csv.DictReader(io.StringIO(answer.text))
            if row["metric"] == "dissolved_oxygen"]


def test_readings_in_a_maintenance_window_raise_no_alert_and_are_flagged(
        db_url, farms, tmp_path):
    client, headers = farms["client"], farms["headers"]
    whole = client.post("/api/v1/maintenance", headers=headers, json={
        "site_id": WHOLE, "starts_at": (DIP_START - timedelta(minutes=30)).isoformat(),
        "ends_at": (DIP_END + timedelta(hours=1)).isoformat(), "reason": "cleaning"})
    assert whole.status_code == 201, whole.text
    part = client.post("/api/v1/maintenance", headers=headers, json={
        "site_id": PART, "device_id": f"{PART}-sonde",
        "starts_at": (DIP_START - timedelta(minutes=30)).isoformat(),
        "ends_at": PART_WINDOW_END.isoformat(), "reason": "sonde lifted"})
    assert part.status_code == 201, part.text
    listed = client.get("/api/v1/maintenance", headers=headers, params={
        "start": START.isoformat(), "end": END.isoformat()}).json()
    assert {w["site_id"] for w in listed} == {WHOLE, PART}

    run_to(db_url, tmp_path, END)

    with psycopg.connect(db_url) as conn:
        hypoxia = dict(conn.execute(
            "SELECT site_id, opened_at FROM alerts WHERE rule = 'hypoxia' "
            "AND site_id = ANY(%s)", ([PLAIN, WHOLE, PART],)).fetchall())
    assert PLAIN in hypoxia, "the dip must raise an alert where nobody works"
    assert DIP_START <= hypoxia[PLAIN] < DIP_START + timedelta(minutes=40)
    assert WHOLE not in hypoxia, "an alert opened in a maintenance window"
    assert PART in hypoxia, "a condition outlasting the window opens its alert after it"
    # at the alert's first update after the window (the rules refresh an open condition's
    # time every few minutes of data), well before the dip ends
    assert PART_WINDOW_END <= hypoxia[PART] < PART_WINDOW_END + timedelta(minutes=15)

    rows = _export(client, headers, WHOLE)
    assert len(rows) == 12 * 60
    window_start = DIP_START - timedelta(minutes=30)
    window_end = DIP_END + timedelta(hours=1)
    for row in rows:
        t = datetime.fromisoformat(row["time"].replace("Z", "+00:00")).astimezone(UTC)
        inside = window_start <= t < window_end
        assert row["maintenance"] == ("true" if inside else "false"), row
        if inside:  # none passes: suspect for maintenance, unless a test said worse
            assert row["qartod_flag"] in ("3", "4", "9"), row
    plain = _export(client, headers, PLAIN)
    assert not any(r["maintenance"] == "true" or r["qartod_test"] == "maintenance"
                   for r in plain)
    # the same water at both farms: what passed at the plain one is "maintenance" here
    passed = {r["time"] for r in plain if r["qartod_flag"] == "1"}
    flagged = {r["time"] for r in rows if r["qartod_test"] == "maintenance"}
    inside = {r["time"] for r in rows if r["maintenance"] == "true"}
    assert flagged == passed & inside and len(flagged) > 60


def test_bad_windows_are_refused(db_url, farms):
    client, headers = farms["client"], farms["headers"]
    now = datetime.now(UTC)
    backwards = client.post("/api/v1/maintenance", headers=headers, json={
        "site_id": PLAIN, "starts_at": now.isoformat(),
        "ends_at": (now - timedelta(hours=1)).isoformat()})
    assert backwards.status_code == 422 and "after" in backwards.text
    too_long = client.post("/api/v1/maintenance", headers=headers, json={
        "site_id": PLAIN, "ends_at": (now + timedelta(days=90)).isoformat()})
    assert too_long.status_code == 422 and "at most" in too_long.text
    elsewhere = client.post("/api/v1/maintenance", headers=headers, json={
        "site_id": PLAIN, "device_id": f"{WHOLE}-sonde",
        "ends_at": (now + timedelta(hours=1)).isoformat()})
    assert elsewhere.status_code == 404
    made = client.post("/api/v1/maintenance", headers=headers, json={
        "site_id": PLAIN, "ends_at": (now + timedelta(hours=1)).isoformat()})
    assert made.status_code == 201 and made.json()["active"]
    ended = client.post(f"/api/v1/maintenance/{made.json()['id']}/end", headers=headers)
    assert ended.status_code == 200 and not ended.json()["active"]
    again = client.post(f"/api/v1/maintenance/{made.json()['id']}/end", headers=headers)
    assert again.status_code == 409
    with psycopg.connect(db_url) as conn:
        actions = [r[0] for r in conn.execute(
            "SELECT action FROM audit_log WHERE action LIKE 'maintenance.%' ORDER BY id")]
    assert actions == ["maintenance.started", "maintenance.ended"]
