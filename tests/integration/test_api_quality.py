"""QARTOD flags in the export (CSV and Parquet) and in SensorThings Observations
(``resultQuality``), from anomalies and a detector watermark the test stores itself."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import psycopg
import pyarrow.parquet as pq

from .test_api import T0, api, get  # noqa: F401  (the fixture: site A's co2, minutes 0..179)
from .test_sta import ROOT

# minute -> (score, component, category) stored for series A
ANOMALIES = {10: (0.6, "spike", "fault"), 20: (1.0, "range", "fault"),
             30: (0.9, "level", "event"), 40: (0.8, "stuck", "fault")}
WATERMARK_MIN = 100  # the detector has scored readings up to here
EXPECTED = {10: (3, "spike_test"), 20: (4, "gross_range_test"), 30: (1, "none"),
            40: (4, "flat_line_test"), 50: (1, "none"), 150: (2, "none")}


def _store(db_url, series_id: int) -> None:
    with psycopg.connect(db_url) as conn:
        for minute, (score, component, category) in ANOMALIES.items():
            conn.execute("INSERT INTO anomalies (series_id, time, value, score, component, "
                         "category) VALUES (%s, %s, %s, %s, %s, %s)",
                         (series_id, T0 + timedelta(minutes=minute), float(minute), score,
                          component, category))
        conn.execute("INSERT INTO detector_checkpoints (partition, watermark, state) "
                     "VALUES ('0/1', %s, '\\x00')", (T0 + timedelta(minutes=WATERMARK_MIN),))
        conn.execute("UPDATE readings SET value = 'NaN' WHERE series_id = %s AND time = %s",
                     (series_id, T0 + timedelta(minutes=60)))


def test_export_rows_carry_their_qartod_flag_and_test(api, db_url):  # noqa: F811
    _store(db_url, api["series_a"])
    params = {"series": api["series_a"], "start": T0.isoformat(),
              "end": (T0 + timedelta(hours=3)).isoformat()}
    response = get(api, "/export", **params)
    assert response.status_code == 200, response.text
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 180
    for minute, (flag, test) in {**EXPECTED, 60: (9, "missing_value")}.items():
        assert (int(rows[minute]["qartod_flag"]), rows[minute]["qartod_test"]) == (flag, test)
    parquet = pq.read_table(io.BytesIO(get(api, "/export", format="parquet",
                                           **params).content))
    flags = parquet.column("qartod_flag").to_pylist()
    tests = parquet.column("qartod_test").to_pylist()
    assert [flags[m] for m in EXPECTED] == [f for f, _ in EXPECTED.values()]
    assert [tests[m] for m in EXPECTED] == [t for _, t in EXPECTED.values()]
    # a lab keeps what passed: everything scored, present and not flagged
    assert flags.count(1) == WATERMARK_MIN + 1 - 3 - 1  # minutes 0..100, less 3 flagged, 1 NaN


def test_observations_carry_result_quality(api, db_url):  # noqa: F811
    _store(db_url, api["series_a"])
    headers = {"X-API-Key": api["keys"]["all"]}
    response = api["client"].get(f"{ROOT}/Datastreams({api['series_a']})/Observations",
                                 headers=headers, params={"$top": "200",
                                                          "$orderby": "phenomenonTime"})
    assert response.status_code == 200, response.text
    observations = response.json()["value"]
    assert len(observations) == 180
    for minute, (flag, test) in EXPECTED.items():
        assert observations[minute]["resultQuality"] == {"scheme": "QARTOD", "flag": flag,
                                                         "test": test}
    one = api["client"].get(f"{ROOT}/Observations('{api['series_a']}:"
                            f"{int((T0 + timedelta(minutes=10)).timestamp() * 1000)}')",
                            headers=headers)
    assert one.status_code == 200, one.text
    assert one.json()["resultQuality"]["flag"] == 3
