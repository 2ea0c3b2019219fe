"""A simulated device: firmware-sim's model of the device, in process. For demos and tests.

The model comes from the ``tidefield.edge.device_models`` entry point (firmware-sim
declares one in pyproject.toml), so the edge never imports the simulator: it needs NumPy
and Numba, fine on a laptop, too heavy for a Raspberry Pi in the field, and is loaded only
when a simulated driver is configured.

Readings carry the time of the sensor's sample (sensors sample and hold between
samples), and each sample is reported once however often the driver polls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Literal, Protocol

from tidefield.protocol.messages import Reading

from ..errors import DriverUnusable
from .base import DriverConfig, FaultSink, checked, register


@dataclass(frozen=True, kw_only=True)
class SimulatedConfig(DriverConfig):
    type: Literal["simulated"] = "simulated"
    seed: int = 0  # the fleet seed (same seed, same readings)


DEVICE_MODELS = "tidefield.edge.device_models"


class DeviceModel(Protocol):
    """What the driver asks of a simulated device."""

    def last_sample_ms(self, device_id: str, t_ms: int) -> int: ...

    def device_values(self, device_id: str, t_ms: int) -> dict[str, float | None]: ...


def load_device_model(device_id: str, seed: int) -> DeviceModel:
    """The device's model from the installed provider (firmware-sim)."""
    providers = list(entry_points(group=DEVICE_MODELS))
    if not providers:
        raise DriverUnusable(f"the simulated driver needs a device model ({DEVICE_MODELS} "
                             "entry point; tidefield.sim provides one)", device_id)
    try:
        model: DeviceModel = providers[0].load()(device_id, seed)
        return model
    except (ImportError, ValueError) as exc:
        raise DriverUnusable(f"the simulated driver's device model: {exc}", device_id) from exc


class SimulatedDriver:
    config_model = SimulatedConfig

    def __init__(self, config: SimulatedConfig, *, report: FaultSink) -> None:
        self.device_id = config.device
        self.interval_s = config.interval_s
        self._report = report
        self._fleet = load_device_model(config.device, config.seed)
        self._last_sample_ms: int | None = None

    def poll(self) -> list[Reading]:
        now_ms = int(time.time() * 1000)
        sample_ms = self._fleet.last_sample_ms(self.device_id, now_ms)
        if sample_ms == self._last_sample_ms:
            return []
        self._last_sample_ms = sample_ms
        readings = []
        for metric, value in self._fleet.device_values(self.device_id, sample_ms).items():
            if value is None:  # the sensor is in a dropout
                continue
            reading = checked(self.device_id, metric, value, sample_ms, self._report)
            if reading is not None:
                readings.append(reading)
        return readings

    def close(self) -> None:
        pass


register(SimulatedDriver)
