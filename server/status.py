"""`tidefield status`: what `tidefield up` runs, read from its state file and checked
against the processes, with each part's health in one table (the database and the broker
among them), plus what the database and ingest say about the data flow, and the
operations' state: backups, WAL archiving, the replica's lag, the disks."""

from __future__ import annotations

import json
import os
import re
import ssl
from pathlib import Path

import httpx
import psycopg

from tidefield.server.db import scalar
from tidefield.server.embedded.ports import port_open
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
        report["children"][name] = {**child, "state": child["state"] if alive else "stopped",
                                    "health": _health(child.get("health")) if alive else "-"}
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


def _health(spec: dict[str, str] | None) -> str:
    """"ok", or what is wrong, by the check the supervisor recorded for the part; "-"
    when it has none (its state says it all)."""
    if not spec:
        return "-"
    try:
        if "http" in spec:
            verify = ssl.create_default_context(cafile=spec["ca_file"]) \
                if spec.get("ca_file") else True
            response = httpx.get(spec["http"], timeout=3, verify=verify)
            if response.status_code == 200:
                return "ok"
            try:  # /healthz says which of its parts is missing
                detail = response.json().get("detail", response.json())
                bad = [k for k, v in detail.items() if v is False]
            except (ValueError, AttributeError):
                bad = []
            return f"{response.status_code}" + (f": {', '.join(bad)} down" if bad else "")
        if "tcp" in spec:
            host, port = spec["tcp"].rsplit(":", 1)
            return "ok" if port_open(int(port), host) else "not listening"
        if "postgres" in spec:
            with psycopg.connect(spec["postgres"], connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return "ok"
    except (httpx.HTTPError, psycopg.Error, OSError, ValueError) as exc:
        return f"unreachable ({type(exc).__name__})"
    return "-"


def render(report: dict) -> str:
    if "problem" in report and not report["children"]:
        return report["problem"]
    lines = [f"tidefield up in {report['data_dir']}: "
             f"{'running' if report['running'] else 'not running'}"]
    rows = [("part", "state", "pid", "restarts", "health", "where")]
    rows += [(name, child["state"], str(child.get("pid") or "-"),
              str(child.get("restarts") or 0), child.get("health") or "-",
              child.get("url") or "")
             for name, child in report["children"].items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                     strict=True)).rstrip()
              for row in rows]
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
