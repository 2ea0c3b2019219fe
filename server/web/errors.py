"""JSON errors for both apps: ``{"error": {"status": ..., "message": ...}}`` with a clear
message, whatever raised them (a route, validation, Starlette's 404/405, the database).

An app whose part of the URL space speaks another error dialect (the API's SensorThings
subset) passes its own ``ErrorStyle``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


def json_error(request: Request, status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status)


@dataclass(frozen=True, slots=True)
class ErrorStyle:
    """How an app answers errors: the body, and the status of a request it cannot take
    (422 by default; OData, and so SensorThings, has no 422 and answers 400)."""

    render: Callable[[Request, int, str], JSONResponse] = json_error
    bad_request_status: Callable[[Request], int] = lambda request: 422


def install_error_handlers(app: FastAPI, style: ErrorStyle | None = None) -> None:
    style = style or ErrorStyle()

    # Starlette's own class: unmatched paths (404) and methods (405) are raised as that
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        response = style.render(request, exc.status_code, message)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return style.render(request, style.bad_request_status(request), "; ".join(parts))

    @app.exception_handler(psycopg.DataError)
    async def bad_data(request: Request, exc: psycopg.DataError) -> JSONResponse:
        # a parameter the database cannot take (a NUL byte, an out-of-range number)
        return style.render(request, style.bad_request_status(request),
                            f"invalid parameter: {str(exc).splitlines()[0]}")

    @app.exception_handler(psycopg.OperationalError)
    async def database_down(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        return style.render(request, 503, "the database is unavailable; retry later")
