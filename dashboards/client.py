"""The dashboards' only way to the data: a small client of the HTTP API (/api/v1).

No Streamlit here, so tests and benchmarks call it directly. Every failure is one of
three errors, so a page can say what went wrong instead of showing a stack trace:

* ``ApiUnavailable`` (retryable): the API cannot be reached, timed out, or answered 5xx;
* ``ApiRefused``: not signed in, the session ended, or it may not do this (401, 403,
  and 423 for a sign-in locked after too many failures);
* ``ApiRequestError``: the API refused the request itself (404, 422, ...).

Each carries ``status`` (None when there was no answer) and the API's own ``message``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
# Largest page each list endpoint allows; the client follows cursors for the rest.
PAGE_LIMITS = {"/sites": 1000, "/devices": 1000, "/series": 5000, "/alerts": 1000,
               "/anomalies": 1000}


class ApiError(Exception):
    """Base of every dashboard-side API failure."""

    retryable = False

    def __init__(self, message: str, *, status: int | None = None,
                 path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:  # stay picklable (keyword context)
        return (_rebuild, (type(self), self.message, self.status, self.path))


def _rebuild(cls: type[ApiError], message: str, status: int | None, path: str | None
             ) -> ApiError:
    return cls(message, status=status, path=path)


class ApiUnavailable(ApiError):
    retryable = True


class ApiRefused(ApiError):
    """401, 403 or 423: who is asking may not do this (401: sign in again)."""


class ApiRequestError(ApiError):
    """The API understood the request and refused it (404, 422...)."""


def iso(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("times sent to the API must carry a time zone")
    return value.isoformat()


class ApiClient:
    """``credential``: a person's session token (``tfs_...``, what the dashboards hold)
    or an API key, sent as a bearer token; None for signing in. ``forwarded_for``: the
    browser's address, which the API believes from a trusted proxy (lock-out per
    address, the audit log's "from where")."""

    def __init__(self, base_url: str, credential: str | None, *, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None,
                 forwarded_for: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        if forwarded_for:
            headers["X-Forwarded-For"] = forwarded_for
        self.base_url = base_url.rstrip("/")
        # what tells two clients' answers apart in a cache, without holding the secret
        self.identity = self.base_url + "#" + hashlib.sha256(
            (credential or "").encode()).hexdigest()[:16]
        self._http = httpx.Client(base_url=self.base_url + PREFIX, headers=headers,
                                  timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    # --- plumbing -------------------------------------------------------------------
    def _request(self, method: str, path: str, *, params: dict | None = None,
                 json: Any = None) -> httpx.Response:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, params=params, json=json)
        except httpx.TimeoutException as exc:
            raise ApiUnavailable(f"the API at {self.base_url} did not answer in time",
                                 path=path) from exc
        except httpx.TransportError as exc:
            raise ApiUnavailable(f"the API at {self.base_url} is unreachable ({exc})",
                                 path=path) from exc
        if response.status_code < 400:
            return response
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200] or response.reason_phrase
        status = response.status_code
        error = (ApiUnavailable if status >= 500 else
                 ApiRefused if status in (401, 403, 423) else ApiRequestError)
        raise error(message, status=status, path=path)

    def _get(self, path: str, **params: Any) -> Any:
        return self._request("GET", path, params=params).json()

    def _pages(self, path: str, **params: Any) -> Iterator[dict]:
        params.setdefault("limit", PAGE_LIMITS[path])
        cursor = None
        while True:
            page = self._get(path, **params, cursor=cursor)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    # --- endpoints ------------------------------------------------------------------
    def sites(self, **filters: Any) -> list[dict]:
        return list(self._pages("/sites", **filters))

    def site(self, site_id: str) -> dict:
        return self._get(f"/sites/{site_id}")

    def site_latest(self, site_id: str) -> list[dict]:
        return self._get(f"/sites/{site_id}/latest")

    def devices(self, site: str | None = None) -> list[dict]:
        return list(self._pages("/devices", site=site))

    def series(self, *, site: str | None = None, device: str | None = None,
               metric: str | None = None) -> list[dict]:
        return list(self._pages("/series", site=site, device=device, metric=metric))

    def readings(self, series_id: int, start: datetime, end: datetime,
                 bucket: str = "raw", *, tz: str = "UTC") -> dict:
        """Every point of the range (following cursors), as one Readings answer."""
        out: dict | None = None
        cursor = None
        while True:
            page = self._get(f"/series/{series_id}/readings", start=iso(start), end=iso(end),
                             bucket=bucket, tz=tz, cursor=cursor)
            if out is None:
                out = page
            else:
                key = "points" if bucket == "raw" else "buckets"
                out[key] = (out[key] or []) + (page[key] or [])
            cursor = page.get("next_cursor")
            if not cursor:
                out["next_cursor"] = None
                return out

    def overview(self) -> dict:
        return self._get("/overview")

    def alerts(self, *, limit: int = 500, **filters: Any) -> list[dict]:
        """The newest ``limit`` alerts matching the filters (site, rule, category,
        severity, state, since, until)."""
        for name in ("since", "until"):
            if isinstance(filters.get(name), datetime):
                filters[name] = iso(filters[name])
        out: list[dict] = []
        for item in self._pages("/alerts", **filters):
            out.append(item)
            if len(out) >= limit:
                break
        return out

    def alert(self, alert_id: int) -> dict:
        return self._get(f"/alerts/{alert_id}")

    def acknowledge(self, alert_id: int, comment: str) -> dict:
        return self._request("POST", f"/alerts/{alert_id}/acknowledge",
                             json={"comment": comment}).json()

    def alert_responses(self, alert_id: int) -> list[dict]:
        return self._get(f"/alerts/{alert_id}/responses")

    def confirm_response(self, alert_id: int, response_id: int) -> dict:
        return self._request("POST", f"/alerts/{alert_id}/responses/{response_id}/confirm"
                             ).json()

    def incidents(self) -> list[dict]:
        """Open incidents (alerts of one rule opening close in time and space)."""
        return self._get("/notifications/incidents")

    def acknowledge_incident(self, incident_id: int, comment: str) -> dict:
        return self._request("POST", f"/notifications/incidents/{incident_id}/acknowledge",
                             json={"comment": comment}).json()

    def deliveries(self, *, alert_id: int | None = None, limit: int = 200) -> list[dict]:
        """The delivery log (each attempt to tell someone), newest first."""
        params: dict[str, Any] = {"limit": limit}
        if alert_id is not None:
            params["alert_id"] = alert_id
        return self._get("/notifications/deliveries", **params)["items"]

    def site_control(self, site_id: str) -> dict:
        """Every device's configuration (twin) and the site's command history."""
        return self._get(f"/sites/{site_id}/control")

    def command(self, device_id: str, body: dict) -> dict:
        """Send a command (operate right; 403 otherwise)."""
        return self._request("POST", f"/devices/{device_id}/commands", json=body).json()

    def set_config(self, device_id: str, settings: dict) -> dict:
        return self._request("PUT", f"/devices/{device_id}/config",
                             json={"settings": settings}).json()

    def anomalies(self, *, start: datetime, end: datetime, site: str | None = None,
                  series: int | None = None, category: str | None = None,
                  limit: int = 10_000) -> list[dict]:
        """The newest ``limit`` anomalies in [start, end)."""
        out: list[dict] = []
        for item in self._pages("/anomalies", site=site, series=series, category=category,
                                start=iso(start), end=iso(end)):
            out.append(item)
            if len(out) >= limit:
                break
        return out

    def export(self, *, start: datetime, end: datetime, fmt: str,
               site: str | None = None, series: list[int] | None = None) -> bytes:
        """The whole export in memory: what a download button hands the browser."""
        return self._request("GET", "/export", params={
            "site": site, "series": series, "start": iso(start), "end": iso(end),
            "format": fmt}).content

    # --- the fleet --------------------------------------------------------------------
    def create_site(self, fields: dict) -> dict:
        return self._request("POST", "/fleet/sites", json=fields).json()

    def edit_site(self, site_id: str, changes: dict) -> dict:
        return self._request("PATCH", f"/fleet/sites/{site_id}", json=changes).json()

    def retire_site(self, site_id: str) -> dict:
        return self._request("POST", f"/fleet/sites/{site_id}/retire").json()

    def create_device(self, site_id: str, template: str, device_id: str | None = None
                      ) -> dict:
        return self._request("POST", "/fleet/devices", json={
            "site_id": site_id, "template": template, "id": device_id}).json()

    def move_device(self, device_id: str, site_id: str) -> dict:
        return self._request("POST", f"/fleet/devices/{device_id}/move",
                             json={"site_id": site_id}).json()

    def retire_device(self, device_id: str) -> dict:
        return self._request("POST", f"/fleet/devices/{device_id}/retire").json()

    def provision(self, device_id: str, *, rotate: bool = False) -> dict:
        """The device's new broker login, its agent config and the CA: shown once."""
        return self._request("POST", f"/fleet/devices/{device_id}/credentials",
                             params={"rotate": "true" if rotate else None}).json()

    def revoke_login(self, device_id: str) -> dict:
        return self._request("DELETE", f"/fleet/devices/{device_id}/credentials").json()

    def registry_csv(self) -> bytes:
        return self._request("GET", "/fleet/registry.csv").content

    def import_registry(self, text: bytes, organisation_id: int | None = None) -> dict:
        params = {k: v for k, v in {"organisation_id": organisation_id}.items()
                  if v is not None}
        try:
            response = self._http.post("/fleet/registry", content=text, params=params,
                                       headers={"Content-Type": "text/csv"})
        except httpx.TransportError as exc:
            raise ApiUnavailable(f"the API at {self.base_url} is unreachable ({exc})",
                                 path="/fleet/registry") from exc
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            error = (ApiUnavailable if response.status_code >= 500 else ApiRefused
                     if response.status_code in (401, 403) else ApiRequestError)
            raise error(message, status=response.status_code, path="/fleet/registry")
        return response.json()

    def health(self, site: str | None = None) -> list[dict]:
        return self._get("/fleet/health", site=site)

    def maintenance(self, *, start: datetime, end: datetime, site: str | None = None
                    ) -> list[dict]:
        return self._get("/maintenance", site=site, start=iso(start), end=iso(end))

    def start_maintenance(self, site_id: str, ends_at: datetime, *,
                          device_id: str | None = None, reason: str = "") -> dict:
        return self._request("POST", "/maintenance", json={
            "site_id": site_id, "device_id": device_id, "ends_at": iso(ends_at),
            "reason": reason}).json()

    def end_maintenance(self, window_id: int) -> dict:
        return self._request("POST", f"/maintenance/{window_id}/end").json()

    def give_feedback(self, alert_id: int, verdict: str, note: str) -> dict:
        return self._request("POST", f"/alerts/{alert_id}/feedback",
                             json={"verdict": verdict, "note": note}).json()

    def alert_feedback(self, alert_id: int) -> list[dict]:
        return self._get(f"/alerts/{alert_id}/feedback")

    def weekly_precision(self, *, start: datetime, end: datetime, site: str | None = None
                         ) -> list[dict]:
        return self._get("/feedback/weekly", site=site, start=iso(start), end=iso(end))

    def feedback_csv(self, *, start: datetime, end: datetime) -> bytes:
        return self._request("GET", "/feedback", params={
            "start": iso(start), "end": iso(end), "format": "csv"}).content

    # --- people -----------------------------------------------------------------------
    def sign_in(self, username: str, password: str, code: str | None = None) -> dict:
        """A new session: ``{"token", "expires_at", "must_change_password", "me"}``."""
        body = {"username": username, "password": password}
        if code:
            body["code"] = code
        return self._request("POST", "/auth/sign-in", json=body).json()

    def sign_out(self) -> None:
        self._request("POST", "/auth/sign-out")

    def me(self) -> dict:
        return self._get("/auth/me")

    def change_password(self, current: str, new: str) -> None:
        self._request("POST", "/auth/password",
                      json={"current_password": current, "new_password": new})

    def users(self) -> list[dict]:
        return self._get("/users")

    def organisations(self) -> list[dict]:
        return self._get("/organisations")

    def reset_password(self, user_id: int) -> dict:
        return self._request("POST", f"/users/{user_id}/password-reset").json()

    def set_role(self, user_id: int, organisation_id: int, role: str | None) -> dict:
        if role is None:
            return self._request("DELETE", f"/users/{user_id}/roles/{organisation_id}").json()
        return self._request("PUT", f"/users/{user_id}/roles/{organisation_id}",
                             json={"role": role}).json()

    def audit(self, *, limit: int = 500, **filters: Any) -> list[dict]:
        """The newest ``limit`` audit rows matching the filters (action, actor, target,
        since, until)."""
        for name in ("since", "until"):
            if isinstance(filters.get(name), datetime):
                filters[name] = iso(filters[name])
        return self._get("/audit", limit=limit, **filters)["items"]

    def audit_csv(self, **filters: Any) -> bytes:
        for name in ("since", "until"):
            if isinstance(filters.get(name), datetime):
                filters[name] = iso(filters[name])
        return self._request("GET", "/audit/export", params=filters).content

    def identity_providers(self) -> list[dict]:
        """Single sign-on providers offered on the sign-in page (no credential needed)."""
        return self._get("/auth/providers")

    def redeem(self, handoff: str) -> dict:
        """Trade a single sign-on's one-time code for a session (as ``sign_in``)."""
        return self._request("POST", "/auth/oidc/redeem", json={"code": handoff}).json()
