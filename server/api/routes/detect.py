"""Re-scoring a stored series with chosen detector parameters: the same function as
``tidefield detect score-csv`` (``score_values``), for labs that want to see what other
settings would have flagged.

Every ``DetectorParams`` field is a query parameter with the same bounds (built from the
model, so the two never drift apart); unknown parameters are refused. The detector
starts fresh at ``start - warmup_hours`` and only the readings of [start, end) are
returned, so a series' spikes, stuck runs and level are judged with the history a
running detector would have had.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import psycopg
from fastapi import APIRouter, HTTPException, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from tidefield.protocol.catalog import METRICS
from tidefield.server.db import binary, scalar
from tidefield.server.detect.detector import DetectorInputError, score_values
from tidefield.server.detect.tuning import DetectorParams
from tidefield.server.web.deps import ReadConnDep, Reader

from ..models import ERRORS, NOT_FOUND, json_response
from ..query_params import time_range
from .series import series_row

router = APIRouter(prefix="/series", tags=["detection"], responses=ERRORS)

MAX_POINTS = 50_000  # readings returned (of [start, end))
MAX_READ = 200_000  # readings scored, warm-up included
MAX_RANGE = timedelta(days=31)
_TUNABLE = [name for name in DetectorParams.model_fields if name not in ("level_skip", "pairs")]


def _optional(name: str) -> tuple[Any, Any]:
    info = DetectorParams.model_fields[name]
    return (info.annotation | None, Field(  # type: ignore[operator]
        None, description=f"{info.description} (default {info.default})", **_bounds(info)))


def _bounds(info: FieldInfo) -> dict[str, Any]:
    bounds = {}
    for constraint in info.metadata:
        for key in ("gt", "ge", "lt", "le"):
            value = getattr(constraint, key, None)
            if value is not None:
                bounds[key] = value
    return bounds


if TYPE_CHECKING:
    class ScoreParams(BaseModel):
        """What create_model makes below, as a type checker sees it."""

        start: datetime | None
        end: datetime | None
        warmup_hours: float
        limits: Literal["catalog", "learned"]
        interval_s: float | None
else:
    ScoreParams = create_model(
        "ScoreParams", __config__=ConfigDict(extra="forbid"),
        __doc__="Detector parameters; each left out keeps its default (see DetectorParams).",
        start=(datetime | None, Field(None, description="inclusive; ISO 8601 with a zone "
                                                        "(default: end - 1 day)")),
        end=(datetime | None, Field(None, description="exclusive; ISO 8601 with a zone "
                                                      "(default: now)")),
        warmup_hours=(float, Field(72.0, ge=0, le=24 * 14, description="history scored "
                                   "before start (not returned) to warm the detector up")),
        limits=(Literal["catalog", "learned"], Field(
            "catalog", description="catalog: the metric's physical and typical range; "
                                   "learned: from the data (nothing is out of range)")),
        interval_s=(float | None, Field(None, gt=0, le=86_400, description="sample interval "
                                        "(default: the device's)")),
        **{name: _optional(name) for name in _TUNABLE},
    )


class ScoredPoint(BaseModel):
    time: datetime
    value: float | None = Field(description="null when the stored value is not finite")
    anomaly_score: float = Field(ge=0, le=1, description="0.5 at a component's threshold")
    component: str = Field(examples=["spike"], description="what produced the score "
                                                           "('none' below every threshold)")
    category: Literal["none", "fault", "event"]


class ScoreResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"description": "Scores of [start, end)"})

    series_id: int
    metric: str
    unit: str
    start: datetime
    end: datetime
    warmup_readings: int = Field(description="readings scored before start, not returned")
    params: dict[str, float | int | list[str] | list[list[str]]] = Field(
        description="the detector parameters used (defaults filled in)")
    points: list[ScoredPoint]


def _read(conn: psycopg.Connection, series_id: int, start: datetime, end: datetime,
          limit: int) -> tuple[np.ndarray, np.ndarray]:
    pg_us, values = binary.fetch_columns(
        conn, """SELECT time, value FROM readings WHERE series_id = %s AND time >= %s
                 AND time < %s ORDER BY time LIMIT %s""", (series_id, start, end, limit),
        [("time", "timestamptz"), ("value", "float8")])
    order = np.argsort(pg_us, kind="stable")
    return binary.pg_us_to_ms(pg_us[order]), values[order]


@router.get("/{series_id}/score", response_model=ScoreResult, responses=NOT_FOUND,
            summary="Re-score a stored series with chosen detector parameters")
def score_series(series_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
                 conn: ReadConnDep, principal: Reader,
                 query: Annotated[ScoreParams, Query()]) -> Response:
    row = series_row(conn, principal, series_id)
    start, end = time_range(query.start, query.end)
    if end - start > MAX_RANGE:
        raise HTTPException(422, f"a re-score spans at most {MAX_RANGE.days} days")
    chosen = {name: getattr(query, name) for name in _TUNABLE
              if getattr(query, name) is not None}
    try:
        params = DetectorParams(**chosen)
    except ValueError as exc:
        raise HTTPException(422, f"detector parameters: {exc}") from None
    metric = row[3]
    interval_s = query.interval_s
    if interval_s is None:
        interval_s = float(scalar(conn.execute("SELECT d.interval_s FROM series s JOIN "
                                               "devices d ON d.id = s.device_id "
                                               "WHERE s.id = %s", (series_id,))))
    warm_start = start - timedelta(hours=query.warmup_hours)
    times, values = _read(conn, series_id, warm_start, end, MAX_READ + 1)
    if times.shape[0] > MAX_READ:
        raise HTTPException(422, f"more than {MAX_READ:,} readings to score (warm-up "
                                 f"included); narrow the range or the warm-up")
    warm = int(np.searchsorted(times, int(start.timestamp() * 1000), side="left"))
    if times.shape[0] - warm > MAX_POINTS:
        raise HTTPException(422, f"more than {MAX_POINTS:,} readings in the range; narrow it")
    use_catalog = query.limits == "catalog" and metric in METRICS
    try:
        scores = score_values(times, values, metric=metric if use_catalog else None,
                              interval_s=interval_s, params=params)
    except DetectorInputError as exc:
        raise HTTPException(422, str(exc)) from None
    stamps = (times[warm:] * 1000).astype("datetime64[us]").astype(object)
    finite = np.isfinite(values[warm:])
    shown = values[warm:].tolist()
    names = scores.component_names()[warm:].tolist()
    kinds = scores.category_names()[warm:].tolist()
    points = [ScoredPoint.model_construct(time=t.replace(tzinfo=UTC), value=v if ok
                                          else None, anomaly_score=s, component=c, category=k)
              for t, v, ok, s, c, k in zip(stamps, shown, finite.tolist(),
                                           scores.score[warm:].astype(float).round(4).tolist(),
                                           names, kinds, strict=True)]
    result = ScoreResult.model_construct(
        series_id=row[0], metric=metric, unit=row[4], start=start, end=end,
        warmup_readings=warm, params=params.model_dump(mode="json"), points=points)
    return json_response(result)
