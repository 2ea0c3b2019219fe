"""Re-scoring a stored series: GET /api/v1/series/{id}/score, against rows the tests
insert themselves."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import psycopg
import pytest

from .test_api import T0, api, get  # noqa: F401  (the fixture: sites A and B, keys)

SPIKE_AT = 400  # minute of the injected spike


@pytest.fixture
def temperature(api, db_url):  # noqa: F811
    """Air temperature of site A's climate station, every minute for 10 hours: a smooth
    warm-up with a little noise, and one reading 12 °C off at minute 400."""
    rng = np.random.default_rng(5)
    minutes = np.arange(600)
    values = np.round(18 + 4 * np.sin(minutes / 200) + rng.normal(0, 0.05, 600), 1)
    values[SPIKE_AT] += 12.0
    with psycopg.connect(db_url) as conn:
        sid = conn.execute("SELECT id FROM series WHERE device_id = %s AND metric = %s",
                           (api["device"].id, "air_temperature")).fetchone()[0]
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO readings (series_id, time, value) VALUES (%s, %s, %s)",
                            [(sid, T0 + timedelta(minutes=int(i)), float(v))
                             for i, v in zip(minutes, values, strict=True)])
    return sid, values


def score(api, sid, key="all", **params):  # noqa: F811
    return get(api, f"/series/{sid}/score", key=key, **params)


def test_rescore_returns_each_reading_with_its_score(api, temperature):  # noqa: F811
    sid, values = temperature
    start, end = T0 + timedelta(minutes=300), T0 + timedelta(minutes=600)
    response = score(api, sid, start=start.isoformat(), end=end.isoformat(), warmup_hours=5)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["series_id"], body["metric"], body["unit"]) == (sid, "air_temperature", "°C")
    assert body["warmup_readings"] == 300
    points = body["points"]
    assert len(points) == 300
    assert [p["value"] for p in points] == pytest.approx(values[300:].tolist())
    by_minute = {int((np.datetime64(p["time"][:19]) - np.datetime64(T0.replace(tzinfo=None)))
                     / np.timedelta64(1, "m")): p for p in points}
    spike = by_minute[SPIKE_AT]
    assert spike["anomaly_score"] >= 0.5
    assert (spike["component"], spike["category"]) == ("spike", "fault")
    calm = [p["anomaly_score"] for m, p in by_minute.items() if abs(m - SPIKE_AT) > 3]
    assert max(calm) < 0.5
    assert body["params"]["spike_z"] == 12.0


def test_chosen_parameters_change_the_scores(api, temperature):  # noqa: F811
    sid, _ = temperature
    window = {"start": (T0 + timedelta(minutes=300)).isoformat(),
              "end": (T0 + timedelta(minutes=600)).isoformat(), "warmup_hours": 5}
    default = score(api, sid, **window).json()["points"]
    lenient = score(api, sid, spike_z=1e6, jump_factor=1000, **window)
    assert lenient.status_code == 200, lenient.text
    assert lenient.json()["params"]["spike_z"] == 1e6
    points = lenient.json()["points"]
    assert max(p["anomaly_score"] for p in default) >= 0.5
    assert all(p["component"] != "spike" for p in points)
    # without a warm-up the detector has seen too little to judge a spike
    cold = score(api, sid, start=(T0 + timedelta(minutes=390)).isoformat(),
                 end=window["end"], warmup_hours=0).json()
    assert cold["warmup_readings"] == 0
    assert all(p["component"] != "spike" for p in cold["points"])


@pytest.mark.parametrize("params, message", [
    ({"spike_z": -1}, "spike_z"),
    ({"spike_z": "sharp"}, "spike_z"),
    ({"warm_n": 10**9}, "warm_n"),
    ({"colour": "red"}, "colour"),
    ({"limits": "guessed"}, "limits"),
    ({"warmup_hours": 10_000}, "warmup_hours"),
    ({"start": "2026-11-20T10:00:00"}, "time zone"),
    ({"start": "2026-11-21T00:00:00Z", "end": "2026-11-20T00:00:00Z"}, "before end"),
    ({"start": "2026-01-01T00:00:00Z", "end": "2026-11-20T00:00:00Z"}, "31 days"),
])
def test_bad_parameters_are_422_with_a_message(api, temperature, params, message):  # noqa: F811
    sid, _ = temperature
    response = score(api, sid, **params)
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]["message"]


def test_keys_and_sites_are_checked(api):  # noqa: F811
    assert score(api, api["series_b"], key="a_only").status_code == 403
    assert score(api, api["series_a"], key="a_only").status_code == 200
    assert score(api, api["series_a"], key=None).status_code == 401
    assert score(api, api["series_a"], key="ingest").status_code == 403
    assert score(api, 2**31 - 1).status_code == 404


def test_learned_limits_score_what_the_catalog_cannot(api):  # noqa: F811
    # series A holds co2 = minute index 0..179 from T0: a steady ramp, nothing anomalous
    response = score(api, api["series_a"], start=T0.isoformat(),
                     end=(T0 + timedelta(hours=3)).isoformat(), limits="learned")
    assert response.status_code == 200, response.text
    points = response.json()["points"]
    assert len(points) == 180
    assert all(p["category"] != "fault" or p["component"] != "range" for p in points)


def test_a_series_with_missing_and_sentinel_readings_is_scored_whole(api, db_url):  # noqa: F811
    """NaN and the loggers' no-data sentinels stored among the readings: every reading is
    returned, those as missing (range, score 1), the rest scored as usual."""
    rng = np.random.default_rng(8)
    values = np.round(18 + rng.normal(0, 0.05, 400), 2)
    missing = {100: float("nan"), 200: -9999.0, 300: 65535.0}
    for at, value in missing.items():
        values[at] = value
    with psycopg.connect(db_url) as conn:
        sid = conn.execute("SELECT id FROM series WHERE device_id = %s AND metric = %s",
                           (api["device"].id, "air_humidity")).fetchone()[0]
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO readings (series_id, time, value) VALUES (%s, %s, %s)",
                            [(sid, T0 + timedelta(minutes=i), float(v))
                             for i, v in enumerate(values)])
    for limits in ("catalog", "learned"):
        response = score(api, sid, start=T0.isoformat(),
                         end=(T0 + timedelta(minutes=400)).isoformat(), limits=limits)
        assert response.status_code == 200, response.text
        points = response.json()["points"]
        assert len(points) == 400
        for at in missing:
            assert (points[at]["component"], points[at]["anomaly_score"]) == ("range", 1.0)
        assert points[100]["value"] is None
        others = [p["anomaly_score"] for i, p in enumerate(points) if i not in missing]
        assert max(others) < 0.5, limits
