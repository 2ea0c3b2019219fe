"""Ingest workers side by side (docs/scale-out.md): raw binary COPY (the limit) against
the whole path with 1, 2, 4... workers in one run, with broker, worker and database CPU.
(bench/ingest.py is the capacity benchmark: the sustained maximum of one configuration.)

    .venv/bin/python bench/ingest_workers.py --workers 1,2,4 --rate 400000 --seconds 30 --broker

1. raw: binary COPY of the same rows into the same `readings` table, with the same
   indexes, in transactions of the same size the workers use; no rollups, no parsing.
2. end to end: firmware-sim site gateways publish MessagePack batches to a private
   Mosquitto at QoS 1; `tidefield ingest --workers N` decodes, validates, deduplicates,
   writes readings, rollups and device status, commits, then acknowledges. The rate is
   what the database gained per second over the measured window. With several worker
   counts (``--workers 1,2,4``) each runs in turn against the same database and broker,
   and the CPU each part used over the window is printed: the broker (Mosquitto), the
   workers together and the PostgreSQL backends, in cores (CPU seconds per second).
3. ``--broker``: the broker alone, before the rest: the same messages to a bare
   subscriber that only counts them (QoS 1 both ways), as fast as the broker passes them.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import children, cpu_seconds, private_broker, private_database, scratch, table
from bench.ingest import PER_BATCH, fleet_batches, raw_copy
from tests.support.processes import IngestService
from tidefield.protocol import mqtt
from tidefield.protocol.codec import MSGPACK
from tidefield.protocol.registry import load_sites
from tidefield.sim.fleet_publisher import FleetPublisher

# the raw COPY limit and the fleet's batches are the capacity benchmark's own

def encode_ahead(publisher: FleetPublisher, batches, readings_needed: int) -> list:
    """Encode first: the devices are not part of what is measured, and on a 2-core
    machine their CPU would be taken from the broker, the database and the workers."""
    messages, readings = [], 0
    while readings < readings_needed:
        message = publisher.encode(next(batches))
        messages.append(message)
        readings += message[3]
    return messages


def bare_subscriber(broker_url: str, seconds: float, per_batch: int) -> tuple[float, float]:
    """Messages/s and readings/s the broker passes from the fleet's connections to one
    subscriber that only counts (QoS 1 both ways), publishing as fast as acks allow."""
    sites = load_sites()
    address = mqtt.parse_mqtt_url(broker_url)
    publisher = FleetPublisher(address, sites, content_type=MSGPACK,
                               client_prefix="bench-bare", window=1000, connections=4)
    stop = threading.Event()
    # the broker does not look inside: a few thousand messages, sent round and round
    distinct = encode_ahead(publisher, fleet_batches(sites, stop, per_batch),
                            5_000 * per_batch)
    messages = itertools.islice(itertools.cycle(distinct), 5_000_000)
    received = [0]
    client = mqtt.new_client("bench-bare-subscriber", address)
    client.on_message = lambda *_: received.__setitem__(0, received[0] + 1)
    client.on_connect = lambda c, *_: c.subscribe("tf/v1/+/+/up", qos=1)
    mqtt.connect(client, address, clean_start=True)
    client.loop_start()
    try:
        time.sleep(1)
        publisher.start()
        thread = threading.Thread(target=publisher.publish_encoded, args=(messages, None),
                                  daemon=True)
        thread.start()
        time.sleep(3)
        n0, t0 = received[0], time.perf_counter()
        time.sleep(seconds)
        n1, t1 = received[0], time.perf_counter()
        stop.set()
    finally:
        publisher.stop(offline=False)  # ends publish_encoded: its acks wait no more
        client.disconnect()
        client.loop_stop()
    rate = (n1 - n0) / (t1 - t0)
    return rate, rate * per_batch


def end_to_end(url: str, broker, seconds: float, workers: int, strategy: str,
               rate: float, per_batch: int, batches, postmaster: int) -> tuple[float, dict]:
    sites = load_sites()
    broker_url = broker.url
    service = IngestService(url, broker_url, scratch("tidefield-bench-ingest-"),
                            workers=workers,
                            extra_env={"TIDEFIELD_INGEST_STRATEGY": strategy})
    publisher = FleetPublisher(mqtt.parse_mqtt_url(broker_url), sites, content_type=MSGPACK,
                               client_prefix=f"bench-{workers}", window=1000, connections=4)
    messages = encode_ahead(publisher, batches, int(rate * (seconds + 10)))
    try:
        service.wait_healthy()
        with psycopg.connect(url) as conn:
            before = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        publisher.start()
        thread = threading.Thread(target=publisher.publish_encoded,
                                  args=(messages, rate / per_batch), daemon=True)
        thread.start()

        def count():
            with psycopg.connect(url) as conn:
                return conn.execute("SELECT count(*) FROM readings").fetchone()[0]

        def cpu() -> dict[str, float]:
            return {"broker": cpu_seconds([broker.proc.pid]),
                    "workers": cpu_seconds(service.worker_pids()),
                    "database": cpu_seconds(children(postmaster))}

        time.sleep(5)  # warm up: fill the pipes
        c0, t0, cpu0 = count(), time.perf_counter(), cpu()
        time.sleep(seconds)
        c1, t1, cpu1 = count(), time.perf_counter(), cpu()
        backlog = publisher.stats.readings - (c1 - before)
        cores = {part: (cpu1[part] - cpu0[part]) / (t1 - t0) for part in cpu0}
        return (c1 - c0) / (t1 - t0), {"published": publisher.stats.readings,
                                       "backlog": backlog, "cores": cores}
    finally:
        publisher.stop(offline=False)
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", default="2",
                        help="worker count, or several in turn: 1,2,4")
    parser.add_argument("--rate", type=float, default=150_000,
                        help="readings/s the fleet offers (above the target, so the "
                             "workers are what limits)")
    parser.add_argument("--strategy", choices=["copy", "staging"], default="copy")
    parser.add_argument("--per-batch", type=int, default=PER_BATCH,
                        help="readings per MQTT message")
    parser.add_argument("--raw-seconds", type=float, default=20)
    parser.add_argument("--broker", action="store_true",
                        help="also measure the broker alone with a bare subscriber")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    os.environ.setdefault("TIDEFIELD_LOG_LEVEL", "WARNING")
    rows, notes = [], []
    with private_database() as (cluster, url), private_broker() as broker:
        postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
        raw = raw_copy(url, args.raw_seconds, rows_per_tx=20_000)
        rows.append(("raw binary COPY (the limit)", f"{raw:,.0f}", "1.00", "", "", ""))
        if args.broker:
            messages, readings = bare_subscriber(broker.url, min(args.seconds, 20),
                                                 args.per_batch)
            rows.append((f"broker to a bare subscriber ({messages:,.0f} msg/s)",
                         f"{readings:,.0f}", f"{readings / raw:.2f}", "", "", ""))
        stop = threading.Event()
        batches = fleet_batches(load_sites(), stop, args.per_batch)
        for workers in counts:
            e2e, info = end_to_end(url, broker, args.seconds, workers, args.strategy,
                                   args.rate, args.per_batch, batches, postmaster)
            cores = info["cores"]
            rows.append((f"end to end ({workers} workers, {args.strategy})", f"{e2e:,.0f}",
                         f"{e2e / raw:.2f}", f"{cores['broker']:.2f}",
                         f"{cores['workers']:.2f}", f"{cores['database']:.2f}"))
            notes.append(f"{workers} workers: published {info['published']:,}, not yet "
                         f"stored at the end {info['backlog']:,}")
    print(table(rows, ("path", "readings/s", "ratio to raw", "broker cores",
                       "worker cores", "database cores")))
    print(f"window {args.seconds:.0f} s; offered {args.rate:,.0f} readings/s in "
          f"{args.per_batch}-reading messages; {os.cpu_count()} cores")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
