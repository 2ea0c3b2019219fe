"""Early warning: the two forecast models compared on event-rich firmware-sim fleets.

    .venv/bin/python bench/forecast.py [--seeds 11,12,13] [--days 20] [--events 3]

Each seed simulates the sites where the warned events happen (the 10 cage farms, the 54
orchards and tea gardens, the 36 ports, buoys and coastal stations; their field crops'
frost warnings are judged in ``tidefield detect evaluate``) with ``--events`` hypoxias,
frosts and storms per site and month planned (the scenario's rate is 1 event of any kind),
faults as usual, and streams it through the detector's engine hour by hour as
``tidefield detect evaluate`` does, once per model (``ForecastParams.model``). Per model
and event kind it prints the warnings' lead before the threshold is crossed (median, 10th
percentile, share warned 60 min ahead) and the warnings that foretold nothing per site
and week. Tuning seeds only: the report seed is for ``evaluate``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tidefield.protocol.registry import load_sites
from tidefield.protocol.units import DAY_MS
from tidefield.server.detect.evaluate import run_fleet, score_warnings
from tidefield.server.detect.forecast.forecaster import ForecastParams
from tidefield.server.detect.rules import load_rules
from tidefield.sim.fleet import Fleet
from tidefield.sim.scenario import scenario_plan

START_MS = 1_743_465_600_000  # 2025-04-01T00:00Z: frosts still happen
WARNED_KINDS = ("cage_farm", "orchard", "tea_garden", "port_terminal", "ecological_buoy",
                "coastal_station")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="11,12,13")
    parser.add_argument("--days", type=float, default=20.0)
    parser.add_argument("--events", type=float, default=3.0)
    parser.add_argument("--models", default="damped_trend,harmonic")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a ForecastParams field (tuning)")
    parser.add_argument("--rules", type=Path, default=None,
                        help="a rules file merged over the bundled rules (tuning)")
    parser.add_argument("--site-kinds", default=",".join(WARNED_KINDS),
                        help="only sites of these kinds (tuning one kind of warning)")
    args = parser.parse_args()
    fields = {k: float(v) for k, v in (item.split("=", 1) for item in args.set)}
    sites = [s for s in load_sites() if s.kind in args.site_kinds.split(",")]
    end_ms = START_MS + int(args.days * DAY_MS)
    ruleset = load_rules(args.rules)
    plan = scenario_plan(START_MS, end_ms, events_per_site=args.events,
                         event_kinds=("hypoxia", "frost", "storm"))
    for seed in (int(s) for s in args.seeds.split(",")):
        fleet = Fleet(sites, seed=seed, plan=plan)
        labels = fleet.labels(START_MS, end_ms)
        for model in args.models.split(","):
            began = time.perf_counter()
            run = run_fleet(fleet, START_MS, end_ms, ruleset=ruleset,
                            forecast=ForecastParams(model=model, **fields))  # type: ignore[arg-type]
            scores = score_warnings(fleet, labels, run.alerts, ruleset, START_MS, end_ms)
            took = time.perf_counter() - began
            for w in scores:
                print(f"seed {seed} {model:12} {w.kind:8} events {w.events:3d} "
                      f"lead median {w.median_lead:5.0f} p10 {w.p10_lead:5.0f} min, "
                      f">=60 min {w.share_ahead:4.2f}; warnings {w.warnings:3d}, "
                      f"false {w.false_warnings:3d} ({w.false_per_site_week:.2f} per site "
                      f"and week)  [{took:.0f} s]")


if __name__ == "__main__":
    main()
