"""dpkg's database of installed packages (pure): `var/lib/dpkg/status`, and the one-paragraph
files distroless images keep in `var/lib/dpkg/status.d/`.

Rules: a paragraph counts when its `Status` says the package is installed (third word
`installed`, or half-configured/unpacked states that leave files on disk); status.d files
have no `Status` and always count. `Source: name (version)` gives the source package and,
when present, its version (binNMUs differ from the binary version); without it the source is
the binary package itself. A paragraph without `Package` or `Version` is a warning.
"""

from __future__ import annotations

import re

from gifee.scan.inventory import DEB, Package
from gifee.scan.pkgdb.control import paragraphs

_ON_DISK = {"installed", "half-configured", "unpacked", "half-installed", "triggers-awaited", "triggers-pending"}
_SOURCE = re.compile(r"^(?P<name>[^\s(]+)\s*(?:\((?P<version>[^)]+)\))?\s*$")


def parse_status(text: str, where: str, require_status: bool = True) -> tuple[list[Package], list[str]]:
    warnings: list[str] = []
    packages: list[Package] = []
    for fields in paragraphs(text, where, warnings):
        name, version = fields.get("package", ""), fields.get("version", "")
        if not name or not version:
            if not fields.get("status", "").endswith("not-installed"):
                warnings.append(f"{where}: paragraph for {name or '?'} lacks a Package or Version field; skipped")
            continue
        status = fields.get("status")
        if status is None:
            if require_status:
                warnings.append(f"{where}: {name} has no Status field; skipped")
                continue
        elif (status.split() or [""])[-1] not in _ON_DISK:
            continue
        source_name, source_version = name, version
        if "source" in fields:
            m = _SOURCE.match(fields["source"])
            if m is None:
                warnings.append(f"{where}: {name}: malformed Source field {fields['source']!r}; using the binary name")
            else:
                source_name = m["name"]
                source_version = m["version"].strip() if m["version"] else version
        packages.append(Package(DEB, name, version, source_name, source_version, fields.get("architecture", "")))
    return packages, warnings
