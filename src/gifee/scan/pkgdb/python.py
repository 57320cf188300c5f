"""Installed Python distributions (pure): `*.dist-info/METADATA`, `*.egg-info/PKG-INFO`, and
the single-file `*.egg-info` distutils writes; all three are email-style headers.

Rules: `Name` and `Version` from the headers (the first occurrence; headers end at the first
blank line). When a header is missing, the directory name (`name-version.dist-info`) supplies
it; when neither does, a warning.
"""

from __future__ import annotations

from gifee.scan.inventory import PYTHON, Package


def _headers(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        if line[0] in " \t":
            continue
        key, sep, value = line.partition(":")
        if sep:
            out.setdefault(key.strip().lower(), value.strip())
    return out


def _from_dirname(dirname: str) -> tuple[str, str]:
    stem = dirname.rsplit(".", 1)[0]
    name, _, rest = stem.partition("-")
    return name, rest.split("-", 1)[0]


def parse_metadata(text: str, where: str, dirname: str) -> tuple[list[Package], list[str]]:
    headers = _headers(text)
    fallback_name, fallback_version = _from_dirname(dirname)
    name = headers.get("name") or fallback_name
    version = headers.get("version") or fallback_version
    if not name or not version:
        return [], [f"{where}: no Name/Version in the metadata or the directory name; skipped"]
    return [Package(PYTHON, name, version)], []
