"""The detector service (``tidefield detect run``): stored readings in, anomalies and
alerts out, state checkpointed with them.

**Finding new readings.** Readings reach the database in two ways that ``ingest_batches``
alone does not show: ``tidefield up`` writes simulated history straight into ``readings``,
and edge agents deliver backlogs late with their original timestamps. So the service
keeps a time watermark W per partition and, each step, reads the readings with time in
(W - overlap, E] by binary COPY (E at most ``now - lag``, so batches still in flight land
first), dropping those at or before their series' last scored time (kept in the detector
state). Series silent behind the watermark are probed now and then from their own last
time, which finds a backlog delivered hours late. Catch-up over days of history runs in
steps of ``detect_step_minutes`` (at most ``detect_max_rows`` readings), so memory stays
flat.

**Exactly once, across crashes.** The timeline is cut at fixed instants (every
``detect_slice_s``, on a grid from the epoch): the readings of a slice are scored and
run through the rules, silence is checked at the cut, and the rule transitions become
alert operations there. A step groups whole slices, and its anomalies, alert changes and
checkpoint (watermark, detector and rule state) are written in one transaction. So what
is stored depends only on the data, never on where steps or restarts fell: a process
stopped by SIGTERM, or killed with -9 mid-step, continues from its last commit and writes
what an uninterrupted run would have.

**Alerts.** ``store.DatabaseSink`` writes the engine's alert operations to ``alerts`` and
``alert_events``; the events table is the outbox of MQTT notices on
``tf/v1/{site}/alerts``: published after the commit, QoS 1, remembered by id.

**Layers.** This module is the loop only: ``store`` holds all the SQL, ``engine`` the
detector, rules and alert book over one batch (results returned, never called back).

**Live rules.** The rules are the bundled ``rules.yaml``, the file named by
``TIDEFIELD_DETECT_RULES`` over it, and the per-site and per-kind changes stored in
``rule_overrides`` (API, ``tidefield rules``) over both. Every ``detect_rules_poll_s`` the
service looks whether they changed and rebinds (``Engine.change_rules``): each rule
instance keeps its state, so the next reading is judged by the new limit; every
partition does the same on its own.

**Partitions.** ``--partition i/n`` takes the sites with crc32(site id) mod n = i: the
same-site check needs every sensor of a site in one process.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import psycopg

from tidefield.protocol.units import DAY_MS
from tidefield.server.settings import DetectorSettings

from . import live_rules, responses, store
from .alerts import NoticePublisher
from .detector import Detector, Readings
from .engine import Engine
from .maintenance import MaintenanceHold
from .responses import ResponsePlanner
from .rules import RuleSet, load_rules
from .store import DatabaseSink, Partition, PartitionError, ts
from .tuning import DetectorParams

log = logging.getLogger(__name__)

RETRY_S = 5.0  # wait before reconnecting after the database went away
# how far back a starting detector looks for actuator runs: longer than any run plus its
# cool-down (hours), so a restart never forgets one still counting
RUNS_LOOKBACK_MS = 2 * DAY_MS
# commands are stamped when their transaction ran, and may commit a little later: each
# look for new runs goes back this far over the previous one (remembering is idempotent)
RUNS_OVERLAP_MS = 5 * 60_000

__all__ = ["DetectorService", "Partition", "PartitionError", "ServiceError", "StepResult"]


class ServiceError(RuntimeError):
    """The service cannot run as configured; the message says why."""


@dataclass
class StepResult:
    readings: int
    anomalies: int
    events: int
    watermark_ms: int


@dataclass
class Session:
    """A partition's detector as one database session took it over: the engine, the alert
    rows' sink, the watermark and the last notice published."""

    engine: Engine
    sink: DatabaseSink
    watermark_ms: int
    published_event_id: int
    sites: list[str]
    keys: list[int]  # series ids, in detector row order
    rules_version: int  # of the live rules the engine runs (``store.rules_version``)
    next_rules_check: float = 0.0  # time.monotonic()
    responses: ResponsePlanner | None = None  # what opened alerts switch on
    runs_checked_ms: int = 0  # wall clock of the last look for actuator runs


