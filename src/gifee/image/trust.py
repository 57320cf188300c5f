"""Signatures stored with images, the trusted keys, and the decision to run (I/O shell).

Signatures are OCI referrers in the image store: an artifact manifest
(artifactType application/vnd.gifee.signature.v1+json, the empty config, one
layer holding the signing.py payload, `subject` the signed manifest) listed in
index.json with the annotation dev.gifee.signature.subject = the signed digest,
so `image list` skips it and export carries it along.

Trusted keys live as rkt kept them:
    <dir>/trust/root.d/<fingerprint>.pem             trusted for every image
    <dir>/trust/prefix.d/<prefix>/<fingerprint>.pem  trusted for <prefix> and names below it
An image may run if some signature stored with it verifies, over its manifest
digest, with a key trusted for a prefix of its name (whole path segments).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from gifee.image import oci, signing
from gifee.image.errors import ImageError, ImageNotTrusted
from gifee.image.fsutil import atomic_write
from gifee.image.reference import parse_prefix, parse_reference, prefixes_of
from gifee.image.store import Image, ImageStore

if TYPE_CHECKING:  # checking a signature needs no cryptography import (signing.verify_raw)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["ImageNotTrusted", "TrustStore", "TrustedKey", "add_signature", "signatures_of"]


def add_signature(store: ImageStore, image: Image, key: Ed25519PrivateKey) -> str:
    """Sign `image` and store the signature as a referrer; returns the signature manifest's digest."""
    store.verify(image)  # sign only what is intact
    payload = signing.sign(key, image.manifest_digest)
    store.put_blob(oci.EMPTY_JSON)
    store.put_blob(payload)
    from gifee.image.build import timestamp  # build's tar and gzip only when signing

    manifest = oci.signature_manifest(image.descriptor, oci.descriptor(oci.SIGNATURE, payload), timestamp(None))
    data = oci.canonical_json(manifest)
    digest = store.put_blob(data)
    entry = {"mediaType": oci.MANIFEST, "digest": digest, "size": len(data), "artifactType": oci.SIGNATURE,
             "annotations": {oci.SIGNATURE_OF: image.manifest_digest}}

    def change(manifests: list[oci.Descriptor]) -> list[oci.Descriptor]:
        return [d for d in manifests if d["digest"] != digest] + [entry]

    store.update_index(change)
    return digest


def signature_entries(store: ImageStore, manifest_digest: str) -> list[oci.Descriptor]:
    return [d for d in store.read_index()["manifests"]
            if d.get("annotations", {}).get(oci.SIGNATURE_OF) == manifest_digest]


def signatures_of(store: ImageStore, image: Image) -> list[tuple[str, bytes]]:
    """(keyid, signature) for each well-formed signature stored for `image` (blobs digest-checked)."""
    out: list[tuple[str, bytes]] = []
    for entry in signature_entries(store, image.manifest_digest):
        manifest = oci.parse_manifest(store.read_blob(entry, "signature manifest"), "signature manifest")
        if not oci.is_signature(manifest) or manifest.get("subject", {}).get("digest") != image.manifest_digest:
            continue
        for layer in manifest["layers"]:
            if layer["mediaType"] == oci.SIGNATURE:
                parsed = signing.parse_payload(store.read_blob(layer, "signature"))
                if parsed is not None:
                    out.append(parsed)
    return out


class TrustedKey(NamedTuple):
    """A key file of the trust store and what it is trusted for."""

    prefix: str  # "" for a root key
    fingerprint: str
    path: Path


class TrustStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _dir(self, prefix: str) -> Path:
        return self.root / "root.d" if not prefix else self.root / "prefix.d" / prefix

    def add(self, pem: bytes, prefix: str | None, where: str = "key") -> TrustedKey:
        """Trust a PEM public key for `prefix` (None: a root key, trusted for every image)."""
        key = signing.load_public(pem, where)
        checked = parse_prefix(prefix) if prefix is not None else ""
        directory = self._dir(checked)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{signing.fingerprint(key)}.pem"
        atomic_write(path, signing.public_pem(key))
        return TrustedKey(checked, signing.fingerprint(key), path)

    def keys(self) -> list[TrustedKey]:
        out: list[TrustedKey] = []
        for path in sorted(self.root.glob("root.d/*.pem")):
            out.append(TrustedKey("", path.stem, path))
        prefix_dir = self.root / "prefix.d"
        for path in sorted(prefix_dir.rglob("*.pem")):
            out.append(TrustedKey(path.parent.relative_to(prefix_dir).as_posix(), path.stem, path))
        return out

    def keys_for(self, repository: str) -> dict[str, bytes]:
        """Keys (raw 32 bytes) trusted for `repository`, by fingerprint (the file name is not
        believed: re-derived)."""
        found: dict[str, bytes] = {}
        for prefix in [""] + prefixes_of(repository):
            directory = self._dir(prefix)
            for path in sorted(directory.glob("*.pem")) if directory.is_dir() else []:
                try:
                    key = signing.load_public_raw(path.read_bytes(), str(path))
                except ImageError:
                    continue
                found[signing.fingerprint_raw(key)] = key
        return found

    def check(self, store: ImageStore, image: Image) -> str:
        """The fingerprint of a trusted key whose signature verifies; ImageNotTrusted otherwise."""
        if not image.name:
            raise ImageNotTrusted(f"image {image.manifest_digest}: has no name, so no key can be trusted for it")
        repository = parse_reference(image.name).repository
        store.verify_blob(image.descriptor, f"{image.name}: manifest")
        keys = self.keys_for(repository)
        signatures = signatures_of(store, image)
        for keyid, signature in signatures:
            key = keys.get(keyid)
            if key is not None and signing.verify_raw(key, image.manifest_digest, signature):
                return keyid
        hint = "run with --insecure-options=image to run it anyway"
        if not signatures:
            raise ImageNotTrusted(f"image {image.name} ({image.manifest_digest}): not signed; {hint}")
        if not keys:
            raise ImageNotTrusted(
                f"image {image.name}: no key is trusted for {repository} "
                f"(gifee trust --prefix {repository} KEYFILE); {hint}"
            )
        raise ImageNotTrusted(
            f"image {image.name} ({image.manifest_digest}): none of its {len(signatures)} signature(s) "
            f"verifies with a key trusted for {repository}; {hint}"
        )
