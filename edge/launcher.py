"""The agent's launcher: runs the current release and rolls an update back by itself.

    python3 /opt/tidefield-edge/launcher.py --root /opt/tidefield-edge \\
        --config /etc/tidefield/edge.yaml

Standard library only, and run from a copy at the root (``install`` puts it there), not
from a release: a broken release must not be able to break its own rollback.

Each round it starts ``current/bin/python -m tidefield.edge run`` with
``--healthy-file healthy.<version>``; the agent writes that file once it is up (config
valid, broker connected). When ``pending.json`` names the current release, that release
is on probation: if the file does not appear within ``--health-timeout-s``, or the agent
exits first, the launcher stops it, switches ``current`` back to the previous release,
records why in ``failed.json`` and starts the previous one. An agent exiting with 75 (a
reboot or an update) is started again at once; any other exit status is the launcher's,
for systemd to act on.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

EXIT_RESTART = 75
POLL_S = 0.2


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: object) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data))
    os.replace(temporary, path)


def _current(root: Path) -> str | None:
    try:
        return Path(os.readlink(root / "current")).name
    except OSError:
        return None


def _switch(root: Path, version: str) -> None:
    link = root / "current.new"
    link.unlink(missing_ok=True)
    link.symlink_to(Path("releases") / version)
    os.replace(link, root / "current")


def _log(message: str) -> None:
    print(f"launcher: {message}", file=sys.stderr, flush=True)


class Launcher:
    def __init__(self, root: Path, config: str, health_timeout_s: float,
                 extra: list[str]) -> None:
        self.root, self.config = root, config
        self.health_timeout_s = health_timeout_s
        self.extra = extra
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False

    def _start(self, version: str) -> subprocess.Popen[bytes]:
        python = self.root / "releases" / version / "bin" / "python"
        return subprocess.Popen([str(python), "-m", "tidefield.edge", "run", "--config",
                                 self.config, "--healthy-file",
                                 str(self.root / f"healthy.{version}"), *self.extra])

    def run(self) -> int:
        while not self.stopping:
            version = _current(self.root)
            if version is None:
                _log(f"no current release under {self.root}")
                return 1
            pending = _read_json(self.root / "pending.json")
            if pending is not None and pending.get("version") != version:
                # the switch never happened (stopped before the rename): nothing to test
                (self.root / "pending.json").unlink(missing_ok=True)
                pending = None
            self.child = self._start(version)
            if pending is not None and not self._probation(version, pending):
                continue
            status = self.child.wait()
            if status == EXIT_RESTART and not self.stopping:
                _log(f"{version} asked to be restarted")
                continue
            return status
        return 0

    def _probation(self, version: str, pending: dict[str, object]) -> bool:
        """True when the new release came up healthy (it keeps running)."""
        assert self.child is not None
        marker = self.root / f"healthy.{version}"
        deadline = time.monotonic() + self.health_timeout_s
        reason = f"not healthy within {self.health_timeout_s:g} s"
        while time.monotonic() < deadline and not self.stopping:
            if marker.exists():
                (self.root / "pending.json").unlink(missing_ok=True)
                _log(f"{version} is healthy; the update is kept")
                return True
            status = self.child.poll()
            if status is not None:
                reason = f"exited with status {status} before it was healthy"
                break
            time.sleep(POLL_S)
        if self.stopping:
            return True  # stopping: decide on the next start
        self._stop_child()
        previous = pending.get("previous")
        _log(f"{version} {reason}; rolling back to {previous}")
        _write_json(self.root / "failed.json", {"version": version, "reason": reason,
                                                "rolled_back_to": previous})
        if isinstance(previous, str):
            _switch(self.root, previous)
        (self.root / "pending.json").unlink(missing_ok=True)
        return False

    def _stop_child(self) -> None:
        if self.child is None or self.child.poll() is not None:
            return
        self.child.terminate()
        try:
            self.child.wait(15)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()

    def stop(self, signum: int, frame: object) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run and supervise the edge agent")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--health-timeout-s", type=float, default=120.0)
    args, extra = parser.parse_known_args(argv)
    launcher = Launcher(args.root, args.config, args.health_timeout_s, extra)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, launcher.stop)
    return launcher.run()


if __name__ == "__main__":
    sys.exit(main())
