"""Loaded by every Python process started with this folder on PYTHONPATH: when
TEST_CRASH_ONCE_MARKER names a file that does not exist yet, the first lookup of
device TEST_CRASH_ONCE_DEVICE creates it and raises what no ``except Exception``
catches, so the ingest worker's prepare thread dies, once, as it would on a bug."""

from __future__ import annotations

import os

_MARKER = os.environ.get("TEST_CRASH_ONCE_MARKER")

if _MARKER:
    from tidefield.server.ingest import directory as _directory

    class Crash(BaseException):
        pass

    _device = _directory.DeviceDirectory.device

    def _crashing_device(self, device_id, site_id):  # type: ignore[no-untyped-def]
        if device_id == os.environ.get("TEST_CRASH_ONCE_DEVICE") \
                and not os.path.exists(_MARKER):
            open(_MARKER, "w").close()
            raise Crash(f"injected on looking up {device_id}")
        return _device(self, device_id, site_id)

    _directory.DeviceDirectory.device = _crashing_device  # type: ignore[method-assign]
