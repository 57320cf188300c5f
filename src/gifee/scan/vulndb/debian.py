"""Debian security tracker data: the advisory lists (`data/DSA/list`, `data/DLA/list`) and the
tracker's JSON export (https://security-tracker.debian.org/tracker/data/json).

Rules of the list format (one advisory per block; the indented lines start with a tab):
    [07 Apr 2014] DSA-2896-1 openssl - security update     header: date, id, package, text
        {CVE-2014-0160}                                      the CVE ids it fixes (optional)
        [wheezy] - openssl 1.0.1e-2+deb7u5                    per release: source package, fixed
        NOTE: ...                                             free text, ignored
A fixed version may be `<not-affected>`, `<unfixed>` or `<end-of-life>`; a trailing
parenthesis may carry an urgency ("(medium)") or a remark. Each release line becomes one
record in namespace "debian:<release number>" (wheezy -> "debian:7").

Rules of the JSON export: {package: {CVE id: {"description", "releases": {codename:
{"status": "resolved" | "open" | "undetermined", "fixed_version", "urgency", ...}}}}};
a resolved entry fixed in "0" means the release was never affected.

Theory of operation: pure functions from text to `ParseResult`. A line or entry that does not
fit gives a warning naming the line (or package/CVE) and is skipped; the rest still loads.
Fixed versions are checked with the dpkg version rules so that a malformed one is reported
here, not when matching.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from gifee.scan.versions import InvalidVersion, dpkg
from gifee.scan.vulndb.model import FIXED, NOT_AFFECTED, UNFIXED, Advisory, ParseResult

# Codename -> release number, as the namespaces use it.
RELEASES = {
    "buzz": "1.1", "rex": "1.2", "bo": "1.3", "hamm": "2.0", "slink": "2.1", "potato": "2.2",
    "woody": "3.0", "sarge": "3.1", "etch": "4", "lenny": "5", "squeeze": "6", "wheezy": "7",
    "jessie": "8", "stretch": "9", "buster": "10", "bullseye": "11", "bookworm": "12",
    "trixie": "13", "forky": "14", "sid": "unstable",
}
URGENCIES = {"unimportant", "low", "medium", "high"}
SPECIAL_VERSIONS = {"<not-affected>": NOT_AFFECTED, "<unfixed>": UNFIXED, "<end-of-life>": UNFIXED}
TRACKER_URL = "https://security-tracker.debian.org/tracker/"
MAX_WARNINGS_PER_FILE = 50

_HEADER = re.compile(r"^\[(?P<date>\d{1,2} [A-Za-z]{3} \d{4})\] (?P<id>D[A-Z]*A-[0-9]+(?:-[0-9]+)?) ?(?P<rest>.*)$")
_CVES = re.compile(r"^\s+\{(?P<ids>[^}]*)\}\s*$")
_FIX = re.compile(r"^\s+\[(?P<release>[a-z][a-z0-9-]*)\] - (?P<package>\S+)\s+(?P<version>\S+)\s*(?P<note>.*)$")
_NOTE = re.compile(r"^\s+NOTE:")


def namespace_for(codename: str) -> str:
    return "debian:" + RELEASES.get(codename, codename)


def _iso_date(text: str) -> str:
    try:
        return datetime.strptime(text, "%d %b %Y").date().isoformat()
    except ValueError:
        return ""


def _urgency(note: str) -> str:
    inner = note.strip().strip("()").split(";")[-1].strip().lower()
    return inner if inner in URGENCIES else ""


class _Warnings:
    """Collects warnings for one file, capped so that a garbage file cannot flood the report."""

    def __init__(self, where: str, result: ParseResult) -> None:
        self.where, self.result, self.dropped = where, result, 0

    def add(self, message: str) -> None:
        if len(self.result.warnings) < MAX_WARNINGS_PER_FILE:
            self.result.warnings.append(f"{self.where}: {message}")
        else:
            self.dropped += 1

    def close(self) -> None:
        if self.dropped:
            self.result.warnings.append(f"{self.where}: {self.dropped} more problems not shown")


def parse_advisory_list(text: str, where: str = "list", source: str = "debian") -> ParseResult:
    """Records from a DSA or DLA list; `where` names the file in warnings."""
    result = ParseResult()
    warn = _Warnings(where, result)
    current: dict[str, Any] | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not line.strip():
            continue
        m = _HEADER.match(line)
        if m:
            rest = m["rest"]
            current = {"id": m["id"], "date": _iso_date(m["date"]), "cves": [], "summary": rest}
            continue
        if current is None:
            warn.add(f"line {lineno}: text before the first advisory header: {line.strip()[:80]!r}")
            continue
        m = _CVES.match(line)
        if m:
            current["cves"].extend(m["ids"].split())
            continue
        m = _FIX.match(line)
        if m:
            advisory = _fix_line(current, m, source, f"line {lineno}", warn)
            if advisory is not None:
                result.advisories.append(advisory)
            continue
        if _NOTE.match(line):
            continue
        warn.add(f"line {lineno}: not an advisory line: {line.strip()[:80]!r}")
    warn.close()
    return result


def _fix_line(current: dict[str, Any], m: re.Match[str], source: str, where: str, warn: _Warnings) -> Advisory | None:
    version = m["version"]
    status = SPECIAL_VERSIONS.get(version, FIXED)
    if status == FIXED:
        try:
            dpkg.parse(version)
        except InvalidVersion as e:
            warn.add(f"{where}: {current['id']} {m['package']}: {e}")
            return None
    return Advisory(
        id=current["id"],
        namespace=namespace_for(m["release"]),
        package=m["package"],
        status=status,
        fixed=version if status == FIXED else None,
        aliases=tuple(current["cves"]),
        severity=_urgency(m["note"]),
        summary=current["summary"],
        link=TRACKER_URL + current["id"],
        source=source,
        published=current["date"],
    )


def parse_tracker_json(text: str, where: str = "json", source: str = "debian-json") -> ParseResult:
    """Records from the tracker's JSON export: one per (package, CVE, release)."""
    result = ParseResult()
    warn = _Warnings(where, result)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        warn.add(f"not valid JSON: {e}")
        warn.close()
        return result
    if not isinstance(data, dict):
        warn.add("not a Debian tracker export (top level is not an object)")
        warn.close()
        return result
    for package, issues in data.items():
        if not isinstance(issues, dict):
            warn.add(f"{package}: entry is not an object")
            continue
        for vuln_id, issue in issues.items():
            if not isinstance(issue, dict) or not isinstance(issue.get("releases", {}), dict):
                warn.add(f"{package} {vuln_id}: entry is not an object with releases")
                continue
            for codename, info in issue.get("releases", {}).items():
                advisory = _json_release(package, vuln_id, issue, codename, info, source, warn)
                if advisory is not None:
                    result.advisories.append(advisory)
    warn.close()
    return result


