"""Ingest capacity: the sustained maximum stored, against the limits measured in the same
run, for each message size.

    .venv/bin/python bench/ingest.py [--seconds 20] [--workers 2] [--per-batch 500,100,1]

1. raw: binary COPY of the same kind of rows into the same `readings` table, with the same
   indexes, 20,000 rows a transaction; no rollups, no parsing (the database's limit).
2. For each message size, on a fresh private Mosquitto:
   a. bare subscriber: the same messages from the same broker to a paho subscriber that
      only counts them (QoS 1, paho acknowledging each): the limit of a consumer built on
      paho here, with its CPU per message.
   b. end to end: `tidefield ingest --workers N` decodes, validates, deduplicates, writes
      readings, rollups and device status, commits, then acknowledges. The publisher
      (bench/raw_publisher.py: prebuilt packets, so it costs little CPU) offers more than
      is stored: it stays ``--backlog`` messages ahead of what is stored, so the broker
      always holds a queue, and the rate is what `readings` gained per second over the
      window. Then the publisher stops, the backlog drains, and the run checks exactly
      once: every acknowledged message is one `ingest_batches` row, every reading one row.
   The CPU of each part over the window (publisher, broker, workers, PostgreSQL) is
   printed in cores (CPU seconds per second).
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

from bench.common import (
    children,
    cpu_seconds,
    private_broker,
    private_database,
    scratch,
    table,
)
from bench.raw_publisher import RawPublisher, build_stream
from bench.raw_subscriber import RawSubscriber
from tests.support.processes import IngestService
from tidefield.protocol import codec, mqtt
from tidefield.protocol.catalog import METRICS
from tidefield.protocol.codec import MSGPACK
from tidefield.protocol.messages import Batch, Reading
from tidefield.protocol.registry import load_sites
from tidefield.protocol.topics import up_topic
from tidefield.server.db import binary

MIN = 60_000
MESSAGE_CEILING = 50_000  # messages/s encoded ahead (the 1-reading floor is 40,000)
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


def encode_messages(sites, per_batch: int, count: int) -> list[tuple[str, bytes, int]]:
    """(topic, MessagePack payload, readings) of the fleet's next ``count`` batches."""
    stop = threading.Event()
    batches = fleet_batches(sites, stop, per_batch)
    messages = []
    for _ in range(count):
        batch = next(batches)
        messages.append((up_topic(batch.site, batch.device),
                         codec.encode_batch(batch, MSGPACK), len(batch.readings)))
    return messages


def bare_subscriber(broker, messages: list[tuple[str, bytes, int]], backlog: int
                    ) -> tuple[float, float]:
    """Messages/s from the broker to a paho subscriber that does nothing but count them
    (QoS 1, paho acknowledging each), and its CPU per message in microseconds: the limit
    of any consumer built on paho here, measured in the same run, while the (cheap)
    publisher runs in another process, ``backlog`` messages ahead of it."""
    address = mqtt.parse_mqtt_url(broker.url)
    got = {"n": 0, "first": 0.0, "last": 0.0, "cpu": 0.0}
    done = threading.Event()

    def on_message(client, userdata, msg) -> None:
        if not got["n"]:
            got["first"], got["cpu"] = time.perf_counter(), time.thread_time()
        got["n"] += 1
        if got["n"] == len(messages):
            got["last"] = time.perf_counter()
            got["cpu"] = time.thread_time() - got["cpu"]  # paho's network thread's own
            done.set()

    subscriber = mqtt.new_client("bench-bare-subscriber", address)
    subscriber.on_message = on_message
    subscriber.connect(address.host, address.port)
    subscriber.subscribe("bench-bare/#", qos=1)
    subscriber.loop_start()
    time.sleep(1)
    publisher = RawPublisher(address.host, address.port,
                             build_stream(messages, MSGPACK, topic_prefix="bench-bare/"))
    publisher.start(allowed=backlog)
    try:
        deadline = time.monotonic() + 120
        while not done.wait(0.01):  # the same bounded backlog as end to end
            publisher.allow(got["n"] + backlog)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bare subscriber got {got['n']} of {len(messages)}")
    finally:
        publisher.stop()
        subscriber.loop_stop()
        subscriber.disconnect()
    n = len(messages) - 1  # intervals between the first message and the last
    return n / max(got["last"] - got["first"], 1e-9), got["cpu"] / n * 1e6


