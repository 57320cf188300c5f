"""Pull an image (and its signatures) from a registry into the local store (I/O shell).

Order: the manifest (an index picks linux/<this machine>), the config, then each
layer streamed to `.gifee/tmp/partial-<hex>` and renamed into blobs/ only after
its sha256 and size match; then the signatures (referrers API, else the
fallback tag `sha256-<hex>`), then the trust check, and only then the name.
So an untrusted or broken pull leaves no name behind, only blobs for gc.

Resumption: a partial file survives an interrupted download; the next pull
re-hashes what it holds and asks for the rest with a Range request. The partial
file is flocked while it is written, so two pulls of one blob never interleave.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import platform
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from gifee.image import distribution, oci
from gifee.image.errors import BadImage, BadReference, BlobCorrupted
from gifee.image.progress import Progress
from gifee.image.remote import RegistryClient, RegistryError, TransferInterrupted
from gifee.image.remoteref import RemoteRef
from gifee.image.store import Image, ImageStore

_CHUNK = 1 << 20


def fetch_manifest(client: RegistryClient, ref: RemoteRef) -> tuple[bytes, oci.Descriptor, dict[str, Any]]:
    """The image manifest's bytes, descriptor and parsed form (an index resolved to this platform)."""
    what = str(ref)
    got = client.get_manifest(ref.repository, ref.reference)
    if got is None:
        raise RegistryError(f"{what}: no such image on the registry")
    data, media_type, header_digest = got
    _check_manifest_digest(data, ref.digest, header_digest, what)
    media_type = media_type or _json_media_type(data)
    if media_type in oci.INDEX_TYPES:
        index = oci.parse_index(data, f"{what}: image index")
        desc = distribution.pick_platform(index, platform.machine(), what)
        got = client.get_manifest(ref.repository, desc["digest"])
        if got is None:
            raise RegistryError(f"{what}: the index names {desc['digest']}, which the registry lacks")
        data, media_type, header_digest = got
        _check_manifest_digest(data, desc["digest"], header_digest, what)
    manifest = oci.parse_manifest(data, f"{what}: manifest")
    oci.check_image_manifest(manifest, f"{what}: manifest")
    desc = {"mediaType": manifest.get("mediaType", media_type or oci.MANIFEST),
            "digest": oci.sha256_digest(data), "size": len(data)}
    return data, desc, manifest


def _json_media_type(data: bytes) -> str:
    import json

    try:
        value = json.loads(data)
    except ValueError:
        return ""
    return str(value.get("mediaType", "")) if isinstance(value, dict) else ""


def _check_manifest_digest(data: bytes, pinned: str | None, header: str, what: str) -> None:
    actual = oci.sha256_digest(data)
    if pinned and actual != pinned:
        raise BlobCorrupted(f"{what}: manifest hashes to {actual}, not the digest asked for")
    if header.startswith("sha256:") and header != actual:
        raise BlobCorrupted(f"{what}: manifest hashes to {actual}, the registry says {header}")


def fetch_small(client: RegistryClient, repository: str, desc: oci.Descriptor, store: ImageStore,
                what: str) -> bytes:
    """A config or signature blob, checked and stored; returns its bytes."""
    if desc["size"] > distribution.MAX_MANIFEST:
        raise BadImage(f"{what} {desc['digest']}: implausibly large ({desc['size']} bytes)")
    if store.has_blob(desc["digest"]):
        return store.read_blob(desc, what)
    r = client.request("GET", f"/v2/{repository}/blobs/{desc['digest']}")
    if r.status == 404:
        r.close()
        raise RegistryError(f"{what} {desc['digest']}: the registry does not have this blob")
    data = r.read(desc["size"])
    store.put_blob(data, desc["digest"])  # BlobCorrupted unless it hashes to the digest
    return data


@contextmanager
def _partial(store: ImageStore, digest: str) -> Iterator[tuple[IO[bytes], Path]]:
    """The partial download file for `digest`, opened and exclusively locked."""
    store.ensure()
    path = store.tmp / f"partial-{oci.digest_hex(digest)}"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file another pull renamed into blobs/ or deleted while we waited
            break
        os.close(fd)
    with os.fdopen(fd, "r+b") as f:
        yield f, path


def fetch_layer(client: RegistryClient, repository: str, desc: oci.Descriptor, store: ImageStore,
                progress: Progress, label: str) -> int:
    """Download one blob into the store, resuming a partial file; returns the bytes transferred."""
    digest, size = desc["digest"], int(desc["size"])
    if store.has_blob(digest):
        os.utime(store.blob_path(digest))  # keep gc's grace period from collecting it under us
        return 0
    with _partial(store, digest) as (f, path):
        if store.has_blob(digest):
            return 0
        sha = hashlib.sha256()
        have = 0
        while chunk := f.read(_CHUNK):
            if have + len(chunk) > size:
                break
            sha.update(chunk)
            have += len(chunk)
        if have < size or f.read(1):
            f.seek(0)
            if have >= size:  # longer than the blob: start over
                have, sha = 0, hashlib.sha256()
            have, sha = _download(client, repository, desc, f, have, sha, progress, label)
        if have != size or "sha256:" + sha.hexdigest() != digest:
            f.close()
            path.unlink()
            raise BlobCorrupted(f"{label} {digest}: the registry sent content hashing to "
                                f"sha256:{sha.hexdigest()} ({have} bytes); refused")
        f.flush()
        store.commit_file(path)
    return have


