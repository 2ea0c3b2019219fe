"""The API application: /api/v1 routers, JSON errors, a connection pool."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, Field

from tidefield.protocol import mqtt
from tidefield.server.ingest.http import add_http_ingest, http_ingest
from tidefield.server.ops.metrics import OpsCollector
from tidefield.server.security.sessions import SignInPolicy
from tidefield.server.security.wiring import broker_access, client_ca_file, device_broker_url
from tidefield.server.settings import ApiSettings
from tidefield.server.web.database import ReadPool, database_problem, open_pool
from tidefield.server.web.deps import READ_SOURCE_HEADER
from tidefield.server.web.errors import ErrorStyle, install_error_handlers, json_error
from tidefield.server.web.metrics import metrics_router

from . import sta
from .routes import (
    alerts,
    anomalies,
    auth,
    control,
    detect,
    devices,
    export,
    feedback,
    fleet,
    notifications,
    overview,
    people,
    rules,
    series,
    sites,
    sso,
)

log = logging.getLogger(__name__)

REQUESTS = Counter("tidefield_api_requests_total", "API requests", ["route", "status"])
LATENCY = Histogram("tidefield_api_request_seconds", "API latency", ["route"])


class Health(BaseModel):
    database: bool
    broker: bool | None = Field(description="null when no broker is configured")
    read_replica: bool | None = Field(
        None, description="null when reads go to the primary by configuration; false while "
                          "the replica is down and reads go to the primary instead")
    detail: list[str] = Field(default_factory=list, description="what is wrong, if anything")


# A broker probe is a TCP connect, CONNECT and CONNACK: cheap, but not free for a health
# endpoint that load balancers may call every second; its answer is kept this long.
BROKER_PROBE_TTL_S = 10.0


def _is_sta(request: Request) -> bool:
    return request.url.path == sta.PREFIX or request.url.path.startswith(sta.PREFIX + "/")


def _render_error(request: Request, status: int, message: str) -> JSONResponse:
    # SensorThings clients expect their own error shape under /sta (see sta/errors.py)
    if _is_sta(request):
        return sta.error_response(status, message)
    return json_error(request, status, message)


# Errors are JSON with a clear message: {"error": {"status": ..., "message": ...}}
# ({"code": ..., "type": "error", "message": ...} under /sta, where a bad request is 400).
ERROR_STYLE = ErrorStyle(render=_render_error,
                         bad_request_status=lambda request: 400 if _is_sta(request) else 422)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    if not settings.database_url:
        raise RuntimeError("TIDEFIELD_DATABASE_URL is not set")
    url = settings.database_url

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = open_pool(url, max_size=10)
        app.state.read_pool = ReadPool(app.state.pool, settings.database_read_url,
                                       max_size=10)
        app.state.http_ingest = http_ingest(url, settings)
        try:
            yield
        finally:
            app.state.http_ingest.close()
            app.state.read_pool.close()
            app.state.pool.close()

    app = FastAPI(title="Tidefield API", version="1",
                  description="Sites, devices, series and readings of Qingdao's smart farms "
                              "and ocean sites. Every endpoint needs an API key "
                              "(header `X-API-Key`) or a session (`POST /api/v1/auth/"
                              "sign-in`, then `Authorization: Bearer <token>`); each "
                              "answers only within the caller's organisations.",
                  lifespan=lifespan)
    app.state.sign_in_policy = SignInPolicy(
        session_hours=settings.session_hours, idle_minutes=settings.session_idle_minutes,
        account_failures=settings.sign_in_account_failures,
        address_failures=settings.sign_in_address_failures,
        window_minutes=settings.sign_in_window_minutes,
        lock_minutes=settings.sign_in_lock_minutes)
    app.state.trusted_proxies = frozenset(settings.trusted_proxies)
    app.state.session_cookie_secure = settings.session_cookie_secure or settings.tls
    app.state.api_public_url = settings.api_public_url
    app.state.sso_return_origins = frozenset(o.rstrip("/") for o in settings.sso_return_origins)
    # what provisioning a device needs: the broker's logins, and what an agent connects to
    app.state.broker_access = broker_access(settings)
    app.state.device_broker_url = device_broker_url(settings)
    app.state.agent_ca_file = client_ca_file(settings) if settings.tls else None

    install_error_handlers(app, ERROR_STYLE)

    @app.middleware("http")
    async def measure(request: Request,
                      call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        read_from = getattr(request.state, "read_from", None)
        if read_from is not None:  # a read-only route: which database answered it
            response.headers[READ_SOURCE_HEADER] = read_from
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        REQUESTS.labels(path, str(response.status_code)).inc()
        LATENCY.labels(path).observe(time.perf_counter() - started)
        return response

    for router in (auth.router, sso.router, sites.router, devices.router, series.router,
                   detect.router, export.router, alerts.router, anomalies.router,
                   overview.router, people.router, notifications.router, control.router,
                   rules.router, fleet.router, feedback.router):
        app.include_router(router, prefix="/api/v1")
    add_http_ingest(app, prefix="/api/v1")
    app.state.sta_statement_timeout_s = settings.sta_statement_timeout_s
    sta.install(app)

    broker_address = (mqtt.parse_mqtt_url(settings.mqtt_url, ca_file=client_ca_file(settings))
                      if settings.mqtt_url else None)
    probed: list = [0.0, None]  # (when, outcome) of the last broker probe

    def broker_problem() -> str | None:
        now = time.monotonic()
        if now - probed[0] > BROKER_PROBE_TTL_S:
            probed[:] = [now, mqtt.probe(broker_address)] if broker_address else [now, None]
        return probed[1]

    @app.get("/healthz", response_model=Health, tags=["operations"],
             responses={503: {"model": Health, "description": "a dependency is down"}},
             summary="Database and broker reachable (no API key needed)")
    def healthz(request: Request) -> Health | JSONResponse:
        detail = []
        problem = database_problem(request.app.state.pool)
        database = problem is None
        if problem:
            detail.append(problem)
        broker = None
        if broker_address is not None:
            problem = broker_problem()
            broker = problem is None
            if problem:
                detail.append(f"broker {broker_address} {problem}")
        read_pool = request.app.state.read_pool
        replica = None if read_pool.replica is None else not read_pool.replica_down
        health = Health(database=database, broker=broker, read_replica=replica,
                        detail=detail + [p for p in [read_pool.problem()] if p])
        if detail:  # a replica down is no outage: reads go to the primary meanwhile
            return JSONResponse(health.model_dump(), status_code=503)
        return health

    # backups, WAL archiving, the replica's lag, the disks: measured on each scrape
    operations = CollectorRegistry(auto_describe=False)
    operations.register(OpsCollector(
        url, read_url=settings.database_read_url, data_dir=settings.data_dir.resolve(),
        repo=(settings.backup_repo or settings.data_dir / "backup").resolve()))
    app.include_router(metrics_router(tags=["operations"], extra=[operations]))
    return app
