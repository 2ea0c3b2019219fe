"""One simulated device for the edge agent's ``simulated`` driver.

The edge does not import the simulator (the edge depends on the protocol only); it finds
this factory through the ``tidefield.edge.device_models`` entry point that pyproject.toml
declares, and uses what it returns through its own ``DeviceModel`` protocol
(``last_sample_ms``, ``device_values``), which ``Fleet`` has.
"""

from __future__ import annotations

from tidefield.protocol.registry import load_sites

from .fleet import Fleet


def for_device(device_id: str, seed: int) -> Fleet:
    """The fleet of the device's site, seeded (the same seed gives the same readings)."""
    site = next((s for s in load_sites() if any(d.id == device_id for d in s.devices)), None)
    if site is None:
        raise ValueError(f"no site of the registry has a device {device_id!r}")
    return Fleet([site], seed=seed)
