"""The per-device budget of ingest: readings per second of *device time*.

What tells a runaway device from one delivering its backlog is not how fast its messages
arrive (an edge agent back from an outage sends hours of batches as fast as the link
allows) but how dense its data is: a backlog covers hours of the device's own clock, a
flood piles readings into little of it. So each device has a bucket of readings, filled
by ``rate`` per second of device time its messages cover that no earlier message
covered (from the newest reading it sent before to the newest of this message), or per
second of wall time if that is more (a clock set back, a re-sent batch),
up to ``burst``. A message takes as many tokens as it has readings, whole or not at all.

The device time a device can claim is bounded: it starts no earlier than ``backlog_s``
before now (the edge agent's queue keeps 30 days; older readings would be refused as too
old anyway), and the codec refuses readings more than ``ingest_max_future_s`` ahead. So a
device faking its clock gains at most that window once, never an unlimited rate.

Refused means refused whole, counted per device (``pipeline.rate_limited``); what is
admitted, however fast it came, is stored. Fairness between devices while a big backlog
is written is the worker's job (it takes the devices' queued messages in turn).

Exact per device for MQTT: a device's messages always reach the same ingest process (the
partitioned subscriptions of ``consumer``). HTTP ingest requests spread over the N
processes, so over HTTP a device gets up to N times the budget.

Wall time is the message's receive time, so the decision does not depend on how long a
message waited in the worker's queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tidefield.server.settings import IngestGroup

# Devices idle long enough to have a full bucket are forgotten when the table grows past
# this: it bounds the memory a stream of made-up device names could take.
MAX_TRACKED = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    wall_ms: int  # receive time of the last message
    covered_ms: int  # device time covered up to here


class DeviceBudget:
    def __init__(self, rate_per_s: float, burst: int, backlog_s: float = 30 * 86_400) -> None:
        if rate_per_s < 0 or burst < 1 or backlog_s < 0:
            raise ValueError("rate must be >= 0 (0: no limit), burst >= 1, backlog >= 0")
        self.rate = rate_per_s
        self.burst = burst
        self.backlog_ms = int(backlog_s * 1000)
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, device: str, readings: int, first_ms: int | None, last_ms: int | None,
             now_ms: int) -> float:
        """Admit a message of ``readings`` readings spanning device time [first_ms,
        last_ms] (None: no readings, e.g. a status) received at ``now_ms``: 0.0 when
        admitted, else the seconds of wall time after which it would be."""
        if not self.enabled:
            return 0.0
        floor_ms = now_ms - self.backlog_ms
        bucket = self._buckets.get(device)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED:
                self._forget_idle(now_ms)
            start = max(floor_ms, first_ms if first_ms is not None else now_ms)
            bucket = self._buckets[device] = _Bucket(float(self.burst), now_ms, start)
        covered = 0
        if last_ms is not None:  # from where its earlier messages ended (a device silent
            # in between was silent for that long) to its newest reading
            covered = max(0, last_ms - max(bucket.covered_ms, floor_ms))
            bucket.covered_ms = max(bucket.covered_ms, last_ms)
        waited = max(0, now_ms - bucket.wall_ms)
        bucket.wall_ms = max(bucket.wall_ms, now_ms)
        bucket.tokens = min(float(self.burst),
                            bucket.tokens + max(covered, waited) / 1000 * self.rate)
        if bucket.tokens >= readings:
            bucket.tokens -= readings
            return 0.0
        return (readings - bucket.tokens) / self.rate

    def _forget_idle(self, now_ms: int) -> None:
        full_after_ms = self.burst / self.rate * 1000
        self._buckets = {d: b for d, b in self._buckets.items()
                         if now_ms - b.wall_ms < full_after_ms}


def device_budget(settings: IngestGroup) -> DeviceBudget:
    return DeviceBudget(settings.ingest_device_readings_per_s,
                        settings.ingest_device_burst_readings,
                        settings.ingest_device_backlog_days * 86_400)
