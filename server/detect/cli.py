"""``tidefield detect``: the detector service, scoring a CSV, evaluating against a
labelled simulated scenario.

    tidefield detect run [--partition i/n] [--since ISO] [--until ISO]
    tidefield detect score-csv IN.csv [--metric NAME] [--interval-s N] > OUT.csv
    tidefield detect evaluate --seed 23 --days 30 [--sites 250]

Heavy imports happen inside the commands, so ``--help`` stays instant.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from tidefield.protocol.units import DAY_MS

app = typer.Typer(help="Anomaly detection: the detector service, scoring CSV files, "
                       "evaluating on simulated scenarios.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

DEFAULT_START = "2025-04-01T00:00:00Z"


def _time_ms(text: str, line: int) -> int:
    text = text.strip()
    try:
        return int(text) if text.lstrip("-").isdigit() else _iso_ms(text)
    except ValueError:
        raise typer.BadParameter(f"line {line}: timestamp {text!r} is neither ISO-8601 nor "
                                 f"epoch milliseconds") from None


def _iso_ms(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def read_series_csv(source: Iterable[str]) -> tuple[list[str], list[int], list[float]]:
    """Rows of a ``timestamp,value`` CSV; BadParameter names the first bad line."""
    reader = csv.reader(source)
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header[:2]] != ["timestamp", "value"]:
        raise typer.BadParameter("the CSV must start with the header timestamp,value")
    stamps, times, values = [], [], []
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) < 2:
            raise typer.BadParameter(f"line {line}: expected timestamp,value")
        times.append(_time_ms(row[0], line))
        stamps.append(row[0].strip())
        text = row[1].strip()
        try:
            values.append(float(text) if text else float("nan"))
        except ValueError:
            raise typer.BadParameter(f"line {line}: value {text!r} is not a number") from None
    return stamps, times, values


@app.command()
def run(
    partition: Annotated[str, typer.Option(
        help="i/n: score the sites with crc32(site id) mod n = i (one process each)")] = "0/1",
    since: Annotated[str | None, typer.Option(
        help="first start only: score stored readings from this instant (ISO-8601); "
             "default: TIDEFIELD_DETECT_HISTORY_DAYS back")] = None,
    until: Annotated[str | None, typer.Option(
        help="stop once every reading up to this instant is scored (replays, tests)")] = None,
    database_url: Annotated[str | None, typer.Option(
        envvar="TIDEFIELD_DATABASE_URL", help="postgresql:// URL")] = None,
    mqtt_url: Annotated[str | None, typer.Option(
        envvar="TIDEFIELD_MQTT_URL", help="publish alert changes here (QoS 1)")] = None,
) -> None:
    """Score new readings as they are stored, write anomalies and alerts, publish alert
    changes on tf/v1/{site}/alerts; checkpointed, so a restart continues where it stopped.
    SIGTERM or Ctrl-C stops it after the step in progress is committed."""
    import signal
    import threading

    from tidefield.protocol.mqtt import parse_mqtt_url
    from tidefield.protocol.settings import load
    from tidefield.server import logs
    from tidefield.server.settings import DetectorSettings

    from .alert_publisher import AlertPublisher
    from .rules import RulesError
    from .service import DetectorService, Partition, ServiceError

    settings = load(DetectorSettings, database_url=database_url, mqtt_url=mqtt_url)
    logs.configure(settings.log_level, settings.log_format)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        since_ms = _iso_ms(since) if since else None
        until_ms = _iso_ms(until) if until else None
    except ValueError as exc:
        raise typer.BadParameter(f"--since/--until: {exc}") from None
    try:
        parts = Partition.parse(partition)
        publisher = (AlertPublisher(parse_mqtt_url(settings.mqtt_url), str(parts))
                     if settings.mqtt_url else None)
        service = DetectorService(settings, parts, since_ms=since_ms, until_ms=until_ms,
                                  publisher=publisher)
    except (ServiceError, RulesError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        service.run(stop)
    except ServiceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        if publisher is not None:
            publisher.close()


@app.command("score-csv")
def score_csv(
    path: Annotated[Path, typer.Argument(help="CSV with columns timestamp,value ('-': stdin)")],
    metric: Annotated[str | None, typer.Option(
        help="a catalog metric (its physical range and resolution); default: learned")] = None,
    interval_s: Annotated[float | None, typer.Option(
        help="sample interval in seconds (default: the median step)")] = None,
) -> None:
    """Score a univariate series; writes timestamp,value,anomaly_score to stdout."""
    import numpy as np

    from .detector import DetectorInputError, score_values

    try:
        if str(path) == "-":
            stamps, times, values = read_series_csv(sys.stdin)
        else:
            with path.open(newline="", encoding="utf-8") as source:
                stamps, times, values = read_series_csv(source)
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}") from None
    try:
        scores = score_values(np.array(times, dtype=np.int64), np.array(values),
                              metric=metric, interval_s=interval_s)
    except DetectorInputError as exc:
        raise typer.BadParameter(str(exc)) from None
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(("timestamp", "value", "anomaly_score"))
    for stamp, value, score in zip(stamps, values, scores.score.tolist(), strict=True):
        out.writerow((stamp, repr(value), f"{score:.4f}"))


@app.command()
def evaluate(
    seed: Annotated[int, typer.Option(help="scenario seed (tuning used 11; report on another)")]
        = 23,
    days: Annotated[float, typer.Option(min=1.0, help="length of the window")] = 30.0,
    sites: Annotated[int, typer.Option(min=1, help="this many registry sites, spread evenly")]
        = 250,
    start: Annotated[str, typer.Option(help="first instant, ISO-8601")] = DEFAULT_START,
    clean: Annotated[bool, typer.Option("--clean/--no-clean",
                                        help="also run fault-free for false alerts")] = True,
    rules: Annotated[Path | None, typer.Option(
        help="a rules file merged over the bundled rules, as TIDEFIELD_DETECT_RULES "
             "(default: the bundled rules alone)")] = None,
) -> None:
    """Run the detector over a labelled firmware-sim scenario and print per-kind precision,
    recall, F1 and median time to detect, classification accuracy and false alerts."""
    from tidefield.protocol.registry import load_sites
    from tidefield.sim.fleet import Fleet
    from tidefield.sim.scenario import scenario_plan

    from .evaluate import false_alerts_per_site_week, run_fleet, score_alerts
    from .rules import RulesError, load_rules

    try:
        ruleset = load_rules(rules)
    except RulesError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    chosen = load_sites()
    chosen = chosen[::max(1, len(chosen) // sites)][:sites]
    start_ms = _iso_ms(start)
    end_ms = start_ms + int(days * DAY_MS)
    fleet = Fleet(chosen, seed=seed, plan=scenario_plan(start_ms, end_ms))
    run = run_fleet(fleet, start_ms, end_ms, ruleset=ruleset)
    result = score_alerts(fleet, fleet.labels(start_ms, end_ms), run.alerts, end_ms)
    typer.echo(f"seed {seed}, {len(chosen)} sites, {days:g} days: {run.readings:,} readings, "
               f"{len(run.alerts)} alerts, detector busy {run.seconds_detecting:.1f} s")
    typer.echo(f"{'kind':22} {'cat':5} {'labels':>6} {'found':>6} {'alerts':>6} "
               f"{'P':>5} {'R':>5} {'F1':>5} {'ttd min':>8}")
    for k in result.kinds:
        ttd = f"{k.median_ttd_min:8.0f}" if k.median_ttd_min is not None else "       -"
        typer.echo(f"{k.kind:22} {k.category:5} {k.labels:6d} {k.detected:6d} "
                   f"{k.predicted:6d} {k.precision:5.2f} {k.recall:5.2f} {k.f1:5.2f} {ttd}")
    typer.echo(f"fault/event classification: {result.classification:.3f} of "
               f"{result.classified} alerts matching a label")
    if clean:
        quiet = run_fleet(fleet.with_plan(None), start_ms, end_ms, ruleset=ruleset)
        rate = false_alerts_per_site_week(quiet, len(chosen), start_ms, end_ms)
        typer.echo(f"fault-free run: {len(quiet.alerts)} alerts, {rate:.2f} per site per week")