class DetectorService:
    """One partition's detector. ``run`` loops until ``stop`` is set (or, with
    ``until_ms``, until every reading up to it is scored)."""

    def __init__(self, settings: DetectorSettings, partition: Partition = store.EVERY_SITE, *,
                 since_ms: int | None = None, until_ms: int | None = None,
                 params: DetectorParams | None = None,
                 publisher: NoticePublisher | None = None) -> None:
        if not settings.database_url:
            raise ServiceError("no database: set TIDEFIELD_DATABASE_URL")
        self.database_url = settings.database_url
        self.settings = settings
        self.partition = partition
        self.since_ms = since_ms
        self.until_ms = until_ms
        self.params = params
        self.ruleset = load_rules(settings.detect_rules)
        self.slice_ms = settings.detect_slice_s * 1000
        self.step_ms = max(self.slice_ms,
                           int(settings.detect_step_minutes * 60_000) // self.slice_ms
                           * self.slice_ms)
        self.publisher = publisher
        self.maintenance = MaintenanceHold()
        self.readings_scored = 0
        self.busy_s = 0.0

    # --- time grid ---------------------------------------------------------------------

    def _floor(self, t_ms: float) -> int:
        return int(t_ms // self.slice_ms * self.slice_ms)

    def _horizon(self) -> int:
        now = time.time() * 1000 - self.settings.detect_lag_s * 1000
        if self.until_ms is not None:
            now = min(now, self.until_ms)
        return self._floor(now)

    # --- set-up ------------------------------------------------------------------------

    def _start(self, conn: psycopg.Connection) -> Session:
        series = store.load_series(conn, self.partition)
        if not series:
            raise ServiceError(f"partition {self.partition} has no series to score")
        rules_version, ruleset = self._live_rules(conn)
        engine = Engine(Detector(series, self.params), ruleset)
        checkpoint = store.read_checkpoint(conn, self.partition)
        if checkpoint is not None:
            if checkpoint.state is None or not engine.restore(checkpoint.state):
                log.warning("registry or rules changed since the checkpoint; state of "
                            "series and rules that remain carried over",
                            extra={"partition": str(self.partition)})
            watermark = checkpoint.watermark_ms
            published = checkpoint.published_event_id
        else:
            watermark = self._first_watermark(conn)
            published = store.last_event_id(conn)
            with conn.transaction():
                store.write_checkpoint(conn, self.partition, watermark, engine.checkpoint(),
                                       published)
        sites = sorted({info.site_id for info in series})
        active = store.active_alerts(conn, sites)
        sink = DatabaseSink.restored(conn, int(self.settings.detect_update_every_s * 1000),
                                     active)
        orphans = engine.resume(active, watermark)
        if orphans:
            sink.apply(orphans)
            with conn.transaction():
                sink.flush(conn)
        log.info("detector started", extra={
            "partition": str(self.partition), "series": len(series),
            "rule_instances": len(engine.rules.instances), "watermark": ts(watermark),
            "active_alerts": len(engine.book.active)})
        site_kinds = {info.site_id: info.site_kind for info in series}
        session = Session(engine, sink, watermark, published, sites,
                          [info.key for info in series], rules_version,
                          time.monotonic() + self.settings.detect_rules_poll_s,
                          ResponsePlanner(ruleset, site_kinds))
        self._remember_runs(conn, session, int(time.time() * 1000) - RUNS_LOOKBACK_MS)
        return session

    def _remember_runs(self, conn: psycopg.Connection, session: Session, since_ms: int
                       ) -> None:
        """The planner's cool-down memory, from the commands issued: at start (a restart
        must not run an aerator again inside its cool-down) and on every rules poll (runs
        operators confirmed, or switched by hand, count too)."""
        assert session.responses is not None
        checked = int(time.time() * 1000)
        for site, actuator, end_ms in store.actuator_runs(conn, session.sites, since_ms):
            session.responses.remember(site, actuator, end_ms)
        session.runs_checked_ms = checked

    def _live_rules(self, conn: psycopg.Connection) -> tuple[int, RuleSet]:
        return store.rules_version(conn), live_rules.ruleset(conn, self.ruleset)

    def _follow_rules(self, conn: psycopg.Connection, session: Session) -> None:
        """Rebind the rules when the stored ones changed since the session took them."""
        if time.monotonic() < session.next_rules_check:
            return
        session.next_rules_check = time.monotonic() + self.settings.detect_rules_poll_s
        if session.responses is not None:
            self._remember_runs(conn, session, session.runs_checked_ms - RUNS_OVERLAP_MS)
        if store.rules_version(conn) == session.rules_version:
            return
        session.rules_version, ruleset = self._live_rules(conn)
        closed = session.engine.change_rules(ruleset, session.watermark_ms)
        if session.responses is not None:
            session.responses.ruleset = ruleset
        if closed:
            session.sink.apply(closed)
            with conn.transaction():
                session.sink.flush(conn)
        log.info("live rules changed", extra={
            "partition": str(self.partition), "rules_version": session.rules_version,
            "rule_instances": len(session.engine.rules.instances)})

    def _first_watermark(self, conn: psycopg.Connection) -> int:
        if self.since_ms is not None:
            return self._floor(self.since_ms - 1)  # readings at since_ms are scored
        now_ms = time.time() * 1000
        earliest = now_ms - self.settings.detect_history_days * DAY_MS
        oldest = store.oldest_history_ms(conn, self._floor(earliest))
        if oldest is None:
            return self._horizon()
        return self._floor(max(earliest, oldest) - 1)

    # --- the loop ----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                if self._session(stop):
                    return
            except psycopg.OperationalError as exc:
                log.warning("database unavailable; resuming from the checkpoint",
                            extra={"error": str(exc).splitlines()[0] if str(exc) else ""})
                stop.wait(RETRY_S)

    def _session(self, stop: threading.Event) -> bool:
        """Run from the last checkpoint; True when done (``until_ms`` reached)."""
        # autocommit: each ``conn.transaction()`` below is a real transaction (inside an
        # implicit one it would only be a savepoint, and nothing would commit per step)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            session = self._start(conn)
            next_late_scan = 0.0
            while not stop.is_set():
                self._follow_rules(conn, session)
                horizon = self._horizon()
                if horizon <= session.watermark_ms:
                    self._publish(conn, session)
                    if (self.until_ms is not None
                            and session.watermark_ms >= self._floor(self.until_ms)):
                        return True
                    stop.wait(self.settings.detect_poll_s)
                    continue
                end = min(horizon, session.watermark_ms + self.step_ms)
                late = end == horizon and time.monotonic() >= next_late_scan
                if late:
                    next_late_scan = time.monotonic() + self.settings.detect_late_scan_s
                self._step(conn, session, end, late)
                self._publish(conn, session)
        return False

    def _read(self, conn: psycopg.Connection, session: Session, end: int, late: bool
              ) -> Readings:
        overlap_ms = int(self.settings.detect_overlap_s * 1000)
        behind = session.watermark_ms - overlap_ms
        readings = store.read_window(conn, session.keys, behind, end)
        if late:
            last = session.engine.detector.last_times()
            lagging = np.flatnonzero(last < behind)
            if lagging.size:
                floor = behind - int(self.settings.detect_late_days * DAY_MS)
                since = np.maximum(last[lagging], floor).astype(np.int64)
                keys = np.array(session.keys, dtype=np.int64)[lagging]
                more = store.read_since(conn, keys, since, behind)
                if len(more):
                    log.info("late readings found", extra={"readings": len(more)})
                    readings = readings + more
        return readings

    def _step(self, conn: psycopg.Connection, session: Session, end: int, late: bool
              ) -> StepResult:
        engine, watermark = session.engine, session.watermark_ms
        while True:
            batch = engine.fresh(self._read(conn, session, end, late))
            if len(batch) <= self.settings.detect_max_rows or end - watermark <= self.slice_ms:
                break
            end = watermark + max(self.slice_ms, self._floor((end - watermark) // 2))
        began = time.perf_counter()
        cuts = np.arange(watermark + self.slice_ms, end + 1, self.slice_ms, dtype=np.int64)
        self.maintenance.refresh(conn, session.sites, end)
        outcome = engine.run_slices(batch, cuts)
        ops = self.maintenance.hold_in_maintenance(engine, outcome.ops)
        session.sink.apply(ops)
        decisions = []
        if session.responses is not None:
            decisions = session.responses.decide(ops)
            decisions += session.responses.renew(list(engine.book.active.values()), end)
        scores = outcome.scores
        keep = (scores.score >= self.settings.detect_threshold) & (scores.category > 0)
        state = engine.checkpoint()
        self.busy_s += time.perf_counter() - began
        with conn.transaction():
            store.write_anomalies(conn, batch.readings.take(keep), scores.take(keep))
            events = session.sink.flush(conn)
            if decisions:  # after the flush: the alerts have their ids
                responses.record(conn, decisions, int(time.time() * 1000))
            store.write_checkpoint(conn, self.partition, end, state, 0)
        session.watermark_ms = end
        n = len(batch)
        self.readings_scored += n
        log.debug("step", extra={"watermark": ts(end), "readings": n,
                                 "anomalies": int(keep.sum()), "events": events})
        return StepResult(n, int(keep.sum()), events, end)

    def _publish(self, conn: psycopg.Connection, session: Session) -> None:
        if self.publisher is None:
            return
        notices = store.pending_notices(conn, session.sites, session.published_event_id)
        if not notices:
            return
        done = self.publisher.publish(notices)
        if done:
            session.published_event_id = notices[done - 1].event_id
            with conn.transaction():
                store.mark_published(conn, self.partition, session.published_event_id)
