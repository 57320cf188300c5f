"""What `gifee scan TARGET` names, turned into layers to index (I/O shell).

TARGET forms:
- `/path`, `./path`, `../path` or `dir:PATH`: a root directory, read in place;
- `oci:DIR[:REF]`: an OCI image layout (skopeo's spelling); REF matches an index entry's
  org.opencontainers.image.ref.name exactly or as its tag; without REF the layout must hold
  one image. A nested image index yields the linux/amd64 (this machine's) image;
- `docker://REGISTRY/REPO[:TAG|@DIGEST]`: pulled with `gifee.image.pull` into a temporary
  store that is removed after the scan;
- anything else: a name or digest in the local store (`<dir>/images`).
Manifests are digest-checked when read; layer blobs are hashed while they are indexed.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from gifee.image import oci
from gifee.image.errors import BadImage, BlobCorrupted, ImageError

_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
MAX_SMALL_BLOB = 16 << 20


class TargetError(Exception):
    """The target cannot be found or read; the message says which and why."""


@dataclass(frozen=True)
class LayerRef:
    digest: str
    compression: str  # none, gzip, zstd
    open: Callable[[], IO[bytes]]


@dataclass(frozen=True)
class ImageTarget:
    label: str
    manifest_digest: str
    layers: list[LayerRef]


def is_directory_target(target: str) -> bool:
    return target.startswith(("/", "./", "../", "dir:")) or target in (".", "..")


def directory_of(target: str) -> Path:
    return Path(target.removeprefix("dir:"))


def image_from_manifest(label: str, manifest_digest: str, manifest: dict[str, Any],
                        blob_path: Callable[[str], Path]) -> ImageTarget:
    oci.check_image_manifest(manifest, f"{label}: manifest")
    layers: list[LayerRef] = []
    for desc in manifest["layers"]:
        path = blob_path(oci.check_digest(desc["digest"]))
        layers.append(LayerRef(desc["digest"], oci.LAYER_COMPRESSION[desc["mediaType"]],
                               lambda p=path: open(p, "rb")))  # type: ignore[misc]
    return ImageTarget(label, manifest_digest, layers)


def read_small(path: Path, desc: dict[str, Any], what: str) -> bytes:
    if int(desc.get("size", 0)) > MAX_SMALL_BLOB:
        raise TargetError(f"{what} {desc['digest']}: implausibly large ({desc['size']} bytes)")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SMALL_BLOB + 1)
    except OSError as e:
        raise TargetError(f"{what} {desc['digest']}: cannot read: {e.strerror}") from None
    if oci.sha256_digest(data) != desc["digest"]:
        raise TargetError(f"{what} {desc['digest']}: content does not match its digest")
    return data


def _layout_image(target: str) -> ImageTarget:
    spec = target[len("oci:"):]
    directory, _, ref = spec.partition(":")
    root = Path(directory)

    def blob(digest: str) -> Path:
        return root / "blobs" / "sha256" / oci.digest_hex(digest)

    try:
        index = oci.parse_index((root / "index.json").read_bytes(), f"{directory}/index.json")
    except OSError as e:
        raise TargetError(f"{target}: cannot read {root / 'index.json'}: {e.strerror}") from None
    entries = [d for d in index["manifests"] if oci.SIGNATURE_OF not in d.get("annotations", {})]
    if ref:
        entries = [d for d in entries if d.get("annotations", {}).get(oci.REF_NAME, "") in (ref,)
                   or d.get("annotations", {}).get(oci.REF_NAME, "").endswith(":" + ref)]
    if len(entries) != 1:
        raise TargetError(f"{target}: {len(entries)} images match in the layout; name one with oci:DIR:REF")
    desc = entries[0]
    if desc["mediaType"] in oci.INDEX_TYPES:
        nested = oci.parse_index(read_small(blob(desc["digest"]), desc, f"{target}: image index"), f"{target}: image index")
        arch = _ARCH.get(platform.machine(), platform.machine())
        matching = [d for d in nested["manifests"] if d.get("platform", {}).get("os") == "linux"
                    and d.get("platform", {}).get("architecture") == arch]
        if not matching:
            raise TargetError(f"{target}: the image index has no linux/{arch} image")
        desc = matching[0]
    manifest = oci.parse_manifest(read_small(blob(desc["digest"]), desc, f"{target}: manifest"), f"{target}: manifest")
    return image_from_manifest(target, desc["digest"], manifest, blob)


def _store_image(data_dir: Path, ref: str) -> ImageTarget:
    from gifee.image.store import ImageStore

    store = ImageStore(data_dir / "images")
    image = store.resolve(ref)
    return image_from_manifest(image.name or image.manifest_digest, image.manifest_digest, image.manifest,
                               store.blob_path)


def pull_into(store_dir: Path, target: str, insecure: bool, creds: str | None, data_dir: Path) -> str:
    """Pull `docker://...` into a store at `store_dir`; returns the local reference to scan."""
    from gifee.image.imagecopy import Transport, pull_scope
    from gifee.image.progress import Progress
    from gifee.image.pull import pull
    from gifee.image.remoteref import parse_remote
    from gifee.image.store import ImageStore

    ref = parse_remote(target[len("docker://"):])
    transport = Transport(insecure=insecure, tls_verify=not insecure, creds=creds, data_dir=data_dir)
    image = pull(transport.client(ref, pull_scope(ref)), ref, ImageStore(store_dir / "images"), Progress(quiet=True),
                 name=None if ref.tag else "scan/pulled:latest", trust_root=None)
    return image.name


def open_image(data_dir: Path, target: str) -> ImageTarget:
    """The image a (non-directory, non-docker://) target names; TargetError otherwise."""
    try:
        if target.startswith("oci:"):
            return _layout_image(target)
        return _store_image(data_dir, target)
    except (ImageError, BadImage, BlobCorrupted, ValueError) as e:
        raise TargetError(str(e)) from None
