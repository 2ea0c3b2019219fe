"""Field-device drivers. ``DRIVERS`` maps a config ``type`` to its driver class.

    simulated    firmware-sim in process (demos and tests; needs NumPy)
    modbus_tcp   Modbus TCP, register map from the config
    modbus_rtu   Modbus RTU over RS-485, register map from the config
    ds18b20      DS18B20 temperature sensors on the Linux 1-Wire sysfs interface

Importing this package loads every driver module (each registers itself) but none of
their heavy dependencies: pymodbus, and the simulator's device model, are loaded when a
driver of that type is built.
"""

from __future__ import annotations

from . import modbus, onewire, simulated  # noqa: F401  (each registers its drivers)
from .base import DRIVERS, Driver, DriverConfig, Fault, FaultSink

__all__ = ["DRIVERS", "Driver", "DriverConfig", "Fault", "FaultSink"]
