"""What one wanted file says (pure): its bytes and kind in, a `FileFacts` out.

Rules: text files are decoded as UTF-8 with replacement (a stray byte in a description must
not lose the whole database); a distribution release file yields a `Distro`, a package
database yields packages; problems are warnings carried with the file, never exceptions.
`FileFacts` is what the per-layer cache stores for each wanted file, so it converts to and
from plain JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gifee.scan import interesting as wanted
from gifee.scan import osrelease
from gifee.scan.inventory import Distro, Package
from gifee.scan.pkgdb import apk, dpkg, npm, python, rpmdb


@dataclass
class FileFacts:
    kind: str
    packages: list[Package] = field(default_factory=list)
    distro: Distro | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.packages:
            out["packages"] = [p.to_dict() for p in self.packages]
        if self.distro is not None:
            out["distro"] = self.distro.to_dict()
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out

    @staticmethod
    def from_dict(d: dict[str, Any]) -> FileFacts:
        distro = d.get("distro")
        return FileFacts(
            str(d["kind"]),
            [Package.from_dict(p) for p in d.get("packages", [])],
            Distro.from_dict(distro) if isinstance(distro, dict) else None,
            [str(w) for w in d.get("warnings", [])],
        )


_RELEASE_PARSERS = {
    wanted.OS_RELEASE: osrelease.from_os_release,
    wanted.LSB_RELEASE: osrelease.from_lsb_release,
    wanted.DEBIAN_VERSION: osrelease.from_debian_version,
    wanted.ALPINE_RELEASE: osrelease.from_alpine_release,
    wanted.REDHAT_RELEASE: osrelease.from_redhat_release,
}


def too_large(kind: str, path: str, size: int) -> FileFacts:
    cap = wanted.SIZE_CAPS[kind]
    if kind == wanted.RPMDB_OTHER:
        return FileFacts(kind, warnings=[f"/{path}: Berkeley DB / ndb rpm databases are not supported "
                                         "(only rpmdb.sqlite); rpm packages not listed"])
    return FileFacts(kind, warnings=[f"/{path}: {size} bytes is more than the {cap}-byte limit for a {kind} file; not read"])


def read_facts(kind: str, path: str, data: bytes) -> FileFacts:
    """Parse the file at `path` (no leading slash) of the given kind."""
    where = "/" + path
    if kind == wanted.RPMDB_OTHER or len(data) > wanted.SIZE_CAPS[kind]:
        return too_large(kind, path, len(data))
    if kind == wanted.RPMDB_SQLITE:
        packages, warnings = rpmdb.parse_rpmdb(data, where)
        return FileFacts(kind, packages, warnings=warnings)
    if kind == wanted.NPM_PACKAGE:
        packages, warnings = npm.parse_package_json(data, where)
        return FileFacts(kind, packages, warnings=warnings)
    text = data.decode("utf-8", "replace")
    if kind in _RELEASE_PARSERS:
        return FileFacts(kind, distro=_RELEASE_PARSERS[kind](text, where))
    if kind == wanted.DPKG_STATUS:
        packages, warnings = dpkg.parse_status(text, where)
    elif kind == wanted.DPKG_STATUS_D:
        packages, warnings = dpkg.parse_status(text, where, require_status=False)
    elif kind == wanted.APK_INSTALLED:
        packages, warnings = apk.parse_installed(text, where)
    elif kind == wanted.PYTHON_METADATA:
        segments = path.split("/")
        dirname = segments[-1] if segments[-1].endswith(".egg-info") else segments[-2]
        packages, warnings = python.parse_metadata(text, where, dirname)
    else:
        return FileFacts(kind, warnings=[f"{where}: no parser for {kind}"])
    return FileFacts(kind, packages, warnings=warnings)
