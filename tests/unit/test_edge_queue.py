"""The edge queue's contract. Every backend runs the same suite (today: SQLite in WAL mode,
on disk); a new backend joins by adding itself to BACKENDS."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tidefield.edge.queue import DiskQueue
from tidefield.protocol.messages import Reading

SITE = "ag-001"
SOIL, WX = "ag-001-soil", "ag-001-wx"
T0 = 1_790_000_000_000  # ms; the tests' fixed clock is T0 + 1 hour


def _disk(path: Path, **kw) -> DiskQueue:
    return DiskQueue(path / "queue.db", site=SITE, **kw)


BACKENDS = {"sqlite-wal": _disk}


class Clock:
    def __init__(self) -> None:
        self.now = (T0 + 3_600_000) / 1000

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=sorted(BACKENDS))
def make_queue(request, tmp_path):
    """make_queue(**options) opens (or reopens) the backend's queue in tmp_path."""
    opened: list = []
    clock = Clock()

    def make(**kw):
        kw.setdefault("clock", clock)
        queue = BACKENDS[request.param](tmp_path, **kw)
        opened.append(queue)
        return queue

    make.clock = clock
    yield make
    for queue in opened:
        with contextlib.suppress(sqlite3.Error):
            queue.close()


def readings(n: int, start: int = 0, metric: str = "soil_moisture") -> list[Reading]:
    return [Reading(metric, T0 + (start + i) * 1000, float(start + i)) for i in range(n)]


def values(batch) -> list[float]:
    return [r.value for r in batch.readings]


def test_put_take_ack_round_trip(make_queue):
    queue = make_queue()
    assert queue.put(SOIL, readings(5)).stored == 5
    assert queue.pending()[SOIL][0] == 5
    batch = queue.take(SOIL, 3)
    assert (batch.site, batch.device, batch.seq) == (SITE, SOIL, 0)
    assert values(batch) == [0, 1, 2]
    assert [r.time_ms for r in batch.readings] == [T0, T0 + 1000, T0 + 2000]
    second = queue.take(SOIL, 3)
    assert (second.seq, values(second)) == (1, [3, 4])
    assert queue.take(SOIL, 3) is None  # nothing left that is not handed out
    assert queue.pending() == {}
    assert queue.stats().depth == 5  # handed out is still queued until acknowledged
    assert queue.ack([(SOIL, 0)]) == 3
    assert queue.ack([(SOIL, 0), ("nobody", 9)]) == 0  # twice, or unknown: harmless
    assert queue.stats().depth == 2
    assert [b.seq for b in queue.unacked()] == [1]


def test_a_batch_is_one_device_in_time_order(make_queue):
    queue = make_queue()
    late = [Reading("soil_ec", T0 + 5000, 0.5), Reading("soil_ec", T0 + 1000, 0.1)]
    queue.put(SOIL, late)
    queue.put(WX, [Reading("air_temperature", T0, 20.0)])
    queue.put(SOIL, [Reading("soil_ec", T0 + 3000, 0.3), Reading("soil_ec", T0 + 3000, 0.4)])
    batch = queue.take(SOIL, 10)
    assert [r.time_ms for r in batch.readings] == [T0 + 1000, T0 + 3000, T0 + 3000, T0 + 5000]
    assert values(batch) == [0.1, 0.3, 0.4, 0.5]  # equal times keep their queue order
    assert {r.metric for r in batch.readings} == {"soil_ec"}
    wx = queue.take(WX, 10)
    assert (wx.device, wx.seq) == (WX, 0)  # each device counts its own seqs


def test_restart_resends_the_same_batches_and_never_reuses_a_seq(make_queue):
    queue = make_queue()
    queue.put(SOIL, readings(10))
    first, second = queue.take(SOIL, 4), queue.take(SOIL, 4)
    queue.ack([(SOIL, first.seq)])
    queue.close()  # the process dies here: `second` was sent, its PUBACK never came

    queue = make_queue()
    assert queue.unacked() == [second]  # same seq, same readings
    third = queue.take(SOIL, 4)
    assert third.seq == 2 and values(third) == [8, 9]
    assert queue.take(SOIL, 4) is None
    queue.put(SOIL, readings(1, start=50))
    queue.close()
    queue = make_queue()
    assert queue.take(SOIL, 4).seq == 3


