"""The driver contract, the driver registry, and what drivers share.

A driver reads one field device. The agent gives each driver a thread that calls
``poll()`` every ``interval_s``; ``poll`` returns the device's readings (metric, the time
the device was read, value in the catalog's unit) and raises ``DriverError`` when the
device cannot be read at all (the agent then retries with backoff). A value that came
back but is garbage (a sentinel such as 0xFFFF, NaN, outside the catalog's physical
range) is reported through ``report(Fault(...))`` and left out; the other values of the
poll are kept.

Adding a driver touches its own module only: a config model (a ``DriverConfig`` with a
``type`` literal), a class with ``config_model``, and one line, ``register(TheDriver)``.

Config models are frozen standard-library dataclasses whose annotations carry their
constraints (``annotated_types`` and the markers below). pydantic validates them when a
config file is loaded (``tidefield.edge.config``), in the ``check`` process; the running
agent receives them already validated and never imports pydantic (it would double the
agent's memory).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Protocol

from annotated_types import Gt, Le

from tidefield.protocol.catalog import METRICS
from tidefield.protocol.messages import Reading
from tidefield.protocol.topics import ID_PATTERN

# The pydantic config of every config dataclass: a misspelt key is an error.
FORBID_EXTRA: dict[str, Any] = {"extra": "forbid"}


class Pattern:
    """Annotation metadata: the string must match ``regex``. Read by pydantic when it
    validates a config; inert otherwise."""

    __slots__ = ("regex",)

    def __init__(self, regex: str) -> None:
        self.regex = regex

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.str_schema(pattern=self.regex)


DeviceId = Annotated[str, Pattern(f"^{ID_PATTERN}$")]


@dataclass(frozen=True, slots=True)
class Fault:
    """A value a device returned that is not a reading."""

    device_id: str
    metric: str
    reason: str  # "invalid" (sentinel), "non_finite", "out_of_range", "crc", "missing"
    detail: str


FaultSink = Callable[[Fault], None]


class Driver(Protocol):
    """One field device."""

    device_id: str
    interval_s: float

    def poll(self) -> list[Reading]: ...

    def close(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class DriverConfig:
    """What every driver's config has; each driver subclasses it with its own fields and
    a ``type`` literal with the same default (its name in the registry)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = FORBID_EXTRA

    type: str
    device: DeviceId  # e.g. ag-001-soil, a device of the site
    interval_s: Annotated[float, Gt(0), Le(86_400)] = 60.0  # seconds between polls

    def metric_fields(self) -> dict[str, str] | None:
        """Each metric this driver reports -> the config field naming it (for errors);
        None: every metric of the device's template."""
        return None


class DriverClass(Protocol):
    @property
    def config_model(self) -> type[DriverConfig]: ...  # a class attribute of the driver

    def __call__(self, config: Any, *, report: FaultSink) -> Driver: ...


DRIVERS: dict[str, DriverClass] = {}


def register(driver: DriverClass) -> DriverClass:
    """Make a driver known under its config's ``type``."""
    name = driver.config_model.__dataclass_fields__["type"].default
    assert isinstance(name, str), f"{driver}: its config's type needs a default, its name"
    DRIVERS[name] = driver
    return driver


def checked(device_id: str, metric: str, value: float, time_ms: int,
            report: FaultSink) -> Reading | None:
    """``value`` as a Reading, or None (and a Fault reported) if it cannot be one."""
    if not math.isfinite(value):
        report(Fault(device_id, metric, "non_finite", f"value {value}"))
        return None
    low, high = METRICS[metric].physical
    if not low <= value <= high:
        report(Fault(device_id, metric, "out_of_range",
                     f"value {value:g} {METRICS[metric].unit} is outside [{low:g}, {high:g}]"))
        return None
    return Reading(metric, time_ms, value)
