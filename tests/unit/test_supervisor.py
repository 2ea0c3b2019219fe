"""The supervisor with real child processes: output, restarts with a limit, and a stop
that leaves nothing behind (grandchildren included)."""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time

from tidefield.server import supervisor as sv
from tidefield.server.supervisor import Child, Supervisor


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is gone for our purposes
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def _watch_until(supervisor: Supervisor, condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        supervisor.watch()
        time.sleep(0.05)


def test_output_is_prefixed_and_state_saved(tmp_path):
    out = io.StringIO()
    supervisor = Supervisor(out, tmp_path / "state.json")
    child = supervisor.add(Child("echo", [sys.executable, "-c",
                                          "print('hello'); import time; time.sleep(30)"]))
    supervisor.start(child)
    _watch_until(supervisor, lambda: "hello" in out.getvalue())
    assert "      echo | hello" in out.getvalue()
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["children"]["echo"]["state"] == "running"
    assert state["children"]["echo"]["pid"] == child.proc.pid
    supervisor.stop_all()
    assert json.loads((tmp_path / "state.json").read_text())["children"]["echo"]["state"] \
        == "stopped"


def test_a_crashing_child_is_restarted_then_given_up(monkeypatch, tmp_path):
    monkeypatch.setattr(sv, "BACKOFF_FIRST_S", 0.05)
    out = io.StringIO()
    supervisor = Supervisor(out)
    marker = tmp_path / "starts"
    script = (f"open({str(marker)!r}, 'a').write('x'); import sys; sys.exit(3)")
    child = supervisor.add(Child("crashy", [sys.executable, "-c", script], max_restarts=3))
    supervisor.start(child)
    _watch_until(supervisor, lambda: child.state == "failed")
    assert marker.read_text() == "xxxx"  # the first start and three restarts
    assert "exited with code 3; restarting in" in out.getvalue()
    assert "giving up" in out.getvalue()


def test_stop_takes_the_whole_process_group(tmp_path):
    # the child starts a grandchild that ignores nothing and would outlive a plain kill
    pid_file = tmp_path / "grandchild"
    script = ("import subprocess, sys, time\n"
              "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
              f"open({str(pid_file)!r}, 'w').write(str(g.pid))\n"
              "time.sleep(300)\n")
    supervisor = Supervisor(io.StringIO())
    child = supervisor.add(Child("parent", [sys.executable, "-c", script]))
    supervisor.start(child)
    _watch_until(supervisor, lambda: pid_file.exists() and pid_file.read_text())
    grandchild = int(pid_file.read_text())
    assert _alive(grandchild)
    supervisor.stop_all()
    assert not _alive(child.proc.pid)
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_a_child_that_ignores_sigterm_is_killed(monkeypatch):
    monkeypatch.setattr(sv, "STOP_GRACE_S", 0.5)
    script = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "print('ready', flush=True)\ntime.sleep(300)\n")
    out = io.StringIO()
    supervisor = Supervisor(out)
    child = supervisor.add(Child("stubborn", [sys.executable, "-c", script]))
    supervisor.start(child)
    _watch_until(supervisor, lambda: "ready" in out.getvalue())
    started = time.monotonic()
    supervisor.stop_all()
    assert time.monotonic() - started < 5
    assert child.proc.returncode == -9
    assert "did not stop in 0.5 s; killing it" in out.getvalue()


def test_wait_ready_follows_the_probe_and_notices_an_early_exit():
    supervisor = Supervisor(io.StringIO())
    flag = threading.Event()
    child = supervisor.add(Child("slow", [sys.executable, "-c", "import time; time.sleep(30)"],
                                 ready=flag.is_set))
    supervisor.start(child)
    threading.Timer(0.3, flag.set).start()
    assert supervisor.wait_ready(child, 10, threading.Event())
    assert child.state == "running"
    dead = supervisor.add(Child("dead", [sys.executable, "-c", "raise SystemExit(1)"],
                                ready=lambda: False))
    supervisor.start(dead)
    assert not supervisor.wait_ready(dead, 10, threading.Event())
    supervisor.stop_all()
