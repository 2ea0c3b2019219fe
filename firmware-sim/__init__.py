"""firmware-sim: the simulated Tidefield fleet (``tidefield.sim``).

Every reading is a pure function of (seed, series, sample time): generate any window,
in any chunks, or ask for "now", and the numbers agree.

* ``Fleet``: the series table, columnar generation, value at an instant, Batches.
* ``InjectionPlan``, ``Label``: labelled sensor faults and real events.
* ``write_scenario``: backfill readings and labels to CSV or Parquet.
* ``tidefield.sim.modbus``: Modbus TCP emulation of the devices.
* ``tidefield.sim.cli.app``: the ``tidefield sim`` commands.

Modules: ``physics`` (signal models), ``astro`` (sun and tide), ``rng`` (counter-based
randomness), ``render`` (noise, quantisation, faults, time order), ``sites`` (site
parameters), ``events`` (injection planning), ``fleet``, ``scenario``, ``modbus``,
``simulator_twins`` (plain NumPy twins of the kernels).

Names are imported lazily so ``tidefield sim --help`` does not load Numba.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Fleet": "fleet", "Chunk": "fleet", "SeriesTable": "fleet",
    "InjectionPlan": "events", "Label": "events", "EVENT_KINDS": "events",
    "FAULT_KINDS": "render",
    "write_scenario": "scenario", "scenario_plan": "scenario",
    "start_modbus_server": "modbus", "emulated_devices": "modbus",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)
