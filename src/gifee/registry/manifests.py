"""Manifests: which media types are accepted, what makes one valid, what it refers to.

Rules:
* Accepted: OCI image manifests and indexes, Docker schema 2 manifests and manifest
  lists. The media type is the request's Content-Type, else the body's `mediaType`;
  when both are given they must agree. Anything else is MANIFEST_INVALID.
* A manifest is at most `MAX_MANIFEST_BYTES` (4 MiB); larger ones are refused with 413
  before they are read.
* Valid means: a JSON object, `schemaVersion` 2, descriptors with a media type, a valid
  digest and a non-negative integer size; an image manifest has a `config` and a
  `layers` list, an index a `manifests` list; `subject`, when present, is a descriptor.
* What it refers to: blobs (config, layers) that must be in the repository, child
  manifests (index entries) that must be in the repository, and the `subject`, which
  need not exist (the spec lets referrers be pushed before their subject).
* A referrer's descriptor (for the referrers API) carries the manifest's media type,
  digest, size, `artifactType` (the manifest's own, else an image manifest's config
  media type) and annotations.

Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from gifee.registry.errors import RegistryError
from gifee.registry.names import Digest

MAX_MANIFEST_BYTES = 4 * 1024 * 1024

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = IMAGE_TYPES | INDEX_TYPES


@dataclasses.dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int

    @staticmethod
    def parse(value: Any, where: str) -> Descriptor:
        if not isinstance(value, dict):
            raise invalid(f"{where} is not a descriptor object")
        media_type = value.get("mediaType")
        if not isinstance(media_type, str) or not media_type:
            raise invalid(f"{where}.mediaType is missing")
        size = value.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise invalid(f"{where}.size is not a non-negative integer")
        digest = value.get("digest")
        if not isinstance(digest, str):
            raise invalid(f"{where}.digest is missing")
        try:
            parsed = Digest.parse(digest)
        except ValueError as e:
            raise invalid(f"{where}.digest: {e}") from None
        return Descriptor(media_type, parsed, size)


@dataclasses.dataclass(frozen=True)
class Manifest:
    media_type: str
    digest: Digest
    size: int
    blobs: tuple[Descriptor, ...]  # config and layers
    children: tuple[Descriptor, ...]  # an index's manifests
    subject: Descriptor | None
    artifact_type: str | None
    annotations: dict[str, str]

    def referrer_descriptor(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = self.annotations
        return out


def invalid(detail: str) -> RegistryError:
    return RegistryError("MANIFEST_INVALID", detail)


def media_type_of(content_type: str | None, body_type: Any) -> str:
    header = (content_type or "").split(";")[0].strip()
    if body_type is not None and not isinstance(body_type, str):
        raise invalid("mediaType is not a string")
    if header and body_type and header != body_type:
        raise invalid(f"Content-Type {header!r} differs from the manifest's mediaType {body_type!r}")
    media_type = body_type or header
    if media_type not in MANIFEST_TYPES:
        raise invalid(f"unsupported manifest media type {media_type!r}")
    return str(media_type)


def parse_manifest(body: bytes, content_type: str | None, algorithm: str = "sha256") -> Manifest:
    if len(body) > MAX_MANIFEST_BYTES:
        raise RegistryError("SIZE_INVALID", f"manifest larger than {MAX_MANIFEST_BYTES} bytes", status=413)
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        raise invalid(f"not JSON: {str(e)[:200]}") from None
    if not isinstance(doc, dict):
        raise invalid("not a JSON object")
    media_type = media_type_of(content_type, doc.get("mediaType"))
    if doc.get("schemaVersion") != 2:
        raise invalid("schemaVersion is not 2")
    blobs: list[Descriptor] = []
    children: list[Descriptor] = []
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise invalid("artifactType is not a string")
    if media_type in IMAGE_TYPES:
        config = Descriptor.parse(doc.get("config"), "config")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise invalid("layers is not a list")
        blobs.append(config)
        blobs.extend(Descriptor.parse(layer, f"layers[{i}]") for i, layer in enumerate(layers))
        artifact_type = artifact_type or config.media_type
    else:
        manifests = doc.get("manifests")
        if not isinstance(manifests, list):
            raise invalid("manifests is not a list")
        children.extend(Descriptor.parse(m, f"manifests[{i}]") for i, m in enumerate(manifests))
    subject = Descriptor.parse(doc["subject"], "subject") if doc.get("subject") is not None else None
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        raise invalid("annotations is not a map of strings")
    return Manifest(
        media_type=media_type,
        digest=Digest.of(body, algorithm),
        size=len(body),
        blobs=tuple(blobs),
        children=tuple(children),
        subject=subject,
        artifact_type=artifact_type,
        annotations=dict(annotations),
    )


def references(body: bytes) -> list[Digest]:
    """Every digest a stored manifest keeps alive (for GC); lenient, since it was valid once."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return []
    if not isinstance(doc, dict):
        return []
    out: list[Digest] = []
    entries: list[Any] = [doc.get("config"), doc.get("subject")]
    for key in ("layers", "manifests", "blobs"):
        value = doc.get(key)
        if isinstance(value, list):
            entries.extend(value)
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("digest"), str):
            try:
                out.append(Digest.parse(entry["digest"]))
            except ValueError:
                pass
    return out


def referrers_index(descriptors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
