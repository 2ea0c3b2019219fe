"""The edge agent: driver threads -> disk queue -> publisher, plus a health loop.

Threads:

* one per driver: ``poll()`` every ``interval_s``, ``put`` the readings (committed before
  anything else happens to them). A failed poll is retried after an exponential,
  jittered backoff (``DRIVER_BACKOFF_FIRST_S`` .. ``DRIVER_BACKOFF_MAX_S``) with one
  warning per failure streak, naming the device and the backoff; values the device
  returned but that are garbage are logged once per (metric, reason) and left out. A
  failing driver never holds up the others.
* the publisher (``publisher.Publisher``).
* health: every ``health.interval_s``, the agent's own metrics (``AGENT_METRICS``) are
  queued as readings of the site's gateway device ``{site}-gw``; every
  ``EXPIRE_EVERY_S`` readings older than the queue's ``max_age_s`` are dropped.

``Agent.run()`` blocks until SIGTERM or SIGINT, then stops cleanly: drivers stop, the
publisher marks the devices offline and waits briefly for outstanding PUBACKs.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field

from tidefield.protocol.catalog import AGENT_METRICS
from tidefield.protocol.messages import Reading

from .config import EdgeConfig
from .drivers import DRIVERS, DriverConfig, Fault
from .errors import DriverUnusable, EdgeError
from .health import CpuMeter, LatencyMeter, rss_mb
from .queue import DiskQueue
from .retry import backoff
from .uplink import Publisher

log = logging.getLogger(__name__)

DRIVER_BACKOFF_FIRST_S = 1.0
DRIVER_BACKOFF_MAX_S = 60.0
EXPIRE_EVERY_S = 60.0
JOIN_TIMEOUT_S = 15.0


@dataclass
class DriverStatus:
    """How one driver is doing (what the agent reports about it)."""

    device_id: str
    type: str
    polls: int = 0
    readings: int = 0  # queued
    failures: int = 0  # consecutive failed polls (0: healthy)
    last_error: str | None = None
    faults: dict[str, Fault] = field(default_factory=dict)  # metric -> current fault
    fault_count: int = 0  # values left out since start
    stopped: bool = False  # the driver cannot work here (DriverUnusable)


class _DriverRunner:
    def __init__(self, config: DriverConfig, queue: DiskQueue, stop: threading.Event) -> None:
        self.config = config
        self.status = DriverStatus(config.device, config.type)
        self._queue = queue
        self._stop = stop
        self._poll_faults: list[Fault] = []

    def run(self) -> None:
        device = self.config.device
        driver = None
        next_due = time.monotonic()
        try:
            while not self._stop.is_set():
                self._poll_faults = []
                try:
                    if driver is None:
                        driver = DRIVERS[self.config.type](self.config, report=self._report)
                    readings = driver.poll()
                    if readings:
                        self._queue.put(device, readings)
                except DriverUnusable as exc:
                    self.status.stopped, self.status.last_error = True, str(exc)
                    log.error("%s: driver stopped: %s", device, exc.message)
                    return
                except Exception as exc:  # a failing driver must not take the agent down
                    self._failed(exc)
                    next_due = time.monotonic()
                    continue
                self._succeeded(readings)
                next_due += self.config.interval_s
                now = time.monotonic()
                next_due = max(next_due, now)  # a slow poll skips ticks, never bunches them
                self._stop.wait(next_due - now)
        finally:
            if driver is not None:
                driver.close()

    def _report(self, fault: Fault) -> None:
        self._poll_faults.append(fault)

    def _failed(self, exc: Exception) -> None:
        status = self.status
        status.polls += 1
        status.failures += 1
        status.last_error = str(exc)
        delay = backoff(status.failures, first=DRIVER_BACKOFF_FIRST_S, cap=DRIVER_BACKOFF_MAX_S)
        if status.failures == 1:
            log.warning("%s: poll failed: %s; retrying in %.1f s, backing off up to %.0f s",
                        self.config.device, getattr(exc, "message", exc), delay,
                        DRIVER_BACKOFF_MAX_S, exc_info=not isinstance(exc, EdgeError))
        else:
            log.debug("%s: poll %d failed: %s; retrying in %.1f s", self.config.device,
                      status.failures, exc, delay)
        self._stop.wait(delay)

    def _succeeded(self, readings: list[Reading]) -> None:
        status = self.status
        device = self.config.device
        status.polls += 1
        status.readings += len(readings)
        if status.failures:
            log.info("%s: polling again after %d failed polls", device, status.failures)
            status.failures, status.last_error = 0, None
        current = {fault.metric: fault for fault in self._poll_faults}
        for metric, fault in current.items():
            known = status.faults.get(metric)
            if known is None or known.reason != fault.reason:
                log.warning("%s %s: %s (%s); not queued", device, metric, fault.detail,
                            fault.reason)
        for metric in status.faults.keys() - current.keys():
            log.info("%s %s: valid again", device, metric)
        status.faults = current
        status.fault_count += len(current)
        if readings and log.isEnabledFor(logging.DEBUG):
            log.debug("%s: queued %s", device,
                      " ".join(f"{r.metric}@{r.time_ms}" for r in readings))


class Agent:
    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        queue = config.queue
        self.queue = DiskQueue(queue.path, site=config.site, max_readings=queue.max_readings,
                               max_age_s=queue.max_age_s, when_full=queue.when_full,
                               min_free_bytes=int(queue.min_free_mb * 2**20))
        self.latency = LatencyMeter()
        self.publisher = Publisher(config, self.queue, self.latency)
        # Two stop events: the producers (drivers, health) stop first, so the publisher's
        # last act can send everything they queued.
        self._stop = threading.Event()
        self._stop_producers = threading.Event()
        self._runners = [_DriverRunner(driver, self.queue, self._stop_producers)
                         for driver in config.drivers]
        self._threads: list[threading.Thread] = []
        self._producers: list[threading.Thread] = []
        self._cpu = CpuMeter()
        self._dropped_reported = self.queue.stats().dropped

    @property
    def drivers(self) -> list[DriverStatus]:
        return [runner.status for runner in self._runners]

    def start(self) -> None:
        threads = [threading.Thread(target=runner.run, name=f"driver-{runner.config.device}",
                                    daemon=True) for runner in self._runners]
        threads.append(threading.Thread(target=self._health_loop, name="health", daemon=True))
        self._producers = threads
        self._publisher = threading.Thread(target=self.publisher.run, args=(self._stop,),
                                           name="publisher", daemon=True)
        self._threads = [*threads, self._publisher]
        for thread in self._threads:
            thread.start()

    def stop_producers(self, timeout: float = JOIN_TIMEOUT_S) -> None:
        """Stop the drivers and the health loop; the publisher goes on sending (and
        re-sending) what is queued until ``stop``."""
        deadline = time.monotonic() + timeout
        self._stop_producers.set()
        for thread in self._producers:
            thread.join(max(0.0, deadline - time.monotonic()))

    def stop(self, timeout: float = JOIN_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        self.stop_producers(timeout)
        self._stop.set()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("%s did not stop within %.0f s", thread.name, timeout)
        self.queue.close()

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; the exit status."""
        requested = threading.Event()

        def on_signal(signum: int, frame: object) -> None:
            log.info("%s: stopping", signal.Signals(signum).name)
            requested.set()  # stop() then stops the parts in order

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not requested.wait(1.0):
                pass
        finally:
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return 0

    # --- health -------------------------------------------------------------------------

    def health_readings(self) -> list[Reading]:
        """The agent's own metrics now, as readings of the gateway device."""
        now_ms = int(time.time() * 1000)
        stats = self.queue.stats()
        age_s = 0.0 if stats.oldest_time_ms is None else max(
            0.0, (now_ms - stats.oldest_time_ms) / 1000)
        values = {
            "agent_queue_depth": float(stats.depth),
            "agent_queue_age": round(age_s, 3),
            "agent_dropped": float(stats.dropped),
            "agent_publish_latency": self.latency.mean_ms(),
            "agent_rss": round(rss_mb(), 1),
            "agent_cpu": round(self._cpu.percent(), 2),
        }
        if stats.dropped > self._dropped_reported:
            log.warning("queue: %d readings dropped so far (%d full, policy %s; %d too old)",
                        stats.dropped, stats.dropped_full, self.queue.when_full,
                        stats.dropped_expired)
            self._dropped_reported = stats.dropped
        return [Reading(metric, now_ms, round(value, 3)) for metric in AGENT_METRICS
                if (value := values[metric]) is not None]

    def _health_loop(self) -> None:
        interval = self.config.health.interval_s
        next_health = time.monotonic() + interval
        next_expire = time.monotonic()
        while True:
            now = time.monotonic()
            try:
                if now >= next_expire:
                    next_expire = now + EXPIRE_EVERY_S
                    self.queue.expire()
                if now >= next_health:
                    next_health = now + interval
                    self.queue.put(self.config.gateway_device, self.health_readings())
            except Exception:  # a full disk must not end the health loop for good
                log.exception("health: could not queue the agent's metrics")
            if self._stop_producers.wait(
                    max(0.0, min(next_health, next_expire) - time.monotonic())):
                return