def broker_limit(broker, messages: list[tuple[str, bytes, int]], backlog: int,
                 subscribers: int) -> dict[str, float]:
    """The broker's own delivery limit at QoS 1: ``subscribers`` raw-socket subscribers
    (bench/raw_subscriber.py, a few us of CPU a message), each subscribed to everything
    and so each getting every message, fed by the raw publisher ``backlog`` messages
    ahead of the slowest. Returns messages/s (published messages, each delivered to every
    subscriber) and the CPU per published message of the broker, of each subscriber and
    of the publisher, in us."""
    address = mqtt.parse_mqtt_url(broker.url)
    prefix = f"bench-raw-{subscribers}/"
    receivers = [RawSubscriber(address.host, address.port, prefix + "#", len(messages),
                               client_id=f"bench-raw-subscriber-{subscribers}-{k}")
                 for k in range(subscribers)]
    for receiver in receivers:
        receiver.start()
    publisher = RawPublisher(address.host, address.port,
                             build_stream(messages, MSGPACK, topic_prefix=prefix))
    cpu0 = cpu_seconds([broker.proc.pid])
    publisher.start(allowed=backlog)
    try:
        deadline = time.monotonic() + 120
        while True:
            slowest = min(receiver.received for receiver in receivers)
            if slowest >= len(messages):
                break
            publisher.allow(slowest + backlog)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the raw subscribers got {slowest:,} of {len(messages):,}")
            time.sleep(0.005)
        broker_cpu = cpu_seconds([broker.proc.pid]) - cpu0
        publisher_cpu = cpu_seconds([publisher.pid])
        results = [receiver.result(30) for receiver in receivers]
    finally:
        publisher.stop()
    n = len(messages)
    elapsed = max(r.last for r in results) - min(r.first for r in results)
    return {"rate": (n - 1) / max(elapsed, 1e-9),
            "broker_us": broker_cpu / n * 1e6,
            "subscriber_us": sum(r.cpu_s for r in results) / subscribers / n * 1e6,
            "publisher_us": publisher_cpu / n * 1e6}


def database_alone(url: str, messages: list[tuple[str, bytes, int]], postmaster: int,
                   window: int = 1000) -> dict[str, float]:
    """The database's own limit for these messages: windows prepared beforehand (decoded,
    validated, resolved: not timed), then written one after the other by ``Store.write``
    exactly as a worker writes them (batch claims, readings, rollups, device status, one
    transaction a window). Messages/s, and the CPU per message of PostgreSQL and of this
    process's writing (psycopg), in us."""
    from tidefield.server.ingest.directory import DeviceDirectory
    from tidefield.server.ingest.pipeline import Envelope, prepare
    from tidefield.server.ingest.store import Store

    now = int(time.time() * 1000)
    directory = DeviceDirectory(url)
    try:
        windows = [prepare([Envelope(topic, payload, MSGPACK, now)
                            for topic, payload, _ in messages[start:start + window]],
                           directory, limits=codec_limits(), now_ms=now)
                   for start in range(0, len(messages) - window + 1, window)]
    finally:
        directory.close()
    with psycopg.connect(url) as conn:
        store = Store(conn)
        backends = children(postmaster)
        db0, own0, started = cpu_seconds(backends), time.process_time(), time.perf_counter()
        for prepared in windows:
            store.write(prepared)
        elapsed = time.perf_counter() - started
        db_cpu, own_cpu = cpu_seconds(backends) - db0, time.process_time() - own0
    n = len(windows) * window
    reset(url)
    return {"rate": n / elapsed, "database_us": db_cpu / n * 1e6,
            "writer_us": own_cpu / n * 1e6}


def reset(url: str) -> None:
    """An empty store for the next message size (the devices' seqs start again at 0)."""
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE readings, readings_5m, readings_1h, ingest_batches, "
                     "ingest_rejects, ingest_attempts, device_status")


