"""Agent updates over the air: verify, download, install into a new environment, switch.

An ``update`` command (``protocol.control``) names a release: a ``tidefield-edge`` wheel
(``scripts/build_edge_wheel.py``) at an https:// URL, its SHA-256 and an Ed25519
signature of ``release_message(version, sha256)`` made with the platform's release key
(``tidefield releases sign``). The agent trusts one public key (``update.public_key``).

Layout under ``update.root`` (``/opt/tidefield-edge``)::

    releases/<version>/     one venv per release (pip install of the wheel)
    current -> releases/<version>   what the launcher runs (switched by an atomic rename)
    pending.json            a switch on probation: {"version", "previous"}
    healthy.<version>       written by an agent of that version once it is up
    failed.json             the last release rolled back, and why
    launcher.py             ``edge/launcher.py``, which supervises and rolls back

Order, so that ``kill -9`` at any moment leaves a working agent: refuse a bad signature
(before downloading), download to ``.part`` and refuse a bad hash, install into
``releases/<version>.partial`` and rename it when complete, write ``pending.json``,
then switch ``current`` (one rename). Until that rename the old release is current and
whole; after it, the launcher puts the new one on probation and rolls back by itself if
it does not report healthy in time. Any leftover ``.part``/``.partial`` is redone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tidefield.protocol.control import Command, release_message

MAX_WHEEL_BYTES = 64 * 2**20
DOWNLOAD_TIMEOUT_S = 60.0
INSTALL_TIMEOUT_S = 900.0
WHEEL_NAME = "tidefield_edge"


class UpdateError(Exception):
    """The update was refused or failed; the agent keeps running its current release."""


@dataclass(frozen=True, slots=True)
class Release:
    version: str
    url: str
    sha256: str
    signature: str

    @classmethod
    def of(cls, command: Command) -> Release:
        assert command.version and command.url and command.sha256 and command.signature
        return cls(command.version, command.url, command.sha256, command.signature)


def verify_signature(release: Release, public_key_b64: str) -> None:
    """UpdateError unless the signature is the trusted key's over (version, sha256)."""
    from .ed25519 import verify

    try:
        key = base64.b64decode(public_key_b64, validate=True)
        signature = base64.b64decode(release.signature, validate=True)
    except ValueError:
        key = signature = b""
    if not verify(key, release_message(release.version, release.sha256), signature):
        raise UpdateError(f"release {release.version}: bad signature, not from the trusted "
                          f"release key; refused")


class Updater:
    def __init__(self, root: Path, public_key_b64: str, *, ca_file: Path | None = None,
                 python: str = sys.executable) -> None:
        self.root = root
        self.public_key = public_key_b64
        self.ca_file = ca_file
        self.python = python  # makes the new venvs (the base interpreter of this one)

    @property
    def current(self) -> Path:
        return self.root / "current"

    def current_version(self) -> str | None:
        try:
            return Path(os.readlink(self.current)).name
        except OSError:
            return None

    def apply(self, release: Release) -> None:
        """Verify, download, install and switch; the launcher starts it on probation."""
        verify_signature(release, self.public_key)
        if release.version == self.current_version():
            raise UpdateError(f"release {release.version} is already current")
        wheel = self.download(release)
        target = self.install(release.version, wheel)
        self.switch(release.version, target)

    def download(self, release: Release) -> Path:
        folder = self.root / "downloads"
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{WHEEL_NAME}-{release.version}-py3-none-any.whl"
        partial = final.with_name(final.name + ".part")
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file else None)
        digest = hashlib.sha256()
        size = 0
        try:
            with urllib.request.urlopen(release.url, timeout=DOWNLOAD_TIMEOUT_S,
                                        context=context) as answer, partial.open("wb") as out:
                while chunk := answer.read(1 << 16):
                    size += len(chunk)
                    if size > MAX_WHEEL_BYTES:
                        raise UpdateError(f"release {release.version}: more than "
                                          f"{MAX_WHEEL_BYTES >> 20} MB; refused")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:  # URLError, TLS and HTTP errors are OSErrors
            partial.unlink(missing_ok=True)
            raise UpdateError(f"release {release.version}: download from {release.url} "
                              f"failed: {exc}") from exc
        except UpdateError:
            partial.unlink(missing_ok=True)
            raise
        if digest.hexdigest() != release.sha256:
            partial.unlink(missing_ok=True)
            raise UpdateError(f"release {release.version}: the download's SHA-256 "
                              f"{digest.hexdigest()} is not the signed {release.sha256}; "
                              f"refused")
        os.replace(partial, final)
        return final

    def install(self, version: str, wheel: Path) -> Path:
        """A new venv holding the wheel, complete before it gets its final name."""
        releases = self.root / "releases"
        releases.mkdir(parents=True, exist_ok=True)
        target = releases / version
        if (target / "bin" / "python").exists():
            return target  # installed before (an earlier attempt that was not switched)
        partial = releases / f"{version}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            subprocess.run([self.python, "-m", "venv", str(partial)], check=True,
                           capture_output=True, timeout=INSTALL_TIMEOUT_S)
            subprocess.run([str(partial / "bin" / "python"), "-m", "pip", "install", "-q",
                            str(wheel)], check=True, capture_output=True, text=True,
                           timeout=INSTALL_TIMEOUT_S)
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise UpdateError(f"release {version}: install failed: "
                              f"{(exc.stderr or '').strip()[-300:]}") from exc
        except (OSError, subprocess.TimeoutExpired) as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise UpdateError(f"release {version}: install failed: {exc}") from exc
        os.replace(partial, target)
        return target

    def switch(self, version: str, target: Path) -> None:
        """pending.json first, then ``current`` by one atomic rename."""
        write_json(self.root / "pending.json",
                   {"version": version, "previous": self.current_version()})
        (self.root / f"healthy.{version}").unlink(missing_ok=True)
        link = self.root / "current.new"
        link.unlink(missing_ok=True)
        link.symlink_to(target.relative_to(self.root))
        os.replace(link, self.current)
        _fsync_dir(self.root)
        self.prune(keep={version, *(p for p in [_previous(self.root)] if p)})

    def prune(self, keep: set[str]) -> None:
        """Remove releases other than ``keep`` (the current one and the one before)."""
        for release in (self.root / "releases").iterdir():
            if release.name not in keep and not release.name.endswith(".partial"):
                shutil.rmtree(release, ignore_errors=True)
        for wheel in (self.root / "downloads").glob("*.whl"):
            if not any(f"-{v}-" in wheel.name for v in keep):
                wheel.unlink(missing_ok=True)


def _previous(root: Path) -> str | None:
    try:
        value = json.loads((root / "pending.json").read_text()).get("previous")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, str) else None


def write_json(path: Path, data: object) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w") as out:
        json.dump(data, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
