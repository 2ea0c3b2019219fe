"""The ingest transaction against a real TimescaleDB: exactly-once, rollups, rejects."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import psycopg
import pytest

from tidefield.protocol.catalog import METRICS
from tidefield.protocol.codec import Limits, encode_batch
from tidefield.protocol.messages import Batch, Reading
from tidefield.protocol.registry import load_sites
from tidefield.protocol.topics import up_topic
from tidefield.server.ingest.directory import DeviceDirectory
from tidefield.server.ingest.pipeline import Envelope, prepare
from tidefield.server.ingest.store import LoadStrategy, Store

NOW = 1_795_000_000_000
MIN = 60_000


def _device(kind: str):
    site = next(s for s in load_sites() if s.kind == kind)
    return site, site.devices[0]


def _envelope(batch: Batch) -> Envelope:
    return Envelope(up_topic(batch.site, batch.device), encode_batch(batch), None, NOW)


def _batches(site, device, n_batches: int, per_batch: int, start_ms: int, seed: int = 1):
    rng = random.Random(seed)
    metrics = device.template.metrics
    out, t = [], start_ms
    for seq in range(n_batches):
        readings = []
        for _ in range(per_batch):
            for m in metrics:
                readings.append(Reading(m, t, round(rng.uniform(*METRICS[m].typical), 3)))
            t += MIN
        out.append(Batch(site.id, device.id, seq, tuple(readings)))
    return out


def write(url, envelopes, strategy=LoadStrategy.COPY, now_ms=NOW):
    directory = DeviceDirectory(url)
    with psycopg.connect(url) as conn:
        store = Store(conn, strategy)
        prepared = prepare(envelopes, directory, limits=Limits(), now_ms=now_ms)
        result = store.write(prepared)
    directory.close()
    return result


def rollups_match_raw(conn) -> None:
    for table, width in (("readings_5m", "5 minutes"), ("readings_1h", "1 hour")):
        mismatched = conn.execute(f"""
            WITH raw AS (
              SELECT series_id, time_bucket(INTERVAL '{width}', time) AS bucket,
                     count(*) AS count, sum(value) AS sum, min(value) AS min,
                     max(value) AS max, last(value, time) AS last, max(time) AS last_time
              FROM readings GROUP BY 1, 2)
            SELECT count(*) FROM raw FULL JOIN {table} r USING (series_id, bucket)
            WHERE raw.count IS DISTINCT FROM r.count
               OR abs(raw.sum - r.sum) > 1e-9 * greatest(1, abs(raw.sum))
               OR raw.min IS DISTINCT FROM r.min OR raw.max IS DISTINCT FROM r.max
               OR raw.last IS DISTINCT FROM r.last
               OR raw.last_time IS DISTINCT FROM r.last_time""").fetchone()[0]
        assert mismatched == 0, f"{table} differs from raw rows in {mismatched} buckets"


def snapshot(conn) -> tuple:
    return tuple(conn.execute(q).fetchall() for q in (
        "SELECT series_id, time, value FROM readings ORDER BY 1, 2",
        "SELECT * FROM readings_5m ORDER BY 1, 2",
        "SELECT * FROM readings_1h ORDER BY 1, 2",
        "SELECT device_id, min_seq, max_seq, batches, readings FROM device_status "
        "ORDER BY 1",
        "SELECT reason, detail FROM ingest_rejects ORDER BY id"))


@pytest.mark.parametrize("strategy", list(LoadStrategy))
def test_readings_and_rollups_are_stored_once(db_url, strategy):
    site, device = _device("greenhouse")
    batches = _batches(site, device, 20, 30, NOW - 30 * 24 * 60 * MIN)
    result = write(db_url, [_envelope(b) for b in batches], strategy)
    expected = sum(len(b.readings) for b in batches)
    assert result.readings_inserted == expected
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == expected
        rollups_match_raw(conn)
        before = snapshot(conn)
    # every batch a second time, in another order: nothing changes
    again = write(db_url, [_envelope(b) for b in reversed(batches)], strategy)
    assert (again.batches_new, again.readings_inserted) == (0, 0)
    with psycopg.connect(db_url) as conn:
        assert snapshot(conn) == before


def test_same_readings_under_new_sequence_numbers_are_not_doubled(db_url):
    site, device = _device("orchard")
    batches = _batches(site, device, 5, 10, NOW - 3600 * 1000 * 5)
    write(db_url, [_envelope(b) for b in batches])
    renumbered = [Batch(b.site, b.device, b.seq + 100, b.readings) for b in batches]
    # a partial overlap: the copy path must fall back and insert only the new rows
    extra = Reading(device.template.metrics[0], NOW - 1000, 5.0)
    renumbered[0] = Batch(site.id, device.id, 100, (*renumbered[0].readings, extra))
    result = write(db_url, [_envelope(b) for b in renumbered])
    assert result.batches_new == 5
    assert result.readings_inserted == 1
    with psycopg.connect(db_url) as conn:
        rollups_match_raw(conn)


def test_late_readings_correct_the_rollups(db_url):
    site, device = _device("cage_farm")
    metric = device.template.metrics[0]
    t0 = NOW - 2 * 3600 * 1000
    t0 -= t0 % 3_600_000
    first = Batch(site.id, device.id, 1, (Reading(metric, t0 + 10 * MIN, 20.0),))
    late = Batch(site.id, device.id, 0, (Reading(metric, t0 + 1 * MIN, 10.0),
                                         Reading(metric, t0 + 12 * MIN, 30.0)))
    write(db_url, [_envelope(first)])
    write(db_url, [_envelope(late)])
    with psycopg.connect(db_url) as conn:
        rollups_match_raw(conn)
        row = conn.execute("SELECT count, sum, min, max, last FROM readings_1h").fetchone()
        assert row == (3, 60.0, 10.0, 30.0, 30.0)
        status = conn.execute("SELECT min_seq, max_seq, batches FROM device_status "
                              "WHERE device_id = %s", (device.id,)).fetchone()
        assert status == (0, 1, 2)


def test_sequence_gaps_are_counted(db_url):
    site, device = _device("field_crop")
    batches = _batches(site, device, 10, 1, NOW - 3600 * 1000)
    write(db_url, [_envelope(b) for b in batches if b.seq not in (3, 4, 7)])
    with psycopg.connect(db_url) as conn:
        missing = conn.execute("SELECT missing_batches FROM device_sequence_gaps "
                               "WHERE device_id = %s", (device.id,)).fetchone()[0]
    assert missing == 3
    write(db_url, [_envelope(batches[4])])  # a late arrival fills one hole
    with psycopg.connect(db_url) as conn:
        missing = conn.execute("SELECT missing_batches FROM device_sequence_gaps "
                               "WHERE device_id = %s", (device.id,)).fetchone()[0]
    assert missing == 2


def test_bad_messages_are_kept_and_good_ones_around_them_stored(db_url):
    site, device = _device("marine_ranch")
    metric = device.template.metrics[0]
    good = _batches(site, device, 3, 2, NOW - 3600 * 1000)
    topic = up_topic(site.id, device.id)
    body = {"v": 1, "site": site.id, "device": device.id, "seq": 50,
            "readings": [{"m": metric, "t": NOW, "v": 1.0}]}
    bad = [
        Envelope(topic, b"{garbage", None, NOW),
        Envelope(up_topic(site.id, "nobody-here"), json.dumps(
            {**body, "device": "nobody-here"}).encode(), None, NOW),
        Envelope(up_topic(site.id, device.id), json.dumps(
            {**body, "device": "other-device"}).encode(), None, NOW),
        Envelope(topic, json.dumps({**body, "seq": 51, "readings": [
            {"m": metric, "t": NOW, "v": float("nan")},
            {"m": metric, "t": NOW + 60 * MIN, "v": 1.0},
            {"m": "no_such_metric", "t": NOW, "v": 1.0}]}).encode(), None, NOW),
    ]
    envelopes = [_envelope(good[0]), *bad[:2], _envelope(good[1]), *bad[2:],
                 _envelope(good[2])]
    write(db_url, envelopes)
    with psycopg.connect(db_url) as conn:
        reasons = sorted(r for (r,) in conn.execute("SELECT reason FROM ingest_rejects"))
        stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    assert reasons == sorted(["malformed", "unknown_device", "identity_mismatch",
                              "non_finite", "time_in_future", "unknown_metric"])
    assert stored == sum(len(b.readings) for b in good)
    write(db_url, envelopes)  # re-delivered: rejects are not kept twice
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM ingest_rejects").fetchone()[0] == 6


def test_binary_copy_round_trip():
    from tidefield.server.db import binary

    t = np.array([NOW, NOW + 1], dtype=np.int64)
    data = binary.encode([(np.array([3, 4], np.int32), "int4"),
                          (binary.ms_to_pg_us(t), "timestamptz"),
                          (np.array([1.5, -2.25]), "float8")])
    sid, us, val = binary.decode(data, ["int4", "timestamptz", "float8"])
    assert sid.tolist() == [3, 4] and binary.pg_us_to_ms(us).tolist() == t.tolist()
    assert val.tolist() == [1.5, -2.25]


def test_unknown_devices_are_registered_when_the_policy_says_so(db_url):
    site = load_sites()[5]
    body = {"v": 1, "site": site.id, "device": f"{site.id}-newprobe", "seq": 0,
            "readings": [{"m": "soil_moisture", "t": NOW, "v": 21.0}]}
    envelope = Envelope(up_topic(site.id, f"{site.id}-newprobe"), json.dumps(body).encode(),
                        None, NOW)
    assert write(db_url, [envelope]).readings_inserted == 0  # default policy: reject
    directory = DeviceDirectory(db_url, "register")
    with psycopg.connect(db_url) as conn:
        result = Store(conn).write(prepare([envelope], directory, limits=Limits(), now_ms=NOW))
        assert result.readings_inserted == 1
        device = conn.execute("SELECT site_id, template FROM devices WHERE id = %s",
                              (f"{site.id}-newprobe",)).fetchone()
        reasons = [r for (r,) in conn.execute("SELECT reason FROM ingest_rejects")]
    directory.close()
    assert device == (site.id, "auto")
    assert reasons == ["unknown_device"]


def test_retention_drops_old_chunks_and_rows(db_url):
    from tidefield.server.db.retention import RetentionPolicy, apply_retention

    site, device = _device("orchard")
    metric = device.template.metrics[0]
    now = int(time.time() * 1000)  # retention counts back from the database's clock
    old = Batch(site.id, device.id, 0, (Reading(metric, now - 100 * 86_400_000, 1.0),))
    new = Batch(site.id, device.id, 1, (Reading(metric, now - 60_000, 2.0),))
    write(db_url, [_envelope(old), _envelope(new)], now_ms=now)
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE ingest_batches SET received_at = now() - INTERVAL '40 days' "
                     "WHERE seq = 0")
        conn.commit()
        dropped = apply_retention(conn, RetentionPolicy(readings_days=30, rollup_5m_days=30,
                                                        rollup_1h_days=0, rejects_days=30,
                                                        batches_days=30))
        values = [v for (v,) in conn.execute("SELECT value FROM readings")]
        rollups = conn.execute("SELECT count(*) FROM readings_5m").fetchone()[0]
        hourly = conn.execute("SELECT count(*) FROM readings_1h").fetchone()[0]
        batches = [s for (s,) in conn.execute("SELECT seq FROM ingest_batches")]
    assert values == [2.0]
    assert dropped["readings"] == 1 and dropped["ingest_batches"] == 1
    assert rollups == 1  # the old 5-minute bucket went with its chunk
    assert hourly == 2  # 0 days: hourly rollups are kept forever
    assert batches == [1]


def test_an_edge_agents_own_health_is_stored_under_its_gateway(db_url):
    from tidefield.protocol.catalog import AGENT_METRICS

    site = next(s for s in load_sites() if s.kind == "cage_farm")
    gateway = next(d for d in site.devices if d.template.name == "gw")
    values = {"agent_queue_depth": 1200.0, "agent_queue_age": 35.5, "agent_dropped": 0.0,
              "agent_publish_latency": 42.0, "agent_rss": 31.4, "agent_cpu": 3.9}
    assert set(values) == set(AGENT_METRICS)
    batch = Batch(site.id, gateway.id, 0,
                  tuple(Reading(m, NOW - MIN, v) for m, v in values.items()))
    write(db_url, [_envelope(batch)])
    with psycopg.connect(db_url) as conn:
        stored = dict(conn.execute(
            """SELECT s.metric, r.value FROM readings r JOIN series s ON s.id = r.series_id
               WHERE s.device_id = %s AND s.metric LIKE 'agent_%%'""", (gateway.id,)))
        rejects = conn.execute("SELECT count(*) FROM ingest_rejects").fetchone()[0]
    assert stored == values and rejects == 0
