"""Agent updates over the air (edge/update.py, edge/launcher.py), on real parts: releases
are tidefield-edge wheels built from this repository, signed with an Ed25519 key, served
over HTTPS (the development CA), installed into real venvs and run by the launcher
against a real Mosquitto."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tidefield.edge import launcher as launcher_module
from tidefield.edge.update import Release, UpdateError, Updater
from tidefield.protocol.control import Action, Command
from tidefield.server.control import releases
from tidefield.server.security.tls import ensure_dev_pki

from .test_control_e2e import _publish

ROOT = Path(__file__).resolve().parents[2]
OLD, NEW, BROKEN = "0.1.0", "0.1.1", "0.1.2"


def _build(out: Path, version: str, patch=None) -> Path:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from build_edge_wheel import build
    finally:
        sys.path.pop(0)
    return build(out, version, patch)


def _break(stage: Path) -> None:
    """A release that dies at start, as one with a bad dependency would."""
    main = stage / "tidefield" / "edge" / "__main__.py"
    main.write_text("raise SystemExit('this release is broken')\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three wheels (old, new, broken) on an HTTPS server, and the release key."""
    base = tmp_path_factory.mktemp("ota")
    www = base / "www"
    www.mkdir()
    wheels = {OLD: _build(www, OLD), NEW: _build(www, NEW), BROKEN: _build(www, BROKEN, _break)}
    tls = ensure_dev_pki(base / "pki")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(www), **k)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    key = Ed25519PrivateKey.generate()
    base_url = f"https://127.0.0.1:{server.server_address[1]}"
    manifests = {v: releases.sign(w, key, f"{base_url}/{w.name}") for v, w in wheels.items()}
    yield {"wheels": wheels, "manifests": manifests, "key": key, "ca": tls.ca_file,
           "public": releases.public_key(key), "base": base}
    server.shutdown()


def _release(manifest: releases.Manifest, **changes) -> Release:
    return Release(**{**manifest.params(), **changes})


@pytest.fixture
def installed(world, tmp_path):
    """An agent root with the old release installed and current (as the installer
    leaves it), and the launcher copied next to it."""
    root = tmp_path / "agent"
    updater = Updater(root, world["public"], ca_file=world["ca"])
    target = updater.install(OLD, world["wheels"][OLD])
    (root / "current").symlink_to(target.relative_to(root))
    shutil.copy(launcher_module.__file__, root / "launcher.py")
    return root, updater


def test_a_bad_signature_or_hash_is_refused_and_nothing_changes(world, tmp_path):
    root = tmp_path / "agent"
    updater = Updater(root, world["public"], ca_file=world["ca"])
    manifest = world["manifests"][NEW]
    other_key = Ed25519PrivateKey.generate()
    forged = base64.b64encode(other_key.sign(b"tidefield-edge\n0.1.1\n" +
                                             manifest.sha256.encode() + b"\n")).decode()
    with pytest.raises(UpdateError, match="bad signature"):
        updater.apply(_release(manifest, signature=forged))
    assert not (root / "downloads").exists()  # refused before downloading anything
    # a wheel swapped on the server: the signature is good, the bytes are not
    tampered = _release(manifest, url=world["manifests"][BROKEN].url)
    with pytest.raises(UpdateError, match="SHA-256"):
        updater.apply(tampered)
    # a signed hash that is not the file's: the same
    bad_hash = "0" * 64
    signature = base64.b64encode(world["key"].sign(
        f"tidefield-edge\n{NEW}\n{bad_hash}\n".encode())).decode()
    with pytest.raises(UpdateError, match="SHA-256"):
        updater.apply(_release(manifest, sha256=bad_hash, signature=signature))
    assert not (root / "current").exists() and not (root / "releases").exists()
    assert list((root / "downloads").iterdir()) == []  # no partial download is left
    with pytest.raises(UpdateError, match="download"):  # an untrusted server
        Updater(root, world["public"]).apply(_release(manifest))


def _config(tmp_path: Path, broker_url: str, root: Path, world) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(json.dumps({
        "site": "ag-001", "broker": {"url": broker_url}, "log_level": "INFO",
        "queue": {"path": str(tmp_path / "queue.db")}, "health": {"interval_s": 3600},
        "update": {"root": str(root), "public_key": world["public"],
                   "ca_file": str(world["ca"])}}))
    return path


