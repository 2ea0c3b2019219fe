"""The per-device rate limit of ingest: a token bucket per device, in messages.

A device may send ``burst`` messages at once and ``rate`` per second on average. What
it sends beyond is refused before it is decoded (reading the topic is all it costs), so a
runaway device spends neither the worker's CPU nor the database's time that the other
devices need.

Messages rather than readings: per-message work dominates ingest (README, Benchmarks),
a message holds at most ``ingest_max_readings`` readings anyway, and the decision must
come before decoding. A live edge agent sends at most one message per device per
``batch_max_wait_s`` (1 s by default); the default rate (20/s) and burst (600 messages,
300,000 readings in 500-reading batches: weeks of backlog of a typical device) leave
room for an agent flushing its queue after an outage.

Exact per device for MQTT: a device's messages always reach the same ingest process (the
partitioned subscriptions of ``consumer``). HTTP ingest requests spread over the N
processes, so over HTTP a device gets up to N times the rate.

Time is the message's receive time, so the decision does not depend on how long a
message waited in the worker's queue.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Devices idle long enough to have a full bucket are forgotten when the table grows past
# this: it bounds the memory a stream of made-up device names could take.
MAX_TRACKED = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_s: float


class DeviceRateLimiter:
    def __init__(self, rate_per_s: float, burst: int) -> None:
        if rate_per_s < 0 or burst < 1:
            raise ValueError("rate must be >= 0 (0: no limit) and burst >= 1")
        self.rate = rate_per_s
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def allow(self, device: str, now_s: float) -> bool:
        """Take one token from the device's bucket if it has one."""
        if not self.enabled:
            return True
        bucket = self._buckets.get(device)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED:
                self._forget_idle(now_s)
            bucket = self._buckets[device] = _Bucket(float(self.burst), now_s)
        elif now_s > bucket.updated_s:
            bucket.tokens = min(float(self.burst),
                                bucket.tokens + (now_s - bucket.updated_s) * self.rate)
            bucket.updated_s = now_s
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def split(self, items: Iterable[tuple[str, float]]) -> list[bool]:
        """``allow`` for each (device, time) in order."""
        return [self.allow(device, now_s) for device, now_s in items]

    def _forget_idle(self, now_s: float) -> None:
        full_after_s = self.burst / self.rate
        self._buckets = {d: b for d, b in self._buckets.items()
                         if now_s - b.updated_s < full_after_s}
