"""The pages' data: the signed-in person's API client, and API answers cached with TTLs.

Each browser session holds its person's session token (``st.session_state``, on the
server: the token never reaches the browser) and gets a client sending it. Every cached
function takes the client first; it is hashed by its API address and token, so two
people never share answers. Errors are not cached (Streamlit never caches a raised
exception), so a page retried after an outage asks the API again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import streamlit as st

from tidefield.protocol.registry import load_geojson

from .client import ApiClient, ApiError, ApiRefused
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


TOKEN_KEY = "session_token"  # st.session_state: the signed-in person's session token
MAX_SESSIONS = 1000  # clients kept (one per session token)


@st.cache_resource(max_entries=MAX_SESSIONS, ttl=24 * 3600)
def _client(url: str, token: str | None, timeout: float,
            forwarded_for: str | None) -> ApiClient:
    return ApiClient(url, token, timeout=timeout, forwarded_for=forwarded_for)


class NotSignedIn(ApiRefused):
    """This browser session has no signed-in person."""


def browser_address() -> str | None:
    """The address of the browser this session serves (None where unknown, as in tests)."""
    try:
        address = st.context.ip_address
    except (AttributeError, RuntimeError):  # older Streamlit, or no script context
        return None
    return address if isinstance(address, str) else None  # AppTest: a stand-in object


def client() -> ApiClient:
    """The signed-in person's client; ``NotSignedIn`` when nobody is."""
    token = st.session_state.get(TOKEN_KEY)
    if not token:
        raise NotSignedIn("nobody is signed in", status=401)
    config = settings()
    return _client(config.api_url, token, config.api_timeout_s, browser_address())


def anonymous() -> ApiClient:
    """A client without a credential: for signing in."""
    config = settings()
    return _client(config.api_url, None, config.api_timeout_s, browser_address())


def sign_in(answer: dict) -> None:
    """Keep a new session (the API's sign-in answer) for this browser session."""
    st.session_state[TOKEN_KEY] = answer["token"]
    st.session_state.pop("signed_out_because", None)  # ui.SIGNED_OUT_KEY: shown until now


def sign_out() -> None:
    """End the session at the API (when it still lives) and forget it here."""
    token = st.session_state.pop(TOKEN_KEY, None)
    if token:
        # already ended or expired: forgetting it is all that is left
        with contextlib.suppress(ApiError):
            client_of(token).sign_out()
        _client.clear()
        me.clear()


def client_of(token: str) -> ApiClient:
    config = settings()
    return _client(config.api_url, token, config.api_timeout_s, browser_address())


@_cached(LIVE_TTL_S)
def me(api: ApiClient) -> dict:
    return api.me()


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
def site_control(api: ApiClient, site_id: str) -> dict:
    return api.site_control(site_id)


def forget_control() -> None:
    """After a command or a configuration change."""
    site_control.clear()


@_cached(LIVE_TTL_S)
def alert(api: ApiClient, alert_id: int) -> dict:
    return api.alert(alert_id)


@_cached(LIVE_TTL_S)
def alert_responses(api: ApiClient, alert_id: int) -> list[dict]:
    return api.alert_responses(alert_id)


def may_operate(me: dict) -> bool:
    """Whether the signed-in person (or key) may act on some site: an operator's or admin's
    role somewhere, or a key's operate scope. Per site the API decides (and says so)."""
    if me.get("user_id") is None:
        return "operate" in me.get("scopes", []) or "admin" in me.get("scopes", [])
    return bool(me.get("platform_admin")) or any(
        role["role"] in ("operator", "admin") for role in me.get("roles", []))


@_cached(LIVE_TTL_S)
def incidents(api: ApiClient) -> list[dict]:
    return api.incidents()


@_cached(LIVE_TTL_S)
def deliveries(api: ApiClient, alert_id: int | None = None) -> list[dict]:
    return api.deliveries(alert_id=alert_id)


def forget_alerts() -> None:
    """After an acknowledgement: the alert lists, the alert, incidents and the overview
    changed."""
    for fn in (alerts, alert, alert_responses, incidents, overview):
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


# --- administration ------------------------------------------------------------------
@_cached(LIVE_TTL_S)
def users(api: ApiClient) -> list[dict]:
    return api.users()


@_cached(REGISTRY_TTL_S)
def organisations(api: ApiClient) -> list[dict]:
    return api.organisations()


@_cached(LIVE_TTL_S)
def audit(api: ApiClient, **filters: Any) -> list[dict]:
    return api.audit(**filters)


def forget_people() -> None:
    for fn in (users, audit):
        fn.clear()


# --- the fleet ---------------------------------------------------------------------------

@_cached(LIVE_TTL_S)
def health(api: ApiClient, site: str | None = None) -> list[dict]:
    return api.health(site)


@_cached(LIVE_TTL_S)
def maintenance(api: ApiClient, start: datetime, end: datetime, site: str | None = None
                ) -> list[dict]:
    return api.maintenance(start=start, end=end, site=site)


@_cached(LIVE_TTL_S)
def alert_feedback(api: ApiClient, alert_id: int) -> list[dict]:
    return api.alert_feedback(alert_id)


@_cached(HISTORY_TTL_S)
def weekly_precision(api: ApiClient, start: datetime, end: datetime) -> list[dict]:
    return api.weekly_precision(start=start, end=end)


def forget_fleet() -> None:
    """After a change to sites, devices, windows or feedback: read them again."""
    for cached in (sites, devices, health, maintenance, alert_feedback, weekly_precision,
                   site_latest, series):
        cached.clear()
