"""May this image run? Refuse it when it has findings at or above a severity (I/O shell).

For `gifee run --fail-on-severity=LEVEL IMAGE`: the runtime calls `check_image` before
starting the pod. Layer indexes come from `<dir>/scan/layers/` (filled by earlier scans or
by this check), so a second check of an image, or of one sharing its base layers, only
matches. A check that cannot be made (no vulnerability database, an unreadable image) also
refuses: a policy that silently passes is worse than none.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gifee.scan import severity
from gifee.scan.layercache import cache_dir
from gifee.scan.report import Report

if TYPE_CHECKING:
    from gifee.image.store import Image, ImageStore


class ScanPolicyError(Exception):
    """The image must not run; the message names the findings (or why it could not be checked)."""

    def __init__(self, message: str, report: Report | None = None) -> None:
        super().__init__(message)
        self.report = report


def check_image(data_dir: Path, store: ImageStore, image: Image, fail_on: str) -> None:
    from gifee.scan.scanner import scan_image
    from gifee.scan.targets import image_from_manifest
    from gifee.scan.vulndb.store import VulnDB, VulnDBError, database_path

    try:
        threshold = severity.parse_level(fail_on)
    except ValueError as e:
        raise ScanPolicyError(str(e)) from None
    label = image.name or image.manifest_digest
    target = image_from_manifest(label, image.manifest_digest, image.manifest, store.blob_path)
    try:
        with VulnDB(database_path(data_dir)) as db:
            report = scan_image(target, db, cache_dir(data_dir))
    except VulnDBError as e:
        raise ScanPolicyError(f"{label}: cannot check for vulnerabilities: {e}") from None
    blocking = [f for f in report.findings if severity.at_least(f.severity, threshold)]
    if blocking:
        ids = sorted({f.id for f in blocking}, key=lambda i: (-max(severity.RANK[f.severity] for f in blocking
                                                                      if f.id == i), i))
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        packages = ", ".join(sorted({f.package for f in blocking}))
        raise ScanPolicyError(f"{label}: {len(ids)} vulnerabilities at or above {threshold} in {packages}: {shown} "
                              f"(gifee scan {label} lists them)", report)
