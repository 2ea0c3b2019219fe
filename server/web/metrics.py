"""``/metrics`` in Prometheus' text format, for either app.

Under several uvicorn workers each process keeps its own counters; with
``PROMETHEUS_MULTIPROC_DIR`` set (``tidefield ingest`` sets it) the answer adds up every
process's files, so a scrape sees the service, not whichever worker answered.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def exposition(extra: Sequence[CollectorRegistry] = ()) -> bytes:
    """The process's (or the service's) metrics, then those of the ``extra`` registries
    (an app's own collectors, measured on each scrape)."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        text = generate_latest(registry)
    else:
        text = generate_latest()
    return text + b"".join(generate_latest(registry) for registry in extra)


def metrics_router(tags: list[str] | None = None,
                   extra: Sequence[CollectorRegistry] = ()) -> APIRouter:
    """``GET /metrics``, to include in an app."""
    router = APIRouter()

    @router.get("/metrics", response_class=PlainTextResponse, tags=list(tags or []))
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(exposition(extra), media_type=CONTENT_TYPE_LATEST)

    return router
