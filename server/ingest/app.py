"""The FastAPI app of one ingest process.

Its lifespan runs the MQTT consumer and the worker that writes what it receives; it
serves ``/healthz``, ``/metrics`` (Prometheus) and HTTP ingest, which goes through the
same pipeline and transaction as MQTT (one code path, not a copy), one request at a time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from tidefield.protocol import mqtt
from tidefield.server.db.retention import (
    RetentionPolicy,
    RetentionScheduler,
    enable_compression,
)
from tidefield.server.liveness import exit_when_a_thread_dies
from tidefield.server.security.wiring import client_ca_file
from tidefield.server.settings import IngestSettings
from tidefield.server.web.database import database_problem, open_pool
from tidefield.server.web.errors import install_error_handlers
from tidefield.server.web.metrics import metrics_router

from . import metrics
from .consumer import MqttConsumer, claim_slot
from .directory import DeviceDirectory, UnknownDevicePolicy
from .http import add_http_ingest, http_ingest
from .receipts import ReceiptBook
from .store import LoadStrategy
from .worker import Worker, WorkerConfig

log = logging.getLogger(__name__)


class Health(BaseModel):
    database: bool
    broker: bool | None  # None: this process runs without a broker
    pending: int
    problems: list[str] = []  # why it is 503 (a full database disk, say)
    # this process's partition: each loop's state (alive, or died: why), how long its
    # oldest message not yet committed has waited, and whether it is stalled
    partition: int | None = None
    loops: dict[str, str] = {}
    oldest_uncommitted_s: float | None = None
    stalled: bool = False


def worker_config(settings: IngestSettings) -> WorkerConfig:
    return WorkerConfig(max_messages=settings.ingest_max_messages,
                        max_wait_s=settings.ingest_max_wait_ms / 1000,
                        strategy=LoadStrategy(settings.ingest_strategy),
                        limits=settings.ingest_limits(),
                        device_rate=settings.ingest_device_readings_per_s,
                        device_burst=settings.ingest_device_burst_readings,
                        device_backlog_s=settings.ingest_device_backlog_days * 86_400,
                        poison_attempts=settings.ingest_poison_attempts,
                        stall_after_s=settings.ingest_stall_after_s)


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    if not settings.database_url:
        raise RuntimeError("TIDEFIELD_DATABASE_URL is not set")
    url = settings.database_url

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        exit_when_a_thread_dies()
        metrics.STARTS.inc()
        state = app.state
        state.pool = open_pool(url, max_size=4)
        state.http_ingest = http_ingest(url, settings)
        state.consumer = state.worker = state.scheduler = None
        slot, state.slot_lock = claim_slot(settings.data_dir.resolve() / "ingest-slots",
                                           settings.ingest_workers)
        if settings.mqtt_url:
            directory = DeviceDirectory(
                url, UnknownDevicePolicy(settings.ingest_unknown_devices))
            address = mqtt.parse_mqtt_url(settings.mqtt_url, ca_file=client_ca_file(settings))
            consumer: MqttConsumer | None = None
            state.receipts = ReceiptBook(
                publish_many=lambda receipts: consumer.publish_receipts(receipts))  # type: ignore[union-attr]
            state.worker = Worker(url, directory,
                                  lambda mids: consumer.acknowledge(mids),  # type: ignore[union-attr]
                                  worker_config(settings), partition=slot,
                                  receipts=state.receipts)
            consumer = MqttConsumer(address, state.worker, partition=slot,
                                    partitions=settings.ingest_workers,
                                    session_expiry_s=settings.ingest_session_expiry_s,
                                    receive_maximum=settings.ingest_receive_maximum,
                                    subscription=settings.ingest_subscription)
            state.consumer = consumer
            state.worker.start()
            consumer.start()
        if slot == 0:  # one process per service keeps house
            try:
                with psycopg.connect(url) as conn:
                    enable_compression(conn, settings.compress_after_days)
            except psycopg.Error as exc:
                log.warning("could not set up compression", extra={"error": str(exc)})
            state.scheduler = RetentionScheduler(url, RetentionPolicy.from_settings(settings),
                                                 settings.retention_interval_s)
            state.scheduler.start()
        log.info("ingest process ready", extra={"slot": slot, "pid": os.getpid()})
        try:
            yield
        finally:
            if state.consumer:
                state.consumer.stop()
            if state.worker:
                state.worker.stop()
            if state.scheduler:
                state.scheduler.stop()
            state.http_ingest.close()
            state.pool.close()
            state.slot_lock.close()

    app = FastAPI(title="Tidefield ingest", version="1", lifespan=lifespan)

    @app.get("/healthz", response_model=Health,
             responses={503: {"model": Health, "description": "unhealthy: see problems"}})
    def healthz(request: Request) -> Health | JSONResponse:
        state = request.app.state
        unreachable = database_problem(state.pool)
        # the database may answer and still refuse every write (its disk is full)
        refusing = state.worker.db_problem if state.worker else None
        database = unreachable is None and refusing is None
        broker = (state.consumer.connected.is_set() and state.consumer.subscribed.is_set()
                  if state.consumer else None)
        liveness = state.worker.liveness() if state.worker else None
        body = Health(database=database, broker=broker,
                      pending=state.worker.pending if state.worker else 0,
                      problems=[p for p in (unreachable, refusing) if p]
                      + (liveness.problems if liveness else []))
        if liveness is not None:
            body.partition, body.loops = liveness.partition, liveness.loops
            body.oldest_uncommitted_s = liveness.oldest_uncommitted_s
            body.stalled = liveness.stalled
        if not database or broker is False or (liveness and liveness.problems):
            # the same body, so that a probe (or an operator) reads what is wrong
            return JSONResponse(body.model_dump(), status_code=503)
        return body

    app.include_router(metrics_router())
    install_error_handlers(app)
    add_http_ingest(app)

    return app
