"""The dashboard process's settings (``TIDEFIELD_`` variables; rules in
``tidefield.protocol.settings``). The dashboards read everything through the HTTP API, so
what they need is where it is; each person signs in, and the dashboards hold their session
token (never a shared key)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator

from tidefield.protocol.settings import DashboardAddressGroup, LoggingGroup, ProcessSettings


class ApiClientGroup(BaseModel):
    api_url: str = Field("http://127.0.0.1:8080",
                         description="the HTTP API the dashboards read (they never touch the "
                                     "database)")
    api_timeout_s: float = Field(10.0, gt=0, description="dashboards' request timeout")
    dashboard_public_url: str | None = Field(
        None, description="the dashboards' URL as browsers reach it, where single sign-on "
        "returns (default: http://DASHBOARD_HOST:DASHBOARD_PORT)")

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must look like http://host:port")
        return value.rstrip("/")


class DashboardGroup(BaseModel):
    dashboard_refresh_s: int = Field(
        30, ge=0, description="auto-refresh of the overview and site pages (0: off)")
    dashboard_language: Literal["zh", "en"] = Field(
        "zh", description="language a new dashboard session starts in (`zh` or `en`; `?lang=` in "
                          "the URL too)")
    dashboard_map_tiles: bool = Field(
        False, description="draw a tile basemap under the bundled outlines (needs internet)")


class DashboardSettings(DashboardAddressGroup, ApiClientGroup, DashboardGroup, LoggingGroup,
                        ProcessSettings):
    """`tidefield dashboard`: the operators' Streamlit dashboards."""
