"""Garbage collection: delete blobs no manifest of any repository refers to.

Mark: every manifest revision of every repository is a root; it marks itself and what
its body names (config, layers, index children, subject). Sweep: every unmarked blob
whose mtime is older than the grace period is deleted, and so are stray temporary
files that old, layer links whose blob is gone, and uploads untouched for a day.

Why the grace period and the lock together keep a concurrent push intact: the sweep
runs under `gc.lock` held exclusively, while the server holds it shared from checking a
manifest's blobs to writing the manifest, so a manifest is either seen by the mark or
checked after the sweep (and then refused with MANIFEST_BLOB_UNKNOWN only if its blob
was already unreferenced and old). Blobs pushed (or re-pushed, or mounted) for a
manifest not written yet are young, since every push refreshes the blob's mtime.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time

from gifee.registry.manifests import references
from gifee.registry.names import Digest
from gifee.registry.storage import Storage

DEFAULT_GRACE_SECONDS = 3600.0
UPLOAD_MAX_AGE_SECONDS = 86400.0


@dataclasses.dataclass
class Report:
    marked: int = 0
    deleted: list[str] = dataclasses.field(default_factory=list)
    freed_bytes: int = 0
    kept_young: int = 0
    links_removed: int = 0
    uploads_removed: int = 0


def collect(storage: Storage, grace: float = DEFAULT_GRACE_SECONDS, dry_run: bool = False,
            now: float | None = None, upload_age: float = UPLOAD_MAX_AGE_SECONDS) -> Report:
    report = Report()
    now = time.time() if now is None else now
    with storage.lock(exclusive=True):
        names = storage.repository_names()
        marked: set[Digest] = set()
        for name in names:
            for digest in storage.manifest_digests(name):
                marked.add(digest)
                with contextlib.suppress(FileNotFoundError):
                    marked.update(references(storage.blob_path(digest).read_bytes()))
        report.marked = len(marked)
        for found, path in list(storage.all_blobs()):
            if found is not None and found in marked:
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if now - st.st_mtime < grace:
                report.kept_young += 1
                continue
            report.deleted.append(str(found) if found is not None else str(path))
            report.freed_bytes += st.st_size
            if not dry_run:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        if dry_run:
            return report
        for name in names:
            layers = storage.repo_dir(name) / "_layers"
            for link in layers.glob("*/*"):
                with contextlib.suppress(ValueError):
                    if not storage.blob_path(Digest.parse(f"{link.parent.name}:{link.name}")).exists():
                        link.unlink()
                        report.links_removed += 1
            for upload in (storage.repo_dir(name) / "_uploads").glob("*"):
                with contextlib.suppress(FileNotFoundError):
                    if now - (upload / "data").stat().st_mtime >= upload_age:
                        shutil.rmtree(upload, ignore_errors=True)
                        report.uploads_removed += 1
    return report
