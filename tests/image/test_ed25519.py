"""The signature check without `cryptography` (ed25519.py through the system's OpenSSL)
gives cryptography's answers: valid signatures pass, anything altered is refused."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gifee.image import ed25519, signing

L = 2**252 + 27742317777372353535851937790883648493  # the group order: S must be below it


def keypair() -> tuple[Ed25519PrivateKey, bytes]:
    key = Ed25519PrivateKey.generate()
    return key, signing.raw_bytes(key.public_key())


def test_libcrypto_is_used_here() -> None:
    key, raw = keypair()
    assert ed25519.verify(raw, b"m", key.sign(b"m")) is True  # not None: the fast path answered


def test_valid_and_altered_signatures() -> None:
    for i in range(64):
        key, raw = keypair()
        message = ("sha256:" + os.urandom(32).hex()).encode()
        signature = key.sign(message)
        assert ed25519.verify(raw, message, signature) is True
        flipped = bytearray(signature)
        flipped[i] ^= 1 << (i % 8)
        assert ed25519.verify(raw, message, bytes(flipped)) is False
        assert ed25519.verify(raw, message + b"x", signature) is False
        assert ed25519.verify(raw, message, signature[:-1]) is False
        assert ed25519.verify(raw, message, signature + b"\0") is False
        assert ed25519.verify(keypair()[1], message, signature) is False
        assert ed25519.verify(raw[:-1], message, signature) is False


def test_non_canonical_s_is_refused_as_cryptography_does() -> None:
    key, raw = keypair()
    message = b"sha256:0"
    signature = key.sign(message)
    s = int.from_bytes(signature[32:], "little")  # below L (about 2**252), so S + L still fits 32 bytes
    altered = signature[:32] + (s + L).to_bytes(32, "little")
    assert ed25519.verify(raw, message, altered) is False
    assert not signing.verify(key.public_key(), message.decode(), altered)


def test_public_keys_in_their_one_pem_form() -> None:
    key, raw = keypair()
    pem = signing.public_pem(key.public_key())
    assert ed25519.raw_public_key(pem) == raw
    assert signing.load_public_raw(pem, "k") == raw
    # Other line breaks and surrounding space are still that form.
    body = base64.b64encode(ed25519.SPKI_PREFIX + raw)
    assert ed25519.raw_public_key(b"\n-----BEGIN PUBLIC KEY-----\n" + body[:20] + b"\n" + body[20:]
                                  + b"\n-----END PUBLIC KEY-----\n\n") == raw


def test_anything_else_is_left_to_cryptography() -> None:
    key, raw = keypair()
    assert ed25519.raw_public_key(b"not a key") is None
    wrong_oid = base64.b64encode(bytes.fromhex("302a300506032b6571032100") + raw)  # Ed448's OID
    pem = b"-----BEGIN PUBLIC KEY-----\n" + wrong_oid + b"\n-----END PUBLIC KEY-----\n"
    assert ed25519.raw_public_key(pem) is None
    with pytest.raises(signing.BadKey):
        signing.load_public_raw(pem, "k")
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    assert ed25519.raw_public_key(private_pem) is None
    with pytest.raises(signing.BadKey):
        signing.load_public_raw(private_pem, "k")


def test_verify_raw_falls_back_to_cryptography(monkeypatch: pytest.MonkeyPatch) -> None:
    key, raw = keypair()
    signature = key.sign(b"sha256:abc")
    monkeypatch.setattr(ed25519, "verify", lambda *a: None)  # as on a machine without libcrypto
    assert signing.verify_raw(raw, "sha256:abc", signature)
    assert not signing.verify_raw(raw, "sha256:abd", signature)


def test_checking_a_signature_does_not_import_cryptography() -> None:
    """What `gifee run` loads to check an image: cryptography's import alone would cost
    more than the rest of the check (see ed25519.py)."""
    import subprocess
    import sys

    code = ("import sys; import gifee.image.trust, gifee.image.signing as s; "
            "s.verify_raw(bytes(32), 'sha256:x', bytes(64)); print('cryptography' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
