"""OCI image-spec vocabulary: media types, digests, descriptors, manifests (pure).

Rules: a digest is `sha256:<64 lower-case hex>` (the only algorithm gifee writes
or accepts); a descriptor has a media type, a digest and a non-negative size.
Docker's schema2 media types are accepted as synonyms of the OCI ones, so
images that skopeo copies from Docker registries import unchanged (their
manifest bytes are kept, or the digest would change).

Theory of operation: these functions turn bytes into checked dicts and dicts
into canonical bytes. They never read files; the store hands them bytes it
has already digest-checked, and they raise `BadImage` on anything malformed.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from gifee.image.errors import BadImage

OCI_LAYOUT_VERSION = "1.0.0"
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
SIGNATURE = "application/vnd.gifee.signature.v1+json"

REF_NAME = "org.opencontainers.image.ref.name"
CREATED = "org.opencontainers.image.created"
# index.json annotation marking a signature's entry: its value is the signed manifest's digest.
SIGNATURE_OF = "dev.gifee.signature.subject"

MANIFEST_TYPES = (MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (INDEX, DOCKER_LIST)
CONFIG_TYPES = (CONFIG, DOCKER_CONFIG)
LAYER_COMPRESSION = {
    LAYER_TAR: "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    LAYER_GZIP: "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    DOCKER_LAYER_GZIP: "gzip",
    LAYER_ZSTD: "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
}
COMPRESSION_MEDIA_TYPE = {"none": LAYER_TAR, "gzip": LAYER_GZIP, "zstd": LAYER_ZSTD}
EMPTY_JSON = b"{}"

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
Descriptor = dict[str, Any]


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: object, where: str = "digest") -> str:
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise BadImage(f"{where}: {digest!r} is not a sha256 digest (sha256:<64 hex digits>)")
    return digest


def digest_hex(digest: str) -> str:
    return check_digest(digest)[len("sha256:"):]


def descriptor(media_type: str, content: bytes, **extra: Any) -> Descriptor:
    d: Descriptor = {"mediaType": media_type, "digest": sha256_digest(content), "size": len(content)}
    d.update(extra)
    return d


def check_descriptor(d: object, where: str) -> Descriptor:
    if not isinstance(d, dict):
        raise BadImage(f"{where}: a descriptor must be a JSON object")
    if not isinstance(d.get("mediaType"), str):
        raise BadImage(f"{where}: descriptor has no mediaType")
    check_digest(d.get("digest"), f"{where} digest")
    size = d.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadImage(f"{where}: descriptor size {size!r} is not a non-negative integer")
    return d


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _load_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadImage(f"{what} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise BadImage(f"{what} must be a JSON object")
    return value


def parse_index(data: bytes, what: str = "index.json") -> dict[str, Any]:
    index = _load_object(data, what)
    if index.get("schemaVersion") != 2:
        raise BadImage(f"{what}: schemaVersion must be 2")
    manifests = index.get("manifests", [])
    if not isinstance(manifests, list):
        raise BadImage(f"{what}: manifests must be a list")
    for i, d in enumerate(manifests):
        check_descriptor(d, f"{what} manifests[{i}]")
        annotations = d.get("annotations", {})
        if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
            raise BadImage(f"{what} manifests[{i}]: annotations must map strings to strings")
    index["manifests"] = manifests
    return index


def parse_manifest(data: bytes, what: str) -> dict[str, Any]:
    manifest = _load_object(data, what)
    if manifest.get("schemaVersion") != 2:
        raise BadImage(f"{what}: schemaVersion must be 2")
    media_type = manifest.get("mediaType", MANIFEST)
    if media_type not in MANIFEST_TYPES:
        raise BadImage(f"{what}: media type {media_type!r} is not an image manifest")
    check_descriptor(manifest.get("config"), f"{what} config")
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise BadImage(f"{what}: layers must be a list")
    for i, layer in enumerate(layers):
        check_descriptor(layer, f"{what} layers[{i}]")
    if "subject" in manifest:
        check_descriptor(manifest["subject"], f"{what} subject")
    return manifest


def is_signature(manifest: dict[str, Any]) -> bool:
    return manifest.get("artifactType") == SIGNATURE


def check_image_manifest(manifest: dict[str, Any], what: str) -> None:
    """An image (not an artifact): an image config and layers gifee can unpack."""
    if manifest["config"]["mediaType"] not in CONFIG_TYPES:
        raise BadImage(f"{what}: config media type {manifest['config']['mediaType']!r} is not an image config")
    for i, layer in enumerate(manifest["layers"]):
        if layer["mediaType"] not in LAYER_COMPRESSION:
            raise BadImage(f"{what} layers[{i}]: media type {layer['mediaType']!r} is not a layer gifee can unpack")


def parse_config(data: bytes, what: str, layer_count: int) -> dict[str, Any]:
    config = _load_object(data, what)
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers" or not isinstance(rootfs.get("diff_ids"), list):
        raise BadImage(f"{what}: rootfs must be {{\"type\": \"layers\", \"diff_ids\": [...]}}")
    diff_ids = rootfs["diff_ids"]
    for i, diff_id in enumerate(diff_ids):
        check_digest(diff_id, f"{what} rootfs.diff_ids[{i}]")
    if len(diff_ids) != layer_count:
        raise BadImage(f"{what}: {len(diff_ids)} diff_ids for {layer_count} layers")
    inner = config.get("config", {})
    if not isinstance(inner, dict):
        raise BadImage(f"{what}: config must be a JSON object")
    return config


def image_config(
    diff_ids: list[str],
    created: str,
    env: list[str],
    entrypoint: list[str] | None,
    cmd: list[str] | None,
    workdir: str | None,
    user: str | None,
    labels: dict[str, str],
    base: dict[str, Any] | None = None,
    history: str = "gifee image build",
) -> dict[str, Any]:
    """An image config; values from `base` (a parent image's config) are kept unless replaced."""
    inner: dict[str, Any] = dict(base.get("config", {})) if base else {}
    if env:
        names = {e.partition("=")[0] for e in env}
        inner["Env"] = [e for e in inner.get("Env", []) if e.partition("=")[0] not in names] + env
    if entrypoint is not None:
        inner["Entrypoint"] = entrypoint
        inner.pop("Cmd", None)  # as Docker does: a new entrypoint drops the base's Cmd
    if cmd is not None:
        inner["Cmd"] = cmd
    if workdir:
        inner["WorkingDir"] = workdir
    if user:
        inner["User"] = user
    if labels:
        inner["Labels"] = {**inner.get("Labels", {}), **labels}
    base_history = list(base.get("history", [])) if base else []
    return {
        "created": created,
        "architecture": base.get("architecture", "amd64") if base else "amd64",
        "os": base.get("os", "linux") if base else "linux",
        "config": inner,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": base_history + [{"created": created, "created_by": history}],
    }


def image_manifest(config: Descriptor, layers: list[Descriptor], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": layers}
    if annotations:
        manifest["annotations"] = annotations
    return manifest


def empty_descriptor() -> Descriptor:
    return descriptor(EMPTY, EMPTY_JSON, data="e30=")


def signature_manifest(subject: Descriptor, signature: Descriptor, created: str) -> dict[str, Any]:
    """An OCI 1.1 artifact whose subject is the signed manifest (found by the referrers API)."""
    return {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": SIGNATURE,
        "config": empty_descriptor(),
        "layers": [signature],
        "subject": {k: subject[k] for k in ("mediaType", "digest", "size")},
        "annotations": {CREATED: created},
    }
