"""Which files in an image the indexer reads, and how much of them (pure).

Rules: a file is wanted only by its path below the image root (segments, no leading `/`):
release files, the dpkg/apk/rpm databases at their fixed places, Python metadata in any
`*.dist-info` / `*.egg-info`, and `package.json` directly inside a `node_modules` package
directory. Each kind has a size cap; a larger file is not read (a warning says so).
`ENTRY_POINTS` are the fixed paths that may be reached through symlinks (`/etc/os-release ->
../usr/lib/os-release`, `/var/lib/rpm -> ../../usr/lib/sysimage/rpm`); symlinks on the way to
them are worth remembering, all other symlinks are not.
"""

from __future__ import annotations

MiB = 1 << 20

OS_RELEASE, LSB_RELEASE, DEBIAN_VERSION, ALPINE_RELEASE, REDHAT_RELEASE = (
    "os-release", "lsb-release", "debian_version", "alpine-release", "redhat-release")
DPKG_STATUS, DPKG_STATUS_D, APK_INSTALLED, RPMDB_SQLITE, RPMDB_OTHER = (
    "dpkg-status", "dpkg-status.d", "apk-installed", "rpmdb-sqlite", "rpmdb-other")
PYTHON_METADATA, NPM_PACKAGE = "python-metadata", "npm-package"

RELEASE_KINDS = (OS_RELEASE, LSB_RELEASE, DEBIAN_VERSION, ALPINE_RELEASE, REDHAT_RELEASE)

FIXED_PATHS: dict[str, str] = {
    "etc/os-release": OS_RELEASE,
    "usr/lib/os-release": OS_RELEASE,
    "etc/lsb-release": LSB_RELEASE,
    "etc/debian_version": DEBIAN_VERSION,
    "etc/alpine-release": ALPINE_RELEASE,
    "etc/redhat-release": REDHAT_RELEASE,
    "etc/centos-release": REDHAT_RELEASE,
    "etc/fedora-release": REDHAT_RELEASE,
    "var/lib/dpkg/status": DPKG_STATUS,
    "lib/apk/db/installed": APK_INSTALLED,
    "usr/lib/apk/db/installed": APK_INSTALLED,
    "var/lib/rpm/rpmdb.sqlite": RPMDB_SQLITE,
    "usr/lib/sysimage/rpm/rpmdb.sqlite": RPMDB_SQLITE,
    "var/lib/rpm/Packages": RPMDB_OTHER,
    "usr/lib/sysimage/rpm/Packages.db": RPMDB_OTHER,
}
ENTRY_POINTS = tuple(FIXED_PATHS)
# Where to look for the distribution, best first.
RELEASE_ORDER = ("etc/os-release", "usr/lib/os-release", "etc/lsb-release", "etc/alpine-release",
                 "etc/redhat-release", "etc/centos-release", "etc/fedora-release", "etc/debian_version")
_ENTRY_PREFIXES = {"/".join(p.split("/")[:i]) for p in ENTRY_POINTS for i in range(1, p.count("/") + 2)}

SIZE_CAPS: dict[str, int] = {
    OS_RELEASE: 64 * 1024, LSB_RELEASE: 64 * 1024, DEBIAN_VERSION: 4096, ALPINE_RELEASE: 4096,
    REDHAT_RELEASE: 4096, DPKG_STATUS: 64 * MiB, DPKG_STATUS_D: 1 * MiB, APK_INSTALLED: 64 * MiB,
    RPMDB_SQLITE: 64 * MiB, RPMDB_OTHER: 0, PYTHON_METADATA: 1 * MiB, NPM_PACKAGE: 1 * MiB,
}


def kind_of(path: str) -> str | None:
    """The kind of a regular file at `path` ("a/b/c", no leading slash), or None if unwanted."""
    fixed = FIXED_PATHS.get(path)
    if fixed is not None:
        return fixed
    segments = path.split("/")
    base = segments[-1]
    if len(segments) >= 2:
        parent = segments[-2]
        if parent == "status.d" and path.startswith("var/lib/dpkg/status.d/") and len(segments) == 5:
            return None if base.endswith(".md5sums") or base.startswith(".") else DPKG_STATUS_D
        if (base == "METADATA" and parent.endswith(".dist-info")) or (base == "PKG-INFO" and parent.endswith(".egg-info")):
            return PYTHON_METADATA
    if base.endswith(".egg-info") and len(base) > len(".egg-info"):
        return PYTHON_METADATA
    if base == "package.json" and len(segments) >= 3:
        if segments[-3] == "node_modules" and not segments[-2].startswith("@"):
            return NPM_PACKAGE
        if len(segments) >= 4 and segments[-4] == "node_modules" and segments[-3].startswith("@"):
            return NPM_PACKAGE
    return None


def symlink_wanted(path: str) -> bool:
    """Does a symlink at `path` lie on the way to an entry point (so resolution needs it)?"""
    return path in _ENTRY_PREFIXES