class Launched:
    def __init__(self, root: Path, config: Path, health_timeout_s: float = 30) -> None:
        self.root = root
        self.process = subprocess.Popen(
            [sys.executable, str(root / "launcher.py"), "--root", str(root), "--config",
             str(config), "--health-timeout-s", str(health_timeout_s)],
            stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)

    def wait_for(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; launcher said:\n"
                                     + "".join(self.log[-30:]))
            if self.process.poll() is not None:
                raise AssertionError(f"the launcher exited {self.process.returncode}:\n"
                                     + "".join(self.log[-30:]))
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _current(root: Path) -> str:
    return Path(os.readlink(root / "current")).name


def test_a_good_update_switches_and_a_failing_one_rolls_back(world, installed, tmp_path,
                                                             broker):
    root, _ = installed
    launched = Launched(root, _config(tmp_path, broker.url, root, world))
    try:
        launched.wait_for(lambda: (root / f"healthy.{OLD}").exists(), 60, "the old release up")
        # the good release, offered by an update command: the running agent verifies,
        # installs, switches, answers and exits 75; the launcher starts the new one on
        # probation, which comes up healthy and is kept
        _offer(broker.url, world["manifests"][NEW])
        launched.wait_for(lambda: (root / f"healthy.{NEW}").exists(), 120, "the new one up")
        launched.wait_for(lambda: not (root / "pending.json").exists(), 10, "kept")
        assert _current(root) == NEW
        # the broken release: it does not come up, the launcher rolls back by itself
        _offer(broker.url, world["manifests"][BROKEN])
        launched.wait_for(lambda: (root / "failed.json").exists(), 120, "the rollback")
        failed = json.loads((root / "failed.json").read_text())
        assert failed["version"] == BROKEN and failed["rolled_back_to"] == NEW
        assert "exited with status" in failed["reason"]
        assert _current(root) == NEW
        (root / f"healthy.{NEW}").unlink()
        launched.wait_for(lambda: (root / f"healthy.{NEW}").exists(), 60,
                          "the previous release running again")
    finally:
        launched.stop()


def _offer(broker_url: str, manifest: releases.Manifest) -> None:
    now = int(time.time() * 1000)
    _publish(broker_url, Command("ag-001", "ag-001-gw", f"cmd-update-{uuid.uuid4().hex[:8]}",
                                 Action.UPDATE, now, now + 600_000, **manifest.params()))


def test_a_release_that_never_reports_healthy_is_rolled_back(world, installed, tmp_path):
    root, updater = installed
    updater.apply(_release(world["manifests"][NEW]))
    # no broker at this address: the new agent runs but never connects, so never healthy
    config = _config(tmp_path, "mqtt://127.0.0.1:9", root, world)
    launched = Launched(root, config, health_timeout_s=5)
    try:
        launched.wait_for(lambda: (root / "failed.json").exists(), 60, "the rollback")
        assert "not healthy within 5 s" in json.loads((root / "failed.json").read_text())[
            "reason"]
        assert _current(root) == OLD
    finally:
        launched.stop()


def test_kill_9_during_an_update_leaves_a_working_agent(world, installed, tmp_path, broker):
    root, _ = installed
    manifest = world["manifests"][NEW]
    script = ("from pathlib import Path\n"
              "from tidefield.edge.update import Release, Updater\n"
              f"Updater(Path({str(root)!r}), {world['public']!r}, "
              f"ca_file=Path({str(world['ca'])!r})).apply(Release(**{manifest.params()!r}))\n")
    # in a session of its own, killed as a whole below: what systemd's kill of the agent's
    # unit does (its default KillMode=control-group, deploy/tidefield-edge.service), so the
    # venv and pip children die with it rather than writing on into the next attempt's folder
    updating = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    partial = root / "releases" / f"{NEW}.partial"
    deadline = time.monotonic() + 60
    while not partial.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert partial.exists(), "the install never started"
    time.sleep(1.0)  # in the middle of pip installing
    os.killpg(updating.pid, signal.SIGKILL)
    updating.wait()
    assert _current(root) == OLD  # never switched
    launched = Launched(root, _config(tmp_path, broker.url, root, world))
    try:
        launched.wait_for(lambda: (root / f"healthy.{OLD}").exists(), 60, "the old release up")
    finally:
        launched.stop()
    # and the update, sent again, completes over the leftovers
    Updater(root, world["public"], ca_file=world["ca"]).apply(_release(manifest))
    assert _current(root) == NEW
    assert hashlib.sha256(world["wheels"][NEW].read_bytes()).hexdigest() == manifest.sha256
