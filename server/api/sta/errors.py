"""The one error of the SensorThings layer, and its body.

SensorThings 1.1 defines status codes but no error body; clients are written against
FROST-Server, the reference implementation, which answers ``{"code": 400, "type": "error",
"message": "..."}``. Every /sta error, 401 and 403 included, has that shape.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse


class StaError(Exception):
    """A request the service cannot answer; ``status`` is the HTTP status (4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(status: int, message: str) -> dict:
    return {"code": status, "type": "error", "message": message}


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)
