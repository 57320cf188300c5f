"""Alpine's database of installed packages, `lib/apk/db/installed` (pure).

Rules: one paragraph per package, `K:value` lines (P name, V version, A arch, o origin —
the aports package that built it, which is what Alpine's secdb names). File lists (F/R/Z
lines) are ignored. A paragraph without P or V is a warning.
"""

from __future__ import annotations

from gifee.scan.inventory import APK, Package


def parse_installed(text: str, where: str) -> tuple[list[Package], list[str]]:
    warnings: list[str] = []
    packages: list[Package] = []
    fields: dict[str, str] = {}
    bad = 0

    def flush() -> None:
        if not fields:
            return
        name, version = fields.get("P", ""), fields.get("V", "")
        if not name or not version:
            warnings.append(f"{where}: a package entry lacks P: or V: (name {name or '?'}); skipped")
        else:
            origin = fields.get("o", "") or name
            packages.append(Package(APK, name, version, origin, version, fields.get("A", "")))

    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            flush()
            fields = {}
            continue
        if len(line) < 2 or line[1] != ":":
            bad += 1
            if bad <= 20:
                warnings.append(f"{where}: line {number}: not a 'K:value' line; skipped")
            continue
        if line[0] in "PVAo" and line[0] not in fields:
            fields[line[0]] = line[2:].strip()
    flush()
    if bad > 20:
        warnings.append(f"{where}: {bad - 20} more malformed lines")
    return packages, warnings