def test_pending_counts_and_waiting_time(make_queue):
    queue = make_queue()
    before = time.monotonic()
    queue.put(SOIL, readings(3))
    queue.put(WX, readings(2, metric="air_temperature"))
    pending = queue.pending()
    assert {d: n for d, (n, _) in pending.items()} == {SOIL: 3, WX: 2}
    assert before <= pending[SOIL][1] <= time.monotonic()
    queue.take(WX, 10)
    assert set(queue.pending()) == {SOIL}
    queue.close()
    # after a restart, whatever is queued is due at once
    assert make_queue().pending()[SOIL] == (3, float("-inf"))


def test_what_a_batch_leaves_behind_waits_from_its_own_put(make_queue):
    queue = make_queue()
    queue.put(WX, readings(5, metric="air_temperature"))
    time.sleep(0.05)
    before = time.monotonic()
    queue.put(WX, readings(5, start=5, metric="air_temperature"))
    after = time.monotonic()
    queue.take(WX, 7)  # all of the first put and 2 of the second
    count, since = queue.pending()[WX]
    assert count == 3 and before <= since <= after  # not the first put's time
    queue.take(WX, 7)
    assert queue.pending() == {}


@pytest.mark.parametrize("when_full", ["drop_oldest", "refuse_newest"])
def test_a_full_queue_applies_its_policy_and_counts_exactly(make_queue, when_full):
    queue = make_queue(max_readings=10, when_full=when_full)
    results = [queue.put(SOIL, readings(4, start=4 * i)) for i in range(7)]  # 28 readings
    stats = queue.stats()
    assert stats.depth == 10
    assert stats.dropped_full == stats.dropped == 18
    assert sum(r.dropped for r in results) == 18
    assert sum(r.stored for r in results) - sum(r.evicted for r in results) == 10
    kept = values(queue.take(SOIL, 100))
    assert kept == (list(range(18, 28)) if when_full == "drop_oldest" else list(range(10)))
    queue.close()
    assert make_queue(max_readings=10, when_full=when_full).stats().dropped_full == 18


def test_drop_oldest_with_more_new_readings_than_room_keeps_the_newest(make_queue):
    queue = make_queue(max_readings=5)
    queue.put(SOIL, readings(3))
    result = queue.put(SOIL, readings(8, start=3))
    assert (result.stored, result.refused, result.evicted) == (5, 3, 3)
    assert values(queue.take(SOIL, 10)) == [6, 7, 8, 9, 10]
    assert queue.stats().dropped_full == 6


def test_dropping_readings_of_a_batch_in_flight_only_shrinks_it(make_queue):
    queue = make_queue(max_readings=6)
    queue.put(SOIL, readings(4))
    in_flight = queue.take(SOIL, 4)
    queue.put(SOIL, readings(4, start=4))  # 2 of the batch in flight make room
    resent = queue.unacked()
    assert [(b.seq, values(b)) for b in resent] == [(in_flight.seq, [2, 3])]
    assert queue.ack([(SOIL, in_flight.seq)]) == 2
    assert values(queue.take(SOIL, 10)) == [4, 5, 6, 7]
    assert queue.stats().dropped_full == 2


def test_readings_older_than_max_age_are_dropped_and_counted(make_queue):
    queue = make_queue(max_age_s=600)  # the clock reads T0 + 1 h
    result = queue.put(SOIL, [Reading("soil_ec", T0, 0.1),  # an hour old: refused
                              Reading("soil_ec", T0 + 3_300_000, 0.2),
                              Reading("soil_ec", T0 + 3_500_000, 0.3)])
    assert (result.stored, result.refused) == (2, 1)
    make_queue.clock.now += 400  # T0 + 3_300_000 is now older than 10 minutes
    assert queue.expire() == 1
    stats = queue.stats()
    assert (stats.depth, stats.dropped_expired, stats.dropped_full) == (1, 2, 0)
    assert stats.oldest_time_ms == T0 + 3_500_000
    assert queue.pending()[SOIL][0] == 1
    assert values(queue.take(SOIL, 10)) == [0.3]


