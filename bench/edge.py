"""Edge agent: footprint at idle and at 100 readings/s, and how fast a backlog drains, with
a bare paho client publishing the same readings as the baseline, in one run. Receipts on
(the agent's default): the subscriber answers every batch as ingest does after its
commit, through ingest's own ReceiptBook (coalesced, a few receipts a second per device).

    .venv/bin/python bench/edge.py [--seconds 30] [--backlog 100000]

The agent runs as deployed: ``python -m tidefield.edge run`` in its own process, with the
environment of the systemd unit (MALLOC_ARENA_MAX=2), against a private Mosquitto and
firmware-sim's Modbus TCP emulator (in this process, so its CPU is not the agent's).

1. idle: the agent polls the four devices of site ag-001 at their catalog intervals
   (60-300 s) and reports its health every 60 s.
2. 100 readings/s: the same devices polled every 0.13 s (13 readings a round).
   Measured over the window after a warm-up: RSS (VmRSS, and the peak VmHWM) from
   /proc/<pid>/status, CPU share of one core from utime+stime in /proc/<pid>/stat, in
   5 s slices (the median is printed: this shared machine is noisy).
   Baseline: a bare poller in its own process, the same pymodbus reads in one thread per
   device, each poll published at once by paho (QoS 1), nothing on disk: what durability
   (the fsynced queue, seq bookkeeping, PUBACK tracking) costs on top.
3. backlog: ``--backlog`` readings already on disk in the agent's queue (as after a long
   outage); the agent starts with the broker up and no drivers. Drain rate: readings that
   reached a subscriber, from the first arrival to the last; and, with receipts, readings
   per second from the agent's start until its queue is empty (every batch receipted),
   against the same agent with receipts off (deleting on PUBACK).
4. raw MQTT: the same readings, in the same batches (500 readings, JSON, QoS 1, the same
   16 messages in flight), published by a bare paho client; same subscriber, same clock.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import private_broker, scratch, table
from tidefield.edge.queue import DiskQueue
from tidefield.protocol import codec, mqtt
from tidefield.protocol.catalog import METRICS
from tidefield.protocol.messages import Batch, Reading
from tidefield.protocol.registry import load_sites
from tidefield.server.embedded import free_port
from tidefield.server.ingest.receipts import ReceiptBook

SITE = "ag-001"
ENV = {"MALLOC_ARENA_MAX": "2"}  # as deploy/tidefield-edge.service sets it
BATCH = 500
IN_FLIGHT = 16
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the agent process ------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def memory_mb(pid: int) -> tuple[float, float]:
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def start_agent(folder: Path, config: dict) -> subprocess.Popen:
    path = folder / "edge.yaml"
    path.write_text(yaml.safe_dump(config))
    log = (folder / "agent.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "tidefield.edge", "run", "--config",
                             str(path)], stderr=log, env={**os.environ, **ENV})


def stop_agent(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Counter:
    """A subscriber counting the readings that reach the broker, and when; it answers
    every batch with a receipt, as ingest does after its commit."""

    def __init__(self, url: str) -> None:
        self.lock = threading.Lock()
        self.readings = 0
        self.first = self.last = 0.0
        address = mqtt.parse_mqtt_url(url)
        self.client = mqtt.new_client(f"bench-counter-{os.getpid()}", address)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"tf/v1/{SITE}/+/up", qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.receipts = ReceiptBook(
            lambda topic, payload: self.client.publish(topic, payload, qos=1).rc == 0)
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush, daemon=True)
        mqtt.connect(self.client, address, clean_start=True)
        self.client.loop_start()
        subscribed.wait(10)
        self._flusher.start()

    def _flush(self) -> None:
        while not self._stop.wait(0.05):
            self.receipts.flush()

    def _on_message(self, client, userdata, message) -> None:
        body = json.loads(message.payload)
        n = len(body["readings"])
        self.receipts.note([(body["site"], body["device"], body["seq"])])
        now = time.perf_counter()
        with self.lock:
            if not self.readings:
                self.first = now
            self.readings += n
            self.last = now

    def reset(self) -> None:
        with self.lock:
            self.readings, self.first, self.last = 0, 0.0, 0.0

    def wait_for(self, n: int, timeout: float) -> float:
        """Readings/s from the first arrival to the n-th reading's."""
        deadline = time.monotonic() + timeout
        while self.readings < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.readings} of {n} readings arrived")
            time.sleep(0.01)
        return self.readings / (self.last - self.first)

    def close(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()


def modbus_drivers(port: int, units: dict, fast: bool) -> list[dict]:
    site = next(s for s in load_sites() if s.id == SITE)
    drivers = []
    for device in site.devices:
        metrics = device.template.metrics
        if device.template.name == "soil":
            registers = {
                "soil_moisture": {"address": 0, "scale": 0.1, "invalid": [0xFFFF]},
                "soil_temperature": {"address": 1, "type": "int16", "scale": 0.1,
                                     "invalid": [0xFFFF]},
                "soil_ec": {"address": 2, "scale": 0.001, "invalid": [0xFFFF]}}
        else:
            registers = {m: {"address": 2 * i, "type": "float32"} for i, m in enumerate(metrics)}
        drivers.append({"type": "modbus_tcp", "device": device.id, "host": "127.0.0.1",
                        "port": port, "unit": units[device.id],
                        "interval_s": 0.13 if fast else device.template.interval_s,
                        "registers": registers})
    return drivers


SLICE_S = 5.0


def footprint(proc: subprocess.Popen, warmup: float, seconds: float,
              counter: Counter) -> tuple[float, float, float, float, float]:
    """(RSS MB, peak RSS MB, median and mean % of one core over SLICE_S slices,
    readings/s arriving) over the window; stops the process."""
    try:
        time.sleep(warmup)
        counter.reset()
        shares = []
        cpu0 = cpu_start = cpu_seconds(proc.pid)
        wall0 = wall_start = time.monotonic()
        while time.monotonic() - wall_start < seconds:
            time.sleep(SLICE_S)
            cpu1, wall1 = cpu_seconds(proc.pid), time.monotonic()
            shares.append(100 * (cpu1 - cpu0) / (wall1 - wall0))
            cpu0, wall0 = cpu1, wall1
        arrived = counter.readings
        rss, peak = memory_mb(proc.pid)
        mean = 100 * (cpu0 - cpu_start) / (wall0 - wall_start)
    finally:
        stop_agent(proc)
    return rss, peak, statistics.median(shares), mean, arrived / (wall0 - wall_start)


def run_agent(folder: Path, broker_url: str, drivers: list[dict],
              receipts: bool = True) -> subprocess.Popen:
    return start_agent(folder, {"site": SITE, "broker": {"url": broker_url},
                                "queue": {"path": str(folder / "queue.db")},
                                "publish": {"receipts": receipts},
                                "drivers": drivers})


def run_agent_without_receipts(folder: Path, broker_url: str,
                               drivers: list[dict]) -> subprocess.Popen:
    return run_agent(folder, broker_url, drivers, receipts=False)


def run_bare_poller(folder: Path, broker_url: str, drivers: list[dict]) -> subprocess.Popen:
    path = folder / "bare.json"
    path.write_text(json.dumps({"broker": broker_url, "drivers": drivers}))
    return subprocess.Popen([sys.executable, __file__, "--bare-poller", str(path)],
                            env={**os.environ, **ENV})


def bare_poller(spec_path: str) -> None:
    """The baseline: poll with pymodbus, publish each poll with paho; no queue, no disk."""
    from pymodbus.client import ModbusTcpClient

    spec = json.loads(Path(spec_path).read_text())
    address = mqtt.parse_mqtt_url(spec["broker"])
    client = mqtt.new_client(f"bench-bare-{os.getpid()}", address)
    mqtt.connect(client, address, clean_start=True)
    client.loop_start()
    lock = threading.Lock()  # one connection, one request at a time, like the agent's line
    modbus = ModbusTcpClient("127.0.0.1", port=spec["drivers"][0]["port"], retries=0)
    modbus.connect()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())

    def poll(driver: dict) -> None:
        registers = driver["registers"]
        count = max(r["address"] + (2 if r.get("type") == "float32" else 1)
                    for r in registers.values())
        seq = 0
        next_due = time.monotonic()
        while not stop.is_set():
            t = int(time.time() * 1000)
            with lock:
                words = modbus.read_holding_registers(0, count=count,
                                                      device_id=driver["unit"]).registers
            readings = tuple(Reading(m, t, float(words[r["address"]]))
                             for m, r in registers.items())
            client.publish(f"tf/v1/{SITE}/{driver['device']}/up",
                           codec.encode_batch(Batch(SITE, driver["device"], seq, readings)),
                           qos=1)
            seq += 1
            next_due += driver["interval_s"]
            stop.wait(max(0.0, next_due - time.monotonic()))

    threads = [threading.Thread(target=poll, args=(d,)) for d in spec["drivers"]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.disconnect()
    client.loop_stop()


# --- the backlog ----------------------------------------------------------------------------


def backlog_batches(n: int) -> list[Batch]:
    """n readings of the site's devices over the last two days, cut into BATCH-sized
    batches per device, with valid values (the same every run)."""
    site = next(s for s in load_sites() if s.id == SITE)
    devices = site.devices
    start = int(time.time() * 1000) - 2 * 86_400_000
    per_device: dict[str, list[Reading]] = {d.id: [] for d in devices}
    for i in range(n):
        device = devices[i % len(devices)]
        metrics = device.template.metrics
        k = i // len(devices)
        metric = metrics[k % len(metrics)]
        low, high = METRICS[metric].typical
        per_device[device.id].append(Reading(metric, start + (k // len(metrics)) * 1000,
                                             round(low + (high - low) * ((i * 37) % 100) / 100,
                                                   2)))
    return [Batch(SITE, device, seq, tuple(readings[i:i + BATCH]))
            for device, readings in per_device.items()
            for seq, i in enumerate(range(0, len(readings), BATCH))]


def queue_depth(path: Path) -> int:
    with sqlite3.connect(path, timeout=10) as db:  # WAL: a reader beside the agent
        return int(db.execute("SELECT count(*) FROM readings").fetchone()[0])


def drain(folder: Path, broker_url: str, batches: list[Batch], counter: Counter,
          total: int, *, receipts: bool) -> tuple[float, float, float, float]:
    """(readings/s first to last arrival, seconds from the agent's start to the last
    arrival, seconds from the first arrival to an empty queue, queue fill seconds)."""
    path = folder / "queue.db"
    started = time.perf_counter()
    with DiskQueue(path, site=SITE) as queue:
        for batch in batches:
            queue.put(batch.device, batch.readings)
    fill_s = time.perf_counter() - started
    counter.reset()
    launched = time.perf_counter()
    proc = start_agent(folder, {"site": SITE, "broker": {"url": broker_url},
                                "queue": {"path": str(path)},
                                "publish": {"batch_max_readings": BATCH,
                                            "max_in_flight": IN_FLIGHT,
                                            "receipts": receipts}})
    try:
        rate = counter.wait_for(total, timeout=600)
        while queue_depth(path):
            if time.perf_counter() - launched > 600:
                raise TimeoutError("the queue did not empty")
            time.sleep(0.02)
        emptied = time.perf_counter() - counter.first  # (start-up is not draining)
    finally:
        stop_agent(proc)
    return rate, counter.last - launched, emptied, fill_s


def raw_mqtt(broker_url: str, batches: list[Batch], counter: Counter, total: int) -> float:
    """The same batches from a bare paho client: readings/s, first to last arrival."""
    counter.reset()
    address = mqtt.parse_mqtt_url(broker_url)
    client = mqtt.new_client(f"bench-raw-{os.getpid()}", address)
    client.max_inflight_messages_set(IN_FLIGHT)
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    mqtt.connect(client, address, clean_start=True)
    client.loop_start()
    connected.wait(10)
    properties = mqtt.publish_properties(codec.JSON)
    for batch in batches:
        client.publish(f"tf/v1/{SITE}/{batch.device}/up", codec.encode_batch(batch), qos=1,
                       properties=properties)
    try:
        return counter.wait_for(total, timeout=600)
    finally:
        client.disconnect()
        client.loop_stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30, help="measured window")
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--drain-only", action="store_true",
                        help="skip the footprint measurements")
    parser.add_argument("--bare-poller", help=argparse.SUPPRESS)  # the baseline's process
    args = parser.parse_args()
    if args.bare_poller:
        bare_poller(args.bare_poller)
        return

    from tidefield.sim.fleet import Fleet
    from tidefield.sim.modbus import emulated_devices, start_modbus_server

    site = next(s for s in load_sites() if s.id == SITE)
    print("starting firmware-sim's Modbus emulator (Numba compiles on a cold cache)...",
          flush=True)
    units = emulated_devices(Fleet([site], seed=1))
    server = start_modbus_server("127.0.0.1", free_port(), units)
    unit_of = {u.device_id: n for n, u in units.items()}
    rows = []
    try:
        with private_broker() as broker:
            counter = Counter(broker.url)
            shares = {}
            for label, start, fast in () if args.drain_only else (
                    ("agent, idle (catalog intervals)", run_agent, False),
                    ("agent, 100 readings/s", run_agent, True),
                    ("agent, 100 readings/s, receipts off", run_agent_without_receipts,
                     True),
                    ("bare poller, 100 readings/s", run_bare_poller, True)):
                print(f"measuring {label} for {args.seconds:.0f} s...", flush=True)
                proc = start(scratch("tidefield-bench-edge-"), broker.url,
                             modbus_drivers(server.port, unit_of, fast))
                rss, peak, median, mean, rate = footprint(proc, args.warmup, args.seconds,
                                                          counter)
                shares[label] = median
                memory = ("-", "-") if start is run_bare_poller else (f"{rss:.1f}",
                                                                      f"{peak:.1f}")
                rows.append((label, f"{rate:.1f}", *memory, f"{median:.2f}", f"{mean:.2f}"))
            if shares:
                print(table(rows, ("process", "readings/s", "RSS MB", "peak RSS MB",
                                   "CPU % (median)", "CPU % (mean)")))
                ratio = (shares["agent, 100 readings/s"]
                         / shares["bare poller, 100 readings/s"])
                print(f"agent CPU / bare poller CPU at 100 readings/s: {ratio:.2f}; load "
                      f"average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
                print("targets: RSS under 40 MB, CPU under 2 % of one core at 100 "
                      "readings/s")
                print(f"(agent: python -m tidefield.edge run, env {ENV})\n", flush=True)

            batches = backlog_batches(args.backlog)
            print(f"draining a backlog of {args.backlog:,} readings "
                  f"({len(batches)} batches of up to {BATCH})...", flush=True)
            drained = {receipts: drain(scratch("tidefield-bench-edge-"), broker.url, batches,
                                       counter, args.backlog, receipts=receipts)
                       for receipts in (True, False)}
            raw = raw_mqtt(broker.url, batches, counter, args.backlog)
            counter.close()
    finally:
        server.stop()
    rows = []
    for receipts, (rate, wall, emptied, _) in drained.items():
        how = "kept until receipts" if receipts else "deleted on PUBACK"
        rows.append((f"edge agent: disk queue -> MQTT, {how}", f"{rate:,.0f}",
                     f"{rate / raw:.2f}", f"{wall:.2f}", f"{emptied:.2f}",
                     f"{args.backlog / emptied:,.0f}"))
    rows.append(("bare paho client, same batches (the limit)", f"{raw:,.0f}", "1.00", "-",
                 "-", "-"))
    print(table(rows, ("backlog drain", "readings/s", "ratio to raw", "start to last s",
                       "first to empty queue s", "readings/s to empty")))
    print(f"queue filled in {drained[True][3]:.2f} s; target: 50,000 readings/s with receipts")


if __name__ == "__main__":
    main()
