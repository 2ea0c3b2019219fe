"""DS18B20 temperature sensors through the Linux 1-Wire sysfs interface (w1-gpio, w1-therm).

Each sensor is a folder ``<base_path>/28-xxxxxxxxxxxx``; reading its ``w1_slave`` file
makes the kernel run a conversion (about 750 ms) and answers two lines::

    72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
    72 01 4b 46 7f ff 0e 10 57 t=23125

The first line ends in YES when the scratchpad's CRC checked out; the second gives the
temperature in millidegrees Celsius. A CRC failure is retried once; 85000 is the value a
sensor holds before its first conversion (a brown-out), never a measurement.

Config: ``sensors`` maps a metric to a sensor id (``28-0316a2793bff``), or to ``auto``
for the only ``28-*`` sensor present (handy when a probe gets replaced in the field).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from annotated_types import MinLen

from tidefield.protocol.messages import Reading

from ..errors import DeviceUnavailable
from .base import DriverConfig, Fault, FaultSink, Pattern, checked, register

DEFAULT_BASE_PATH = Path("/sys/bus/w1/devices")
POWER_ON_RESET_MILLIDEGREES = 85_000
SensorId = Annotated[str, Pattern(r"^(auto|28-[0-9a-f]{12})$")]
_TEMPERATURE = re.compile(r"t=(-?\d+)\s*$")


@dataclass(frozen=True, kw_only=True)
class Ds18b20Config(DriverConfig):
    type: Literal["ds18b20"] = "ds18b20"
    base_path: Path = DEFAULT_BASE_PATH  # where the kernel lists 1-Wire devices
    # metric -> sensor id (28-0316a2793bff) or "auto"
    sensors: Annotated[dict[str, SensorId], MinLen(1)]

    def __post_init__(self) -> None:
        if list(self.sensors.values()).count("auto") > 1:
            raise ValueError("only one sensor can be 'auto'")

    def metric_fields(self) -> dict[str, str]:
        return {metric: f"sensors.{metric}" for metric in self.sensors}


class Ds18b20Driver:
    config_model = Ds18b20Config

    def __init__(self, config: Ds18b20Config, *, report: FaultSink) -> None:
        self.device_id = config.device
        self.interval_s = config.interval_s
        self._base = config.base_path
        self._sensors = dict(config.sensors)
        self._report = report

    def poll(self) -> list[Reading]:
        readings: list[Reading] = []
        missing = 0
        for metric, sensor in self._sensors.items():
            time_ms = int(time.time() * 1000)
            path = self._path(sensor)
            if path is None:
                missing += 1
                self._report(Fault(self.device_id, metric, "missing",
                                   f"no sensor {sensor} under {self._base}"))
                continue
            millidegrees = self._read(path, metric)
            if millidegrees is None:
                continue
            reading = checked(self.device_id, metric, millidegrees / 1000, time_ms,
                              self._report)
            if reading is not None:
                readings.append(reading)
        if missing == len(self._sensors):
            raise DeviceUnavailable(
                f"none of the sensors {', '.join(self._sensors.values())} is under "
                f"{self._base} (w1-gpio and w1-therm loaded? wiring?)", self.device_id)
        return readings

    def _path(self, sensor: str) -> Path | None:
        if sensor == "auto":
            found = sorted(self._base.glob("28-*/w1_slave"))
            return found[0] if len(found) == 1 else None
        path = self._base / sensor / "w1_slave"
        return path if path.exists() else None

    def _read(self, path: Path, metric: str) -> int | None:
        """Millidegrees, or None with a fault reported."""
        problem, reason = "", "invalid"
        for _ in range(2):  # one retry: CRC errors on a long cable come and go
            try:
                text = path.read_text()
            except OSError as exc:  # the sensor vanished between the listing and the read
                problem = f"cannot read {path}: {exc.strerror or exc}"
                reason = "missing"
                continue
            lines = text.splitlines()
            if len(lines) < 2 or not lines[0].rstrip().endswith("YES"):
                problem, reason = f"CRC check failed in {path}: {lines[:1]}", "crc"
                continue
            match = _TEMPERATURE.search(lines[1])
            if match is None:
                problem, reason = f"no t= value in {path}: {lines[1]!r}", "invalid"
                continue
            value = int(match.group(1))
            if value == POWER_ON_RESET_MILLIDEGREES:
                self._report(Fault(self.device_id, metric, "invalid",
                                   f"{path.parent.name} reads 85.000 °C, its power-on value"))
                return None
            return value
        self._report(Fault(self.device_id, metric, reason, problem))
        return None

    def close(self) -> None:
        pass


register(Ds18b20Driver)
