"""Scan a manifest held in the registry's storage, and keep the latest report (I/O shell).

The registry calls `scan_manifest` after a manifest PUT (in a worker thread: it blocks) and
`save_report`s the result; `GET` of a manifest's report serves `latest_report`. Blobs are read
straight from the registry's layout (`blobs/sha256/<hex[:2]>/<hex>`, see
`gifee.registry.storage`), never through the network. An image index is scanned as its
linux/amd64 image; anything that is not an image (a signature, another artifact) gives a
report with a warning and no findings. Reports live in `<storage root>/scan-reports/
sha256/<hex>.json` by manifest digest, written whole and renamed into place.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from gifee.scan.report import Report

_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
REPORTS = "scan-reports"


def _blob(storage_root: Path, digest: str) -> Path:
    m = _DIGEST.match(digest)
    if m is None:
        raise ValueError(f"{digest!r} is not a sha256 digest")
    return storage_root / "blobs" / "sha256" / m[1][:2] / m[1]


def scan_manifest(storage_root: Path, repo: str, manifest_digest: str, vulndb_path: Path,
                  cache_root: Path | None = None) -> dict[str, Any]:
    """The report (as JSON-ready dict) for one manifest of `repo`; `cache_root` holds layer
    indexes (default: `<storage root>/scan-cache`). Never raises for a bad image."""
    from gifee.image import oci
    from gifee.image.errors import ImageError
    from gifee.scan.scanner import scan_image
    from gifee.scan.targets import TargetError, image_from_manifest, read_small
    from gifee.scan.vulndb.store import VulnDB

    storage_root = Path(storage_root)
    label = f"{repo}@{manifest_digest}"
    cache = cache_root if cache_root is not None else storage_root / "scan-cache"
    try:
        path = _blob(storage_root, manifest_digest)
        desc: dict[str, Any] = {"digest": manifest_digest, "size": path.stat().st_size}
        data = read_small(path, desc, f"{label}: manifest")
        doc = json.loads(data)
        if isinstance(doc, dict) and doc.get("mediaType") in oci.INDEX_TYPES:
            index = oci.parse_index(data, f"{label}: image index")
            chosen = [d for d in index["manifests"] if d.get("platform", {}).get("os") == "linux"
                      and d.get("platform", {}).get("architecture") == "amd64"]
            if not chosen:
                return Report(label, warnings=[f"{label}: image index has no linux/amd64 image"]).to_dict()
            desc = chosen[0]
            data = read_small(_blob(storage_root, desc["digest"]), desc, f"{label}: manifest")
        manifest = oci.parse_manifest(data, f"{label}: manifest")
        if manifest["config"]["mediaType"] not in oci.CONFIG_TYPES:
            return Report(label, warnings=[f"{label}: not an image ({manifest['config']['mediaType']}); not scanned"]).to_dict()
        image = image_from_manifest(label, desc["digest"], manifest, lambda d: _blob(storage_root, d))
        with VulnDB(vulndb_path) as db:
            return scan_image(image, db, cache).to_dict()
    except (OSError, ValueError, TargetError, ImageError) as e:  # VulnDBError is an Exception: see below
        return Report(label, warnings=[f"{label}: not scanned: {e}"]).to_dict()
    except Exception as e:  # noqa: BLE001 - a push must never fail because its scan did
        return Report(label, warnings=[f"{label}: scan failed: {type(e).__name__}: {e}"]).to_dict()


def report_path(storage_root: Path, manifest_digest: str) -> Path:
    m = _DIGEST.match(manifest_digest)
    if m is None:
        raise ValueError(f"{manifest_digest!r} is not a sha256 digest")
    return Path(storage_root) / REPORTS / "sha256" / f"{m[1]}.json"


def save_report(storage_root: Path, manifest_digest: str, report: dict[str, Any]) -> None:
    path = report_path(storage_root, manifest_digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(report, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def latest_report(storage_root: Path, manifest_digest: str) -> dict[str, Any] | None:
    try:
        value = json.loads(report_path(storage_root, manifest_digest).read_bytes())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
