"""The agent's entry points: exit codes, clean stop, and a footprint without NumPy."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from typer.testing import CliRunner

from tidefield.edge.cli import app
from tidefield.server.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "deploy" / "edge.yaml"
SOIL_PROBE = {"type": "modbus_tcp", "device": "ag-001-soil", "host": "127.0.0.1",
              "port": 1, "registers": {"soil_moisture": {"address": 0, "scale": 0.1}}}


def write_config(tmp_path: Path, **sections) -> Path:
    data = {"site": "ag-001", "queue": {"path": str(tmp_path / "queue.db")},
            "broker": {"url": f"mqtt://127.0.0.1:{free_port()}"}, **sections}
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def edge(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tidefield.edge", *args], capture_output=True,
                          text=True, timeout=60, **kw)


def test_a_bad_config_exits_2_naming_each_field(tmp_path):
    path = write_config(tmp_path, drivers=[SOIL_PROBE, {**SOIL_PROBE, "port": "x"}],
                        queue={"when_full": "panic"})
    result = edge("run", "--config", str(path))
    assert result.returncode == 2
    assert "drivers.1.port: Input should be a valid integer" in result.stderr
    assert "queue.when_full: Input should be 'drop_oldest' or 'refuse_newest'" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_accepts_the_sample():
    result = edge("check", "--config", str(SAMPLE))
    assert result.returncode == 0, result.stderr
    assert "ok (site ag-001, 2 drivers" in result.stdout


def test_a_queue_that_cannot_be_opened_exits_1(tmp_path):
    path = write_config(tmp_path, queue={"path": "/dev/null/queue.db"})
    result = edge("run", "--config", str(path))
    assert result.returncode == 1
    assert "cannot open the queue /dev/null/queue.db" in result.stderr


def test_sigterm_stops_the_agent_cleanly(tmp_path):
    # no broker on that port and a device that does not answer: it must still stop cleanly
    path = write_config(tmp_path, drivers=[SOIL_PROBE])
    proc = subprocess.Popen([sys.executable, "-m", "tidefield.edge", "run", "--config",
                             str(path)], stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    # the driver's first warning comes from a running agent (signal handlers installed):
    # wait for it rather than for a fixed time, which a loaded machine can outlast
    failed = ("ag-001-soil: poll failed: cannot connect to 127.0.0.1:1: Connection refused; "
              "retrying in")
    deadline = time.monotonic() + 60
    while not any(failed in line for line in list(lines)) and time.monotonic() < deadline:
        assert proc.poll() is None, "".join(lines)
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    reader.join(10)
    stderr = "".join(lines)
    assert failed in stderr
    assert "pymodbus" not in stderr  # the driver's one warning, not the library's noise
    assert "Traceback" not in stderr


_AGENT_PROCESS = """
import sys
from tidefield.edge.agent import Agent
from tidefield.edge.config import from_json
from tidefield.edge.drivers import DRIVERS
config = from_json(sys.stdin.read())  # what `run` does with the output of `check --json`
agent = Agent(config)
drivers = [DRIVERS[d.type](d, report=print) for d in config.drivers]
import pymodbus.client  # what the Modbus drivers load on their first connection
print(sorted(m for m in ("numpy", "numba", "tidefield.sim", "pydantic", "yaml", "typer",
                         "tidefield.protocol.registry") if m in sys.modules))
"""


def test_the_agent_process_imports_neither_numpy_nor_pydantic(tmp_path):
    path = write_config(tmp_path, drivers=[
        SOIL_PROBE,
        {"type": "modbus_rtu", "device": "ag-001-wx", "port": "/dev/ttyUSB9",
         "registers": {"air_temperature": {"address": 0, "type": "float32"}}},
        {"type": "ds18b20", "device": "ag-001-soil",
         "sensors": {"soil_temperature": "28-0316a2793bff"}}])
    checked = edge("check", "--json", "--config", str(path))
    assert checked.returncode == 0, checked.stderr
    result = subprocess.run([sys.executable, "-c", _AGENT_PROCESS], input=checked.stdout,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_the_typer_sub_app():
    runner = CliRunner()
    result = runner.invoke(app, ["check", "--config", str(SAMPLE)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["run", "--config", str(SAMPLE), "--log-level", "loud"])
    assert result.exit_code == 2
    assert "--help" in runner.invoke(app, ["--help"]).output
