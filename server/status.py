"""`tidefield status`: what `tidefield up` runs, read from its state file and checked
against the processes, plus what the database and ingest say about the data flow, and
the operations' state: backups, WAL archiving, the replica's lag, the disks."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import httpx
import psycopg

from tidefield.server.db import scalar
from tidefield.server.ops import report as ops_report
from tidefield.server.platform import STATE_FILE

_QUEUE_DEPTH = re.compile(r"^tidefield_ingest_queue_depth(?:\{[^}]*\})?\s+([0-9.eE+-]+)$",
                          re.MULTILINE)
_OLDEST = re.compile(r'^tidefield_ingest_oldest_unacknowledged_seconds\{partition="([^"]*)"\}'
                     r"\s+([0-9.eE+-]+)$", re.MULTILINE)
_STALLED = re.compile(r'^tidefield_ingest_stalled\{partition="([^"]*)"\}\s+([0-9.eE+-]+)$',
                      re.MULTILINE)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def collect(data_dir: Path) -> dict:
    path = data_dir / STATE_FILE
    report: dict = {"data_dir": str(data_dir), "running": False, "children": {}}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        report["problem"] = f"no state in {path}: `tidefield up` has not run here"
        return report
    report["running"] = _alive(state.get("supervisor_pid"))
    for name, child in state.get("children", {}).items():
        alive = report["running"] and _alive(child.get("pid"))
        report["children"][name] = {**child, "state": child["state"] if alive else "stopped"}
    report.update({k: state.get(k) for k in ("database_url", "mqtt_url", "api_url")})
    if not report["running"] or not state.get("database_url"):
        return report
    try:
        with psycopg.connect(state["database_url"], connect_timeout=3) as conn:
            report["readings_per_second"] = float(scalar(conn.execute(
                "SELECT coalesce(sum(readings), 0) / 60.0 FROM ingest_batches "
                "WHERE received_at > now() - interval '60 seconds'")))
            report["open_alerts"] = dict(conn.execute(
                "SELECT severity, count(*) FROM alerts WHERE state <> 'closed' "
                "GROUP BY severity").fetchall())
    except psycopg.Error as exc:
        report["problem"] = f"database: {str(exc).strip().splitlines()[0]}"
    ops = ops_report.collect(state["database_url"], read_url=state.get("database_read_url"),
                             data_dir=data_dir, repo=Path(state["backup_repo"])
                             if state.get("backup_repo") else None)
    report["ops"] = ops_report.as_dict(ops)
    report["ops_lines"] = ops_report.render(ops)
    ingest = state.get("children", {}).get("ingest", {}).get("url")
    if ingest:
        try:
            text = httpx.get(f"{ingest}/metrics", timeout=3).text
            report["ingest_queue_depth"] = sum(float(v) for v in _QUEUE_DEPTH.findall(text))
            report["ingest_oldest_s"] = {p: float(v) for p, v in _OLDEST.findall(text)}
            report["ingest_stalled"] = sorted(p for p, v in _STALLED.findall(text)
                                              if float(v) > 0)
        except httpx.HTTPError:
            report["ingest_queue_depth"] = None
    return report


def render(report: dict) -> str:
    if "problem" in report and not report["children"]:
        return report["problem"]
    lines = [f"tidefield up in {report['data_dir']}: "
             f"{'running' if report['running'] else 'not running'}"]
    for name, child in report["children"].items():
        restarts = f", {child['restarts']} restarts" if child.get("restarts") else ""
        where = f"  {child['url']}" if child.get("url") else ""
        lines.append(f"  {name:<10} {child['state']:<10} pid {child.get('pid') or '-'}"
                     f"{restarts}{where}")
    if "readings_per_second" in report:
        lines.append(f"ingest     {report['readings_per_second']:,.1f} readings/s stored "
                     f"(last minute)")
    if report.get("ingest_queue_depth") is not None:
        lines.append(f"queue      {report['ingest_queue_depth']:,.0f} messages received, "
                     f"not yet committed")
    for partition, age in sorted(report.get("ingest_oldest_s", {}).items()):
        stalled = "stalled" if partition in report.get("ingest_stalled", []) else "flowing"
        lines.append(f"partition {partition} {stalled}: oldest message not yet committed "
                     f"{age:,.1f} s")
    if "open_alerts" in report:
        alerts = report["open_alerts"]
        lines.append("alerts     " + (", ".join(f"{n} {sev}" for sev, n in sorted(
            alerts.items())) or "none open"))
    lines += report.get("ops_lines", [])
    if "problem" in report:
        lines.append(f"problem    {report['problem']}")
    return "\n".join(lines)
