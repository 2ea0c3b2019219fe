"""Operators' feedback on alerts (stored, listed, exported, reported week by week per rule
and component) and the device health page's data (sorted by what needs a visit)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.support.people import PASSWORD, two_companies
from tidefield.server.api.app import create_app
from tidefield.server.settings import ApiSettings

MONDAY = datetime(2026, 11, 2, tzinfo=UTC)


@pytest.fixture
def world(db_url):
    with psycopg.connect(db_url) as conn:
        companies = two_companies(conn)
    with TestClient(create_app(ApiSettings(database_url=db_url))) as client:
        headers = {}
        for name in ("alice", "anna", "vera", "bob"):
            token = client.post("/api/v1/auth/sign-in", json={
                "username": name, "password": PASSWORD}).json()["token"]
            headers[name] = {"Authorization": f"Bearer {token}"}
        yield {"url": db_url, "client": client, "c": companies, "h": headers}


def _alert(conn, site: str, rule: str, opened: datetime, *, series: int | None = None,
           component: str | None = None) -> int:
    device = None
    if series is not None:
        device = conn.execute("SELECT device_id FROM series WHERE id = %s",
                              (series,)).fetchone()[0]
        conn.execute("INSERT INTO anomalies (series_id, time, value, score, component, "
                     "category) VALUES (%s, %s, 1, 0.9, %s, 'fault')",
                     (series, opened, component))
    return conn.execute(
        """INSERT INTO alerts (site_id, device_id, series_id, rule, category, severity,
                               state, message, opened_at, updated_at, closed_at)
           VALUES (%s, %s, %s, %s, %s, 'warning', 'closed', 'm', %s, %s, %s) RETURNING id""",
        (site, device, series, rule, "fault" if series else "event", opened, opened,
         opened + timedelta(hours=1))).fetchone()[0]


def test_feedback_is_stored_listed_exported_and_reported_by_week(world):
    client, h, c = world["client"], world["h"], world["c"]
    site = c.a_sites[0]
    with psycopg.connect(world["url"]) as conn:
        soil = conn.execute("SELECT s.id FROM series s WHERE s.device_id = %s "
                            "AND s.metric = 'soil_moisture'", (f"{site}-soil",)).fetchone()[0]
        week1 = [_alert(conn, site, "frost_risk", MONDAY + timedelta(days=1)),
                 _alert(conn, site, "frost_risk", MONDAY + timedelta(days=2)),
                 _alert(conn, site, "sensor_fault", MONDAY + timedelta(days=3), series=soil,
                        component="stuck")]
        week2 = [_alert(conn, site, "frost_risk", MONDAY + timedelta(days=8))]
    verdicts = [(week1[0], "real", "frost on the vines"),
                (week1[1], "false_alarm", "sensor in the sun"),
                (week1[2], "false_alarm", "first look"),
                (week1[2], "sensor_fault_fixed", "probe reseated"),  # a second thought
                (week2[0], "real", "")]
    for alert, verdict, note in verdicts:
        given = client.post(f"/api/v1/alerts/{alert}/feedback", headers=h["anna"],
                            json={"verdict": verdict, "note": note})
        assert given.status_code == 201, given.text
        assert given.json()["actor"] == "anna"
    history = client.get(f"/api/v1/alerts/{week1[2]}/feedback", headers=h["vera"]).json()
    assert [f["verdict"] for f in history] == ["sensor_fault_fixed", "false_alarm"]

    span = {"start": MONDAY.isoformat(), "end": (MONDAY + timedelta(days=14)).isoformat()}
    listed = client.get("/api/v1/feedback", headers=h["vera"], params=span).json()
    assert {(f["alert_id"], f["verdict"]) for f in listed} == {
        (week1[0], "real"), (week1[1], "false_alarm"), (week1[2], "sensor_fault_fixed"),
        (week2[0], "real")}
    assert next(f for f in listed if f["alert_id"] == week1[2])["component"] == "stuck"
    exported = client.get("/api/v1/feedback", headers=h["vera"],
                          params={**span, "format": "csv"})
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert {r["note"] for r in rows} == {"frost on the vines", "sensor in the sun",
                                         "probe reseated", ""}

    report = client.get("/api/v1/feedback/weekly", headers=h["vera"], params=span).json()
    by_key = {(r["week"][:10], r["rule"], r["component"]): r for r in report}
    frost1 = by_key["2026-11-02", "frost_risk", ""]
    assert (frost1["alerts"], frost1["judged"], frost1["real"], frost1["false_alarm"]) == (
        2, 2, 1, 1)
    assert frost1["precision"] == 0.5
    fault = by_key["2026-11-02", "sensor_fault", "stuck"]
    assert fault["sensor_fault_fixed"] == 1 and fault["precision"] == 1.0
    assert by_key["2026-11-09", "frost_risk", ""]["precision"] == 1.0
    weekly_csv = client.get("/api/v1/feedback/weekly", headers=h["vera"],
                            params={**span, "format": "csv"}).text
    assert weekly_csv.splitlines()[0].startswith("week,rule,component,alerts,judged")

    with psycopg.connect(world["url"]) as conn:
        audited = conn.execute("SELECT count(*) FROM audit_log WHERE action = "
                               "'alert.feedback'").fetchone()[0]
    assert audited == len(verdicts)


def test_feedback_needs_the_operator_role_and_a_known_verdict(world):
    client, h, c = world["client"], world["h"], world["c"]
    with psycopg.connect(world["url"]) as conn:
        alert = _alert(conn, c.a_sites[0], "frost_risk", MONDAY)
        granted = _alert(conn, c.granted, "hypoxia", MONDAY)
    assert client.post(f"/api/v1/alerts/{alert}/feedback", headers=h["vera"],
                       json={"verdict": "real"}).status_code == 403
    assert client.post(f"/api/v1/alerts/{alert}/feedback", headers=h["anna"],
                       json={"verdict": "maybe"}).status_code == 422
    assert client.post(f"/api/v1/alerts/{granted}/feedback", headers=h["anna"],
                       json={"verdict": "real"}).status_code == 403  # read only
    assert client.post(f"/api/v1/alerts/{alert}/feedback", headers=h["bob"],
                       json={"verdict": "real"}).status_code == 404


def test_health_puts_what_needs_a_visit_first(world):
    client, h, c = world["client"], world["h"], world["c"]
    site = c.a_sites[0]
    now = datetime.now(UTC)
    with psycopg.connect(world["url"]) as conn:
        battery = conn.execute("SELECT id FROM series WHERE device_id = %s AND metric = "
                               "'battery_voltage'", (f"{site}-gw",)).fetchone()[0]
        conn.execute("INSERT INTO readings VALUES (%s, %s, 10.2)",
                     (battery, now - timedelta(minutes=2)))
        # the gateway and climate sensor report; the soil probe went quiet an hour ago
        # with batches missing; the pH probe reports, but its clock is 20 minutes slow
        conn.execute(
            """INSERT INTO device_status (device_id, state, last_seen, last_reading,
                                          min_seq, max_seq, batches)
               VALUES (%(gw)s, 'online', %(now)s, %(now)s, 1, 10, 10),
                      (%(climate)s, 'online', %(now)s, %(now)s, 1, 10, 10),
                      (%(soil)s, 'online', %(hour)s, %(hour)s, 1, 10, 7),
                      (%(ph)s, 'online', %(now)s, %(slow)s, 1, 10, 10)""",
            {"gw": f"{site}-gw", "climate": f"{site}-climate", "soil": f"{site}-soil",
             "ph": f"{site}-soilph", "now": now, "hour": now - timedelta(hours=1),
             "slow": now - timedelta(minutes=20)})
        conn.execute("UPDATE devices SET interval_s = 60 WHERE id IN (%s, %s, %s)",
                     (f"{site}-soil", f"{site}-soilph", f"{site}-climate"))
        # the gateway's agent reported its release; the soil probe refused version 2 of
        # its configuration and still runs version 1
        conn.execute(
            """INSERT INTO device_config (device_id, desired_version, desired,
                                          reported_version, reported, reported_error,
                                          agent_version)
               VALUES (%s, 1, '{}', 1, '{}', NULL, '1.4.0'),
                      (%s, 2, '{}', 1, '{}', 'interval_s below the driver''s minimum', NULL)""",
            (f"{site}-gw", f"{site}-soil"))
    answer = client.get("/api/v1/fleet/health", headers=h["vera"], params={"site": site})
    assert answer.status_code == 200, answer.text
    rows = {r["device_id"]: r for r in answer.json()}
    order = [r["device_id"] for r in answer.json()]
    soil, ph, climate = rows[f"{site}-soil"], rows[f"{site}-soilph"], rows[f"{site}-climate"]
    assert soil["state"] == "offline" and soil["missing_batches"] == 3
    assert order[0] == f"{site}-soil", order
    assert ph["clock_offset_s"] == pytest.approx(1200, abs=1)
    assert any("clock" in reason for reason in ph["reasons"])
    assert climate["battery_v"] == pytest.approx(10.2)  # its site's gateway's battery
    assert any("battery" in reason for reason in climate["reasons"])
    assert order.index(f"{site}-soilph") < order.index(f"{site}-climate")
    assert all(r["login"] == "none" for r in rows.values())
    # the agent's release and the configuration twin's state
    assert rows[f"{site}-gw"]["agent_version"] == "1.4.0"
    assert soil["agent_version"] == "1.4.0"  # its site's gateway's agent speaks for it
    assert rows[f"{site}-gw"]["config"] == "applied" and climate["config"] == "default"
    assert soil["config"] == "refused"
    assert any("configuration refused: interval_s below" in r for r in soil["reasons"])
    everywhere = client.get("/api/v1/fleet/health", headers=h["vera"]).json()
    assert {r["site_id"] for r in everywhere} <= set(c.a_sites) | {c.granted}
    assert client.get("/api/v1/fleet/health", headers=h["vera"],
                      params={"site": c.b_hidden[0]}).status_code == 403
