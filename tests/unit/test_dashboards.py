"""The dashboards' pure parts: messages in both languages, transforms, and how the API
client maps answers to errors. For that mapping alone httpx's MockTransport plays the API
(a 500 cannot be had from the real one on demand); the real API's refusals and absence
are tested through the pages in tests/integration/test_dashboards.py."""

from __future__ import annotations

import json
import pickle
import string
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tidefield.dashboards import i18n, views
from tidefield.dashboards.client import (
    ApiClient,
    ApiRefused,
    ApiRequestError,
    ApiUnavailable,
)
from tidefield.protocol.catalog import METRICS, SITE_KINDS
from tidefield.protocol.registry import DISTRICTS, load_geojson, load_sites


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@pytest.mark.parametrize("key", sorted(i18n.MESSAGES))
def test_every_message_has_both_languages_with_the_same_placeholders(key):
    entry = i18n.MESSAGES[key]
    assert set(entry) == set(i18n.LANGUAGES)
    assert all(entry.values())
    assert _fields(entry["zh"]) == _fields(entry["en"])


def test_names_come_from_the_registry_and_catalog_in_both_languages():
    site = load_sites()[0]
    record = {"name_zh": site.name_zh, "name_en": site.name_en}
    assert i18n.site_name(record, "zh") == site.name_zh
    assert i18n.site_name(record, "en") == site.name_en
    for kind, entry in SITE_KINDS.items():
        assert i18n.kind_name(kind, "zh") == entry.name_zh
    for district, (zh, en) in DISTRICTS.items():
        assert (i18n.district_name(district, "zh"), i18n.district_name(district, "en")) == (
            zh, en)
    assert i18n.metric_name("dissolved_oxygen", "zh") == METRICS["dissolved_oxygen"].name_zh
    assert i18n.metric_name("made_up", "en") == "made_up"  # unknown codes shown as they are
    assert i18n.label("severity", "critical", "zh") == "严重"
    assert i18n.label("severity", "unheard_of", "zh") == "unheard_of"


def _sites(n: int = 5) -> list[dict]:
    return [{"id": s.id, "name_zh": s.name_zh, "name_en": s.name_en, "kind": s.kind,
             "district": s.district, "lat": s.lat, "lon": s.lon} for s in load_sites()[:n]]


def test_site_frame_joins_states_and_calls_unmentioned_sites_offline():
    sites = _sites()
    overview = {"sites": [{"site_id": sites[0]["id"], "state": "alert", "open_alerts": 2,
                           "devices_online": 3, "devices_offline": 1},
                          {"site_id": sites[1]["id"], "state": "ok", "open_alerts": 0,
                           "devices_online": 4, "devices_offline": 0}]}
    frame = views.site_frame(sites, overview, "en")
    assert list(frame["state"]) == ["alert", "ok", "offline", "offline", "offline"]
    assert frame.loc[0, "open_alerts"] == 2
    assert frame.loc[0, "color"][:3] == list(views.STATE_COLORS["alert"])
    assert list(frame["name"]) == [s["name_en"] for s in sites]
    only_ok = views.filter_sites(frame, states=["ok"])
    assert list(only_ok["id"]) == [sites[1]["id"]]


def test_the_map_needs_no_tile_server_and_draws_alerting_sites_last():
    sites = _sites()
    overview = {"sites": [{"site_id": sites[2]["id"], "state": "alert", "open_alerts": 1,
                           "devices_online": 1, "devices_offline": 0}]}
    frame = views.site_frame(sites, overview, "zh")
    deck = json.loads(views.site_map(frame, load_geojson(), "zh").to_json())
    assert "mapProvider" not in deck  # no basemap: nothing is fetched from the internet
    layers = {layer["id"]: layer for layer in deck["layers"]}
    assert set(layers) == {"geo-sea", "geo-district", "geo-coastline", "sites"}
    assert len(layers["geo-district"]["data"]["features"]) == len(DISTRICTS)
    assert layers["sites"]["data"][-1]["id"] == sites[2]["id"]
    with_tiles = json.loads(views.site_map(frame, load_geojson(), "zh", tiles=True).to_json())
    assert with_tiles["mapProvider"] == "carto"


def test_a_map_click_picks_the_site_under_it():
    state = {"selection": {"indices": {"sites": [3]},
                           "objects": {"sites": [{"id": "oc-007", "name": "x"}]}}}
    assert views.picked_site(state) == "oc-007"
    assert views.picked_site({"selection": {"indices": {}, "objects": {}}}) is None
    assert views.picked_site(None) is None


@pytest.mark.parametrize(("span", "bucket"), [
    (timedelta(hours=6), "raw"), (timedelta(hours=12), "raw"), (timedelta(hours=13), "5m"),
    (timedelta(days=4), "5m"), (timedelta(days=7), "1h"), (timedelta(days=62), "1h"),
    (timedelta(days=400), "1d")])
def test_long_ranges_come_from_rollups(span, bucket):
    assert views.choose_bucket(span) == bucket


def test_readings_frames_from_raw_and_bucketed_answers_in_qingdao_time():
    raw = views.readings_frame({"bucket": "raw", "points": [
        {"time": "2026-11-29T00:00:00Z", "value": 1.5}]})
    assert raw.loc[0, "time"].hour == 8 and raw.loc[0, "min"] == raw.loc[0, "max"] == 1.5
    buckets = views.readings_frame({"bucket": "1h", "buckets": [
        {"time": "2026-11-29T00:00:00+00:00", "count": 60, "mean": 2.0, "min": 1.0,
         "max": 3.0, "last": 2.5}]})
    assert list(buckets.loc[0, ["value", "min", "max"]]) == [2.0, 1.0, 3.0]
    assert views.readings_frame({"bucket": "raw", "points": []}).empty


