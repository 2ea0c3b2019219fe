"""HTTP ingest: one message per request, through the same pipeline and transaction as
MQTT (``prepare`` then ``Store.write``), for devices and gateways that cannot speak MQTT.
Both the ingest service and the API mount it (``add_http_ingest``)."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Annotated

import numpy as np
import psycopg
from fastapi import APIRouter, FastAPI, Header, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from tidefield.protocol.codec import Limits
from tidefield.protocol.errors import RateLimited
from tidefield.protocol.topics import ID_PATTERN, up_topic
from tidefield.server.security.api_keys import Scope
from tidefield.server.web.deps import Ingester, check_act

from . import metrics
from .directory import DeviceDirectory, UnknownDevicePolicy
from .pipeline import Envelope, Prepared, prepare, store_reject
from .ratelimit import DeviceBudget, device_budget
from .store import LoadStrategy, Store, WriteResult

if TYPE_CHECKING:
    from tidefield.server.settings import IngestGroup


log = logging.getLogger(__name__)


class RejectOut(BaseModel):
    reason: str
    detail: str


class IngestResult(BaseModel):
    """What became of a telemetry message sent over HTTP."""

    duplicate: bool
    readings_inserted: int
    readings_duplicate: int
    rejected: list[RejectOut]


class HttpIngest:
    """Writes one message per call on a connection of its own (serialised by a lock:
    ingest transactions are short, and one connection keeps the temp tables warm)."""

    def __init__(self, database_url: str, directory: DeviceDirectory, limits: Limits,
                 strategy: LoadStrategy, budget: DeviceBudget | None = None) -> None:
        self.url, self.directory, self.limits, self.strategy = (database_url, directory,
                                                                 limits, strategy)
        self.budget = budget or DeviceBudget(0, 1)
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._store: Store | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self.directory.close()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = self._store = None
        self.directory.close()

    def _keep_as_reject(self, envelope: Envelope, exc: Exception
                        ) -> tuple[Prepared, WriteResult]:
        """The message could not be written: it is kept as a reject, on a fresh
        connection (the failed transaction may have left the old one unusable)."""
        log.error("writing a message failed; keeping it as a reject", exc_info=exc,
                  extra={"topic": envelope.topic})
        self._drop_connection()
        self._conn = psycopg.connect(self.url)
        self._store = Store(self._conn, self.strategy)
        prepared = Prepared(np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0),
                            rejects=[store_reject(envelope, exc)])
        return prepared, self._store.write(prepared)

    def ingest(self, envelope: Envelope) -> IngestResult:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self.url)
                    self._store = Store(self._conn, self.strategy)
                prepared = prepare([envelope], self.directory, limits=self.limits,
                                   now_ms=envelope.received_ms, budget=self.budget)
                if prepared.rate_limited:
                    # Over HTTP the sender is told to come back (429) and keeps its data,
                    # so nothing is stored: unlike MQTT, where the broker has already
                    # acknowledged.
                    metrics.MESSAGES.labels("http", "rejected").inc()
                    metrics.REJECTS.labels(RateLimited.reason).inc()
                    retry_s = max(1, math.ceil(prepared.rate_limited_wait_s))
                    raise HTTPException(
                        429, f"{RateLimited.reason}: this device is over its budget of "
                             f"{self.budget.rate:g} readings per second of device time",
                        headers={"Retry-After": str(retry_s)})
                assert self._store is not None  # made with the connection above
                try:
                    result = self._store.write(prepared)
                except psycopg.OperationalError:
                    raise
                except Exception as exc:  # the body's reject, never a 5xx
                    prepared, result = self._keep_as_reject(envelope, exc)
            except psycopg.OperationalError as exc:
                self._drop_connection()
                raise HTTPException(503, "the database is unavailable; retry") from exc
        metrics.MESSAGES.labels("http", "rejected" if prepared.rejects else "accepted").inc()
        metrics.READINGS.labels("inserted").inc(result.readings_inserted)
        if prepared.rejects:
            reject = prepared.rejects[0]
            metrics.REJECTS.labels(reject.reason).inc()
            raise HTTPException(422, f"{reject.reason}: {reject.detail}")
        refused = [r for b in prepared.batches for r in b.rejects]
        for reject in refused:
            metrics.REJECTS.labels(reject.reason).inc()
        return IngestResult(duplicate=result.batches_duplicate > 0,
                            readings_inserted=result.readings_inserted,
                            readings_duplicate=result.readings_duplicate,
                            rejected=[RejectOut(reason=r.reason, detail=r.detail)
                                      for r in refused])


def http_ingest(database_url: str, settings: IngestGroup) -> HttpIngest:
    """HTTP ingest as the settings say; the ingest service and the API both mount it."""
    directory = DeviceDirectory(database_url,
                                UnknownDevicePolicy(settings.ingest_unknown_devices))
    return HttpIngest(database_url, directory, settings.ingest_limits(),
                      LoadStrategy(settings.ingest_strategy), device_budget(settings))


def add_http_ingest(app: FastAPI, prefix: str = "") -> None:
    """Mount POST {prefix}/ingest/{site}/{device}; app.state.http_ingest must be set."""
    router = APIRouter(tags=["ingest"])

    @router.post(
        "/ingest/{site}/{device}", response_model=IngestResult,
        summary="Send one telemetry message (JSON or MessagePack by Content-Type)",
        responses={401: {"description": "no API key, or an unknown one"},
                   403: {"description": "the key lacks the ingest scope or this site"},
                   429: {"description": "the device is over its rate limit; retry after "
                                        "the Retry-After header's seconds"},
                   422: {"description": "the message was refused whole (and kept as a "
                                        "reject with its reason)"},
                   503: {"description": "the database is unavailable; retry"}})
    async def ingest(request: Request,
                     principal: Ingester,
                     site: Annotated[str, Path(pattern=f"^{ID_PATTERN}$")],
                     device: Annotated[str, Path(pattern=f"^{ID_PATTERN}$")],
                     content_type: Annotated[str | None, Header()] = None) -> IngestResult:
        check_act(principal, Scope.INGEST, site)
        payload = await request.body()
        envelope = Envelope(up_topic(site, device), payload, content_type,
                            int(time.time() * 1000))
        return await run_in_threadpool(request.app.state.http_ingest.ingest, envelope)

    app.include_router(router, prefix=prefix)
