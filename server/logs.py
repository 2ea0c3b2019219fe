"""Logging for entry points: structured (key=value text or JSON lines), quiet by default.

Library modules only call ``logging.getLogger(__name__)``; handlers are installed here,
by the command that runs.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        if self.as_json:
            return json.dumps(fields, default=str, ensure_ascii=False)
        head = f"{fields.pop('ts')} {fields.pop('level'):7} {fields.pop('logger')}: "
        head += fields.pop("msg")
        tail = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{head} {tail}" if tail else head


def configure(level: str = "WARNING", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt == "json"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "asyncio", "watchdog", "pymodbus"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
