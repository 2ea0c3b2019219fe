"""The runbook's restore procedure, followed word for word: the bash blocks of its
"Restore after disk loss" section (between the ``runbook-test`` markers in
docs/runbook.md), run in order in one shell, with the platform's environment set as an
operator's service would set it, on a platform whose data folder has been deleted. The
restored platform must run and hold every reading that was archived. Its service runs
`tidefield up` with the read replica (TIDEFIELD_UP_REPLICA), so this is also where
`tidefield up --replica` is seen end to end: the API's reads come from the replica."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tidefield.server.embedded import free_port
from tidefield.server.ops.deployment import DATABASE

from ..conftest import scratch_dir
from ..support.ops import hours_ago, platform_db, readings_digest, series_ids, write_readings

pytestmark = pytest.mark.timeout(900)
RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook.md"


def section_blocks(name: str) -> list[str]:
    """The bash blocks between ``<!-- runbook-test: NAME -->`` and the next
    ``<!-- /runbook-test -->``, as written."""
    text = RUNBOOK.read_text()
    start = text.index(f"<!-- runbook-test: {name} -->")
    section = text[start:text.index("<!-- /runbook-test -->", start)]
    return re.findall(r"^```bash\n(.*?)^```$", section, re.DOTALL | re.MULTILINE)


def test_the_section_has_the_steps_it_promises():
    blocks = section_blocks("restore-after-disk-loss")
    commands = [line for block in blocks for line in block.splitlines()]
    assert any(c.startswith("tidefield restore --to latest") for c in commands)
    assert any("tidefield up" in c for c in commands)
    assert commands[-1] == "tidefield backup --kind full"


def _stop_up(data_dir: Path) -> None:
    try:
        pid = json.loads((data_dir / "up.json").read_text())["supervisor_pid"]
    except (OSError, ValueError, KeyError):
        return
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}").exists() else ""
        if stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]:
            break
        time.sleep(0.5)


def test_restore_after_disk_loss_word_for_word():
    folder = scratch_dir("tidefield-test-runbook-")
    folder.chmod(0o755)
    repo = folder / "backup-disk" / "repo"  # the disk that survives
    new_data = folder / "new-disk" / "tidefield"
    try:
        with platform_db(folder / "lost-disk" / "tidefield", repo=repo, files=False) as old:
            series = series_ids(old.url, 30)
            write_readings(old.url, series, hours_ago(48), 24 * 60)
            assert old.tidefield("backup").returncode == 0
            write_readings(old.url, series, hours_ago(3), 120, salt=0.5)
            # a minute later archive_timeout would have closed the segment by itself
            assert old.tidefield("backup", "check").returncode == 0
            expected = readings_digest(old.url)
            old.cluster.destroy()  # the disk is lost, the database with it
            shutil.rmtree(old.data_dir)
        assert not old.data_dir.exists()

        ports = {name: free_port() for name in ("EMBEDDED_PG_PORT", "EMBEDDED_MQTT_PORT",
                                                 "API_PORT", "INGEST_PORT", "DASHBOARD_PORT")}
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEFIELD_")}
        env.update({f"TIDEFIELD_{k}": str(v) for k, v in ports.items()})
        env.update({"TIDEFIELD_DATA_DIR": str(new_data), "TIDEFIELD_BACKUP_REPO": str(repo),
                    # the operator's service: no simulated fleet, history or extras here
                    "TIDEFIELD_UP_FLEET": "false", "TIDEFIELD_UP_DASHBOARD": "false",
                    "TIDEFIELD_UP_DETECTOR": "false", "TIDEFIELD_UP_BACKFILL_DAYS": "0",
                    "TIDEFIELD_UP_REPLICA": "true",
                    "TIDEFIELD_EMBEDDED_REPLICA_PORT": str(free_port()),
                    "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"})
        script = "\n".join(section_blocks("restore-after-disk-loss"))
        run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, cwd=folder,
                             capture_output=True, text=True, timeout=600)
        up_log = new_data / "up.log"
        assert run.returncode == 0, (run.stdout + run.stderr + (
            up_log.read_text()[-3000:] if up_log.exists() else ""))
        assert "readings" in run.stdout  # what the restore reported
        assert "running" in run.stdout  # tidefield status
        assert "(full)" in run.stdout  # the new full backup

        restored = f"postgresql://postgres@127.0.0.1:{ports['EMBEDDED_PG_PORT']}/{DATABASE}"
        assert readings_digest(restored) == expected  # every reading, none changed
        with psycopg.connect(restored) as conn:
            runs = conn.execute("SELECT kind, ok FROM backup_runs WHERE action = 'backup' "
                                "ORDER BY id").fetchall()
        assert runs[-1] == ("full", True)

        # the replica `tidefield up` runs beside it serves the API's reads
        key = (new_data / "operator.key").read_text().strip()
        api = f"http://127.0.0.1:{ports['API_PORT']}/api/v1/sites"

        def read_from() -> str | None:
            try:
                return httpx.get(api, headers={"X-API-Key": key}, timeout=5).headers.get(
                    "X-Tidefield-Read-From")
            except httpx.HTTPError:
                return None
        deadline = time.monotonic() + 180
        while read_from() != "replica" and time.monotonic() < deadline:
            time.sleep(2)
        assert read_from() == "replica", (new_data / "up.log").read_text()[-3000:]
        status = subprocess.run(["tidefield", "status"], env=env, capture_output=True,
                                text=True, timeout=120)
        assert "replica    streaming" in status.stdout, status.stdout
        assert "backup     newest" in status.stdout
    finally:
        _stop_up(new_data)
        shutil.rmtree(folder, ignore_errors=True)
