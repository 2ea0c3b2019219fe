"""The pages' data: one shared API client, and API answers cached with TTLs.

Every cached function takes the client first; it is hashed by its API address and key,
so two configurations never share answers. Errors are not cached (Streamlit never caches
a raised exception), so a page retried after an outage asks the API again.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import streamlit as st

from tidefield.protocol.registry import load_geojson

from .client import ApiClient, ApiRefused
from .settings import DashboardSettings

# How long answers are reused. Live state is short (the auto-refresh shows fresh data);
# the registry changes when an admin edits it, so ten minutes is fine.
LIVE_TTL_S = 10
HISTORY_TTL_S = 60
REGISTRY_TTL_S = 600
MAX_ENTRIES = 512
# Sparkline requests of one site sent at once (the API has a pool of 10 connections).
SPARK_WORKERS = 6


def _identity(client: ApiClient) -> str:
    return client.identity


_HASH: dict[Any, Callable[[Any], Any]] = {ApiClient: _identity}


def _cached(ttl: int) -> Any:
    return st.cache_data(ttl=ttl, max_entries=MAX_ENTRIES, show_spinner=False,
                         hash_funcs=_HASH)


@st.cache_resource
def settings() -> DashboardSettings:
    return DashboardSettings()


@st.cache_resource
def _client(url: str, key: str | None, timeout: float) -> ApiClient:
    return ApiClient(url, key, timeout=timeout)


class NoApiKey(ApiRefused):
    """The dashboards were started without TIDEFIELD_API_KEY."""


def client() -> ApiClient:
    config = settings()
    if config.api_key is None:
        raise NoApiKey("TIDEFIELD_API_KEY is not set")
    return _client(config.api_url, config.api_key.get_secret_value(), config.api_timeout_s)


def clear_all() -> None:
    """Forget every cached answer and the client (tests, a changed configuration)."""
    st.cache_data.clear()
    st.cache_resource.clear()


def now_minute() -> datetime:
    """Now, to the minute: ranges ending 'now' hit the cache within the same minute."""
    return datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)


@st.cache_resource
def geojson() -> dict:
    return load_geojson()


# --- registry ----------------------------------------------------------------------
@_cached(REGISTRY_TTL_S)
def sites(api: ApiClient) -> list[dict]:
    return api.sites()


@_cached(REGISTRY_TTL_S)
def series(api: ApiClient, site: str | None = None, metric: str | None = None) -> list[dict]:
    return api.series(site=site, metric=metric)


# --- live state --------------------------------------------------------------------
@_cached(LIVE_TTL_S)
def overview(api: ApiClient) -> dict:
    return api.overview()


@_cached(LIVE_TTL_S)
def site_latest(api: ApiClient, site_id: str) -> list[dict]:
    return api.site_latest(site_id)


@_cached(LIVE_TTL_S)
def devices(api: ApiClient, site_id: str) -> list[dict]:
    return api.devices(site=site_id)


@_cached(LIVE_TTL_S)
def alerts(api: ApiClient, **filters: Any) -> list[dict]:
    return api.alerts(**filters)


@_cached(LIVE_TTL_S)
def alert(api: ApiClient, alert_id: int) -> dict:
    return api.alert(alert_id)


def forget_alerts() -> None:
    """After an acknowledgement: the alert lists, the alert and the overview changed."""
    for fn in (alerts, alert, overview):
        fn.clear()


# --- history -----------------------------------------------------------------------
@_cached(HISTORY_TTL_S)
def readings(api: ApiClient, series_id: int, start: datetime, end: datetime,
             bucket: str) -> dict:
    return api.readings(series_id, start, end, bucket)


@_cached(HISTORY_TTL_S)
def anomalies(api: ApiClient, start: datetime, end: datetime, *, site: str | None = None,
              series: int | None = None) -> list[dict]:
    return api.anomalies(start=start, end=end, site=site, series=series)


@_cached(HISTORY_TTL_S)
def sparklines(api: ApiClient, series_ids: tuple[int, ...], end: datetime
               ) -> dict[int, list[float]]:
    """The last 24 hourly means of each series (from the hourly rollups), fetched in
    parallel: one request per series."""
    start = end - timedelta(hours=24)

    def one(series_id: int) -> list[float]:
        answer = api.readings(series_id, start, end, "1h")
        return [round(b["mean"], 3) for b in answer.get("buckets") or []]

    with ThreadPoolExecutor(SPARK_WORKERS) as pool:
        return dict(zip(series_ids, pool.map(one, series_ids), strict=True))
