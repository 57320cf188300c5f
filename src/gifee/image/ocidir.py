"""One image in and out of an OCI layout directory, as `oci:DIR[:TAG]` (I/O shell).

Reading picks the index entry whose org.opencontainers.image.ref.name is TAG
(or the only image when no tag is given), resolves an image index to this
machine's platform, and hashes every blob into the store before the image is
named. Writing adds blobs (hashed as they are copied, renamed into place) and
replaces the entry named TAG in index.json atomically, as skopeo does, so
other images in the layout stay. Signatures travel along as referrers.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

from gifee.image import distribution, oci
from gifee.image.errors import BadImage, BlobCorrupted, ImageError
from gifee.image.fsutil import atomic_write
from gifee.image.store import Image, ImageStore
from gifee.image.trust import signature_entries


def _blob(directory: Path, digest: str) -> Path:
    return directory / "blobs" / "sha256" / oci.digest_hex(digest)


def _read_small(directory: Path, desc: oci.Descriptor, what: str) -> bytes:
    if desc["size"] > distribution.MAX_MANIFEST:
        raise BadImage(f"{directory}: {what} {desc['digest']} is implausibly large")
    try:
        data = _blob(directory, desc["digest"]).read_bytes()
    except FileNotFoundError:
        raise BadImage(f"{directory}: {what} {desc['digest']} is missing") from None
    if oci.sha256_digest(data) != desc["digest"]:
        raise BlobCorrupted(f"{directory}: {what} {desc['digest']} does not match its digest")
    return data


def _read_index(directory: Path) -> dict[str, Any]:
    try:
        return oci.parse_index((directory / "index.json").read_bytes(), f"{directory}/index.json")
    except FileNotFoundError:
        raise ImageError(f"{directory}: not an OCI layout (no index.json)") from None


def _copy_in(directory: Path, desc: oci.Descriptor, store: ImageStore) -> None:
    if store.has_blob(desc["digest"]):
        return
    try:
        f = open(_blob(directory, desc["digest"]), "rb")
    except FileNotFoundError:
        raise BadImage(f"{directory}: blob {desc['digest']} is missing") from None
    with f:
        store.put_stream(f, desc["digest"], f"{directory}: blob")


def read_image(directory: Path, tag: str, store: ImageStore, name: str) -> Image:
    """Copy the image `tag` (with its signatures) from the layout into `store` as `name`."""
    index = _read_index(directory)
    entries = [d for d in index["manifests"] if oci.SIGNATURE_OF not in d.get("annotations", {})
               and d.get("artifactType") != oci.SIGNATURE]
    if tag:
        entries = [d for d in entries if d.get("annotations", {}).get(oci.REF_NAME) == tag]
    if len(entries) != 1:
        found = "no image" if not entries else f"{len(entries)} images"
        raise ImageError(f"{directory}: {found} {'named ' + repr(tag) if tag else 'in the layout; give :TAG'}")
    desc = entries[0]
    if desc["mediaType"] in oci.INDEX_TYPES:
        nested = oci.parse_index(_read_small(directory, desc, "image index"), f"{directory}: image index")
        desc = distribution.pick_platform(nested, platform.machine(), str(directory))
    data = _read_small(directory, desc, "manifest")
    manifest = oci.parse_manifest(data, f"{directory}: manifest")
    oci.check_image_manifest(manifest, f"{directory}: manifest")
    for d in [manifest["config"], *manifest["layers"]]:
        _copy_in(directory, d, store)
    digest = oci.sha256_digest(data)
    for entry in index["manifests"]:
        if entry.get("annotations", {}).get(oci.SIGNATURE_OF) != digest:
            continue
        sig_data = _read_small(directory, entry, "signature manifest")
        sig = oci.parse_manifest(sig_data, f"{directory}: signature manifest")
        if not oci.is_signature(sig) or sig.get("subject", {}).get("digest") != digest:
            continue
        for d in [sig["config"], *sig["layers"]]:
            _copy_in(directory, d, store)
        store.put_blob(sig_data, entry["digest"])
        new = {"mediaType": oci.MANIFEST, "digest": entry["digest"], "size": len(sig_data),
               "artifactType": oci.SIGNATURE, "annotations": {oci.SIGNATURE_OF: digest}}
        store.update_index(lambda ms, e=new: [d for d in ms if d["digest"] != e["digest"]] + [e])
    return store.add_image(name, data)


def _copy_out(store: ImageStore, desc: oci.Descriptor, directory: Path) -> None:
    final = _blob(directory, desc["digest"])
    if final.exists():
        return
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out, open(store.blob_path(desc["digest"]), "rb") as f:
            sha = hashlib.sha256()
            while chunk := f.read(1 << 20):
                sha.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if "sha256:" + sha.hexdigest() != desc["digest"]:
            raise BlobCorrupted(f"blob {desc['digest']}: the store's copy no longer matches its digest")
        os.chmod(tmp, 0o644)
        os.rename(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_image(store: ImageStore, image: Image, directory: Path, tag: str) -> None:
    """Add `image` (and its signatures) to the layout at `directory` under the ref name `tag`."""
    (directory / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    if not (directory / "oci-layout").exists():
        atomic_write(directory / "oci-layout", json.dumps({"imageLayoutVersion": oci.OCI_LAYOUT_VERSION}).encode())
    signatures = signature_entries(store, image.manifest_digest)
    blobs = [image.manifest["config"], *image.layers]
    for sig in signatures:
        manifest = oci.parse_manifest(store.read_blob(sig, "signature manifest"), "signature manifest")
        blobs += [manifest["config"], *manifest["layers"], sig]
    for desc in [*blobs, image.descriptor]:  # the manifest last: it names the others
        _copy_out(store, desc, directory)
    try:
        index = _read_index(directory)
    except ImageError:
        index = {"schemaVersion": 2, "mediaType": oci.INDEX, "manifests": []}
    entry = {**image.descriptor, "annotations": {oci.REF_NAME: tag}}
    sig_digests = {s["digest"] for s in signatures}
    kept = [d for d in index["manifests"] if d.get("annotations", {}).get(oci.REF_NAME) != tag
            and d["digest"] not in sig_digests]
    index["manifests"] = kept + [entry, *signatures]
    atomic_write(directory / "index.json", json.dumps(index, indent=2).encode() + b"\n")
