"""Why the edge agent could not do something, and whether trying again can help.

    EdgeError
    ├── ConfigError           fatal: the config file is wrong; ``problems`` lists
    │                         (field path, message) pairs, e.g. ("drivers.1.port", ...)
    ├── DriverError           a driver could not poll its device; ``device_id`` names it
    │   ├── DeviceUnavailable retryable: no answer, refused, timeout, sensor missing
    │   └── DriverUnusable    fatal for this driver only: it cannot work on this machine
    │                         (a library or a port is missing); the others keep running
    └── QueueError            the on-disk queue failed (disk full, unreadable file)

A reading whose value is garbage is not an error: the driver reports it as a ``Fault``
(see ``drivers.base``) and keeps the device's other readings.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base of every error the edge agent raises on purpose."""

    retryable = False


class ConfigError(EdgeError):
    def __init__(self, source: str,
                 problems: list[tuple[str, str]] | tuple[tuple[str, str], ...] = ()) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = [f"{path}: {message}" if path else message for path, message in self.problems]
        super().__init__(f"invalid config {source}:\n  " + "\n  ".join(lines))

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return (type(self), (self.source, self.problems))


class DriverError(EdgeError):
    def __init__(self, message: str, device_id: str = "") -> None:
        super().__init__(f"{device_id}: {message}" if device_id else message)
        self.message = message
        self.device_id = device_id

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return (type(self), (self.message, self.device_id))


class DeviceUnavailable(DriverError):
    retryable = True


class DriverUnusable(DriverError):
    retryable = False


class QueueError(EdgeError):
    retryable = True
