"""The agent's own Ed25519 verification (edge/ed25519.py) against RFC 8032 and against
cryptography (which signs on the platform)."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tidefield.edge.ed25519 import verify


def test_the_rfc_8032_test_vector():
    public = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    signature = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e"
        "39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
    assert verify(public, b"", signature)
    assert not verify(public, b"x", signature)


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


@pytest.mark.parametrize("seed", range(8))
def test_agrees_with_cryptography_on_good_and_forged_signatures(seed):
    key = Ed25519PrivateKey.generate()
    message = os.urandom(seed * 37)
    signature = key.sign(message)
    assert verify(_raw(key), message, signature)
    assert not verify(_raw(key), message + b"!", signature)
    flipped = bytearray(signature)
    flipped[seed % 64] ^= 1 << (seed % 8)
    assert not verify(_raw(key), message, bytes(flipped))
    assert not verify(_raw(Ed25519PrivateKey.generate()), message, signature)
    assert not verify(_raw(key), message, signature[:63])
    # s must be reduced: s + q is the same point, refused as malleable
    s = int.from_bytes(signature[32:], "little") + 2**252 + \
        27742317777372353535851937790883648493
    if s < 2**256:
        assert not verify(_raw(key), message, signature[:32] + s.to_bytes(32, "little"))
