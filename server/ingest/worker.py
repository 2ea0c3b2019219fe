"""The ingest loop: gather a window of messages, write it in one transaction, and only
then acknowledge it. Transport-agnostic: MQTT hands in messages with their packet ids,
HTTP with a future it waits on.

Fair between devices: what has arrived waits in one queue per device, and a window takes
the devices' messages in turn (one message of each device with any, then the next
round), so a device delivering a backlog of thousands of messages, or flooding, fills
only what the others leave of a window, and a quiet device's message goes into the next
window instead of waiting behind all of it. Each device's own messages keep their order.

A database failure (connection lost, server restarting) is retried with backoff, holding
the window: nothing is acknowledged until it is committed. A message that the database
refuses for good (it should not happen; validation precedes) is isolated by writing the
window one message at a time and kept as a reject, so it cannot block the others.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import psycopg

from tidefield.protocol.codec import DEFAULT_LIMITS, Limits
from tidefield.protocol.errors import RateLimited
from tidefield.server.web.database import failure_reason

from . import metrics
from .attempts import Attempts
from .directory import DeviceDirectory
from .pipeline import (
    Envelope,
    Prepared,
    device_of_topic,
    fingerprint_of,
    poison_reject,
    prepare,
    store_reject,
)
from .ratelimit import DeviceBudget
from .receipts import ReceiptBook
from .store import LoadStrategy, Store, WriteResult

log = logging.getLogger(__name__)
T = TypeVar("T")

# messages taken together, each with its broker ticket (what acknowledges it)
Window = list[tuple[Envelope, object]]

RETRY_INITIAL_S = 0.2
RETRY_MAX_S = 5.0
WATCH_INTERVAL_S = 0.5
RATE_LIMIT_LOG_S = 60.0  # one warning per flooding device per this long, not per window


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    max_messages: int = 1000  # per transaction
    max_bytes: int = 4 * 1024 * 1024
    max_wait_s: float = 0.1  # how long a message may wait for company
    strategy: LoadStrategy = LoadStrategy.COPY
    limits: Limits = DEFAULT_LIMITS
    device_rate: float = 0.0  # readings per second of device time (0: no limit)
    device_burst: int = 20_000  # readings
    device_backlog_s: float = 30 * 86_400  # device time a budget may be earned over
    # starts alone of a redelivered message (counted in the database) after which it is
    # set aside unread as a reject (reason poison) and acknowledged
    poison_attempts: int = 3
    stall_after_s: float = 30.0  # no commit for this long while messages wait: stalled


@dataclass(frozen=True, slots=True)
class Liveness:
    partition: int
    loops: dict[str, str]  # loop (thread) name: alive, stopped, or died: why
    oldest_uncommitted_s: float  # how long the oldest message not yet committed waits
    since_commit_s: float
    stalled: bool

    @property
    def problems(self) -> list[str]:
        found = [f"loop {name} {state}" for name, state in self.loops.items()
                 if state != "alive"]
        if self.stalled:
            found.append(f"partition {self.partition} stalled: its oldest message has "
                         f"waited {self.oldest_uncommitted_s:.0f} s and nothing has "
                         f"committed for {self.since_commit_s:.0f} s")
        return found


class Worker:
    """Two stages in two threads, so Python and the database work at the same time: one
    gathers and prepares window k+1 (decoding, validating: CPU in this process) while the
    other writes window k (mostly waiting on PostgreSQL, which releases the GIL).
    ``submit`` is safe from any thread."""

    def __init__(self, database_url: str, directory: DeviceDirectory,
                 acknowledge: Callable[[list[object]], None], config: WorkerConfig,
                 transport: str = "mqtt", partition: int = 0,
                 receipts: ReceiptBook | None = None) -> None:
        self.url = database_url
        self.partition = partition
        self.directory = directory
        self.acknowledge = acknowledge
        self.config = config
        self.transport = transport
        self.receipts = receipts  # None: this transport answers otherwise (HTTP)
        # what has arrived, as the transport handed it over: a list per read of the socket
        self._queue: queue.Queue[list[tuple[Envelope, object]]] = queue.Queue()
        self._queued = 0  # messages in those lists (under _unacknowledged_lock)
        # windows ready to write, each with an event set once it is acknowledged; an
        # empty window is a marker: set when everything before it is acknowledged
        self._prepared: queue.Queue[tuple[Window, Prepared | None, threading.Event | None]] \
            = queue.Queue(maxsize=2)
        self.attempts = Attempts(database_url)  # the prepare thread's
        self._directory_lock = threading.Lock()  # one connection, two threads
        self._stop = threading.Event()
        self._threads = [self._loop(f"ingest-{transport}-prepare", self._prepare_loop),
                         self._loop(f"ingest-{transport}-write", self._write_loop),
                         self._loop(f"ingest-{transport}-watch", self._watch_loop)]
        # when each message not yet acknowledged arrived (monotonic), oldest first
        self._unacknowledged: dict[int, float] = {}
        self._unacknowledged_lock = threading.Lock()
        self._last_commit = time.monotonic()
        # loops that died, with why: /healthz names them (the process exits shortly after,
        # by threading.excepthook, see tidefield.server.liveness)
        self.dead: dict[str, str] = {}
        self._store: Store | None = None
        self._conn: psycopg.Connection | None = None
        self.healthy_db = False
        # why the last write failed, while the database refuses writes (a full disk, a
        # server gone): /healthz says it; None again once a write commits
        self.db_problem: str | None = None
        self.budget = DeviceBudget(config.device_rate, config.device_burst,
                                   config.device_backlog_s)
        self._rate_warned: dict[str | None, float] = {}
        self._waiting: dict[str, deque[tuple[Envelope, object]]] = {}  # per device
        self._waiting_count = 0

    def _loop(self, name: str, body: Callable[[], None]) -> threading.Thread:
        def run() -> None:
            try:
                body()
            except BaseException as exc:
                self.dead[name] = f"{type(exc).__name__}: {exc}"[:500]
                raise  # to threading.excepthook: the traceback, then the process exits

        return threading.Thread(target=run, name=name, daemon=True)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        if self._conn is not None:
            self._conn.close()
        self.attempts.close()

    def submit(self, envelope: Envelope, token: object) -> None:
        self.submit_many([(envelope, token)])

    def submit_many(self, items: list[tuple[Envelope, object]]) -> None:
        """Messages with their tokens, in the order they arrived: one hand-over for all
        of them (a lock, a queue put, a gauge), not one per message."""
        if not items:
            return
        metrics.QUEUE_DEPTH.inc(len(items))
        now = time.monotonic()
        with self._unacknowledged_lock:
            for envelope, _ in items:
                self._unacknowledged[id(envelope)] = now
            self._queued += len(items)
        self._queue.put(items)

    # --- liveness -----------------------------------------------------------------------
    def liveness(self) -> Liveness:
        """Each loop alive or why it died, and whether this partition is stalled: its
        oldest message has waited, and nothing has committed, for ``stall_after_s``."""
        now = time.monotonic()
        with self._unacknowledged_lock:
            oldest = next(iter(self._unacknowledged.values()), None)
        waiting_s = now - oldest if oldest is not None else 0.0
        since_commit_s = now - self._last_commit
        loops = {thread.name: "alive" if thread.is_alive() else "stopped"
                 for thread in self._threads}
        loops.update({name: f"died: {why}" for name, why in self.dead.items()})
        stall = self.config.stall_after_s
        return Liveness(self.partition, loops, round(waiting_s, 3), round(since_commit_s, 3),
                        waiting_s > stall and since_commit_s > stall)

    def _watch_loop(self) -> None:
        """Keeps the liveness gauges current for Prometheus, whatever the other loops do."""
        label = str(self.partition)
        while not self._stop.wait(WATCH_INTERVAL_S):
            state = self.liveness()
            metrics.OLDEST_UNACKNOWLEDGED.labels(label).set(state.oldest_uncommitted_s)
            metrics.STALLED.labels(label).set(int(state.stalled))
            for name, loop_state in state.loops.items():
                metrics.LOOP_ALIVE.labels(label, name).set(int(loop_state == "alive"))

    @property
    def pending(self) -> int:
        return self._queued + self._waiting_count

    # --- stage 1: gather and prepare ------------------------------------------------
    def _gather(self) -> Window:
        """The next window: wait for a first message (unless some already wait), give
        others ``max_wait_s`` to join, then take the devices' messages in turn."""
        if not self._waiting_count:
            try:
                self._hold(self._queue.get(timeout=0.2))
            except queue.Empty:
                return []
        deadline = time.monotonic() + self.config.max_wait_s
        while self._waiting_count < self.config.max_messages:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 \
                    else self._queue.get_nowait()
            except queue.Empty:
                break
            self._hold(item)
        while True:  # the rest of what has arrived waits too, to take its turn
            try:
                self._hold(self._queue.get_nowait())
            except queue.Empty:
                break
        return self._take_in_turn()

    def _hold(self, items: list[tuple[Envelope, object]]) -> None:
        waiting = self._waiting
        for item in items:
            device = device_of_topic(item[0].topic)
            line = waiting.get(device)
            if line is None:
                line = waiting[device] = deque()
            line.append(item)
        self._waiting_count += len(items)
        with self._unacknowledged_lock:
            self._queued -= len(items)

    def _take_in_turn(self) -> Window:
        """One message of the device first in line, which then goes to the back of the
        line if it has more: round robin, carried on from one window to the next."""
        window: list[tuple[Envelope, object]] = []
        size = 0
        while self._waiting and len(window) < self.config.max_messages \
                and size < self.config.max_bytes:
            device = next(iter(self._waiting))
            waiting = self._waiting.pop(device)
            item = waiting.popleft()
            window.append(item)
            size += len(item[0].payload)
            if waiting:
                self._waiting[device] = waiting
        self._waiting_count -= len(window)
        return window

    def _prepare(self, window: Window, limited: frozenset[int] | None = None) -> Prepared:
        """Prepare, waiting out a database outage (the directory may need to look up).
        Each message is charged to its device's budget, unless ``limited`` (the retry
        path) says which were refused already."""
        delay = RETRY_INITIAL_S
        while True:
            try:
                with self._directory_lock:
                    return prepare([env for env, _ in window], self.directory,
                                   limits=self.config.limits,
                                   now_ms=int(time.time() * 1000), budget=self.budget,
                                   limited=limited)
            except psycopg.OperationalError as exc:
                if self._stop.is_set():
                    raise
                log.warning("database unavailable while preparing, retrying",
                            extra={"error": str(exc).strip(), "retry_in_s": delay})
                with self._directory_lock:
                    self.directory.close()
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    def _prepare_loop(self) -> None:
        while not self._stop.is_set():
            window = self._gather()
            if not window:
                continue
            try:
                if any(item[0].redelivered for item in window):
                    if not self._suspects_first(window):
                        return  # stopping
                    continue
                prepared = self._prepare(window)
            except psycopg.OperationalError:
                return  # stopping: the window stays unacknowledged and will come again
            self._hand_over(window, prepared, None)

    def _suspects_first(self, window: Window) -> bool:
        """A window with messages delivered before, which may be what killed the last
        process. Their starts are counted (one statement, committed first). Those started
        once before go on in a window, with the others: after a clean restart that is
        all of them, and it stays fast. Those started more often go alone, each start
        alone counted, so that a crash is this message's own. False if stopping."""
        suspects = {fingerprint_of(env.topic, env.payload): (env, token)
                    for env, token in window if env.redelivered}
        counts = self._retrying(lambda: self.attempts.begin(
            [(fp, env.topic) for fp, (env, _) in suspects.items()]))
        alone, together = [], []
        for item in window:  # each copy of a message twice in the window, too
            fingerprint = fingerprint_of(item[0].topic, item[0].payload) \
                if item[0].redelivered else b""
            if counts.get(fingerprint, 1) > 1:
                alone.append((fingerprint, item))
            else:
                together.append(item)
        if together:
            prepared = self._prepare(together)
            if not self._hand_over(together, prepared, threading.Event()):
                return False
            committed = [fp for fp, (env, _) in suspects.items() if counts.get(fp, 1) <= 1]
            self._retrying(lambda: self.attempts.forget(committed))
        for fingerprint, item in alone:
            if not self._one_at_a_time(fingerprint, item):
                return False
            self._retrying(lambda: self.attempts.forget([fingerprint]))  # noqa: B023
        return True
    def _hand_over(self, window: Window, prepared: Prepared | None,
                   done: threading.Event | None) -> bool:
        """To the writer; False if stopping. With ``done``: wait until it is acknowledged."""
        while not self._stop.is_set():
            try:
                self._prepared.put((window, prepared, done), timeout=0.2)
                break
            except queue.Full:
                continue
        while done is not None and not done.wait(0.2):
            if self._stop.is_set():
                return False
        return not self._stop.is_set()

    def _one_at_a_time(self, fingerprint: bytes, item: tuple[Envelope, object]) -> bool:
        """A message started before and not committed, alone: once all before it are
        acknowledged, count this start alone (committed first, so a crash still counts),
        then process it, or set it aside as poison when it has crashed alone too often.
        False if stopping."""
        envelope = item[0]
        if not self._hand_over([], None, threading.Event()):  # all before it written
            return False
        alone = self._retrying(lambda: self.attempts.begin_alone(fingerprint))
        if alone > self.config.poison_attempts:
            metrics.POISON.inc()
            log.error("setting a message aside as poison", extra={
                "topic": envelope.topic, "attempts": alone - 1})
            prepared = Prepared(np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0),
                                rejects=[poison_reject(envelope, alone - 1)])
        else:
            prepared = self._prepare([item])
        return self._hand_over([item], prepared, threading.Event())

    def _retrying(self, action: Callable[[], T]) -> T:
        """``action`` until the database answers (an outage or a full disk is waited out,
        never counted against a message); OperationalError only when stopping."""
        delay = RETRY_INITIAL_S
        while True:
            try:
                return action()
            except psycopg.OperationalError as exc:
                if self._stop.is_set():
                    raise
                log.warning("database unavailable, retrying",
                            extra={"error": str(exc).strip(), "retry_in_s": delay})
                self.attempts.close()
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    # --- stage 2: write, then acknowledge -------------------------------------------
    def _write_loop(self) -> None:
        while not self._stop.is_set():
            if self.receipts is not None:
                self.receipts.flush()
            try:
                window, prepared, done = self._prepared.get(
                    timeout=self.receipts.interval_s if self.receipts else 0.2)
            except queue.Empty:
                continue
            if window and prepared is not None:
                self._write_until_committed(window, prepared)
            if done is not None and not self._stop.is_set():
                done.set()

    def _connect(self) -> Store:
        if self._store is None:
            self._conn = psycopg.connect(self.url)
            self._store = Store(self._conn, self.config.strategy)
        return self._store

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = self._store = None
        self.healthy_db = False

    def _write_until_committed(self, window: Window, prepared: Prepared, *,
                               acknowledge: bool = True) -> None:
        delay = RETRY_INITIAL_S
        while True:
            try:
                started = time.perf_counter()
                result = self._connect().write(prepared)
                metrics.WRITE_SECONDS.observe(time.perf_counter() - started)
                self._count(prepared, result, len(window))
                if self.receipts is not None:  # committed: new and already stored alike
                    self.receipts.note((b.site_id, b.device_id, b.seq)
                                       for b in prepared.batches)
                self.healthy_db = True
                self.db_problem = None
                break
            except psycopg.OperationalError as exc:
                # a full disk (53100) is one too: held and retried, never a reject; it
                # resumes by itself when space returns
                if self._stop.is_set():
                    return  # leave the window unacknowledged: it will come again
                self.db_problem = failure_reason(exc)
                metrics.DB_RETRIES.inc()
                log.warning("database unavailable, retrying", extra={"error": str(exc).strip(),
                                                                      "retry_in_s": delay})
                self._drop_connection()
                if self.receipts is not None:  # what committed before still gets its receipt
                    self.receipts.flush()
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
            except Exception as exc:  # refused for good, or a bug of ours
                self._drop_connection()
                if len(window) == 1:
                    self._keep_as_reject(window[0][0], exc)
                    break
                log.warning("a window failed; writing its messages one by one",
                            extra={"error": str(exc).strip()})
                for item in window:
                    self._write_until_committed(
                        [item], self._prepare([item], prepared.rate_limited & {id(item[0])}))
                return
        if acknowledge:
            self.acknowledge([token for _, token in window])
            metrics.QUEUE_DEPTH.dec(len(window))
            self._last_commit = time.monotonic()
            with self._unacknowledged_lock:
                for envelope, _ in window:
                    self._unacknowledged.pop(id(envelope), None)

    def _keep_as_reject(self, envelope: Envelope, exc: Exception) -> None:
        """A message the database refuses for good is kept as a reject, so it cannot
        block the messages behind it."""
        log.error("writing a message failed; keeping it as a reject", exc_info=exc,
                  extra={"topic": envelope.topic, "error": str(exc).strip()})
        reject = store_reject(envelope, exc)
        prepared = Prepared(np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0),
                            rejects=[reject])
        self._write_until_committed([(envelope, None)], prepared, acknowledge=False)

    def _count(self, prepared: Prepared, result: WriteResult, messages: int) -> None:
        refused = sum(reject.messages for reject in prepared.rejects)
        metrics.MESSAGES.labels(self.transport, "accepted").inc(messages - refused)
        metrics.READINGS.labels("inserted").inc(result.readings_inserted)
        metrics.READINGS.labels("duplicate").inc(result.readings_duplicate)
        now = time.monotonic()
        for reject in prepared.rejects:
            metrics.MESSAGES.labels(self.transport, "rejected").inc(reject.messages)
            metrics.REJECTS.labels(reject.reason).inc(reject.messages)
            if reject.reason == RateLimited.reason:
                if now - self._rate_warned.get(reject.device_id, -RATE_LIMIT_LOG_S) \
                        < RATE_LIMIT_LOG_S:
                    continue
                self._rate_warned[reject.device_id] = now
            log.warning("rejected %s: %s", reject.topic, reject.detail,
                        extra={"reason": reject.reason})
        for batch in prepared.batches:
            for reject in batch.rejects:
                metrics.REJECTS.labels(reject.reason).inc()
                metrics.READINGS.labels("rejected").inc()
