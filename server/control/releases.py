"""Agent releases: the platform's Ed25519 release key, and signed release manifests.

    tidefield releases keygen --out releases.key    # once; prints the public key for
                                                    # the agents' update.public_key
    tidefield releases sign dist/tidefield_edge-0.2.0-py3-none-any.whl \\
        --key releases.key --url https://platform.example/releases/...whl

A manifest is what an ``update`` command carries: version, URL, SHA-256 of the wheel and
the signature of ``protocol.control.release_message(version, sha256)``. The private key
never leaves the machine that signs; agents hold only the public key.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tidefield.protocol.control import release_message

_WHEEL = re.compile(r"^tidefield_edge-(?P<version>[^-]+)-py3-none-any\.whl$")


class ReleaseError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Manifest:
    version: str
    url: str
    sha256: str
    signature: str

    def params(self) -> dict[str, Any]:
        return asdict(self)


def keygen(path: Path) -> str:
    """Write a new private key (PEM, mode 0600); the public key, base64."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.touch(mode=0o600, exist_ok=False)
    path.write_bytes(pem)
    return public_key(key)


def public_key(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def load_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ReleaseError(f"{path} is not an Ed25519 private key")
    return key


def sign(wheel: Path, key: Ed25519PrivateKey, url: str) -> Manifest:
    match = _WHEEL.match(wheel.name)
    if match is None:
        raise ReleaseError(f"{wheel.name} is not a tidefield-edge wheel "
                           f"(scripts/build_edge_wheel.py makes them)")
    if not url.startswith("https://"):
        raise ReleaseError("agents download releases over https:// only")
    sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
    version = match["version"]
    signature = key.sign(release_message(version, sha256))
    return Manifest(version, url, sha256, base64.b64encode(signature).decode())
