"""What an image has installed: the distribution and the packages, as plain records.

Rules: every record is immutable and made of strings only, so it round-trips through the
per-layer JSON cache unchanged (`to_dict`/`from_dict`). `Package.source_name` and
`source_version` are what advisories are keyed by (dpkg's `Source:`, apk's origin); they
default to the package's own name and version. `path` is the database file the package was
read from, `layer` the digest of the layer that file came from (empty for a root directory).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

DEB, APK, RPM, PYTHON, NPM = "deb", "apk", "rpm", "python", "npm"
KINDS = (DEB, APK, RPM, PYTHON, NPM)


@dataclass(frozen=True)
class Package:
    kind: str  # one of KINDS
    name: str
    version: str
    source_name: str = ""
    source_version: str = ""
    arch: str = ""
    path: str = ""
    layer: str = ""

    @property
    def match_name(self) -> str:
        return self.source_name or self.name

    @property
    def match_version(self) -> str:
        return self.source_version or self.version

    def at(self, path: str, layer: str) -> Package:
        return replace(self, path=path, layer=layer)

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Package:
        return Package(**{k: str(d.get(k, "")) for k in Package.__dataclass_fields__})


@dataclass(frozen=True)
class Distro:
    id: str  # os-release ID: debian, alpine, ubuntu, rhel, centos, fedora, ...
    version_id: str
    pretty_name: str = ""
    path: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Distro:
        return Distro(**{k: str(d.get(k, "")) for k in Distro.__dataclass_fields__})


@dataclass
class Inventory:
    distro: Distro | None = None
    packages: list[Package] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
