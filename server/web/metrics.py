"""``/metrics`` in Prometheus' text format, for either app.

Under several uvicorn workers each process keeps its own counters; with
``PROMETHEUS_MULTIPROC_DIR`` set (``tidefield ingest`` sets it) the answer adds up every
process's files, so a scrape sees the service, not whichever worker answered.
"""

from __future__ import annotations

import os

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def exposition() -> bytes:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()


def metrics_router(tags: list[str] | None = None) -> APIRouter:
    """``GET /metrics``, to include in an app."""
    router = APIRouter()

    @router.get("/metrics", response_class=PlainTextResponse, tags=list(tags or []))
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(exposition(), media_type=CONTENT_TYPE_LATEST)

    return router
