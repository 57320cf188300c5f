"""Version ordering, one module per ecosystem, and the registry that picks one by the name the
vulnerability data uses.

Every scheme module offers `parse(text) -> Version` (hashable, totally ordered, equal when
the scheme says equal; raises `InvalidVersion`) and `compare(a, b) -> -1 | 0 | 1` on strings
or parsed versions. `ECOSYSTEMS` maps data names ("Debian", "Alpine", "PyPI", "npm", "Red Hat",
...) to a `VersionScheme`; `scheme_for_namespace` maps a database namespace such as "debian:7"
or "alpine:v3.18" to one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gifee.scan.versions import apk, dpkg, pep440, rpm, semver
from gifee.scan.versions.base import OrderedVersion
from gifee.scan.versions.errors import InvalidVersion

__all__ = [
    "ECOSYSTEMS",
    "InvalidVersion",
    "OrderedVersion",
    "VersionScheme",
    "scheme_for_namespace",
]


@dataclass(frozen=True)
class VersionScheme:
    name: str
    parse: Callable[[str], OrderedVersion]
    compare: Callable[[Any, Any], int]


DPKG = VersionScheme(dpkg.NAME, dpkg.parse, dpkg.compare)
RPM = VersionScheme(rpm.NAME, rpm.parse, rpm.compare)
APK = VersionScheme(apk.NAME, apk.parse, apk.compare)
PEP440 = VersionScheme(pep440.NAME, pep440.parse, pep440.compare)
SEMVER = VersionScheme(semver.NAME, semver.parse, semver.compare)

# Names as OSV, Clair and the Debian/Alpine data spell them, plus each scheme's own name.
ECOSYSTEMS: dict[str, VersionScheme] = {
    "dpkg": DPKG,
    "Debian": DPKG,
    "Ubuntu": DPKG,
    "rpm": RPM,
    "Red Hat": RPM,
    "RHEL": RPM,
    "CentOS": RPM,
    "Rocky Linux": RPM,
    "AlmaLinux": RPM,
    "Fedora": RPM,
    "openSUSE": RPM,
    "SUSE": RPM,
    "apk": APK,
    "Alpine": APK,
    "pep440": PEP440,
    "PyPI": PEP440,
    "semver": SEMVER,
    "SEMVER": SEMVER,
    "npm": SEMVER,
    "Go": SEMVER,
    "crates.io": SEMVER,
}
_BY_LOWER = {name.lower(): scheme for name, scheme in ECOSYSTEMS.items()}


def scheme_for_namespace(namespace: str) -> VersionScheme:
    """The scheme for a namespace like "debian:7", "alpine:v3.18", "PyPI" or "Debian:11".

    Raises KeyError (with the namespace in its message) for an ecosystem we cannot order."""
    family = namespace.split(":", 1)[0].strip().lower()
    try:
        return _BY_LOWER[family]
    except KeyError:
        raise KeyError(f"no version ordering known for ecosystem {namespace!r}") from None
