"""Ingest throughput: raw binary COPY (the limit) against the whole path, in one run.

    .venv/bin/python bench/ingest.py [--seconds 60] [--workers 2] [--strategy copy]

1. raw: binary COPY of the same rows into the same `readings` table, with the same
   indexes, in transactions of the same size the workers use; no rollups, no parsing.
2. end to end: firmware-sim site gateways publish MessagePack batches to a private
   Mosquitto at QoS 1; `tidefield ingest --workers N` decodes, validates, deduplicates,
   writes readings, rollups and device status, commits, then acknowledges. The rate is
   what the database gained per second over the measured window.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import private_broker, private_database, scratch, table
from tests.support.processes import IngestService
from tidefield.protocol import mqtt
from tidefield.protocol.catalog import METRICS
from tidefield.protocol.codec import MSGPACK
from tidefield.protocol.messages import Batch, Reading
from tidefield.protocol.registry import load_sites
from tidefield.server.db import binary
from tidefield.sim.fleet_publisher import Encoded, FleetPublisher

MIN = 60_000
MESSAGE_CEILING = 40_000  # messages/s encoded ahead for --rate 0 (memory: about 1 KB each)
PER_BATCH = 500  # readings per MQTT message: an edge agent flushing its backlog (--per-batch)


def raw_copy(url: str, seconds: float, rows_per_tx: int) -> float:
    with psycopg.connect(url) as conn:
        series = [r[0] for r in conn.execute("SELECT id FROM series")]
        n_series = len(series)
        sid_all = np.array(series, dtype=np.int32)
        start = int(time.time() * 1000) - 300 * 86_400_000
        rng = np.random.default_rng(1)
        done, t0, step = 0, time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            idx = np.arange(done, done + rows_per_tx)
            sid = sid_all[idx % n_series]
            tms = start + (idx // n_series) * MIN
            data = binary.encode([(sid, "int4"), (binary.ms_to_pg_us(tms), "timestamptz"),
                                  (rng.random(rows_per_tx), "float8")])
            with conn.transaction(), conn.cursor() as cur, \
                    cur.copy("COPY readings (series_id, time, value) FROM STDIN "
                             "(FORMAT BINARY)") as copy:
                copy.write(data)
            done += rows_per_tx
            step += 1
        rate = done / (time.perf_counter() - t0)
        conn.execute("TRUNCATE readings")
        conn.commit()
    return rate


def fleet_batches(sites, stop: threading.Event, per_batch: int = PER_BATCH):
    """Batches of every device in turn, each per_batch readings on the device's time grid,
    endlessly (until stop), starting 30 days ago."""
    rng = np.random.default_rng(7)
    start = int(time.time() * 1000) - 30 * 86_400_000
    devices = [(s.id, d) for s in sites for d in s.devices]
    cursor = {d.id: start for _, d in devices}
    seq = dict.fromkeys(cursor, 0)
    # valid values for every metric: a position in each metric's typical range
    unit = rng.random(1 << 16).round(3).tolist()
    vi = 0
    while not stop.is_set():
        for site_id, device in devices:
            metrics = device.template.metrics
            per_metric = max(1, per_batch // len(metrics))
            t = cursor[device.id]
            readings = []
            for k in range(per_metric):
                for m in metrics:
                    low, high = METRICS[m].typical
                    readings.append(Reading(m, t + k * MIN, low + (high - low) * unit[vi & 0xFFFF]))
                    vi += 1
            del readings[per_batch:]  # fewer readings than the device has metrics
            cursor[device.id] = t + per_metric * MIN
            yield Batch(site_id, device.id, seq[device.id], tuple(readings))
            seq[device.id] += 1


def bare_subscriber(broker_url: str, messages: list[Encoded]) -> float:
    """Messages/s from the broker to a subscriber that does nothing but count them (QoS 1,
    paho acknowledging each): the limit of any consumer built on paho here, measured in
    the same run. The publisher runs at the same time, as it does end to end."""
    address = mqtt.parse_mqtt_url(broker_url)
    got = {"n": 0, "first": 0.0, "last": 0.0}
    done = threading.Event()

    def on_message(client, userdata, msg) -> None:
        if not got["n"]:
            got["first"] = time.perf_counter()
        got["n"] += 1
        got["last"] = time.perf_counter()
        if got["n"] == len(messages):
            done.set()

    subscriber = mqtt.new_client("bench-bare-subscriber", address)
    subscriber.on_message = on_message
    subscriber.connect(address.host, address.port)
    subscriber.subscribe("bench-bare/#", qos=1)
    subscriber.loop_start()
    time.sleep(1)
    publisher = FleetPublisher(address, load_sites(), content_type=MSGPACK,
                               client_prefix="bench-bare", window=1000, connections=4)
    publisher.start()
    try:
        publisher.publish_encoded([m._replace(topic="bench-bare/" + m.topic)
                                   for m in messages])
        done.wait(60)
    finally:
        publisher.stop(offline=False)
        subscriber.loop_stop()
        subscriber.disconnect()
    return got["n"] / max(got["last"] - got["first"], 1e-9)


def end_to_end(url: str, broker_url: str, seconds: float, workers: int, strategy: str,
               rate: float, per_batch: int, ceiling: float) -> tuple[float, dict]:
    sites = load_sites()
    service = IngestService(url, broker_url, scratch("tidefield-bench-ingest-"),
                            workers=workers,
                            extra_env={"TIDEFIELD_INGEST_STRATEGY": strategy})
    publisher = FleetPublisher(mqtt.parse_mqtt_url(broker_url), sites, content_type=MSGPACK,
                               client_prefix="bench", window=1000, connections=4)
    # Encode everything first: the devices are not part of what is measured, and on a
    # 2-core machine their CPU would be taken from the database and the workers.
    stop = threading.Event()
    batches = fleet_batches(sites, stop, per_batch)
    # rate 0: as fast as the publisher goes, so that more is offered than stored and what
    # is stored is the sustained maximum (the backlog at the end shows it was exceeded)
    needed = int((rate or min(ceiling, MESSAGE_CEILING * per_batch)) * (seconds + 10))
    messages, readings = [], 0
    while readings < needed:
        message = publisher.encode(next(batches))
        messages.append(message)
        readings += message[3]
    try:
        service.wait_healthy()
        publisher.start()
        thread = threading.Thread(target=publisher.publish_encoded,
                                  args=(messages, rate / per_batch if rate else None),
                                  daemon=True)
        thread.start()

        def count():
            with psycopg.connect(url) as conn:
                return conn.execute("SELECT count(*) FROM readings").fetchone()[0]

        time.sleep(5)  # warm up: fill the pipes
        c0, t0 = count(), time.perf_counter()
        time.sleep(seconds)
        c1, t1 = count(), time.perf_counter()
        backlog = publisher.stats.readings - c1
        return (c1 - c0) / (t1 - t0), {"published": publisher.stats.readings,
                                       "backlog": backlog, "sample": messages[:50_000]}
    finally:
        publisher.stop(offline=False)
        service.stop()


def decoding(seconds: float, per_message: int) -> tuple[float, float]:
    """Messages/s decoded and validated from JSON: the standard library's json against
    the codec (orjson), the same payloads, the same validation, in this run."""
    from tidefield.protocol import codec

    site = load_sites()[0]
    device = site.devices[0]
    metric = device.template.metrics[0]
    value = sum(METRICS[metric].typical) / 2
    now = int(time.time() * 1000)
    payloads = [codec.encode_batch(Batch(site.id, device.id, seq, tuple(
        Reading(metric, now - (seq * per_message + i) * MIN, value)
        for i in range(per_message)))) for seq in range(200)]
    rates = []
    fast = codec._json_loads
    for loads in (json.loads, fast):
        codec._json_loads = loads  # the one seam: which parser the codec calls
        try:
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                for payload in payloads:
                    codec.decode_batch(payload, codec.JSON, now_ms=now)
                done += len(payloads)
            rates.append(done / (time.perf_counter() - started))
        finally:
            codec._json_loads = fast
    return rates[0], rates[1]


def profile_small_messages(url: str, per_batch: int, windows: int = 30) -> None:
    """Where the time of one message goes once it is in a worker: ``prepare`` (decode,
    validate, resolve) and ``Store.write`` (the transaction), windows of 1000 messages,
    under cProfile; what paho costs per message is the bare subscriber's figure."""
    import cProfile
    import pstats

    from tidefield.server.ingest.directory import DeviceDirectory
    from tidefield.server.ingest.pipeline import Envelope, prepare
    from tidefield.server.ingest.store import Store

    sites = load_sites()
    publisher = FleetPublisher(mqtt.parse_mqtt_url("mqtt://127.0.0.1:1"), sites,
                               content_type=MSGPACK)
    stop = threading.Event()
    batches = fleet_batches(sites, stop, per_batch)
    now = int(time.time() * 1000)
    prepared_s = written_s = 0.0
    directory = DeviceDirectory(url)
    profiler = cProfile.Profile()
    with psycopg.connect(url) as conn:
        store = Store(conn)
        for _ in range(windows):
            window = [Envelope(topic, payload, MSGPACK, now) for _, topic, payload, _ in
                      (publisher.encode(next(batches)) for _ in range(1000))]
            profiler.enable()
            started = time.perf_counter()
            prepared = prepare(window, directory, limits=codec_limits(), now_ms=now)
            middle = time.perf_counter()
            store.write(prepared)
            written_s += time.perf_counter() - middle
            prepared_s += middle - started
            profiler.disable()
    directory.close()
    messages = windows * 1000
    print(f"per message ({per_batch} readings): prepare {prepared_s / messages * 1e6:.1f} us, "
          f"write {written_s / messages * 1e6:.1f} us "
          f"(one worker: {messages / (prepared_s + written_s):,.0f} messages/s)")
    stats = pstats.Stats(profiler).sort_stats("tottime")
    stats.print_stats(12)
    stats.print_callers("search|_dump_list")


