"""Alpine secdb (alpinelinux/alpine-secdb, one YAML file per release and repository).

Rules of the format:
    distroversion: v3.11
    reponame: main
    packages:
      - pkg:
          name: openssl
          secfixes:
            1.1.1d-r3:            a fixed package version (apk rules)
              - CVE-2019-1551     ids fixed in it; an entry may add others: "CVE-x XSA-200"
Each (fixed version, id) becomes one record in namespace "alpine:<distroversion>": versions
older than the fixed one are affected. A fixed version "0" means the package was never
affected in this release.

Theory of operation: a pure function from text to `ParseResult`. Malformed versions (the real
data has a few, e.g. "4.8.0.-r1"), non-id entries and non-mapping parts become warnings and are
skipped; the rest of the file still loads.
"""

from __future__ import annotations

import re
from typing import Any

from gifee.scan.versions import InvalidVersion, apk
from gifee.scan.vulndb.model import FIXED, NOT_AFFECTED, Advisory, ParseResult
from gifee.scan.vulndb.yamltext import YAMLError, load_yaml

SOURCE = "alpine-secdb"
_ID = re.compile(r"^[A-Z][A-Z0-9]*-[0-9A-Za-z][0-9A-Za-z._:-]*$")
MAX_WARNINGS_PER_FILE = 50


def is_secdb(doc: Any) -> bool:
    return isinstance(doc, dict) and "packages" in doc and "distroversion" in doc


def parse_secdb(text: str, where: str = "secdb") -> ParseResult:
    result = ParseResult()
    try:
        doc = load_yaml(text)
    except YAMLError as e:
        result.warnings.append(f"{where}: not valid YAML: {e}")
        return result
    return parse_secdb_document(doc, where)


def parse_secdb_document(doc: Any, where: str = "secdb") -> ParseResult:
    """The same, from an already parsed document."""
    result = ParseResult()

    def warn(message: str) -> None:
        if len(result.warnings) < MAX_WARNINGS_PER_FILE:
            result.warnings.append(f"{where}: {message}")

    if not is_secdb(doc):
        warn("not an Alpine secdb file (no distroversion/packages)")
        return result
    release = str(doc["distroversion"]).strip()
    if not re.fullmatch(r"v?[0-9]+\.[0-9]+|edge", release):
        warn(f"unexpected distroversion {release!r}")
        return result
    namespace = "alpine:" + (release if release == "edge" or release.startswith("v") else "v" + release)
    for entry in doc.get("packages") or []:
        pkg = entry.get("pkg") if isinstance(entry, dict) else None
        if not isinstance(pkg, dict) or not isinstance(pkg.get("name"), str):
            warn(f"package entry without pkg.name: {str(entry)[:80]!r}")
            continue
        name = pkg["name"]
        secfixes = pkg.get("secfixes") or {}
        if not isinstance(secfixes, dict):
            warn(f"{name}: secfixes is not a mapping")
            continue
        for version, ids in secfixes.items():
            if not isinstance(version, str):
                warn(f"{name}: version {version!r} is not a string (unquoted in the YAML)")
                continue
            status = NOT_AFFECTED if version == "0" else FIXED
            if status == FIXED:
                try:
                    apk.parse(version)
                except InvalidVersion as e:
                    warn(f"{name}: {e}")
                    continue
            for item in ids or []:
                tokens = [t for t in str(item).split() if _ID.match(t)]
                if not tokens:
                    warn(f"{name} {version}: no advisory id in {item!r}")
                    continue
                result.advisories.append(
                    Advisory(
                        id=tokens[0],
                        namespace=namespace,
                        package=name,
                        status=status,
                        fixed=version if status == FIXED else None,
                        aliases=tuple(tokens[1:]),
                        link=f"https://security.alpinelinux.org/vuln/{tokens[0]}",
                        source=SOURCE,
                    )
                )
    return result
