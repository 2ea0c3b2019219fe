"""Child processes started, watched, restarted and stopped as one: what `tidefield up`
stands on.

* Each child runs in a process group of its own, so stopping it also stops what it
  started (uvicorn's worker processes, Streamlit's). Stop sends SIGTERM to the group,
  waits ``STOP_GRACE_S``, then SIGKILLs the group: nothing is left behind.
* Output of every child goes to one stream, each line prefixed with the child's name.
* A child that exits on its own is restarted after a backoff (1 s, doubling, at most
  30 s), up to ``max_restarts`` within ``RESTART_WINDOW_S``; past that it is left
  stopped and reported as failed, and the rest keep running.
* The supervisor's view (state, pid, restarts, URL and how to check the health of each
  child) is written to a JSON file after each change, for `tidefield status`.
* The embedded database and broker are children like the others (`server.platform`), so
  a `kill -9` of either is a restart within seconds, not a platform left without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

STOP_GRACE_S = 15.0
RESTART_WINDOW_S = 600.0
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0


@dataclass
class Child:
    """One supervised program. ``ready``, if given, says when it serves (polled after each
    start); ``url`` is what `tidefield status` and the banner show for it."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready: Callable[[], bool] | None = None
    url: str | None = None
    max_restarts: int = 5
    # how `tidefield status` checks it: {"http": url} (200 is healthy), {"tcp": "host:port"}
    # or {"postgres": url}; None: its state is all there is
    health: dict[str, str] | None = None
    stop_signal: int = signal.SIGTERM  # PostgreSQL: SIGINT, its fast shutdown

    state: str = "stopped"  # starting, running, restarting, failed, stopped
    proc: subprocess.Popen | None = None
    restarts: list[float] = field(default_factory=list)
    next_start: float = 0.0
    _reader: threading.Thread | None = None


class Supervisor:
    def __init__(self, stream: TextIO | None = None, state_file: Path | None = None) -> None:
        self.children: list[Child] = []
        self._stream = stream  # None: sys.stderr at the time of writing (a progress bar
        # may have wrapped it meanwhile, to print above itself)
        self._state_file = state_file
        self.info: dict = {}  # saved with the state: where the services are
        self._lock = threading.Lock()
        self._stopping = False

    # --- output -------------------------------------------------------------------------

    def say(self, name: str, text: str) -> None:
        stream = self._stream or sys.stderr
        with self._lock:
            stream.write(f"{name:>10} | {text}\n")
            stream.flush()

    def _pump(self, child: Child, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None  # started with stdout=PIPE
        for line in proc.stdout:  # ends when the child and its group close the pipe
            self.say(child.name, line.rstrip("\n"))

    # --- lifecycle ----------------------------------------------------------------------

    def add(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def start(self, child: Child) -> None:
        env = {**os.environ, **child.env, "PYTHONUNBUFFERED": "1"}
        child.proc = subprocess.Popen(child.argv, env=env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, errors="replace", start_new_session=True)
        child._reader = threading.Thread(target=self._pump, args=(child, child.proc),
                                         name=f"output-{child.name}", daemon=True)
        child._reader.start()
        child.state = "starting" if child.ready else "running"
        self.say(child.name, f"started (pid {child.proc.pid})")
        self._save()

    def wait_ready(self, child: Child, timeout: float, stop: threading.Event) -> bool:
        """Until the child answers ``ready`` (True), exits, times out or stop is set."""
        deadline = time.monotonic() + timeout
        while not stop.is_set() and time.monotonic() < deadline:
            if child.proc is None or child.proc.poll() is not None:
                return False
            if child.ready is None or _safely(child.ready):
                self._mark_ready(child)
                return True
            stop.wait(0.25)
        return False

    def watch(self) -> None:
        """One look at every child: notice exits, restart what may be restarted, promote
        started children that became ready. Call it every fraction of a second."""
        now = time.monotonic()
        for child in self.children:
            if child.state == "restarting":
                if now >= child.next_start and not self._stopping:
                    self.start(child)
                continue
            proc = child.proc
            if child.state not in ("starting", "running") or proc is None:
                continue
            if proc.poll() is not None:
                if not self._stopping:
                    self._exited(child, proc.returncode, now)
                continue
            if child.state == "starting" and child.ready is not None and _safely(child.ready):
                self._mark_ready(child)

    def _mark_ready(self, child: Child) -> None:
        child.state = "running"
        self.say(child.name, f"ready{f' at {child.url}' if child.url else ''}")
        self._save()

    def _exited(self, child: Child, code: int, now: float) -> None:
        _kill_group(child.proc, signal.SIGKILL)  # whatever it left running goes too
        child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW_S]
        if len(child.restarts) >= child.max_restarts:
            child.state = "failed"
            self.say(child.name, f"exited with code {code}; restarted {len(child.restarts)} "
                                 f"times in {RESTART_WINDOW_S / 60:.0f} min, giving up")
        else:
            backoff = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** len(child.restarts))
            child.restarts.append(now)
            child.state = "restarting"
            child.next_start = now + backoff
            self.say(child.name, f"exited with code {code}; restarting in {backoff:g} s")
        self._save()

    def stop_all(self) -> None:
        """Stop every child, the last started first: SIGTERM to its group, then SIGKILL."""
        self._stopping = True
        for child in reversed(self.children):
            self.stop(child)

    def stop(self, child: Child) -> None:
        proc = child.proc
        if proc is None:
            child.state = "stopped"
            return
        if proc.poll() is None:
            _kill_group(proc, child.stop_signal)
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.say(child.name, f"did not stop in {STOP_GRACE_S:g} s; killing it")
        _kill_group(proc, signal.SIGKILL)  # its group: workers it started, if any remain
        proc.wait()
        if child._reader is not None:
            child._reader.join(5)
        child.state = "stopped"
        self.say(child.name, f"stopped (code {proc.returncode})")
        self._save()

    # --- state for `tidefield status` ---------------------------------------------------

    def _save(self) -> None:
        if self._state_file is None:
            return
        view = {"supervisor_pid": os.getpid(), "updated": time.time(), **self.info,
                "children": {c.name: {"state": c.state, "url": c.url,
                                      "pid": c.proc.pid if c.proc else None,
                                      "restarts": len(c.restarts),
                                      "health": c.health} for c in self.children}}
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(view, indent=1))
        tmp.replace(self._state_file)


def _safely(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except Exception:  # a readiness probe failing is "not ready yet"
        return False


def _kill_group(proc: subprocess.Popen | None, sig: int) -> None:
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the child's pid
