"""Actuators with physics, behind an emulated Modbus relay board.

A field site switches its aerators, valves, pumps and fans through a relay board on the
same RS-485 line (or Modbus TCP gateway) as its sensors. ``ActuatorBoard`` emulates one:

=========  ==========================================================================
coils      0..7: relay i (function 01 reads, 05 and 15 write); 1 closes the relay
holding    0..7: relay i as 0/1 (03 reads, 06 and 16 write: nonzero closes the relay)
=========  ==========================================================================

A relay may drive an ``Effect`` on one metric of a device of the fleet, which the
emulated sensor then reads (``overlay``), so a command's result shows in the data:

* ``aerator``: dissolved oxygen approaches ``efficiency`` x saturation (Benson & Krause,
  from the water's temperature and salinity, ``physics.oxygen_saturation``) with time
  constant ``tau_on_s`` while it runs (surface aerators reach a new balance within tens
  of minutes in a cage or pond); after it stops, the surplus decays with ``tau_off_s``
  (respiration takes it back). A paddle or air-lift aerator gets close to saturation
  (``efficiency`` 1.0); oxygen injection (the oxygen cones of cage farms) supersaturates,
  to 150 % and more (``efficiency`` 1.5). Water already above the target gains nothing.
* ``valve``: soil moisture approaches ``target`` (field capacity, % by volume) with
  ``tau_on_s`` while irrigating, and the surplus drains away with ``tau_off_s``.

Both are first-order responses: an exponential approach to the target while on, an
exponential decay of the surplus while off, exact at any time (no time step).
``time_scale`` speeds both up for tests.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

RELAYS = 8


@dataclass(frozen=True, slots=True)
class Effect:
    kind: Literal["aerator", "valve"]
    device_id: str  # the sensor that sees it
    tau_on_s: float = 900.0
    tau_off_s: float = 3600.0
    efficiency: float = 1.0  # aerator: the fraction of saturation it drives DO towards
    target: float = 40.0  # valve: field capacity, % soil moisture

    @property
    def metric(self) -> str:
        return "dissolved_oxygen" if self.kind == "aerator" else "soil_moisture"


@dataclass
class _Relay:
    effect: Effect | None
    on: bool = False
    since_ms: int = 0
    surplus_at_switch: float = 0.0  # the effect's surplus over the base value then

    def surplus(self, t_ms: int, headroom: float, time_scale: float) -> float:
        """What the effect adds to the base value at ``t_ms`` (headroom: target - base)."""
        if self.effect is None:
            return 0.0
        elapsed = max(0.0, (t_ms - self.since_ms) / 1000.0) * time_scale
        s0 = self.surplus_at_switch
        if self.on:
            goal = max(0.0, headroom)
            return goal - (goal - s0) * math.exp(-elapsed / self.effect.tau_on_s)
        return s0 * math.exp(-elapsed / self.effect.tau_off_s)


@dataclass
class ActuatorBoard:
    """An emulated relay board on unit ``unit_id``; thread-safe (the Modbus server's loop
    writes, the sensors' reads happen on it too, tests look from theirs)."""

    unit_id: int
    effects: Mapping[int, Effect] = field(default_factory=dict)  # relay -> effect
    time_scale: float = 1.0
    relays: list[_Relay] = field(init=False)
    writes: int = field(init=False, default=0)
    switched_on: int = field(init=False, default=0)  # off -> on transitions, every relay

    def __post_init__(self) -> None:
        if any(not 0 <= relay < RELAYS for relay in self.effects):
            raise ValueError(f"relays are 0..{RELAYS - 1}")
        self.relays = [_Relay(self.effects.get(i)) for i in range(RELAYS)]
        self._lock = threading.Lock()
        self._last_headroom: dict[int, float] = {}

    def switch(self, relay: int, on: bool, t_ms: int) -> None:
        with self._lock:
            state = self.relays[relay]
            self.writes += 1
            if state.on == on:
                return
            self.switched_on += on
            headroom = self._last_headroom.get(relay, 0.0)
            state.surplus_at_switch = state.surplus(t_ms, headroom, self.time_scale)
            state.on, state.since_ms = on, t_ms

    def states(self) -> list[bool]:
        with self._lock:
            return [r.on for r in self.relays]

    def overlay(self, device_id: str, values: dict[str, float | None], t_ms: int
                ) -> dict[str, float | None]:
        """``values`` of a sensor with the effects of the relays that drive it."""
        from .physics import oxygen_saturation

        out = dict(values)
        with self._lock:
            for i, relay in enumerate(self.relays):
                effect = relay.effect
                if effect is None or effect.device_id != device_id:
                    continue
                base = out.get(effect.metric)
                if base is None:
                    continue
                if effect.kind == "aerator":
                    water_t = out.get("water_temperature")
                    psu = out.get("salinity")
                    saturation = float(oxygen_saturation(
                        water_t if water_t is not None else 20.0,
                        psu if psu is not None else 0.0))
                    target = effect.efficiency * saturation
                else:
                    target = effect.target
                headroom = target - base
                self._last_headroom[i] = headroom
                out[effect.metric] = base + relay.surplus(t_ms, headroom, self.time_scale)
        return out


def aerated(times_ms: np.ndarray, oxygen: np.ndarray, water_temperature: np.ndarray,
            salinity: np.ndarray, runs: list[tuple[int, int]], effect: Effect
            ) -> np.ndarray:
    """Dissolved oxygen at ``times_ms`` (in order) with an aerator run over each (on, off)
    interval of ``runs``: the emulated board's own response (``ActuatorBoard.overlay``),
    so a re-simulated night sees what the relay would have done to the water."""
    board = ActuatorBoard(unit_id=1, effects={0: effect})
    switches = sorted([(on, True) for on, _ in runs] + [(off, False) for _, off in runs])
    out = np.array(oxygen, dtype=np.float64, copy=True)
    k = 0
    for i, t in enumerate(np.asarray(times_ms, dtype=np.int64).tolist()):
        while k < len(switches) and switches[k][0] <= t:
            board.switch(0, switches[k][1], switches[k][0])
            k += 1
        value = board.overlay(effect.device_id, {
            "dissolved_oxygen": float(oxygen[i]),
            "water_temperature": float(water_temperature[i]),
            "salinity": float(salinity[i])}, t)["dissolved_oxygen"]
        out[i] = value if value is not None else np.nan
    return out