def test_sensor_values_leave_device_health_to_its_own_table():
    latest = [{"series_id": 1, "device_id": "s-gw", "metric": "battery_voltage",
               "unit": "V", "time": None, "value": 12.6},
              {"series_id": 2, "device_id": "s-gw", "metric": "agent_queue_depth",
               "unit": "readings", "time": None, "value": 40.0},
              {"series_id": 3, "device_id": "s-sonde", "metric": "salinity", "unit": "PSU",
               "time": "2026-11-29T00:00:00Z", "value": 31.0},
              {"series_id": 4, "device_id": "s-sonde", "metric": "water_temperature",
               "unit": "°C", "time": "2026-11-29T00:00:00Z", "value": 14.0}]
    sensors = views.sensor_items(latest)
    assert [s["metric"] for s in sensors] == ["water_temperature", "salinity"]  # catalog
    alerts = [{"series_id": 3, "state": "open"}]
    assert views.default_metrics(sensors, alerts, 2) == ["salinity", "water_temperature"]
    devices = [{"id": "s-gw", "model": "gw", "template": "gw",
                "status": {"state": "online", "last_seen": None, "missing_batches": 0}},
               {"id": "s-sonde", "model": "sonde", "template": "sonde",
                "status": {"state": "offline", "last_seen": None, "missing_batches": 2}}]
    health = views.device_health(devices, latest, "en").set_index("Device")
    assert health.loc["s-gw", "Battery (V)"] == 12.6
    assert health.loc["s-gw", "Queue depth"] == 40.0
    assert health.loc["s-sonde", "State"] == "offline"
    assert health.loc["s-sonde", "Missing batches"] == 2


def test_the_window_around_an_alert():
    now = datetime(2026, 11, 29, 12, tzinfo=UTC)
    opened = now - timedelta(hours=2)
    start, end = views.alert_window({"opened_at": opened.isoformat(), "closed_at": None}, now)
    assert (start, end) == (opened - timedelta(hours=6), now)
    closed = now - timedelta(hours=1, minutes=30)
    start, end = views.alert_window({"opened_at": opened.isoformat(),
                                     "closed_at": closed.isoformat()}, now)
    assert end == closed + timedelta(hours=1)


# --- the client's errors ---------------------------------------------------------------
def _client(handler) -> ApiClient:
    return ApiClient("http://api.test", "tf_a_b", transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(("status", "error"), [
    (401, ApiRefused), (403, ApiRefused), (404, ApiRequestError), (422, ApiRequestError),
    (500, ApiUnavailable), (503, ApiUnavailable)])
def test_api_answers_become_typed_errors_with_the_api_message(status, error):
    client = _client(lambda request: httpx.Response(
        status, json={"error": {"status": status, "message": "said the API"}}))
    with pytest.raises(error) as caught:
        client.site("ag-001")
    assert caught.value.status == status and caught.value.message == "said the API"
    assert caught.value.retryable == (status >= 500)
    again = pickle.loads(pickle.dumps(caught.value))
    assert (type(again), again.status, again.message) == (error, status, "said the API")


def test_an_unreachable_api_is_retryable():
    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ApiUnavailable) as caught:
        _client(refuse).overview()
    assert caught.value.status is None and "unreachable" in caught.value.message


def test_lists_follow_cursors_and_send_the_credential():
    seen = []

    def pages(request):
        seen.append(request)
        cursor = request.url.params.get("cursor")
        if cursor is None:
            return httpx.Response(200, json={"items": [{"id": "a"}], "next_cursor": "a"})
        return httpx.Response(200, json={"items": [{"id": "b"}], "next_cursor": None})

    assert [s["id"] for s in _client(pages).sites(kind="orchard")] == ["a", "b"]
    assert all(r.headers["Authorization"] == "Bearer tf_a_b" for r in seen)
    assert seen[0].url.params["kind"] == "orchard" and seen[0].url.params["limit"] == "1000"


def test_naive_times_are_refused_before_asking():
    client = _client(lambda request: httpx.Response(200, json={}))
    with pytest.raises(ValueError, match="time zone"):
        client.readings(1, datetime(2026, 1, 1), datetime(2026, 1, 2))


def test_control_views_show_twins_actuator_states_and_history():
    from tidefield.dashboards import views

    twin = {"device_id": "oc-001-gw", "desired_version": 3, "reported_version": 2,
            "in_sync": False, "reported_error": None, "agent_version": "0.1.0",
            "difference": {"interval_s": {"desired": 30, "reported": 60}}}
    never = {**twin, "device_id": "oc-001-wx", "desired_version": None,
             "reported_version": None}
    table = views.config_table({"devices": [twin, never], "commands": []}, "en")
    assert table.to_dict("records") == [{
        "Device": "oc-001-gw", "Desired": 3, "Reported": 2, "In sync": False,
        "Difference": "interval_s: 60 → 30", "Agent": "0.1.0"}]
    commands = [
        {"id": "c1", "device_id": "oc-001-gw", "action": "set", "state": "done", "value": 1.0,
         "params": {"actuator": "aerator", "state": "on"}, "issued_at": "2026-12-05T01:00:00Z",
         "reason": None, "issued_by": "anna"},
        {"id": "c2", "device_id": "oc-001-gw", "action": "set", "state": "failed",
         "value": None, "params": {"actuator": "aerator", "state": "off"},
         "issued_at": "2026-12-05T02:00:00Z", "reason": "write failed", "issued_by": "anna"},
    ]
    assert views.actuator_states(commands) == {("oc-001-gw", "aerator"): 1.0}
    history = views.commands_table(commands, "zh")
    assert list(history["状态"]) == ["已完成", "失败"]
    assert list(history["指令"]) == ["set actuator=aerator state=on",
                                    "set actuator=aerator state=off"]
