"""One `tidefield up` per data folder: its lock, and what an instance before it left.

The lock is an exclusive ``flock`` on ``data_dir/up.lock``, held for the life of the
process (the kernel lets go when the process ends, however it ends). A second
`tidefield up` on the same folder waits for it (an instance still stopping lets go once
its database is down) and refuses, naming the holder, if it does not come free in time:
it never starts beside a database that is going away.

Holding the lock, any server still running from the folder is an orphan (its supervisor
was killed with `kill -9`): the postmasters of ``postgres/data`` and ``replica/data``
(by their ``postmaster.pid``) and the broker (by the pid the last state file recorded,
if its command line still names the folder). Each is asked to stop and waited for, then
killed, before anything starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

LOCK_FILE = "up.lock"
LOCK_POLL_S = 0.5
ORPHAN_STOP_S = 60.0  # a postmaster's fast shutdown: what it may take before SIGKILL


class InstanceRunning(RuntimeError):
    """Another `tidefield up` holds the data folder."""


def take_lock(data_dir: Path, wait_s: float,
              say: Callable[[str], None] = log.warning) -> IO[str]:
    """The folder's lock (keep the handle open for as long as the instance runs), after
    waiting up to ``wait_s`` for an instance holding it; InstanceRunning if it does not
    let go."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    handle = path.open("a+")
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = _holder(path)
            if time.monotonic() >= deadline:
                handle.close()
                raise InstanceRunning(
                    f"another `tidefield up` (pid {holder}) runs in {data_dir} and did not "
                    f"stop within {wait_s:g} s; stop it first (Ctrl-C, or kill {holder}), "
                    f"or use another data folder (--data-dir)") from None
            if not told:
                say(f"another `tidefield up` (pid {holder}) holds {data_dir}; waiting up "
                    f"to {wait_s:g} s for it to stop")
                told = True
            time.sleep(LOCK_POLL_S)
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def reap_orphans(data_dir: Path, state_file: Path,
                 say: Callable[[str], None] = log.warning) -> list[int]:
    """Stop servers left running from ``data_dir`` by an instance that died (call with
    the lock held); the pids stopped."""
    stopped = []
    for pid_file in (data_dir / "postgres" / "data" / "postmaster.pid",
                     data_dir / "replica" / "data" / "postmaster.pid"):
        pid = _postmaster(pid_file)
        if pid is not None:
            say(f"an orphaned PostgreSQL (pid {pid}) runs from {pid_file.parent}; stopping "
                f"it before starting")
            _stop(pid, signal.SIGINT)  # fast shutdown: clients go, the data is consistent
            stopped.append(pid)
    broker = _broker(data_dir, state_file)
    if broker is not None:
        say(f"an orphaned Mosquitto (pid {broker}) runs from {data_dir}; stopping it "
            f"before starting (its persistence file is written on the way)")
        _stop(broker, signal.SIGTERM)
        stopped.append(broker)
    return stopped


def _postmaster(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _alive(pid) and _cmdline_names(pid, "postgres") else None


def _broker(data_dir: Path, state_file: Path) -> int | None:
    try:
        state = json.loads(state_file.read_text())
        pid = int(state["children"]["broker"]["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if _alive(pid) and _cmdline_names(pid, str(data_dir)) else None


def _cmdline_names(pid: int, text: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return text in cmdline


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _stop(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + ORPHAN_STOP_S
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.1)