def codec_limits():  # the default limits, imported when profiling
    from tidefield.protocol.codec import DEFAULT_LIMITS

    return DEFAULT_LIMITS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=0,
                        help="readings/s the fleet offers; 0 (default): as fast as it can, "
                             "so the stored rate is the sustained maximum")
    parser.add_argument("--ceiling", type=float, default=400_000,
                        help="readings/s encoded ahead for --rate 0 (more than can be stored)")
    parser.add_argument("--strategy", choices=["copy", "staging"], default="copy")
    parser.add_argument("--per-batch", type=int, default=PER_BATCH,
                        help="readings per MQTT message")
    parser.add_argument("--raw-seconds", type=float, default=20)
    parser.add_argument("--decode-only", action="store_true",
                        help="only the JSON decoding comparison (no database, no broker)")
    parser.add_argument("--profile", action="store_true",
                        help="profile a worker's prepare and write of small messages")
    args = parser.parse_args()
    if args.profile:
        with private_database() as (_, url):
            profile_small_messages(url, args.per_batch)
        return
    rows = []
    for per_message in (1, 10, 100, 500):
        stdlib, fast = decoding(2.0, per_message)
        rows.append((f"{per_message}", f"{stdlib:,.0f}", f"{fast:,.0f}", f"{fast / stdlib:.2f}"))
    print(table(rows, ("readings/message", "json msgs/s", "orjson msgs/s", "ratio")))
    if args.decode_only:
        return
    os.environ.setdefault("TIDEFIELD_LOG_LEVEL", "WARNING")
    with private_database() as (_, url), private_broker() as broker:
        raw = raw_copy(url, args.raw_seconds, rows_per_tx=20_000)
        e2e, info = end_to_end(url, broker.url, args.seconds, args.workers, args.strategy,
                               args.rate, args.per_batch, args.ceiling)
        bare = bare_subscriber(broker.url, info["sample"])
    per_message = info["sample"][0][3]
    print(table([("raw binary COPY (the limit)", f"{raw:,.0f}", "", "1.00"),
                 (f"end to end ({args.workers} workers, {args.strategy})", f"{e2e:,.0f}",
                  f"{e2e / per_message:,.0f}", f"{e2e / raw:.2f}"),
                 ("bare paho subscriber (messages only)", "", f"{bare:,.0f}",
                  f"{e2e / per_message / bare:.2f} of its messages/s")],
                ("path", "readings/s", "messages/s", "ratio")))
    offered = "as fast as the publisher goes" if not args.rate else f"{args.rate:,.0f}/s"
    sustained = "yes" if info["backlog"] > 0 else "no: all offered was stored (offer more)"
    print(f"window {args.seconds:.0f} s; {per_message} readings a message; offered "
          f"{offered}; published {info['published']:,} readings; not yet stored at the end "
          f"{info['backlog']:,} (the offer exceeded the storing: {sustained})")


if __name__ == "__main__":
    main()