def _json_release(
    package: str, vuln_id: str, issue: dict[str, Any], codename: str, info: Any, source: str, warn: _Warnings
) -> Advisory | None:
    if not isinstance(info, dict):
        warn.add(f"{package} {vuln_id} {codename}: release entry is not an object")
        return None
    fixed = info.get("fixed_version")
    state = info.get("status")
    if state == "resolved" and fixed == "0":
        status, fixed = NOT_AFFECTED, None
    elif state == "resolved" and isinstance(fixed, str) and fixed:
        status = FIXED
        try:
            dpkg.parse(fixed)
        except InvalidVersion as e:
            warn.add(f"{package} {vuln_id} {codename}: {e}")
            return None
    elif state in ("open", "undetermined"):
        status, fixed = UNFIXED, None
    else:
        warn.add(f"{package} {vuln_id} {codename}: unknown status {state!r}")
        return None
    urgency = str(info.get("urgency", "")).rstrip("*")
    return Advisory(
        id=vuln_id,
        namespace=namespace_for(codename),
        package=package,
        status=status,
        fixed=fixed,
        severity=urgency if urgency in URGENCIES or urgency == "end-of-life" else "",
        summary=str(issue.get("description") or "")[:500],
        link=TRACKER_URL + vuln_id,
        source=source,
    )
