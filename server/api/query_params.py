"""Query-string parameters routes share: time ranges and buckets (with 4xx errors), the
site filter, the page size."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import HTTPException, Query

SiteFilter = Annotated[str | None, Query(examples=["oc-001"])]
Limit = Annotated[int, Query(ge=1, le=1000)]

MAX_RANGE = timedelta(days=3660)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise HTTPException(422, f"{name} must carry a time zone (e.g. 2026-11-29T08:00:00+08:00"
                                 f" or ...Z)")
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        value = EARLIEST
    if not EARLIEST <= value <= LATEST:
        raise HTTPException(422, f"{name} must lie between 1970 and 2200")
    return value


def time_range(start: datetime | None, end: datetime | None,
               default: timedelta = timedelta(days=1)) -> tuple[datetime, datetime]:
    end = aware(end, "end") if end is not None else datetime.now(UTC)
    start = aware(start, "start") if start is not None else end - default
    if start >= end:
        raise HTTPException(422, "start must be before end")
    if end - start > MAX_RANGE:
        raise HTTPException(422, "a range may span at most 10 years")
    return start, end