def end_to_end(url: str, broker, messages: list[tuple[str, bytes, int]], *, seconds: float,
               workers: int, strategy: str, rate: float, backlog: int,
               postmaster: int, env: dict[str, str]) -> dict:
    """The sustained stored rate, the backlog, the CPU of each part, then the drain and
    the exactly-once check."""
    service = IngestService(url, broker.url, scratch("tidefield-bench-ingest-"),
                            workers=workers,
                            extra_env={"TIDEFIELD_INGEST_STRATEGY": strategy, **env})
    address = mqtt.parse_mqtt_url(broker.url)
    stream = build_stream(messages, MSGPACK)
    publisher = RawPublisher(address.host, address.port, stream)
    monitor = psycopg.connect(url, autocommit=True)

    def stored_messages() -> int:
        """Batches committed: device_status keeps a count per device (a thousand rows to
        add up, where counting ingest_batches would read every row)."""
        return int(monitor.execute(
            "SELECT coalesce(sum(batches), 0) FROM device_status").fetchone()[0])

    def count(what: str) -> int:
        return int(monitor.execute(f"SELECT count(*) FROM {what}").fetchone()[0])

    def cpu() -> dict[str, float]:
        return {"publisher": cpu_seconds([publisher.pid]),
                "broker": cpu_seconds([broker.proc.pid]),
                "workers": cpu_seconds(service.worker_pids()),
                "database": cpu_seconds(children(postmaster))}

    try:
        service.wait_healthy()
        inserted0 = stored_messages()
        publisher.start(allowed=backlog)
        started = time.perf_counter()

        def offer_until(deadline: float) -> None:
            """Keep the publisher ``backlog`` messages ahead of what is stored (and, with
            --rate, no faster than that)."""
            while time.perf_counter() < deadline:
                allowed = stored_messages() - inserted0 + backlog
                if rate:
                    allowed = min(allowed, int(rate * (time.perf_counter() - started)))
                publisher.allow(allowed)
                time.sleep(0.1)

        offer_until(started + 5)  # warm up: fill the pipes
        c0, t0, cpu0 = count("readings"), time.perf_counter(), cpu()
        offer_until(t0 + seconds)
        c1, t1, cpu1 = count("readings"), time.perf_counter(), cpu()
        queued = publisher.sent - stored_messages()
        publisher.stop()  # nothing more is sent
        # what was written whole to the broker's socket before its DISCONNECT: the broker
        # takes all of it (its PUBACKs for the last few may be cut short by the stop)
        published = publisher.sent
        published_readings = publisher.readings_in(published)
        drain_started = time.perf_counter()
        while count("ingest_batches") < published and \
                time.perf_counter() - drain_started < 180:
            time.sleep(0.5)
        drained_s = time.perf_counter() - drain_started
        batches, batch_readings = monitor.execute(
            "SELECT count(*), coalesce(sum(readings), 0) FROM ingest_batches").fetchone()
        readings, rejects = count("readings"), count("ingest_rejects")
        exactly_once = (batches == published and batch_readings == readings
                        == published_readings and rejects == 0)
        return {"stored": (c1 - c0) / (t1 - t0),
                "messages": (c1 - c0) / (t1 - t0) / (published_readings / published),
                "backlog": queued, "drained_s": drained_s,
                "cores": {part: (cpu1[part] - cpu0[part]) / (t1 - t0) for part in cpu0},
                "acked": publisher.acked,
                "exactly_once": "yes" if exactly_once else
                f"NO: {published:,} messages ({published_readings:,} readings) published, "
                f"{batches:,} batches ({batch_readings:,} readings) claimed, {readings:,} "
                f"readings stored, {rejects:,} rejects"}
    finally:
        publisher.stop()
        monitor.close()
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
    messages = iter(encode_messages(sites, per_batch, windows * 1000))
    now = int(time.time() * 1000)
    prepared_s = written_s = 0.0
    directory = DeviceDirectory(url)
    profiler = cProfile.Profile()
    with psycopg.connect(url) as conn:
        store = Store(conn)
        for _ in range(windows):
            window = [Envelope(topic, payload, MSGPACK, now) for topic, payload, _ in
                      (next(messages) for _ in range(1000))]
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
    parser.add_argument("--seconds", type=float, default=20, help="measured window per size")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--per-batch", default="500,100,1",
                        help="readings per MQTT message; several sizes in turn: 500,100,1")
    parser.add_argument("--rate", type=float, default=0,
                        help="messages/s offered at most; 0 (default): as many as the "
                             "backlog allows, so the stored rate is the sustained maximum")
    parser.add_argument("--backlog", type=int, default=0,
                        help="messages the offer stays ahead of what is stored (default: "
                             "5,000, at most 1 M readings); Mosquitto slows down as its "
                             "queue for a subscriber grows, so keep it near what the "
                             "workers hold in flight")
    parser.add_argument("--env", action="append", default=[],
                        help="NAME=VALUE for the ingest service (a setting to try), repeatable")
    parser.add_argument("--variant", action="append", default=[],
                        help="LABEL:NAME=VALUE[,NAME=VALUE...]: one more end-to-end run per "
                             "size with these settings, in the same run (repeatable; the "
                             "first run is always the settings as given, 'default')")
    parser.add_argument("--ceiling", type=float, default=MESSAGE_CEILING,
                        help="messages/s encoded ahead (more than can be stored)")
    parser.add_argument("--bare-messages", type=int, default=150_000,
                        help="messages to the bare subscriber (at most 100 MB of them)")
    parser.add_argument("--strategy", choices=["copy", "staging"], default="copy")
    parser.add_argument("--raw-seconds", type=float, default=20)
    parser.add_argument("--decode-only", action="store_true",
                        help="only the JSON decoding comparison (no database, no broker)")
    parser.add_argument("--limits-only", action="store_true",
                        help="only the broker's limits (raw and paho subscribers), no ingest")
    parser.add_argument("--profile", action="store_true",
                        help="profile a worker's prepare and write of small messages")
    args = parser.parse_args()
    sizes = [int(size) for size in args.per_batch.split(",")]
    if args.profile:
        with private_database() as (_, url):
            profile_small_messages(url, sizes[-1])
        return
    if args.decode_only:
        rows = []
        for per_message in (1, 10, 100, 500):
            stdlib, fast = decoding(2.0, per_message)
            rows.append((f"{per_message}", f"{stdlib:,.0f}", f"{fast:,.0f}",
                         f"{fast / stdlib:.2f}"))
        print(table(rows, ("readings/message", "json msgs/s", "orjson msgs/s", "ratio")))
        return
    os.environ.setdefault("TIDEFIELD_LOG_LEVEL", "WARNING")
    env = dict(pair.split("=", 1) for pair in args.env)
    variants: list[tuple[str, dict[str, str]]] = [("default", {})]
    for spec in args.variant:
        label, _, settings = spec.partition(":")
        variants.append((label, dict(pair.split("=", 1) for pair in settings.split(","))))
    sites = load_sites()
    rows, cores, limit_rows, database_rows = [], [], [], []
    with private_database() as (cluster, url):
        postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
        raw = 0.0 if args.limits_only else raw_copy(url, args.raw_seconds, rows_per_tx=20_000)
        print(f"raw binary COPY (the limit): {raw:,.0f} readings/s", flush=True)
        for per_batch in sizes:
            backlog = args.backlog or min(5_000, max(100, 1_000_000 // per_batch))
            per_second = min(args.ceiling, 1_000_000 / per_batch)
            wanted = int(per_second * (args.seconds + 5)) + backlog
            messages = encode_messages(sites, per_batch, wanted)
            size = sum(len(payload) for _, payload, _ in messages) / len(messages)
            bare_count = min(args.bare_messages, int(100e6 / size), len(messages))
            reset(url)
            with private_broker() as broker:
                limits = [broker_limit(broker, messages[:bare_count], backlog, k)
                          for k in (1, 2)]
                bare, bare_us = bare_subscriber(broker, messages[:bare_count], backlog)
            limit_rows.append((messages[0][2], f"{size:,.0f}", *(
                f"{lim['rate']:,.0f}" for lim in limits), *(
                f"{lim['broker_us']:.1f}" for lim in limits),
                f"{limits[0]['subscriber_us']:.1f}",
                f"{limits[0]['publisher_us']:.1f}",
                f"{bare:,.0f} ({bare_us:.0f} us)"))
            print(f"{messages[0][2]} readings a message: broker to 1 raw subscriber "
                  f"{limit_rows[-1][2]} messages/s, to 2 (each all) {limit_rows[-1][3]}; "
                  f"broker CPU {limit_rows[-1][4]} / {limit_rows[-1][5]} us a message; "
                  f"paho {limit_rows[-1][-1]}", flush=True)
            alone = database_alone(url, messages[:min(len(messages), 30_000)], postmaster)
            print(f"{messages[0][2]} readings a message, the database alone: "
                  f"{alone['rate']:,.0f} messages/s, PostgreSQL {alone['database_us']:.1f} us "
                  f"and the writer {alone['writer_us']:.1f} us of CPU a message", flush=True)
            database_rows.append((messages[0][2], f"{alone['rate']:,.0f}",
                                  f"{alone['database_us']:.1f}", f"{alone['writer_us']:.1f}"))
            if args.limits_only:
                continue
            per_message = messages[0][2]
            for label, variant_env in variants:
                reset(url)
                with private_broker() as broker:  # fresh: no queue left by the last one
                    result = end_to_end(url, broker, messages,
                                        seconds=args.seconds, workers=args.workers,
                                        strategy=args.strategy, rate=args.rate,
                                        backlog=backlog, postmaster=postmaster,
                                        env={**env, **variant_env})
                rows.append((per_message, label, f"{size:,.0f}", f"{result['stored']:,.0f}",
                             f"{result['messages']:,.0f}", f"{result['stored'] / raw:.2f}",
                             f"{result['messages'] / limits[0]['rate']:.2f}",
                             f"{result['messages'] / bare:.2f}",
                             f"{result['backlog']:,} (drained in {result['drained_s']:.0f} s)"
                             if result["backlog"] > 0 else
                             "0: the offer ran out, the rate is a floor (raise --ceiling)",
                             result["exactly_once"]))
                cores.append((per_message, label, *(
                    f"{c:.2f} ({c / result['messages'] * 1e6:.1f} us)"
                    for c in result["cores"].values())))
                print(f"{per_message} readings a message, {label}: {rows[-1][3]} readings/s, "
                      f"{rows[-1][4]} messages/s, exactly once: {rows[-1][-1]} (PUBACKs "
                      f"counted by the publisher: {result['acked']:,})", flush=True)
    print("\nthe broker's delivery limit at QoS 1 (raw-socket subscribers, each getting "
          "every message), CPU per published message in us\n")
    print(table(limit_rows, ("readings/msg", "bytes/msg", "to 1 raw msgs/s", "to 2 raw msgs/s",
                             "broker us (1)", "broker us (2)", "raw subscriber us",
                             "publisher us", "bare paho subscriber msgs/s (CPU)")))
    print("\nthe database alone: prepared windows of 1,000 messages written as a worker "
          "writes them, one after the other\n")
    print(table(database_rows, ("readings/msg", "messages/s", "PostgreSQL us a message",
                                "writer (psycopg) us a message")))
    if args.limits_only:
        return
    print(f"\nraw binary COPY (the limit): {raw:,.0f} readings/s; {args.workers} workers, "
          f"strategy {args.strategy}, {args.seconds:.0f} s windows\n")
    print(table(rows, ("readings/msg", "variant", "bytes/msg", "stored readings/s",
                       "messages/s", "of raw COPY", "of the broker (1 raw subscriber)",
                       "of bare paho", "backlog at the end", "exactly once")))
    print("\ncores used over the window (CPU seconds per second), and CPU per stored "
          "message\n")
    print(table(cores, ("readings/msg", "variant", "publisher", "broker", "workers",
                        "database")))


if __name__ == "__main__":
    main()
