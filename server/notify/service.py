"""The notifier (``tidefield notify run``): alert events in, messages out.

Four loops on one asyncio event loop:

- **plan**: the next batch of ``alert_events`` behind the cursor becomes deliveries
  (``store.plan``: a constant number of statements per batch), committed with the cursor.
- **dispatch**: due deliveries are fetched in one query, rendered, their acknowledge
  tokens (and the confirm tokens of suggested responses waiting) written in one
  statement, then sent concurrently: each (contact, alert) in its own task, one message
  after another (per-alert order), at most ``notify_concurrency`` messages in flight per
  contact.
- **write**: the outcomes of sends are recorded in batches (``store.record``); a delivery
  stays in flight, so it is not offered again, until its outcome is committed.
- **tick**: escalations, reminders, digests, closing incidents.

**Nothing lost, nothing repeated in effect.** A delivery is 'pending' until its outcome is
committed. Killed between a send and that commit, the notifier sends it again on restart
with the same ``Idempotency-Key`` (the webhook's header; the key is in every payload), so
a receiver that keys on it sees each notification once; channels without keys (robots,
mail) may see that one message twice. A failed send is retried with doubling backoff,
never dropped.

A loop that raises takes the process down (the supervisor restarts it); only a database
that went away is waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
from prometheus_client import Counter, Histogram

from tidefield.server.settings import NotifierSettings

from . import store
from .channels import ChannelError, Channels, InvalidChannel, describe
from .messages import Due, render

log = logging.getLogger(__name__)

RETRY_DB_S = 5.0  # wait before reconnecting after the database went away
WRITE_EVERY_S = 0.02  # outcomes are committed at most this long after their send
ACK_KINDS = frozenset({"opened", "updated", "reminder", "escalation"})

SENT = Counter("tidefield_notify_sent_total", "Messages a channel took", ["channel"])
FAILED = Counter("tidefield_notify_failed_total", "Send attempts that failed (retried)",
                 ["channel"])
SEND_SECONDS = Histogram("tidefield_notify_send_seconds", "Time a channel took for one "
                         "message", ["channel"])


class NotifierBusy(RuntimeError):
    """Another notifier holds the database's notifier lock; this one waits its turn."""


