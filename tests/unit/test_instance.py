"""One `tidefield up` per data folder: the lock waits or refuses; orphans are stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tidefield.server.instance import InstanceRunning, reap_orphans, take_lock

HOLD = ("import sys, time; from pathlib import Path; "
        "from tidefield.server.instance import take_lock; "
        "handle = take_lock(Path(sys.argv[1]), 0); print('held', flush=True); "
        "time.sleep(float(sys.argv[2]))")


def _holder(folder, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_instance_is_refused_naming_the_first(tmp_path):
    holder = _holder(tmp_path, 30)
    try:
        said = []
        started = time.monotonic()
        with pytest.raises(InstanceRunning, match=f"pid {holder.pid}"):
            take_lock(tmp_path, 0.6, said.append)
        assert time.monotonic() - started >= 0.5  # it waited first
        assert said and "waiting up to" in said[0]
    finally:
        holder.kill()
        holder.wait()


def test_a_second_instance_waits_for_one_that_is_stopping(tmp_path):
    holder = _holder(tmp_path, 1.0)
    try:
        handle = take_lock(tmp_path, 20)
        assert holder.wait(5) == 0  # it let go by ending (its lock went with it)
        assert (tmp_path / "up.lock").read_text().strip() == str(os.getpid())
        handle.close()
    finally:
        holder.kill()
        holder.wait()


def test_orphaned_servers_of_the_folder_are_stopped(tmp_path):
    # stand-ins whose command lines name what the reaper looks for
    sleeper = "import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    pass"
    postmaster = subprocess.Popen([sys.executable, "-c", sleeper, "postgres"])
    replica = subprocess.Popen([sys.executable, "-c", sleeper, "postgres"])
    broker = subprocess.Popen([sys.executable, "-c", sleeper, str(tmp_path / "mosquitto")])
    unrelated = subprocess.Popen([sys.executable, "-c", sleeper, "something-else"])
    try:
        for folder, proc in (("postgres/data", postmaster), ("replica/data", replica)):
            (tmp_path / folder).mkdir(parents=True)
            (tmp_path / folder / "postmaster.pid").write_text(f"{proc.pid}\n/data\n")
        state = tmp_path / "up.json"
        state.write_text(json.dumps({"children": {"broker": {"pid": broker.pid},
                                                  "api": {"pid": unrelated.pid}}}))
        time.sleep(0.3)  # the stand-ins are running their sleep
        stopped = reap_orphans(tmp_path, state, lambda text: None)
        assert sorted(stopped) == sorted([postmaster.pid, replica.pid, broker.pid])
        for proc in (postmaster, replica, broker):
            assert proc.wait(5) is not None
        assert unrelated.poll() is None  # not the folder's server: left alone
        assert reap_orphans(tmp_path, state, lambda text: None) == []  # nothing left
    finally:
        for proc in (postmaster, replica, broker, unrelated):
            proc.kill()
            proc.wait()
