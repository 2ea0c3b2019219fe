"""What Mosquitto's persistence settings cost: ``autosave_interval`` 1-5 s and
``autosave_on_changes`` against today's 30 s, in one run, on private brokers.

    .venv/bin/python bench/broker_autosave.py [--seconds 20] [--backlog 100000]

Mosquitto 2.0 keeps messages in memory and writes its whole persistence file every
``autosave_interval`` seconds (with ``autosave_on_changes``: after that many changes) and
at a clean stop. What a broker killed with SIGKILL forgets is what came since the last
save; the receipts make that harmless (the agents send it again), so this only chooses
how much to spend on shrinking the window.

For each setting, a fresh broker, a persistent session (the ingest workers') that is away,
so every message is queued for it, and:

1. fleet rate: ``--rate`` messages/s of ~1.3 KB (a batch of 20 readings) for
   ``--seconds``: the broker's CPU share of one core (utime+stime from /proc).
2. backlog: ``--backlog`` more messages published as fast as QoS 1 with 500 in flight
   allows: messages/s, and the broker's CPU share while doing it.
3. holding it: the backlog kept for ``--seconds`` with nothing arriving: the broker's CPU
   share (each save rewrites the whole file) and the file's size.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import scratch, table
from tidefield.protocol import codec, mqtt
from tidefield.protocol.messages import Batch, Reading
from tidefield.server.embedded import MosquittoBroker

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SETTINGS = {  # label -> extra config lines (later lines win over the defaults)
    "autosave_interval 30 (today)": ["autosave_interval 30"],
    "autosave_interval 5": ["autosave_interval 5"],
    "autosave_interval 2": ["autosave_interval 2"],
    "autosave_interval 1": ["autosave_interval 1"],
    "autosave_on_changes, every 1,000": ["autosave_on_changes true",
                                         "autosave_interval 1000"],
}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def payloads(n: int) -> list[bytes]:
    t0 = int(time.time() * 1000) - 86_400_000
    return [codec.encode_batch(Batch("oc-001", "oc-001-sonde", seq, tuple(
        Reading("water_temperature", t0 + seq * 20_000 + i * 1000, 15.0 + i / 10)
        for i in range(20)))) for seq in range(n)]


def away_session(url: str) -> None:
    """The ingest workers' persistent session, subscribed, then gone: the broker queues."""
    address = mqtt.parse_mqtt_url(url)
    client = mqtt.new_client("bench-away", address)
    subscribed = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("tf/v1/+/+/up", qos=1)
    client.on_subscribe = lambda *a: subscribed.set()
    mqtt.connect(client, address, clean_start=False, session_expiry_s=86_400)
    client.loop_start()
    if not subscribed.wait(10):
        raise TimeoutError("could not subscribe")
    client.disconnect()
    client.loop_stop()


def publish(url: str, messages: list[bytes], rate: float | None) -> float:
    """Publish at QoS 1 (paced at ``rate``/s, or as fast as 500 in flight allow) and
    wait for every PUBACK; seconds taken."""
    address = mqtt.parse_mqtt_url(url)
    client = mqtt.new_client(f"bench-pub-{os.getpid()}", address)
    client.max_inflight_messages_set(500)
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    mqtt.connect(client, address, clean_start=True)
    client.loop_start()
    connected.wait(10)
    started = time.perf_counter()
    infos = []
    for n, payload in enumerate(messages):
        if rate:
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        infos.append(client.publish("tf/v1/oc-001/oc-001-sonde/up", payload, qos=1))
        if len(infos) >= 1000:  # a window of our own, so paho's queue stays small
            for info in infos[:500]:
                info.wait_for_publish(60)
            del infos[:500]
    for info in infos:
        info.wait_for_publish(60)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return elapsed


def measure(extra: list[str], rate: float, seconds: float, backlog: list[bytes],
            fleet: list[bytes]) -> tuple[float, float, float, float, float]:
    """(CPU % at the fleet's rate, backlog messages/s, CPU % publishing the backlog,
    CPU % holding it, persistence file MB)."""
    broker = MosquittoBroker(scratch("tidefield-bench-autosave-"), extra_conf=extra)
    broker.start()
    try:
        assert broker.proc is not None
        pid = broker.proc.pid
        away_session(broker.url)
        c0, w0 = cpu_seconds(pid), time.perf_counter()
        publish(broker.url, fleet, rate)
        c1, w1 = cpu_seconds(pid), time.perf_counter()
        taken = publish(broker.url, backlog, None)
        c2, w2 = cpu_seconds(pid), time.perf_counter()
        time.sleep(seconds)
        c3, w3 = cpu_seconds(pid), time.perf_counter()
        db = broker.base / "mosquitto.db"
        size = db.stat().st_size / 2**20 if db.exists() else 0.0
        return (100 * (c1 - c0) / (w1 - w0), len(backlog) / taken,
                100 * (c2 - c1) / (w2 - w1), 100 * (c3 - c2) / (w3 - w2), size)
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=100, help="fleet messages/s")
    parser.add_argument("--backlog", type=int, default=100_000)
    args = parser.parse_args()
    fleet = payloads(int(args.rate * args.seconds))
    backlog = payloads(args.backlog)
    print(f"{len(fleet):,} messages at {args.rate:g}/s, then a backlog of "
          f"{args.backlog:,} ({sum(map(len, backlog)) / 2**20:.0f} MB) held for "
          f"{args.seconds:g} s, per setting...", flush=True)
    results = {}
    for label, extra in SETTINGS.items():
        print(f"  {label}...", flush=True)
        results[label] = measure(extra, args.rate, args.seconds, backlog, fleet)
    base = results["autosave_interval 30 (today)"]
    rows = [(label, f"{fleet_cpu:.2f}", f"{rate:,.0f}", f"{rate / base[1]:.2f}",
             f"{burst_cpu:.1f}", f"{hold_cpu:.2f}", f"{size:.0f}")
            for label, (fleet_cpu, rate, burst_cpu, hold_cpu, size) in results.items()]
    print(table(rows, ("setting", f"CPU % at {args.rate:g} msg/s", "backlog msg/s",
                       "ratio to 30 s", "CPU % taking backlog", "CPU % holding backlog",
                       "file MB")))
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
