"""A simulated device: firmware-sim's model of the device, in process. For demos and tests.

It imports ``tidefield.sim``, which needs NumPy and Numba: fine on a laptop, too heavy for
a Raspberry Pi in the field. No other edge module imports NumPy, and this module only
does so when a simulated driver is configured.

Readings carry the time of the sensor's sample (sensors sample and hold between
samples), and each sample is reported once however often the driver polls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from tidefield.protocol.messages import Reading

from ..errors import DriverUnusable
from .base import DriverConfig, FaultSink, checked, register


@dataclass(frozen=True, kw_only=True)
class SimulatedConfig(DriverConfig):
    type: Literal["simulated"] = "simulated"
    seed: int = 0  # the fleet seed (same seed, same readings)


class SimulatedDriver:
    config_model = SimulatedConfig

    def __init__(self, config: SimulatedConfig, *, report: FaultSink) -> None:
        from tidefield.protocol.registry import load_sites

        try:
            from tidefield.sim.fleet import Fleet
        except ImportError as exc:
            raise DriverUnusable(f"the simulated driver needs tidefield.sim: {exc}",
                                 config.device) from exc
        self.device_id = config.device
        self.interval_s = config.interval_s
        self._report = report
        site = next(s for s in load_sites() if any(d.id == config.device for d in s.devices))
        self._fleet = Fleet([site], seed=config.seed)
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
