"""``tidefield detect``: the detector service, scoring a CSV, evaluating against a
labelled simulated scenario.

    tidefield detect run [--partition i/n] [--since ISO] [--until ISO]
    tidefield detect score-csv IN.csv [--metric NAME] [--value-column C] [--tz Z] > OUT.csv
    tidefield detect evaluate --seed 23 --days 30 [--sites 250]
    tidefield rules show|set|history (--site ID | --kind KIND) [RULE.FIELD=VALUE ...]

Heavy imports happen inside the commands, so ``--help`` stays instant.
"""

from __future__ import annotations

import csv
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from tidefield.protocol.units import DAY_MS

if TYPE_CHECKING:
    from tidefield.server.settings import DetectorSettings

    from .store import RuleOverride

app = typer.Typer(help="Anomaly detection: the detector service, scoring CSV files, "
                       "evaluating on simulated scenarios.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

rules_app = typer.Typer(help="Live detection rules: per-site and per-kind changes over the "
                             "bundled rules, picked up by a running detector.",
                        no_args_is_help=True)
app.add_typer(rules_app, name="rules")

DEFAULT_START = "2025-04-01T00:00:00Z"


def _iso_ms(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


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
    from tidefield.server.liveness import exit_when_a_thread_dies
    from tidefield.server.settings import DetectorSettings

    from .alert_publisher import AlertPublisher
    from .rules import RulesError
    from .service import DetectorService, Partition, ServiceError

    settings = load(DetectorSettings, database_url=database_url, mqtt_url=mqtt_url)
    logs.configure(settings.log_level, settings.log_format)
    exit_when_a_thread_dies()  # the alert publisher's network thread, say
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
    path: Annotated[Path, typer.Argument(help="CSV file, with or without a header ('-': stdin)")],
    metric: Annotated[str | None, typer.Option(
        help="a catalog metric (its physical range and resolution); default: learned")] = None,
    interval_s: Annotated[float | None, typer.Option(
        help="sample interval in seconds (default: the median step; a file of values "
             "alone: 60)")] = None,
    time_column: Annotated[str | None, typer.Option(
        help="name (or 1-based number) of the time column; default: 'timestamp' (or "
             "'time', 'datetime'...), else the first")] = None,
    value_column: Annotated[str | None, typer.Option(
        help="name (or 1-based number) of the value column; default: 'value', else the "
             "second")] = None,
    tz: Annotated[str, typer.Option(
        "--tz", help="zone of times written without one: UTC, +10:00, or a name such as "
                     "Australia/Brisbane")] = "UTC",
    time_format: Annotated[str | None, typer.Option(
        help="strptime format of the times when they are not ISO-8601 or epoch "
             "seconds/ms, e.g. '%d/%m/%Y %H:%M'")] = None,
) -> None:
    """Score a univariate series; writes timestamp,value,anomaly_score,component,category,
    qartod_flag,qartod_test to stdout, one row per input row in input order. Repeated or
    backward times, gaps, blank/NaN/text cells and sentinels (-9999, 65535) are scored,
    never refused."""
    import numpy as np

    from .detector import DetectorInputError, score_values
    from .series_csv import SeriesCsvError, parse_zone, read_series

    try:
        zone = parse_zone(tz)
    except ValueError as exc:
        typer.echo(f"error: --tz: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        table = read_series(path, time_column=time_column, value_column=value_column,
                            zone=zone, time_format=time_format,
                            spacing_s=interval_s or 60.0)
    except SeriesCsvError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        scores = score_values(table.times_ms, table.values, metric=metric,
                              interval_s=interval_s)
    except DetectorInputError as exc:  # a bad option (an unknown metric, interval <= 0)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    from .detector import infer_interval_s, repair_clock
    from .qartod import TESTS, combine, extra_tests, flags_from_detector

    note = table.summary()
    if note:
        typer.echo(f"{path}: {len(table)} rows scored; {note}", err=True)
    clock = repair_clock(table.times_ms, 1000.0 * (interval_s or infer_interval_s(
        table.times_ms)))
    flag, test = combine(flags_from_detector(table.values, scores.score, scores.component,
                                             scores.category),
                         extra_tests(clock, table.values))
    tests = np.asarray(TESTS, dtype=object)[test]
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(("timestamp", "value", "anomaly_score", "component", "category",
                  "qartod_flag", "qartod_test"))
    for row in zip(table.stamps, table.cells, scores.score.tolist(),
                   scores.component_names().tolist(), scores.category_names().tolist(),
                   flag.tolist(), tests.tolist(), strict=True):
        out.writerow((row[0], row[1], f"{row[2]:.4f}", *row[3:]))


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
    logger_quirks: Annotated[bool, typer.Option(
        "--logger-quirks/--no-logger-quirks",
        help="the loggers' irregular times, repeated timestamps and clock jumps "
             "(sim.logger) in both runs")] = True,
    forecast_model: Annotated[str, typer.Option(
        help="the forecaster's model: harmonic or damped_trend")] = "harmonic",
) -> None:
    """Run the detector over a labelled firmware-sim scenario and print per-kind precision,
    recall, F1 and median time to detect, classification accuracy and false alerts; then
    the early warnings' lead times and false warnings."""
    from tidefield.protocol.registry import load_sites
    from tidefield.sim.fleet import Fleet
    from tidefield.sim.logger import LoggerQuirks
    from tidefield.sim.scenario import scenario_plan

    from .evaluate import (
        aerator_rerun,
        detections,
        false_alerts_per_site_week,
        run_fleet,
        score_alerts,
        score_warnings,
        warnings_of,
    )
    from .forecast.forecaster import ForecastParams
    from .rules import RulesError, load_rules

    try:
        ruleset = load_rules(rules)
    except RulesError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if forecast_model not in ("harmonic", "damped_trend"):
        typer.echo(f"error: --forecast-model {forecast_model!r}: harmonic or damped_trend",
                   err=True)
        raise typer.Exit(2)
    forecast = ForecastParams(model=forecast_model)

    chosen = load_sites()
    chosen = chosen[::max(1, len(chosen) // sites)][:sites]
    start_ms = _iso_ms(start)
    end_ms = start_ms + int(days * DAY_MS)
    fleet = Fleet(chosen, seed=seed, plan=scenario_plan(start_ms, end_ms))
    quirks = LoggerQuirks(seed) if logger_quirks else None
    run = run_fleet(fleet, start_ms, end_ms, ruleset=ruleset, quirks=quirks,
                    forecast=forecast)
    labels = fleet.labels(start_ms, end_ms)
    result = score_alerts(fleet, labels, run.alerts, end_ms)
    typer.echo(f"seed {seed}, {len(chosen)} sites, {days:g} days: {run.readings:,} readings, "
               f"{len(detections(run.alerts))} alerts, {len(warnings_of(run.alerts))} "
               f"warnings, detector busy {run.seconds_detecting:.1f} s")
    typer.echo(f"{'kind':22} {'cat':5} {'labels':>6} {'found':>6} {'alerts':>6} "
               f"{'P':>5} {'R':>5} {'F1':>5} {'ttd min':>8}")
    for k in result.kinds:
        ttd = f"{k.median_ttd_min:8.0f}" if k.median_ttd_min is not None else "       -"
        typer.echo(f"{k.kind:22} {k.category:5} {k.labels:6d} {k.detected:6d} "
                   f"{k.predicted:6d} {k.precision:5.2f} {k.recall:5.2f} {k.f1:5.2f} {ttd}")
    typer.echo(f"fault/event classification: {result.classification:.3f} of "
               f"{result.classified} alerts matching a label")
    warned = score_warnings(fleet, labels, run.alerts, ruleset, start_ms, end_ms)
    typer.echo(f"early warnings ({forecast_model}): lead of the first warning before the "
               f"threshold is crossed")
    typer.echo(f"{'kind':22} {'events':>6} {'median':>7} {'p10':>6} {'>=60min':>7} "
               f"{'warnings':>8} {'false':>5} {'per site/wk':>11} {'per warned site/wk':>18}")
    for w in warned:
        typer.echo(f"{w.kind:22} {w.events:6d} {w.median_lead:7.0f} {w.p10_lead:6.0f} "
                   f"{w.share_ahead:7.2f} {w.warnings:8d} {w.false_warnings:5d} "
                   f"{w.false_per_fleet_site_week:11.2f} {w.false_per_site_week:18.2f}")
    aeration = aerator_rerun(fleet, labels, run.alerts, ruleset, start_ms, end_ms)
    typer.echo(f"hypoxia events crossing 3 mg/L: {aeration.crossed_without} of "
               f"{aeration.events} ({aeration.share_without:.2f}) as simulated; "
               f"{aeration.crossed_with} of {aeration.events} ({aeration.share_with:.2f}) "
               f"re-simulated with the cage farms' aerators automatic "
               f"({aeration.aerated} reached by a run)")
    if clean:
        quiet = run_fleet(fleet.with_plan(None), start_ms, end_ms, ruleset=ruleset,
                          quirks=quirks, forecast=forecast)
        rate = false_alerts_per_site_week(quiet, len(chosen), start_ms, end_ms)
        typer.echo(f"fault-free run: {len(detections(quiet.alerts))} alerts, {rate:.2f} per "
                   f"site per week")
        quiet_warned = score_warnings(fleet, [], quiet.alerts, ruleset, start_ms, end_ms)
        parts = [f"{w.kind} {w.warnings} ({w.false_per_fleet_site_week:.2f}, "
                 f"{w.false_per_site_week:.2f})" for w in quiet_warned]
        typer.echo("fault-free run, warnings (all false; per site and per warned site per "
                   "week): " + ", ".join(parts))


@app.command()
def benchmark(
    folders: Annotated[list[Path], typer.Argument(
        help="dataset folders of labelled CSVs (timestamp,value,label, or SKAB's "
             "multivariate timestamp,<sensors>,changepoint,label)")],
    part: Annotated[str, typer.Option(
        help="report, tuning or all: which files of a known dataset (the split is fixed "
             "in server/detect/benchmark.py)")] = "report",
    detectors: Annotated[str, typer.Option(
        help="comma-separated: tidefield, zscore, qartod, hst, and each baseline with its "
             "settings tuned on the tuning part: zscore*, qartod*, hst*")]
        = "tidefield,zscore,qartod,hst,zscore*,qartod*,hst*",
    every: Annotated[int, typer.Option(
        min=1, help="score every N-th row only, each of the N phases a series of its own: "
                    "how detection holds on a logger N times sparser (LRO's 15-minute "
                    "sondes at 6 are 90-minute loggers like the river's)")] = 1,
) -> None:
    """Score Tidefield and the baselines against real labelled data; print per dataset
    event-wise precision, recall and F1 at each one's default threshold, PR-AUC, median
    detection delay, false alarms per series-month, and Tidefield's F1 over the best
    baseline's."""
    from .benchmark import DETECTORS, report_lines, run_benchmark

    if part not in ("report", "tuning", "all"):
        typer.echo(f"error: --part {part!r}: expected report, tuning or all", err=True)
        raise typer.Exit(2)
    chosen = [d.strip() for d in detectors.split(",") if d.strip()]
    unknown = [d for d in chosen if d not in DETECTORS]
    if unknown or not chosen:
        typer.echo(f"error: --detectors: unknown {', '.join(unknown) or '(none given)'}; "
                   f"known: {', '.join(DETECTORS)}", err=True)
        raise typer.Exit(2)
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        typer.echo(f"error: not a folder: {', '.join(missing)}", err=True)
        raise typer.Exit(2)
    results = run_benchmark(folders, part=part, detectors=chosen, every=every)
    label = part if every == 1 else f"{part}, one row in {every}"
    for line in report_lines(results, label):
        typer.echo(line)
    if any(r.refused for r in results):
        raise typer.Exit(1)


# --- live rules -----------------------------------------------------------------------------

Site = Annotated[str | None, typer.Option("--site", help="a site id")]
Kind = Annotated[str | None, typer.Option("--kind", help="a site kind (every site of it)")]
RulesDatabaseUrl = Annotated[str | None, typer.Option(
    "--database-url", envvar="TIDEFIELD_DATABASE_URL", help="postgresql:// URL")]


def _target(site: str | None, kind: str | None) -> tuple[Literal["site", "kind"], str]:
    if (site is None) == (kind is None):
        raise typer.BadParameter("give one of --site or --kind")
    return ("site", site) if site is not None else ("kind", kind or "")


def _rules_settings(database_url: str | None) -> DetectorSettings:
    from tidefield.protocol.settings import load
    from tidefield.server import logs
    from tidefield.server.settings import DetectorSettings

    settings = load(DetectorSettings, database_url=database_url)
    logs.configure(settings.log_level, settings.log_format)
    if not settings.database_url:
        typer.echo("error: no database: set TIDEFIELD_DATABASE_URL", err=True)
        raise typer.Exit(2)
    return settings


def parse_assignments(assignments: list[str]) -> dict[str, dict[str, Any]]:
    """``hypoxia.threshold=4.0`` ... as rule changes; values are read as YAML (numbers,
    true/false, lists), so they reach the rule schema with their type."""
    import yaml

    changes: dict[str, dict[str, Any]] = {}
    for text in assignments:
        name, sep, raw = text.partition("=")
        rule, dot, field = name.partition(".")
        if not (sep and dot and rule and field):
            raise typer.BadParameter(f"{text!r}: expected RULE.FIELD=VALUE, "
                                     "e.g. hypoxia.threshold=4.0")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise typer.BadParameter(f"{text!r}: the value is not readable") from None
        changes.setdefault(rule, {})[field] = value
    return changes


def _versions(site: str | None, kind: str | None, database_url: str | None
              ) -> tuple[Literal["site", "kind"], str, list[RuleOverride]]:
    """The target the options name, and its stored versions, newest first."""
    import psycopg

    from . import store

    scope, target = _target(site, kind)
    settings = _rules_settings(database_url)
    with psycopg.connect(settings.database_url or "") as conn:
        return scope, target, store.override_history(conn, scope, target)


@rules_app.command("show")
def rules_show(site: Site = None, kind: Kind = None,
               database_url: RulesDatabaseUrl = None) -> None:
    """The stored changes of a site or a kind (JSON), with their version."""
    import json

    scope, target, versions = _versions(site, kind, database_url)
    now = versions[0] if versions else None
    typer.echo(json.dumps({"scope": scope, "target": target,
                           "version": now.version if now else 0,
                           "rules": now.rules if now else {}}, indent=2))


@rules_app.command("set")
def rules_set(assignments: Annotated[list[str], typer.Argument(
                  help="RULE.FIELD=VALUE ... (none: remove the target's changes)")] = [],  # noqa: B006
              site: Site = None, kind: Kind = None,
              database_url: RulesDatabaseUrl = None) -> None:
    """Replace the changes of a site or a kind (checked against the rule schema, stored
    as a new version, audited as cli:<user>); a running detector applies them within
    TIDEFIELD_DETECT_RULES_POLL_S."""
    import getpass

    import psycopg

    from . import live_rules
    from .rules import RulesError, load_rules

    scope, target = _target(site, kind)
    changes = parse_assignments(assignments)
    settings = _rules_settings(database_url)
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        if scope == "site" and conn.execute("SELECT 1 FROM sites WHERE id = %s",
                                            (target,)).fetchone() is None:
            typer.echo(f"error: no site {target!r}", err=True)
            raise typer.Exit(2)
        try:
            saved = live_rules.change(conn, load_rules(settings.detect_rules), scope, target,
                                      changes, actor=f"cli:{getpass.getuser()}",
                                      site_id=target if scope == "site" else None)
        except RulesError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    typer.echo(f"{scope} {target}: version {saved.version}")


@rules_app.command("history")
def rules_history(site: Site = None, kind: Kind = None,
                  database_url: RulesDatabaseUrl = None) -> None:
    """Every version of a site's or kind's changes, newest first."""
    import json

    for version in _versions(site, kind, database_url)[2]:
        typer.echo(f"v{version.version} {version.changed_at.isoformat()} "
                   f"{version.changed_by}: {json.dumps(version.rules)}")