@dataclass
class _Round:
    """What a dispatch round started: tasks to await (tests send and wait)."""

    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Notifier:
    def __init__(self, settings: NotifierSettings, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        if not settings.database_url:
            raise ValueError("no database: set TIDEFIELD_DATABASE_URL")
        self.settings = settings
        self.clock = clock
        self.plan_settings = store.PlanSettings(
            update_every=timedelta(minutes=settings.notify_update_every_minutes),
            max_age=timedelta(minutes=settings.notify_max_age_minutes),
            incident_window=timedelta(minutes=settings.notify_incident_minutes),
            incident_km=settings.notify_incident_km)
        self.channels: Channels | None = None
        self.inflight: set[int] = set()
        self.active: set[tuple[int, int]] = set()
        self.semaphores: dict[int, asyncio.Semaphore] = {}
        self.outcomes: asyncio.Queue[tuple[store.Outcome, tuple[int, int] | None]] = \
            asyncio.Queue()
        self.wake = asyncio.Event()
        self.sent = 0

    # --- connections --------------------------------------------------------------------

    async def connect(self) -> None:
        url = self.settings.database_url
        assert url is not None
        # autocommit: every transaction is an explicit block; a stray implicit one would
        # hold back pg_snapshot_xmin and with it every event the planner may read
        self.plan_conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        if not await store.take_notifier_lock(self.plan_conn):
            await self.plan_conn.close()
            raise NotifierBusy("another notifier is running on this database")
        self.send_conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        # the tick's queries scan every open alert: on a connection of their own, so the
        # planner never waits behind them
        self.tick_conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        # one statement at a time per connection: the loops share them
        self.plan_lock = asyncio.Lock()
        self.send_lock = asyncio.Lock()
        async with self.plan_conn.transaction():
            await store.init_cursor(self.plan_conn)
        if self.channels is None:
            self.channels = Channels(timeout_s=self.settings.notify_timeout_s,
                                     robot_gateway=self.settings.notify_robot_gateway)

    async def close(self) -> None:
        for conn in (getattr(self, "plan_conn", None), getattr(self, "send_conn", None),
                     getattr(self, "tick_conn", None)):
            if conn is not None:
                await conn.close()
        if self.channels is not None:
            await self.channels.close()
            self.channels = None

    # --- steps (the loops call them; tests call them with their own clock) -------------

    async def plan_once(self) -> int:
        async with self.plan_lock, self.plan_conn.transaction():
            planned = await store.plan(self.plan_conn, now=self.clock(),
                                       limit=self.settings.notify_batch,
                                       settings=self.plan_settings)
        if planned:
            self.wake.set()
        return planned

    async def tick(self) -> None:
        now = self.clock()
        async with self.tick_conn.transaction():
            await store.escalate(self.tick_conn, now)
            await store.remind(self.tick_conn, now)
            await store.digest(self.tick_conn, now)
            await store.close_incidents(self.tick_conn, now)
        self.wake.set()

    async def dispatch(self) -> _Round:
        """Start sending what is due; returns the tasks started."""
        assert self.channels is not None
        now = self.clock()
        async with self.send_lock, self.send_conn.transaction():
            rows = await store.due_deliveries(self.send_conn, now=now,
                                              limit=self.settings.notify_batch,
                                              busy=self.inflight)
            groups: dict[tuple[int, int], list[Due]] = {}
            for due in rows:
                group = (due.contact_id, due.alert_id if due.alert_id is not None
                         else -due.delivery_id)
                if group not in self.active:
                    groups.setdefault(group, []).append(due)
            tokens: list[tuple[str, int, int | None, int, int | None]] = []
            links: dict[int, str] = {}
            base = f"{self.settings.notify_public_url.rstrip('/')}/api/v1/notifications"
            for dues in groups.values():
                for due in dues:
                    if due.alert_id is not None and due.state == "open" \
                                and due.kind in ACK_KINDS:
                        token = secrets.token_urlsafe(16)
                        tokens.append((token, due.alert_id, due.incident_id,
                                       due.contact_id, None))
                        links[due.delivery_id] = f"{base}/ack/{token}"
            # a suggested response still waiting: one confirm link per response, in every
            # message about its alert while it waits (acknowledged or not: running the
            # aerator is not acknowledging the alert)
            confirms: dict[int, list[tuple[str, str]]] = {}
            asked = [due for dues in groups.values() for due in dues
                     if due.alert_id is not None and due.state != "closed"
                     and due.kind in ACK_KINDS]
            waiting = await store.waiting_responses(
                self.send_conn, [(due.alert_id, due.contact_id) for due in asked
                                 if due.alert_id is not None])
            for due in asked:
                for item in waiting:
                    if (item.alert_id, item.contact_id) == (due.alert_id, due.contact_id):
                        token = secrets.token_urlsafe(16)
                        tokens.append((token, item.alert_id, None, item.contact_id,
                                       item.response_id))
                        confirms.setdefault(due.delivery_id, []).append(
                            (item.what, f"{base}/confirm/{token}"))
            await store.issue_tokens(self.send_conn, tokens, now + timedelta(
                hours=self.settings.notify_ack_hours))
        started = _Round()
        for group, dues in groups.items():
            self.active.add(group)
            self.inflight.update(due.delivery_id for due in dues)
            started.tasks.append(asyncio.create_task(
                self._send_group(group, dues, links, confirms)))
        return started

    async def _send_group(self, group: tuple[int, int], dues: list[Due],
                          links: dict[int, str],
                          confirms: dict[int, list[tuple[str, str]]]) -> None:
        """One (contact, alert)'s messages, in order; the first failure stops the rest
        (they wait behind it)."""
        assert self.channels is not None
        semaphore = self.semaphores.setdefault(
            group[0], asyncio.Semaphore(self.settings.notify_concurrency))
        done: list[store.Outcome] = []
        for due in dues:
            name = describe(due.url)
            message = render(due, dashboard_url=self.settings.notify_dashboard_url,
                             ack_url=links.get(due.delivery_id),
                             confirm_links=confirms.get(due.delivery_id, []))
            started = time.perf_counter()
            error: str | None = None
            try:
                channel = self.channels.get(due.contact_id, due.url)
                async with semaphore:
                    await channel.send(message)
            except InvalidChannel as exc:
                error = f"invalid contact URL: {exc}"
            except ChannelError as exc:
                error = str(exc)
            except Exception as exc:  # a channel's own bug must not stop the loop
                log.exception("channel failed unexpectedly",
                              extra={"contact": due.contact_id, "channel": name})
                error = f"{type(exc).__name__} in the channel"
            elapsed = time.perf_counter() - started
            now = self.clock()
            SEND_SECONDS.labels(name).observe(elapsed)
            if error is None:
                SENT.labels(name).inc()
                done.append(store.Outcome(due.delivery_id, now, elapsed * 1000, None))
                continue
            FAILED.labels(name).inc()
            wait = min(self.settings.notify_retry_max_s,
                       self.settings.notify_retry_initial_s * 2 ** min(due.attempts, 30))
            log.warning("message not taken; will retry", extra={
                "delivery": due.delivery_id, "contact": due.contact_id, "channel": name,
                "error": error, "retry_in_s": wait})
            done.append(store.Outcome(due.delivery_id, now, elapsed * 1000, error,
                                      now + timedelta(seconds=wait)))
            break
        unsent = [due.delivery_id for due in dues[len(done):]]
        self.inflight.difference_update(unsent)  # they wait behind the failed one
        for index, outcome in enumerate(done):
            await self.outcomes.put((outcome, group if index == len(done) - 1 else None))
        if not done:
            self.active.discard(group)

    async def write_outcomes(self) -> int:
        """Commit the outcomes waiting; returns how many."""
        batch = []
        while not self.outcomes.empty():
            batch.append(self.outcomes.get_nowait())
        if not batch:
            return 0
        async with self.send_lock, self.send_conn.transaction():
            await store.record(self.send_conn, [outcome for outcome, _ in batch])
        for outcome, group in batch:
            self.inflight.discard(outcome.delivery_id)
            if group is not None:
                self.active.discard(group)
            if outcome.error is None:
                self.sent += 1
        self.wake.set()
        return len(batch)

    async def send_all_due(self) -> int:
        """Tests: send what is due now and record the outcomes; returns how many sent."""
        before = self.sent
        started = await self.dispatch()
        if started.tasks:
            await asyncio.gather(*started.tasks)
        await self.write_outcomes()
        return self.sent - before

    # --- the loops ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``; a loop's exception (other than the database going away, which
        is waited for) ends the run with it."""
        while not stop.is_set():
            try:
                await self.connect()
                log.info("notifier started", extra={"backlog": await store.backlog(
                    self.plan_conn)})
                await self._loops(stop)
            # except*: the loops run in a task group, which wraps what they raise (a lost
            # connection while the database restarts) in an ExceptionGroup
            except* (psycopg.OperationalError, NotifierBusy) as group:
                exc = group.exceptions[0]
                log.warning("database unavailable or another notifier running; retrying",
                            extra={"error": str(exc).splitlines()[0] if str(exc) else "",
                                   "retry_in_s": RETRY_DB_S})
                await self.close()
                self.inflight.clear()
                self.active.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RETRY_DB_S)
            else:
                break
        await self.close()

    async def _loops(self, stop: asyncio.Event) -> None:
        async def every(seconds: float, step: Callable[[], object]) -> None:
            while not stop.is_set():
                await step()  # type: ignore[misc]  # each step is a coroutine function
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), seconds)

        async def planner() -> None:
            while not stop.is_set():
                planned = await self.plan_once()
                if planned < self.settings.notify_batch:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.settings.notify_poll_s)

        async def dispatcher() -> None:
            while not stop.is_set():
                self.wake.clear()
                await self.dispatch()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.settings.notify_poll_s)

        async def writer() -> None:
            while not stop.is_set() or self.inflight:
                await self.write_outcomes()
                await asyncio.sleep(WRITE_EVERY_S)

        async def stopper() -> None:
            await stop.wait()
            self.wake.set()

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(planner())
            tasks.create_task(dispatcher())
            tasks.create_task(writer())
            tasks.create_task(every(self.settings.notify_tick_s, self.tick))
            tasks.create_task(stopper())