def test_stats_report_depth_and_the_oldest_reading(make_queue):
    queue = make_queue()
    assert queue.stats().oldest_time_ms is None
    queue.put(WX, [Reading("air_temperature", T0 + 9000, 1.0)])
    queue.put(SOIL, [Reading("soil_ec", T0 + 2000, 1.0)])
    stats = queue.stats()
    assert (stats.depth, stats.oldest_time_ms, stats.dropped) == (2, T0 + 2000, 0)


def test_threads_putting_while_the_publisher_takes_lose_and_repeat_nothing(make_queue):
    queue = make_queue()
    devices = [f"ag-001-d{i}" for i in range(4)]

    def produce(device: str) -> None:
        for i in range(50):
            queue.put(device, [Reading("soil_ec", T0 + i, float(i)), Reading("soil_ph", T0 + i,
                                                                                float(i))])

    threads = [threading.Thread(target=produce, args=(d,)) for d in devices]
    for thread in threads:
        thread.start()
    seen: dict[str, list] = {d: [] for d in devices}
    seqs: dict[str, list] = {d: [] for d in devices}
    while any(t.is_alive() for t in threads) or queue.pending():
        for device in list(queue.pending()):
            batch = queue.take(device, 7)
            if batch:
                seen[device] += [(r.metric, r.time_ms) for r in batch.readings]
                seqs[device].append(batch.seq)
                queue.ack([(device, batch.seq)])
    for thread in threads:
        thread.join()
    for device in devices:
        assert sorted(seen[device]) == sorted((m, T0 + i) for i in range(50)
                                              for m in ("soil_ec", "soil_ph"))
        assert seqs[device] == list(range(len(seqs[device])))
    assert queue.stats().depth == 0


def test_the_file_is_in_wal_mode_and_commits_are_fsynced(make_queue, tmp_path):
    queue = make_queue()
    queue.put(SOIL, readings(1))
    other = sqlite3.connect(tmp_path / "queue.db")
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # put() returned, so another connection sees the row
        assert other.execute("SELECT count(*) FROM readings").fetchone()[0] == 1
    finally:
        other.close()
    assert queue._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


_WRITER = """
import sys
from tidefield.edge.queue import DiskQueue
from tidefield.protocol.messages import Reading
queue, base = DiskQueue(sys.argv[1], site="ag-001"), int(sys.argv[2])
i = 0
while True:
    queue.put("ag-001-soil", [Reading("soil_ec", base + i, 0.5)])
    print(i, flush=True)  # printed only after put() returned
    if i % 7 == 0:
        batch = queue.take("ag-001-soil", 5)
        queue.ack([(batch.device, batch.seq)])
        print("acked", " ".join(str(r.time_ms - base) for r in batch.readings), flush=True)
    i += 1
"""


def test_a_killed_writer_loses_nothing_put_returned(tmp_path):
    path = tmp_path / "queue.db"
    base = int(time.time() * 1000)
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(base)],
                            stdout=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.split())
        if len(lines) >= 400:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lines += [line.split() for line in proc.stdout.read().splitlines()]
    put = {int(parts[0]) for parts in lines if parts and parts[0] != "acked"}
    acked = {int(x) for parts in lines if parts and parts[0] == "acked" for x in parts[1:]}
    with DiskQueue(path, site=SITE) as queue:
        left = {r.time_ms - base for b in queue.unacked() for r in b.readings}
        while (batch := queue.take(SOIL, 1000)) is not None:
            left |= {r.time_ms - base for r in batch.readings}
    assert put - acked <= left
    assert len(put) >= 300
