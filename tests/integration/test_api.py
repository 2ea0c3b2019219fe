"""The HTTP API against a real database, with rows the tests insert themselves."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import psycopg
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from tidefield.protocol.codec import encode_batch, encode_status
from tidefield.protocol.messages import Batch, DeviceState, Reading, Status
from tidefield.protocol.registry import load_sites
from tidefield.protocol.topics import status_topic, up_topic
from tidefield.server.api.app import create_app
from tidefield.server.ingest.pipeline import Envelope
from tidefield.server.security.api_keys import Scope, create_key
from tidefield.server.settings import ApiSettings

from .test_ingest_store import write

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)  # a Friday, 08:00 in Qingdao


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


@pytest.fixture
def api(db_url):
    sites = load_sites()
    site_a = next(s for s in sites if s.kind == "greenhouse")
    site_b = next(s for s in sites if s.kind == "cage_farm")
    device = site_a.devices[0]
    metric = "co2"  # its range holds the minute indexes used as values
    assert metric in device.template.metrics
    # readings every minute for 3 hours, value = minute index, plus one in site B
    readings = tuple(Reading(metric, ms(T0 + timedelta(minutes=i)), float(i))
                     for i in range(180))
    now = ms(datetime.now(UTC))
    envs = [Envelope(up_topic(site_a.id, device.id),
                     encode_batch(Batch(site_a.id, device.id, 0, readings)), None, now),
            Envelope(up_topic(site_b.id, site_b.devices[0].id), encode_batch(
                Batch(site_b.id, site_b.devices[0].id, 0,
                      (Reading(site_b.devices[0].template.metrics[0], ms(T0), 5.0),))),
                     None, now)]
    write(db_url, envs, now_ms=now)
    with psycopg.connect(db_url) as conn:
        keys = {"all": create_key(conn, "all", [Scope.READ]),
                "a_only": create_key(conn, "lab-a", [Scope.READ], [site_a.id]),
                "ingest": create_key(conn, "gw", [Scope.INGEST])}
        series_a = conn.execute("SELECT id FROM series WHERE device_id = %s AND metric = %s",
                                (device.id, metric)).fetchone()[0]
        series_b = conn.execute("SELECT id FROM series WHERE device_id = %s",
                                (site_b.devices[0].id,)).fetchone()[0]
    app = create_app(ApiSettings(database_url=db_url))
    with TestClient(app) as client:
        yield {"client": client, "keys": keys, "a": site_a, "b": site_b, "device": device,
               "metric": metric, "series_a": series_a, "series_b": series_b}


def get(api, path, key="all", **params):
    headers = {"X-API-Key": api["keys"][key]} if key else {}
    return api["client"].get(f"/api/v1{path}", params=params, headers=headers)


def test_without_a_key_every_endpoint_says_401(api):
    for path in ("/sites", f"/sites/{api['a'].id}", "/devices", "/series",
                 f"/series/{api['series_a']}/readings", f"/sites/{api['a'].id}/latest",
                 "/alerts", "/alerts/1", "/anomalies", "/overview"):
        response = get(api, path, key=None)
        assert response.status_code == 401, path
        assert response.json()["error"]["message"].startswith("an API key is required")
    bad = api["client"].get("/api/v1/sites", headers={"X-API-Key": "tf_nope_nope"})
    assert bad.status_code == 401


def test_a_key_for_site_a_sees_nothing_of_site_b(api):
    b = api["b"]
    for path, params in ((f"/sites/{b.id}", {}), (f"/sites/{b.id}/latest", {}),
                         (f"/series/{api['series_b']}/readings", {}),
                         (f"/series/{api['series_b']}", {}),
                         (f"/devices/{b.devices[0].id}", {}),
                         ("/devices", {"site": b.id}),
                         ("/export", {"site": b.id}),
                         ("/export", {"series": api["series_b"]})):
        response = get(api, path, key="a_only", **params)
        assert response.status_code == 403, path
    listed = get(api, "/sites", key="a_only").json()["items"]
    assert [s["id"] for s in listed] == [api["a"].id]
    devices = get(api, "/devices", key="a_only").json()["items"]
    assert {d["site_id"] for d in devices} == {api["a"].id}
    series = get(api, "/series", key="a_only", limit=5000).json()["items"]
    assert {s["site_id"] for s in series} == {api["a"].id}
    assert get(api, "/sites", key="ingest").status_code == 403  # no read scope


def test_sites_filters_and_paging(api):
    ocean = get(api, "/sites", domain="ocean", limit=1000).json()
    assert len(ocean["items"]) == 80 and ocean["next_cursor"] is None
    pages, cursor = [], None
    while True:
        page = get(api, "/sites", limit=60, **({"cursor": cursor} if cursor else {})).json()
        pages += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(pages) == 250 and len({s["id"] for s in pages}) == 250
    cages = get(api, "/sites", kind="cage_farm").json()["items"]
    assert cages and all(s["kind"] == "cage_farm" for s in cages)
    pingdu = get(api, "/sites", district="pingdu", limit=1000).json()["items"]
    assert pingdu and all(s["district"] == "pingdu" for s in pingdu)
    a = api["a"]
    box = f"{a.lon - 0.001},{a.lat - 0.001},{a.lon + 0.001},{a.lat + 0.001}"
    assert [s["id"] for s in get(api, "/sites", bbox=box).json()["items"]] == [a.id]
    with_do = get(api, "/sites", metric="dissolved_oxygen", limit=1000).json()["items"]
    assert with_do and all(s["domain"] == "ocean" for s in with_do)
    assert get(api, "/sites", bbox="1,2,3").status_code == 422
    assert get(api, "/sites", limit=0).status_code == 422
    assert get(api, "/sites/ag-999").status_code == 404


def test_raw_readings_time_zones_and_cursor(api):
    path = f"/series/{api['series_a']}/readings"
    # the same instant written in Qingdao time
    start = (T0 + timedelta(minutes=10)).astimezone(
        __import__("zoneinfo").ZoneInfo("Asia/Shanghai")).isoformat()
    page = get(api, path, start=start, end=(T0 + timedelta(minutes=20)).isoformat(),
               limit=4).json()
    assert [p["value"] for p in page["points"]] == [10.0, 11.0, 12.0, 13.0]
    assert datetime.fromisoformat(page["points"][0]["time"]) == T0 + timedelta(minutes=10)
    rest = get(api, path, start=start, end=(T0 + timedelta(minutes=20)).isoformat(),
               cursor=page["next_cursor"]).json()
    assert [p["value"] for p in rest["points"]] == [float(i) for i in range(14, 20)]
    assert rest["next_cursor"] is None
    naive = get(api, path, start="2026-11-20T00:00:00")
    assert naive.status_code == 422 and "time zone" in naive.json()["error"]["message"]
    assert get(api, path, start=T0.isoformat(), end=T0.isoformat()).status_code == 422
    assert get(api, path, bucket="2m").status_code == 422
    assert get(api, "/series/999999/readings").status_code == 404


def test_buckets_at_their_edges(api):
    path = f"/series/{api['series_a']}/readings"
    # [00:05, 00:15) holds exactly the 5-minute buckets 00:05 and 00:10
    five = get(api, path, bucket="5m", start=(T0 + timedelta(minutes=5)).isoformat(),
               end=(T0 + timedelta(minutes=15)).isoformat()).json()["buckets"]
    assert [(datetime.fromisoformat(b["time"]), b["count"], b["mean"], b["min"], b["max"],
             b["last"]) for b in five] == [
        (T0 + timedelta(minutes=5), 5, 7.0, 5.0, 9.0, 9.0),
        (T0 + timedelta(minutes=10), 5, 12.0, 10.0, 14.0, 14.0)]
    hours = get(api, path, bucket="1h", start=T0.isoformat(),
                end=(T0 + timedelta(hours=3)).isoformat()).json()["buckets"]
    assert [(b["count"], b["mean"], b["min"], b["max"], b["last"]) for b in hours] == [
        (60, 29.5, 0.0, 59.0, 59.0), (60, 89.5, 60.0, 119.0, 119.0),
        (60, 149.5, 120.0, 179.0, 179.0)]
    # a Qingdao day starts at 16:00 UTC the day before: all 180 minutes fall in Nov 20
    days = get(api, path, bucket="1d", tz="Asia/Shanghai",
               start=(T0 - timedelta(days=1)).isoformat(),
               end=(T0 + timedelta(days=1)).isoformat()).json()["buckets"]
    assert len(days) == 1
    assert datetime.fromisoformat(days[0]["time"]) == T0 - timedelta(hours=8)
    assert (days[0]["count"], days[0]["mean"], days[0]["last"]) == (180, 89.5, 179.0)
    assert get(api, path, bucket="1d", tz="Mars/Olympus").status_code == 422


def test_latest_values_of_a_site(api):
    latest = get(api, f"/sites/{api['a'].id}/latest").json()
    by_series = {row["series_id"]: row for row in latest}
    row = by_series[api["series_a"]]
    assert row["value"] == 179.0
    assert datetime.fromisoformat(row["time"]) == T0 + timedelta(minutes=179)
    assert row["unit"]
    assert all(r["value"] is None for r in latest if r["series_id"] != api["series_a"])


def test_devices_and_status(api, db_url):
    devices = get(api, "/devices", site=api["a"].id).json()["items"]
    device = next(d for d in devices if d["id"] == api["device"].id)
    assert device["status"]["state"] == "online"  # its batch was received just now
    assert device["status"]["missing_batches"] == 0
    others = [d for d in devices if d["id"] != api["device"].id]
    assert all(d["status"]["state"] == "unknown" for d in others)
    # its last will arrives: offline, whatever it sent before
    site, dev = api["a"].id, api["device"].id
    will = Status(site, dev, DeviceState.OFFLINE, ms(datetime.now(UTC)) + 1000)
    write(db_url, [Envelope(status_topic(site, dev), encode_status(will), None, will.time_ms)],
          now_ms=will.time_ms)
    assert get(api, f"/devices/{dev}").json()["status"]["state"] == "offline"
    with psycopg.connect(db_url) as conn:  # and silence for 3 intervals means offline too
        conn.execute("UPDATE device_status SET state = 'online', last_seen = now() - "
                     "INTERVAL '1 day', birth_at = now() - INTERVAL '1 day'")
    assert get(api, f"/devices/{dev}").json()["status"]["state"] == "offline"


def test_csv_and_parquet_export(api):
    params = {"site": api["a"].id, "start": T0.isoformat(),
              "end": (T0 + timedelta(hours=1)).isoformat()}
    response = get(api, "/export", **params)
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 60
    assert rows[0]["metric"] == api["metric"] and float(rows[59]["value"]) == 59.0
    parquet = get(api, "/export", format="parquet", **params)
    table = pq.read_table(io.BytesIO(parquet.content))
    assert table.num_rows == 60
    assert table.column("value").to_pylist() == [float(i) for i in range(60)]
    assert get(api, "/export").status_code == 422
    assert get(api, "/export", series=999999).status_code == 404


def test_openapi_documents_every_route_with_errors(api):
    schema = api["client"].get("/openapi.json").json()
    for path, item in schema["paths"].items():
        if path.startswith("/api/v1"):
            for operation in item.values():
                assert {"401", "403", "422"} <= set(operation["responses"]), path


def test_http_ingest_in_the_api_takes_the_ingest_path(api, db_url):
    site, device = api["a"], api["device"]
    body = {"v": 1, "site": site.id, "device": device.id, "seq": 99,
            "readings": [{"m": "co2", "t": ms(datetime.now(UTC)), "v": 400.0},
                         {"m": "co2", "t": ms(datetime.now(UTC)) - 1000, "v": -5.0}]}
    post = api["client"].post
    url = f"/api/v1/ingest/{site.id}/{device.id}"
    assert post(url, json=body).status_code == 401
    assert post(url, json=body, headers={"X-API-Key": api["keys"]["all"]}).status_code == 403
    ok = post(url, json=body, headers={"X-API-Key": api["keys"]["ingest"]})
    assert ok.status_code == 200, ok.text
    assert ok.json()["readings_inserted"] == 1
    assert [r["reason"] for r in ok.json()["rejected"]] == ["out_of_range"]
    again = post(url, json=body, headers={"X-API-Key": api["keys"]["ingest"]}).json()
    assert again["duplicate"] is True and again["readings_inserted"] == 0
    with psycopg.connect(db_url) as conn:
        reasons = [r for (r,) in conn.execute("SELECT reason FROM ingest_rejects")]
    assert reasons == ["out_of_range"]


def test_healthz_reports_the_database_and_the_broker(db_url, own_broker):
    app = create_app(ApiSettings(database_url=db_url, mqtt_url=own_broker.url))
    with TestClient(app) as client:
        healthy = client.get("/healthz")
        assert healthy.status_code == 200
        assert healthy.json() == {"database": True, "broker": True, "read_replica": None,
                                  "detail": []}
    own_broker.stop()
    app = create_app(ApiSettings(database_url=db_url, mqtt_url=own_broker.url))
    with TestClient(app) as client:
        down = client.get("/healthz")
        assert down.status_code == 503
        body = down.json()
        assert body["database"] is True and body["broker"] is False
        assert "unreachable" in body["detail"][0] and str(own_broker.port) in body["detail"][0]
    app = create_app(ApiSettings(database_url=db_url))  # no broker configured: not checked
    with TestClient(app) as client:
        assert client.get("/healthz").json()["broker"] is None


def test_device_and_series_filters(api):
    a = api["a"]
    by_state = get(api, "/devices", state="online").json()["items"]
    # the two that sent a batch (one in each site)
    assert {d["id"] for d in by_state} == {api["device"].id, api["b"].devices[0].id}
    unknown = get(api, "/devices", state="unknown", site=a.id).json()["items"]
    assert {d["id"] for d in unknown} == {d.id for d in a.devices} - {api["device"].id}
    greenhouses = get(api, "/devices", kind="greenhouse", limit=1000).json()["items"]
    expected = {d.id for s in load_sites() if s.kind == "greenhouse" for d in s.devices}
    assert {d["id"] for d in greenhouses} == expected
    sondes = get(api, "/devices", template="sonde", district=api["b"].district,
                 limit=1000).json()["items"]
    assert sondes and all(d["template"] == "sonde" for d in sondes)
    assert {d["site_id"] for d in sondes} <= {s.id for s in load_sites()
                                               if s.district == api["b"].district}
    with_co2 = get(api, "/devices", metric="co2", limit=1000).json()["items"]
    assert api["device"].id in {d["id"] for d in with_co2}
    assert all("co2" in next(x for s in load_sites() for x in s.devices
                             if x.id == d["id"]).template.metrics for d in with_co2)
    series = get(api, "/series", kind="cage_farm", metric="dissolved_oxygen",
                 limit=5000).json()["items"]
    cage_farms = {s.id for s in load_sites() if s.kind == "cage_farm"}
    assert series and {s["site_id"] for s in series} == cage_farms
    assert get(api, "/devices", state="sleeping").status_code == 422
