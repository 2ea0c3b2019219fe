"""The platform's files beside the database, kept with each backup: the broker's
dynamic-security config, its logins and its persistence file (sessions and queued
messages), the operator's API key, the development TLS authority and certificates, and
the simulated fleet's sequence numbers.

They go into ``platform.tar.gz`` in the repository, beside the backup they belong to
(``<repo>/tidefield/<stanza>/<label>/``), with a manifest of each file's SHA-256. A
restore puts them back where `tidefield up` looks for them. They are taken when the
backup ends, so a restore to a later moment gets the files of that backup: what changed
since is made good at start (service logins whose secrets no longer match the database
are issued again, the operator's key likewise; tidefield.server.security.wiring).

Mosquitto writes its persistence file to a new file and renames it, so a copy is always
a whole file, of the last autosave.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckFailed, OpsError

ARCHIVE_NAME = "platform.tar.gz"
MANIFEST = "MANIFEST.json"
# (prefix in the archive, folder, paths under it)
DATA_FILES = ("operator.key", "tls", "sim-sequences.json", "mosquitto/mosquitto.db")
BROKER_FILES = ("dynamic-security.json", "logins")


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the files live: ``data_dir`` (of `tidefield up`) and the broker's config
    folder (``TIDEFIELD_BROKER_AUTH_DIR``, by default ``data_dir/mosquitto``)."""

    data_dir: Path
    broker_dir: Path

    def places(self) -> list[tuple[str, Path]]:
        """(name in the archive, path) of every file there is to keep."""
        found: list[tuple[str, Path]] = []
        for prefix, folder, names in (("data", self.data_dir, DATA_FILES),
                                      ("broker", self.broker_dir, BROKER_FILES)):
            for name in names:
                path = folder / name
                files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() \
                    else [path] if path.is_file() else []
                found += [(f"{prefix}/{p.relative_to(folder)}", p) for p in files]
        return found

    def destination(self, name: str) -> Path:
        prefix, _, rest = name.partition("/")
        folder = {"data": self.data_dir, "broker": self.broker_dir}.get(prefix)
        if folder is None or not rest or \
                not (folder / rest).resolve().is_relative_to(folder.resolve()):
            raise CheckFailed(f"{ARCHIVE_NAME}: unexpected member {name!r}")
        return (folder / rest).resolve()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save(layout: Layout, destination: Path) -> str:
    """Write the archive; its SHA-256 (what the backup's mark records)."""
    manifest: dict[str, str] = {}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, path in layout.places():
            try:
                data = path.read_bytes()
                mode = path.stat().st_mode & 0o777
            except FileNotFoundError:  # gone between listing and reading (a rotation)
                continue
            manifest[name] = _sha256(data)
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))
        body = json.dumps(manifest, indent=1, sort_keys=True).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(body)
        archive.addfile(info, io.BytesIO(body))
    data = buffer.getvalue()
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(destination)
    return _sha256(data)


def check(archive_path: Path, expected_sha256: str | None) -> dict[str, str]:
    """The archive is whole: its own checksum, and each file's against the manifest.
    Returns the manifest; CheckFailed says what does not match."""
    try:
        data = archive_path.read_bytes()
    except OSError as exc:
        raise CheckFailed(f"{archive_path}: {exc}") from exc
    if expected_sha256 is not None and _sha256(data) != expected_sha256:
        raise CheckFailed(f"{archive_path}: checksum {_sha256(data)} is not the one recorded "
                          f"with the backup ({expected_sha256})")
    try:
        # the whole stream first: gzip's own checksum covers every byte, padding included
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r:") as archive:
            files = {m.name: _read(archive, m) for m in archive.getmembers() if m.isfile()}
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise CheckFailed(f"{archive_path}: not a readable archive: {exc}") from exc
    manifest = json.loads(files.pop(MANIFEST, b"{}"))
    for name, digest in manifest.items():
        if name not in files or _sha256(files[name]) != digest:
            raise CheckFailed(f"{archive_path}: {name} is missing or altered")
    return manifest


def _read(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = archive.extractfile(member)
    if handle is None:
        raise tarfile.ReadError(f"cannot read {member.name}")
    return handle.read()


def restore(archive_path: Path, layout: Layout, expected_sha256: str | None = None) -> int:
    """Put the files back (after checking them); how many."""
    check(archive_path, expected_sha256)
    count = 0
    with tarfile.open(archive_path, mode="r:gz") as archive:
        for member in archive.getmembers():
            if not member.isfile() or member.name == MANIFEST:
                continue
            target = layout.destination(member.name)
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            source = archive.extractfile(member)
            if source is None:
                raise OpsError(f"{archive_path}: cannot read {member.name}")
            target.write_bytes(source.read())
            target.chmod(member.mode & 0o777 or 0o600)
            count += 1
    return count
