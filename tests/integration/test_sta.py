"""The SensorThings API at /sta/v1.1 against a real database, with rows the tests insert.

Two greenhouses, A and B, share device models and metrics, so a Sensor or an
ObservedProperty reaches Datastreams of both: a key limited to A must still see none of B.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import psycopg
import pytest
from fastapi.testclient import TestClient

from tidefield.protocol.catalog import METRICS
from tidefield.protocol.registry import load_sites
from tidefield.server.api.app import create_app
from tidefield.server.security.api_keys import Scope, create_key
from tidefield.server.settings import ApiSettings

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
ROOT = "/sta/v1.1"
CO2_NAME = METRICS["co2"].name_en


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def series_id(conn, device: str, metric: str) -> int:
    return conn.execute("SELECT id FROM series WHERE device_id = %s AND metric = %s",
                        (device, metric)).fetchone()[0]


@pytest.fixture
def sta(db_url):
    a, b = [s for s in load_sites() if s.kind == "greenhouse"][:2]
    with psycopg.connect(db_url) as conn:
        co2 = series_id(conn, f"{a.id}-climate", "co2")
        temp = series_id(conn, f"{a.id}-climate", "air_temperature")
        co2_b = series_id(conn, f"{b.id}-climate", "co2")
        rows = ([(co2, T0 + timedelta(minutes=i), float(i)) for i in range(180)]
                + [(temp, T0 + timedelta(minutes=i), 20.0 + i / 10) for i in range(10)]
                + [(co2_b, T0 + timedelta(minutes=i), 1000.0 + i) for i in range(5)])
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO readings (series_id, time, value) VALUES (%s, %s, %s)",
                            rows)
        keys = {"all": create_key(conn, "all", [Scope.READ]),
                "a_only": create_key(conn, "lab-a", [Scope.READ], [a.id]),
                "ingest": create_key(conn, "gw", [Scope.INGEST])}
    app = create_app(ApiSettings(database_url=db_url))
    with TestClient(app) as client:
        yield {"client": client, "keys": keys, "db_url": db_url, "a": a, "b": b,
               "co2": co2, "temp": temp, "co2_b": co2_b,
               "rows": {(s, ms(t)): v for s, t, v in rows}}


def get(sta, path, key="all", **params):
    headers = {"X-API-Key": sta["keys"][key]} if key else {}
    if path.startswith("http"):  # a link the service gave out
        parts = urlsplit(path)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
    elif not path.startswith(ROOT):
        path = ROOT + path
    # (httpx drops a URL's own query when given params, even empty ones)
    return sta["client"].get(path, headers=headers, **({"params": params} if params else {}))


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def follow(sta, path, key="all", **params) -> tuple[list[dict], int]:
    """A SensorThings client: read a collection by following @iot.nextLink to its end."""
    page = ok(get(sta, path, key, **params))
    items, pages = list(page["value"]), 1
    while "@iot.nextLink" in page:
        page = ok(get(sta, page["@iot.nextLink"], key))
        items += page["value"]
        pages += 1
    return items, pages


def bad(sta, path, key="all", **params) -> str:
    response = get(sta, path, key, **params)
    assert response.status_code == 400, (path, params, response.status_code, response.text)
    body = response.json()
    assert body["code"] == 400 and body["type"] == "error" and body["message"]
    return body["message"]


# ---------------------------------------------------------------------------- keys

def test_without_a_key_every_route_says_401_in_sensorthings_style(sta):
    for path in ("", "/Things", "/Observations", f"/Datastreams({sta['co2']})",
                 f"/Datastreams({sta['co2']})/Observations"):
        response = get(sta, path, key=None)
        assert response.status_code == 401, path
        body = response.json()
        assert body["code"] == 401 and body["type"] == "error"
        assert body["message"].startswith("an API key is required")
    assert get(sta, "/Things", key="ingest").status_code == 403  # no read scope


def test_a_key_for_site_a_sees_nothing_of_site_b(sta):
    a, b = sta["a"], sta["b"]
    things = ok(get(sta, "/Things", "a_only", **{"$top": "1000"}))["value"]
    assert {t["properties"]["site"] for t in things} == {a.id}
    assert {t["@iot.id"] for t in things} == {d.id for d in a.devices}
    assert [loc["@iot.id"] for loc in ok(get(sta, "/Locations", "a_only"))["value"]] == [a.id]
    streams, _ = follow(sta, "/Datastreams", "a_only")
    assert {s["properties"]["site"] for s in streams} == {a.id}
    # shared by A and B: reachable, but only through A's Datastreams
    sensor = ok(get(sta, f"/Datastreams({sta['co2']})/Sensor", "a_only"))
    via_sensor, _ = follow(sta, sensor["Datastreams@iot.navigationLink"], "a_only")
    assert via_sensor and {s["properties"]["site"] for s in via_sensor} == {a.id}
    via_metric, _ = follow(sta, "/ObservedProperties('co2')/Datastreams", "a_only")
    assert [s["@iot.id"] for s in via_metric] == [sta["co2"]]
    all_metric, _ = follow(sta, "/ObservedProperties('co2')/Datastreams")
    assert {s["@iot.id"] for s in all_metric} >= {sta["co2"], sta["co2_b"]}
    # every Observation a client can page through is A's
    observations, _ = follow(sta, "/Observations", "a_only", **{"$top": "60"})
    assert {o["@iot.id"].split(":")[0] for o in observations} == {
        str(sta["co2"]), str(sta["temp"])}
    assert len(observations) == 190
    # direct ids of B: 403, as on /api/v1
    for path in (f"/Things('{b.id}-climate')", f"/Locations('{b.id}')",
                 f"/Datastreams({sta['co2_b']})", f"/Datastreams({sta['co2_b']})/Observations",
                 f"/Observations('{sta['co2_b']}:{ms(T0)}')", f"/Things('{b.id}-climate')/"
                 "Datastreams", f"/Locations('{b.id}')/Things"):
        response = get(sta, path, "a_only")
        assert response.status_code == 403, path
        assert "1000" not in response.text
    # $filter, $expand and a forged nextLink reach nothing of B either
    assert ok(get(sta, "/Observations", "a_only",
                  **{"$filter": f"Datastream/id eq {sta['co2_b']}"}))["value"] == []
    assert ok(get(sta, "/Datastreams", "a_only",
                  **{"$filter": f"properties/site eq '{b.id}'"}))["value"] == []
    expanded = ok(get(sta, "/Sensors", "a_only", **{
        "$expand": "Datastreams($expand=Observations($top=1000))", "$top": "1000"}))
    results = [o["result"] for s in expanded["value"] for d in s["Datastreams"]
               for o in d["Observations"]]
    assert len(results) == 190 and not any(r >= 1000 for r in results)
    page = ok(get(sta, "/Observations", "a_only", **{"$top": "1"}))
    forged = page["@iot.nextLink"].replace("skiptoken=", "skiptoken=x")
    assert get(sta, forged, "a_only").status_code == 400
    from tidefield.server.api.sta.options import encode_skiptoken
    before_b = encode_skiptoken([sta["co2_b"] - 1, T0.isoformat()])
    rest = ok(get(sta, "/Observations", "a_only", **{"$skiptoken": before_b, "$top": "1000"}))
    assert not any(o["result"] >= 1000 for o in rest["value"])


# ---------------------------------------------------------------------------- shapes

def test_service_root_and_entity_shapes(sta):
    root = ok(get(sta, ""))
    assert [s["name"] for s in root["value"]] == [
        "Things", "Locations", "Datastreams", "Sensors", "ObservedProperties", "Observations"]
    assert all(s["url"].endswith(f"{ROOT}/{s['name']}") for s in root["value"])
    assert ok(get(sta, f"{ROOT}/")) == root
    assert "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data" in root[
        "serverSettings"]["conformance"]
    a, co2 = sta["a"], sta["co2"]
    stream = ok(get(sta, f"/Datastreams({co2})"))
    assert stream["@iot.id"] == co2
    assert stream["@iot.selfLink"].endswith(f"{ROOT}/Datastreams({co2})")
    assert stream["unitOfMeasurement"]["symbol"] == "ppm"
    assert stream["phenomenonTime"] == (
        "2026-11-20T00:00:00.000Z/2026-11-20T02:59:00.000Z")
    for name in ("Thing", "Sensor", "ObservedProperty", "Observations"):
        assert stream[f"{name}@iot.navigationLink"] == f"{stream['@iot.selfLink']}/{name}"
    thing = ok(get(sta, stream["Thing@iot.navigationLink"]))
    assert thing["@iot.id"] == f"{a.id}-climate"
    assert thing["@iot.selfLink"].endswith(f"/Things('{a.id}-climate')")
    location = ok(get(sta, thing["Locations@iot.navigationLink"]))["value"]
    assert location[0]["location"] == {"type": "Point", "coordinates": [a.lon, a.lat]}
    assert location[0]["encodingType"] == "application/geo+json"
    back = ok(get(sta, location[0]["Things@iot.navigationLink"]))["value"]
    assert {t["@iot.id"] for t in back} == {d.id for d in a.devices}
    prop = ok(get(sta, stream["ObservedProperty@iot.navigationLink"]))
    assert prop["@iot.id"] == "co2" and prop["properties"]["unit"] == "ppm"
    sensor = ok(get(sta, stream["Sensor@iot.navigationLink"]))
    assert sensor["@iot.id"] == "greenhouse-climate-sensor"
    assert sensor["name"] == "greenhouse climate sensor"
    soil = ok(get(sta, f"/Things('{a.id}-soil')/Datastreams", **{"$top": "1"}))["value"][0]
    slug = ok(get(sta, soil["Sensor@iot.navigationLink"]))["@iot.id"]
    assert slug == "rs-485-soil-moisture-temperature-ec-probe"  # the model holds a '/'
    first = ok(get(sta, f"/Datastreams({co2})/Observations", **{"$top": "1"}))
    observation = first["value"][0]
    assert observation["@iot.id"] == f"{co2}:{ms(T0)}"
    assert observation["phenomenonTime"] == "2026-11-20T00:00:00.000Z"
    assert observation["result"] == 0.0
    assert ok(get(sta, observation["@iot.selfLink"])) == observation
    assert ok(get(sta, observation["Datastream@iot.navigationLink"]))["@iot.id"] == co2
    assert get(sta, f"/Observations('{co2}:{ms(T0) + 1}')").status_code == 404


def test_a_client_following_next_links_reads_every_inserted_row(sta):
    items, pages = follow(sta, "/Observations", **{"$top": "70"})
    assert pages == 3
    got = {(int(o["@iot.id"].split(":")[0]), int(o["@iot.id"].split(":")[1])): o["result"]
           for o in items}
    assert len(items) == len(got) == len(sta["rows"])
    assert got == sta["rows"]
    # a Datastream's Observations in time order, both ways, 50 at a time
    path = f"/Datastreams({sta['co2']})/Observations"
    up, pages = follow(sta, path, **{"$top": "50", "$orderby": "phenomenonTime"})
    assert [o["result"] for o in up] == [float(i) for i in range(180)] and pages == 4
    down, _ = follow(sta, path, **{"$top": "50", "$orderby": "phenomenonTime desc"})
    assert [o["result"] for o in down] == [float(i) for i in reversed(range(180))]
    # all Observations by time across Datastreams: ties broken by Datastream
    by_time, _ = follow(sta, "/Observations", **{"$top": "7", "$orderby": "phenomenonTime"})
    keys = [(o["phenomenonTime"], int(o["@iot.id"].split(":")[0])) for o in by_time]
    assert keys == sorted(keys) and len(keys) == 195
    by_result, _ = follow(sta, path, **{"$top": "40", "$orderby": "result desc"})
    assert [o["result"] for o in by_result] == [float(i) for i in reversed(range(180))]
    # $skip, then keyset; $count counts every match
    page = ok(get(sta, path, **{"$skip": "170", "$top": "5", "$count": "true"}))
    assert page["@iot.count"] == 180
    assert [o["result"] for o in page["value"]] == [170.0, 171.0, 172.0, 173.0, 174.0]
    rest = ok(get(sta, page["@iot.nextLink"]))
    assert [o["result"] for o in rest["value"]] == [175.0, 176.0, 177.0, 178.0, 179.0]
    assert "@iot.nextLink" not in rest and rest["@iot.count"] == 180
    # small sets page the same way
    things, _ = follow(sta, "/Things", **{"$top": "100", "$orderby": "name desc"})
    names = [t["name"] for t in things]
    assert names == sorted(names, reverse=True) and len(set(names)) == len(names)


def test_filter_on_time_and_result(sta):
    path = f"/Datastreams({sta['co2']})/Observations"

    def results(text, **more):
        return [o["result"] for o in ok(get(sta, path, **{"$filter": text, "$top": "1000",
                                                          **more}))["value"]]

    t10, t20 = T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)
    window = f"phenomenonTime ge {t10:%Y-%m-%dT%H:%M:%SZ} and phenomenonTime lt " \
             f"{t20:%Y-%m-%dT%H:%M:%SZ}"
    assert results(window) == [float(i) for i in range(10, 20)]
    # the same instants written in Qingdao time, and quoted
    assert results("resultTime ge 2026-11-20T08:10:00+08:00 and "
                   "resultTime lt '2026-11-20T08:20:00+08:00'") == results(window)
    assert results("result gt 170") == [float(i) for i in range(171, 180)]
    assert results("(result lt 3 or result ge 178) and not (result eq 1)") == [
        0.0, 2.0, 178.0, 179.0]
    assert results("result add 1 gt 179") == [179.0]
    assert results("result mod 60 eq 0") == [0.0, 60.0, 120.0]
    assert results("result div 0 eq 1") == []
    assert results("minute(phenomenonTime) eq 59") == [59.0, 119.0, 179.0]
    assert results("phenomenonTime lt 2026-11-20 or result eq -5") == []
    both = ok(get(sta, "/Observations", **{
        "$filter": f"Datastream/id eq {sta['temp']} and result ge 20.5", "$top": "100"}))
    assert [o["result"] for o in both["value"]] == [20.5, 20.6, 20.7, 20.8, 20.9]
    streams = ok(get(sta, "/Datastreams", **{
        "$filter": f"ObservedProperty/name eq '{CO2_NAME}x' or (ObservedProperty/id eq 'co2' and "
                   f"Thing/id eq '{sta['a'].id}-climate')"}))["value"]
    assert [s["@iot.id"] for s in streams] == [sta["co2"]]
    things = ok(get(sta, "/Things", **{
        "$filter": f"startswith(name, '{sta['a'].id}') and endswith(name, 'soil')"}))
    assert [t["@iot.id"] for t in things["value"]] == [f"{sta['a'].id}-soil"]


def test_select_and_expand(sta):
    co2 = sta["co2"]
    only = ok(get(sta, f"/Datastreams({co2})/Observations",
                  **{"$select": "result", "$top": "2"}))
    assert only["value"] == [{"result": 0.0}, {"result": 1.0}]
    named = ok(get(sta, "/Things", **{"$select": "id,name", "$top": "1"}))["value"][0]
    assert set(named) == {"@iot.id", "name"}
    stream = ok(get(sta, f"/Datastreams({co2})", **{
        "$select": "name,Observations",
        "$expand": "Observations($top=3;$orderby=phenomenonTime desc;$select=result),"
                   "ObservedProperty($select=name)"}))
    assert [o["result"] for o in stream["Observations"]] == [179.0, 178.0, 177.0]
    assert stream["ObservedProperty"] == {"name": CO2_NAME}
    assert set(stream) == {"name", "Observations", "Observations@iot.navigationLink",
                           "Observations@iot.nextLink", "ObservedProperty"}
    more = ok(get(sta, stream["Observations@iot.nextLink"]))
    assert [o["result"] for o in more["value"]] == [176.0, 175.0, 174.0]
    thing = ok(get(sta, f"/Things('{sta['a'].id}-climate')", **{
        "$expand": "Datastreams($filter=ObservedProperty/id eq 'co2' or "
                   "ObservedProperty/id eq 'air_temperature';$orderby=id;$count=true;"
                   "$expand=Observations($top=1;$orderby=phenomenonTime desc)),Locations"}))
    assert thing["Datastreams@iot.count"] == 2
    latest = {d["@iot.id"]: [o["result"] for o in d["Observations"]]
              for d in thing["Datastreams"]}
    assert latest == {co2: [179.0], sta["temp"]: [20.9]}
    assert thing["Locations"][0]["@iot.id"] == sta["a"].id
    # the classic dashboard query, from a real client (FROST issue 2351)
    dashboards = ok(get(sta, "/Datastreams", **{
        "$filter": f"ObservedProperty/name eq '{CO2_NAME}' and "
                   f"Thing/id eq '{sta['a'].id}-climate'",
        "$top": "1", "$expand": "Observations($top=1;$orderby=phenomenonTime desc)"}))
    assert dashboards["value"][0]["Observations"][0]["result"] == 179.0
    nested = ok(get(sta, f"/Locations('{sta['a'].id}')", **{
        "$expand": "Things/Datastreams/Observations($top=2)"}))
    values = {d["@iot.id"]: [o["result"] for o in d["Observations"]]
              for t in nested["Things"] for d in t["Datastreams"]}
    assert values[co2] == [0.0, 1.0] and values[sta["temp"]] == [20.0, 20.1]


def test_a_large_top_is_cut_to_the_page_limit(sta):
    # as the spec says: a $top above the service's page limit gives that limit and a
    # nextLink (the registry has some thousands of Datastreams)
    with psycopg.connect(sta["db_url"]) as conn:
        total = conn.execute("SELECT count(*) FROM series").fetchone()[0]
    assert total > 1000
    page = ok(get(sta, "/Datastreams", **{"$top": "5000", "$select": "id"}))
    assert len(page["value"]) == 1000
    assert "$top=1000" in page["@iot.nextLink"]
    streams, pages = follow(sta, "/Datastreams", **{"$top": "5000", "$select": "id"})
    ids = [s["@iot.id"] for s in streams]
    assert ids == sorted(set(ids)) and len(ids) == total
    assert pages == -(-total // 1000)


def test_bad_queries_are_400_with_a_message(sta):
    obs = f"/Datastreams({sta['co2']})/Observations"
    assert "position" in bad(sta, obs, **{"$filter": "result gt"})
    assert "unknown property 'temperature'" in bad(sta, obs, **{"$filter": "temperature eq 1"})
    assert "cannot compare" in bad(sta, obs, **{"$filter": "result eq 'x'"})
    assert "zone" in bad(sta, obs, **{"$filter": "phenomenonTime gt 2026-11-20T00:00:00"})
    bad(sta, obs, **{"$filter": "result"})
    bad(sta, obs, **{"$filter": "(" * 500 + "result gt 1" + ")" * 500})
    bad(sta, obs, **{"$filter": " and ".join(["result gt 1"] * 300)})
    bad(sta, obs, **{"$filter": "st_within(location, geography'POINT(1 2)')"})
    bad(sta, obs, **{"$filter": "result mul 1e300 mul 1e300 gt 0"})
    bad(sta, obs, **{"$filter": "result gt 1e999"})
    for top in ("-1", "abc", "99999999999", "1.5", ""):
        bad(sta, obs, **{"$top": top})
    assert "nextLink" in bad(sta, obs, **{"$skip": "10001"})
    bad(sta, obs, **{"$orderby": "temperature"})
    bad(sta, obs, **{"$orderby": "result sideways"})
    bad(sta, obs, **{"$select": "temperature"})
    bad(sta, "/Things", **{"$expand": "Observations"})
    bad(sta, "/Things", **{"$expand": "Datastreams($top=x)"})
    bad(sta, "/Things", **{"$expand": "Datastreams(($top=1)"})
    bad(sta, "/Things", **{"$expand": "Locations/Things/Datastreams/Observations"})
    bad(sta, "/Things", **{"$count": "maybe"})
    bad(sta, "/Things", **{"$skiptoken": "!!!"})
    bad(sta, "/Things", **{"$skiptoken": "WzFd"})  # [1]: not this order's shape
    assert "$resultFormat" in bad(sta, "/Observations", **{"$resultFormat": "dataArray"})
    bad(sta, "/Things(42)")
    bad(sta, "/Datastreams('x')")
    bad(sta, f"/Datastreams({sta['co2']})/Nowhere")
    response = sta["client"].get(f"{ROOT}/Things?$top=1&$top=2",
                                 headers={"X-API-Key": sta["keys"]["all"]})
    assert response.status_code == 400
    for path in ("/Datastreams(99999999999)", "/Observations('nope')", "/Things('nope')",
                 "/Unknown", "/Sensors('nope')/Datastreams"):
        response = get(sta, path)
        assert response.status_code == 404, path
        assert response.json()["type"] == "error"


def test_openapi_documents_the_sensorthings_routes(sta):
    schema = ok(sta["client"].get("/openapi.json"))
    paths = [p for p in schema["paths"] if p.startswith(ROOT)]
    assert f"{ROOT}/Observations" in paths and f"{ROOT}/Datastreams({{id}})" in paths
    for path in paths:
        responses = schema["paths"][path]["get"]["responses"]
        assert {"200", "400", "401", "403", "404"} <= set(responses), path
