"""The validated shapes of contacts, groups and routes: what the API takes and what a
configuration file (``tidefield notify load FILE``) holds. One set of rules for both.

A configuration file::

    organisation: platform          # slug; its sites (the platform office: every site)
    contacts:
      - {name: duty-phone, url: "dingtalk://SECRET@TOKEN/", language: zh,
         quiet_hours: "22:00-07:00"}
      - {name: crew-mail, url: "mailtos://user:pass@smtp.example.com?to=crew@example.com"}
    groups:
      - {name: operators, members: [duty-phone]}
      - {name: maintenance, members: [crew-mail]}
    routes:
      - {name: events, group: operators, categories: [event], escalate_after_minutes: 15,
         remind_every_minutes: 30}
      - {name: faults, group: maintenance, categories: [fault], digest: hourly}
"""

from __future__ import annotations

import re
from datetime import time
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .channels import InvalidChannel, check_url

_NAME = Field(min_length=1, max_length=80, pattern=r"^[^\x00-\x1f]+$")
_QUIET = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
_SEVERITIES = Literal["info", "warning", "critical"]
_CATEGORIES = Literal["fault", "event", "forecast"]


def parse_quiet_hours(text: str | None) -> tuple[time, time] | None:
    """``"22:00-07:00"`` -> (22:00, 07:00); None or "" -> None."""
    if not text:
        return None
    match = _QUIET.match(text)
    if match is None:
        raise ValueError("quiet_hours looks like HH:MM-HH:MM, e.g. 22:00-07:00")
    start = time(int(match[1]), int(match[2]))
    end = time(int(match[3]), int(match[4]))
    if start == end:
        raise ValueError("quiet_hours: start and end are the same")
    return start, end


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = _NAME
    url: str = Field(min_length=4, max_length=2000, description="an Apprise URL or "
                     "tfhook(s)://host/path?secret=...; write-only (answers show its "
                     "scheme and host)")
    language: Literal["zh", "en"] = "zh"
    quiet_hours: str | None = Field(None, description="HH:MM-HH:MM local time; critical "
                                    "alerts are sent anyway")
    timezone: str = "Asia/Shanghai"
    enabled: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            check_url(value)
        except InvalidChannel as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str | None) -> str | None:
        parse_quiet_hours(value)
        return value or None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class GroupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = _NAME
    members: list[str] = Field(default_factory=list, max_length=500,
                               description="contact names")


class RouteIn(BaseModel):
    """Each condition left out matches everything."""

    model_config = ConfigDict(extra="forbid")

    name: str = _NAME
    group: str = Field(min_length=1, max_length=80, description="a group's name")
    site_ids: list[str] | None = Field(None, max_length=1000)
    kinds: list[str] | None = Field(None, max_length=100)
    districts: list[str] | None = Field(None, max_length=100)
    severities: list[_SEVERITIES] | None = None
    categories: list[_CATEGORIES] | None = None
    rules: list[str] | None = Field(None, max_length=100)
    tier: int = Field(0, ge=0, le=9, description="0: told at once; n: when tier n-1 did "
                      "not acknowledge in its escalate_after_minutes")
    escalate_after_minutes: float | None = Field(None, gt=0, le=7 * 24 * 60)
    remind_every_minutes: float | None = Field(None, gt=0, le=7 * 24 * 60)
    digest: Literal["none", "hourly", "daily"] = "none"
    enabled: bool = True


class NotifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    organisation: str = "platform"
    contacts: list[ContactIn] = Field(default_factory=list)
    groups: list[GroupIn] = Field(default_factory=list)
    routes: list[RouteIn] = Field(default_factory=list)
