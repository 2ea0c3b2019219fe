"""Running Tidefield's own services as subprocesses in tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tidefield.server.embedded import free_port


class IngestService:
    """`tidefield ingest --workers N` in a subprocess, with its own data folder."""

    def __init__(self, database_url: str, mqtt_url: str | None, data_dir: Path, *,
                 workers: int = 2, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        env = {**os.environ, "TIDEFIELD_DATABASE_URL": database_url,
               "TIDEFIELD_DATA_DIR": str(data_dir), "TIDEFIELD_INGEST_PORT": str(self.port),
               "TIDEFIELD_INGEST_WORKERS": str(workers), **(extra_env or {})}
        if mqtt_url:
            env["TIDEFIELD_MQTT_URL"] = mqtt_url
        self.log_path = data_dir / "ingest.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "tidefield.cli", "ingest"],
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.workers = workers

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout: float = 60) -> None:
        """Until every worker answers healthy (connected and subscribed): /healthz reaches
        one worker at a time, so it must answer 200 many times in a row."""
        deadline = time.monotonic() + timeout
        streak = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ingest exited: {self.log_path.read_text()[-3000:]}")
            try:
                ok = httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                ok = False
            streak = streak + 1 if ok else 0
            if streak >= 5 * self.workers and len(self.worker_pids()) == self.workers:
                return
            time.sleep(0.05 if ok else 0.2)
        raise TimeoutError(f"ingest not healthy: {self.log_path.read_text()[-3000:]}")

    def worker_pids(self) -> list[int]:
        if self.workers == 1:
            return [self.proc.pid]
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                             text=True).stdout.split()
        # multiprocessing's resource tracker is a child too; workers run uvicorn
        pids = []
        for pid in map(int, out):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"multiprocessing.spawn" in cmdline or b"spawn_main" in cmdline:
                pids.append(pid)
        return pids

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
