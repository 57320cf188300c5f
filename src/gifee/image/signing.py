"""Ed25519 keys and detached signatures over manifest digests (pure).

Rules: a signature signs the UTF-8 text of the manifest digest
(`sha256:<hex>`), nothing else. Its payload is the JSON object
{"keyid": <sha256 hex of the raw 32-byte public key>, "algorithm": "ed25519",
"signature": <base64>}. Keys are PEM: PKCS#8 private keys, SubjectPublicKeyInfo
public keys; anything but Ed25519 is refused.

Theory of operation: bytes in, bytes or booleans out. Where signatures are
kept (OCI referrers in the store) and which keys are trusted is trust.py's job.
Checking a signature (`load_public_raw`, `verify_raw`: what `gifee run` does)
goes through ed25519.py, without importing `cryptography`; making keys and
signatures uses `cryptography`, imported when needed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import TYPE_CHECKING

from gifee.image import ed25519
from gifee.image.errors import ImageError

if TYPE_CHECKING:  # imported where used: `gifee run` only checks, through ed25519.py
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "ed25519"


class BadKey(ImageError):
    """A key file that is not an Ed25519 key in PEM form."""


def generate() -> tuple[bytes, bytes]:
    """A new key pair as (private PEM, public PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return private, public_pem(key.public_key())


def public_pem(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private(pem: bytes, where: str) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise BadKey(f"{where}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BadKey(f"{where}: not an Ed25519 key")
    return key


def load_public(pem: bytes, where: str) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as e:
        raise BadKey(f"{where}: not a PEM public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BadKey(f"{where}: not an Ed25519 public key")
    return key


def load_public_raw(pem: bytes, where: str) -> bytes:
    """The raw 32 bytes of a PEM Ed25519 public key; BadKey as load_public for anything else."""
    raw = ed25519.raw_public_key(pem)
    if raw is not None:
        return raw
    return raw_bytes(load_public(pem, where))  # another PEM form: cryptography knows them all


def raw_bytes(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey) -> str:
    return fingerprint_raw(raw_bytes(key))


def fingerprint_raw(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def sign(key: Ed25519PrivateKey, manifest_digest: str) -> bytes:
    """The signature payload (JSON bytes) for a manifest digest."""
    signature = key.sign(manifest_digest.encode())
    payload = {"keyid": fingerprint(key.public_key()), "algorithm": ALGORITHM,
               "signature": base64.b64encode(signature).decode()}
    return json.dumps(payload, sort_keys=True).encode()


def parse_payload(data: bytes) -> tuple[str, bytes] | None:
    """(keyid, raw signature) from a payload, or None if it is not one gifee understands."""
    try:
        payload = json.loads(data)
        if not isinstance(payload, dict) or payload.get("algorithm") != ALGORITHM:
            return None
        keyid, signature = payload["keyid"], payload["signature"]
        if not isinstance(keyid, str) or not isinstance(signature, str):
            return None
        return keyid, base64.b64decode(signature, validate=True)
    except (ValueError, KeyError, binascii.Error):
        return None


def verify(key: Ed25519PublicKey, manifest_digest: str, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(signature, manifest_digest.encode())
        return True
    except InvalidSignature:
        return False


def verify_raw(key: bytes, manifest_digest: str, signature: bytes) -> bool:
    """verify() with the key's raw 32 bytes: through the system's OpenSSL when it can be
    reached, else through cryptography."""
    valid = ed25519.verify(key, manifest_digest.encode(), signature)
    if valid is not None:
        return valid
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return verify(Ed25519PublicKey.from_public_bytes(key), manifest_digest, signature)
