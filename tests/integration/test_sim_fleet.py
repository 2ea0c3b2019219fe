"""`tidefield sim fleet` against a real broker: births, batches, sequence numbers."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

from tidefield.protocol import codec, mqtt
from tidefield.protocol.topics import parse_topic


def _watch(broker_url: str):
    address = mqtt.parse_mqtt_url(broker_url)
    seen = {"up": [], "status": []}
    lock = threading.Lock()

    def on_message(client, userdata, msg):
        topic = parse_topic(msg.topic)
        with lock:
            seen[str(topic.channel)].append((topic, msg.payload))

    client = mqtt.new_client("fleet-watcher", address)
    client.on_message = on_message
    client.connect(address.host, address.port)
    client.subscribe([("tf/v1/+/+/up", 1), ("tf/v1/+/+/status", 1)])
    client.loop_start()
    return client, seen


def _run_fleet(broker_url, state, seen, *extra: str, after_batches: int = 1,
               linger_s: float = 2.0):
    """Run the fleet until it has published ``after_batches`` batches (a cold start first
    compiles the simulator's Numba kernels, which can take a minute), then a little more,
    then stop it with SIGINT."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidefield.cli", "sim", "fleet", "--mqtt-url",
         broker_url, "--site", "ag-001", "--site", "oc-001", "--tick", "1", "--state",
         str(state), *extra], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while len(seen["up"]) < after_batches and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    time.sleep(linger_s)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return err


def test_fleet_publishes_births_history_and_live_batches(broker, tmp_path):
    client, seen = _watch(broker.url)
    state = tmp_path / "seq.json"
    try:
        err = _run_fleet(broker.url, state, seen, "--backfill-days", "0.1", after_batches=6,
                         linger_s=3)
        assert "published" in err
        time.sleep(0.5)
        births = [codec.decode_status(p) for _, p in seen["status"]]
        assert {b.site for b in births} == {"ag-001", "oc-001"}
        assert any(b.state == "online" for b in births)
        batches = [codec.decode_batch(p, now_ms=int(time.time() * 1000)) for _, p in seen["up"]]
        assert all(not d.rejected for d in batches)  # every simulated reading is valid
        per_device = {}
        for d in batches:
            per_device.setdefault(d.device, []).append(d.seq)
        assert len(per_device) >= 6
        for seqs in per_device.values():
            assert seqs == list(range(len(seqs)))  # gapless, in order, from 0
        oldest = min(min(d.times_ms) for d in batches if d.times_ms)
        assert oldest < time.time() * 1000 - 0.09 * 86_400_000  # the history came too
        # a restart continues the numbering instead of reusing it
        first_run = {dev: max(seqs) for dev, seqs in per_device.items()}
        seen["up"].clear()
        _run_fleet(broker.url, state, seen, "--backfill-days", "0.01")
        time.sleep(0.5)
        again = [codec.decode_batch(p, now_ms=int(time.time() * 1000)) for _, p in seen["up"]]
        assert again
        assert all(d.seq > first_run.get(d.device, -1) for d in again)
    finally:
        client.disconnect()
        client.loop_stop()
