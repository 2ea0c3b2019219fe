"""The simulated fleet's settings as `tidefield up` reads them (``TIDEFIELD_SIM_*``) and
hands them to ``tidefield sim fleet`` as options. Rules: ``tidefield.protocol.settings``."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SimulatedFleetGroup(BaseModel):
    sim_seed: int = Field(1, description="seed of the simulated fleet")
    sim_events_per_site: float = Field(
        1.0, ge=0, description="injected real events per site per 30 days")
    sim_faults_per_series: float = Field(
        0.5, ge=0, description="injected sensor faults per series per 30 days")
    sim_tick_s: float = Field(10.0, gt=0, description="seconds between live publications of the "
                                                      "fleet")