def _download(client: RegistryClient, repository: str, desc: oci.Descriptor, f: IO[bytes], have: int,
              sha: hashlib._Hash, progress: Progress, label: str) -> tuple[int, hashlib._Hash]:
    size = int(desc["size"])
    headers = {}
    wanted = distribution.range_for(have, size)
    if wanted:
        headers["Range"] = wanted
    r = client.request("GET", f"/v2/{repository}/blobs/{desc['digest']}", headers, ok=(200, 206))
    if r.status == 404:
        r.close()
        raise RegistryError(f"{label} {desc['digest']}: the registry does not have this blob")
    if not distribution.resume_accepted(r.status, r.headers.get("Content-Range"), have, size):
        have, sha = 0, hashlib.sha256()
    f.seek(have)
    f.truncate()
    bar = progress.bar(label, size, have)
    try:
        while have <= size:
            chunk = r.raw.read(_CHUNK)
            if not chunk:
                break
            f.write(chunk)
            sha.update(chunk)
            have += len(chunk)
            bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as e:  # IncompleteRead, resets, timeouts
        f.flush()
        os.fsync(f.fileno())
        bar.finish("interrupted")
        raise TransferInterrupted(f"{label} {desc['digest']}: download interrupted after {have} of {size} "
                                  f"bytes ({type(e).__name__}); run the command again to resume") from None
    finally:
        r.close()
    f.flush()
    os.fsync(f.fileno())
    bar.finish()
    if have < size:
        raise TransferInterrupted(f"{label} {desc['digest']}: download interrupted after {have} of {size} bytes; "
                                  "run the command again to resume")
    return have, sha


def fetch_signatures(client: RegistryClient, repository: str, image_desc: oci.Descriptor,
                     store: ImageStore) -> int:
    """Store the image's gifee signatures found on the registry; returns how many."""
    digest = image_desc["digest"]
    query = urllib.parse.urlencode({"artifactType": oci.SIGNATURE})
    index = client.get_json(f"/v2/{repository}/referrers/{digest}?{query}", oci.INDEX)
    if index is None:  # no referrers API: the fallback tag
        index = client.get_json(f"/v2/{repository}/manifests/{distribution.fallback_tag(digest)}", oci.INDEX)
    if index is None:
        return 0
    try:
        parsed = oci.parse_index(oci.canonical_json(index), "referrers")
    except BadImage:
        return 0
    count = 0
    for ref in distribution.signature_referrers(parsed):
        got = client.get_manifest(repository, ref["digest"])
        if got is None:
            continue
        data = got[0]
        if oci.sha256_digest(data) != ref["digest"]:
            continue
        manifest = oci.parse_manifest(data, "signature manifest")
        if not oci.is_signature(manifest) or manifest.get("subject", {}).get("digest") != digest:
            continue
        for blob in [manifest["config"], *manifest["layers"]]:
            fetch_small(client, repository, blob, store, "signature blob")
        sig_digest = store.put_blob(data, ref["digest"])
        entry = {"mediaType": oci.MANIFEST, "digest": sig_digest, "size": len(data), "artifactType": oci.SIGNATURE,
                 "annotations": {oci.SIGNATURE_OF: digest}}
        store.update_index(lambda ms, e=entry: [d for d in ms if d["digest"] != e["digest"]] + [e])
        count += 1
    return count


def pull(client: RegistryClient, ref: RemoteRef, store: ImageStore, progress: Progress,
         name: str | None = None, trust_root: Path | None = None) -> Image:
    """Pull `ref` into `store` under `name` (default: its local name). With `trust_root`, the
    image is named only if a key trusted there for the registry name signed it."""
    if name is None and ref.tag is None:
        raise BadReference(f"{ref}: pinned by digest only; give the local name with --name")
    local_name = name or ref.local_name
    data, desc, manifest = fetch_manifest(client, ref)
    what = str(ref)
    fetch_small(client, ref.repository, manifest["config"], store, f"{what}: config")
    layers: list[oci.Descriptor] = manifest["layers"]
    for i, layer in enumerate(layers):
        fetch_layer(client, ref.repository, layer, store, progress, f"{what}: layer {i}")
    store.put_blob(data, desc["digest"])
    fetch_signatures(client, ref.repository, desc, store)
    if trust_root is not None:
        from gifee.image.trust import TrustStore

        # trust is decided by where the image came from, whatever local name it gets
        TrustStore(trust_root).check(store, store.load(desc, f"{ref.registry}/{ref.repository}:{ref.tag or 'latest'}"))
    return store.add_image(local_name, data)
