"""OSV records (https://ossf.github.io/osv-schema/), as JSON or YAML (the PyPA advisory
database keeps them as YAML, one file per record).

Rules of the format used here: `id`, `aliases`, `summary`/`details`, `severity` (a list of
{type, score}) or `database_specific.severity`, `withdrawn`, and `affected`: a list of
{package: {ecosystem, name}, ranges: [{type, events: [{introduced|fixed|last_affected|limit}]}],
versions: [...]}. Each affected entry becomes one record in the namespace of its ecosystem
("PyPI"; "Debian:11" becomes "debian:11").

Theory of operation: pure functions from a parsed record (or text) to `ParseResult`. Withdrawn
records are dropped. An affected entry whose range versions do not parse under its
ecosystem's rules is dropped with a warning (a half-understood range could hide a hit); listed
versions are kept as written, since they are matched by spelling first.
"""

from __future__ import annotations

import json
from typing import Any

from gifee.scan.versions import ECOSYSTEMS, InvalidVersion
from gifee.scan.versions import semver as semver_scheme
from gifee.scan.vulndb.model import (
    EVENT_KINDS,
    RANGES,
    Advisory,
    Event,
    ParseResult,
    Range,
    normalize_namespace,
)
from gifee.scan.vulndb.yamltext import YAMLError, load_yaml

SOURCE = "osv"


def is_osv(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("id"), str) and ("affected" in doc or "modified" in doc)


def parse_osv_text(text: str, where: str = "osv", yaml: bool = False) -> ParseResult:
    result = ParseResult()
    try:
        doc = load_yaml(text) if yaml else json.loads(text)
    except (YAMLError, json.JSONDecodeError) as e:
        result.warnings.append(f"{where}: not valid {'YAML' if yaml else 'JSON'}: {e}")
        return result
    docs = doc if isinstance(doc, list) else [doc]
    for record in docs:
        result.extend(parse_osv_record(record, where))
    return result


def _severity(record: dict[str, Any]) -> str:
    specific = record.get("database_specific")
    if isinstance(specific, dict) and isinstance(specific.get("severity"), str):
        return str(specific["severity"])
    for entry in record.get("severity") or []:
        if isinstance(entry, dict) and entry.get("score"):
            return str(entry["score"])
    return ""


def _link(record: dict[str, Any]) -> str:
    for ref in record.get("references") or []:
        if isinstance(ref, dict) and ref.get("type") == "ADVISORY" and isinstance(ref.get("url"), str):
            return str(ref["url"])
    return f"https://osv.dev/vulnerability/{record['id']}"


def _ranges(entry: dict[str, Any], ecosystem: str) -> tuple[Range, ...]:
    """The entry's ranges, checked; raises ValueError with a readable reason."""
    out = []
    scheme = ECOSYSTEMS.get(ecosystem.split(":", 1)[0])
    for rng in entry.get("ranges") or []:
        if not isinstance(rng, dict) or not isinstance(rng.get("events"), list):
            raise ValueError(f"range without events: {str(rng)[:80]!r}")
        kind = str(rng.get("type", ""))
        events = []
        for ev in rng["events"]:
            if not isinstance(ev, dict) or len(ev) != 1:
                raise ValueError(f"event is not a single key: {ev!r}")
            ((key, value),) = ev.items()
            if key not in EVENT_KINDS:
                raise ValueError(f"unknown event {key!r}")
            version = str(value)
            if kind in ("ECOSYSTEM", "SEMVER") and key != "limit" and not (key == "introduced" and version == "0"):
                parse = semver_scheme.parse if kind == "SEMVER" else (scheme.parse if scheme else None)
                if parse is not None:
                    try:
                        parse(version)
                    except InvalidVersion as e:
                        raise ValueError(str(e)) from None
            events.append(Event(key, version))
        out.append(Range(kind, tuple(events)))
    return tuple(out)


def parse_osv_record(record: Any, where: str = "osv") -> ParseResult:
    result = ParseResult()
    if not is_osv(record):
        result.warnings.append(f"{where}: not an OSV record (no id/affected)")
        return result
    if record.get("withdrawn"):
        return result
    vuln_id = record["id"]
    aliases = tuple(str(a) for a in record.get("aliases") or [])
    summary = str(record.get("summary") or record.get("details") or "").strip()
    summary = " ".join(summary.split())[:300]
    severity, link, published = _severity(record), _link(record), str(record.get("published") or "")[:10]
    for entry in record.get("affected") or []:
        package = entry.get("package") if isinstance(entry, dict) else None
        if not isinstance(package, dict) or not package.get("name") or not package.get("ecosystem"):
            result.warnings.append(f"{where}: {vuln_id}: affected entry without package name/ecosystem")
            continue
        ecosystem = str(package["ecosystem"])
        try:
            ranges = _ranges(entry, ecosystem)
        except ValueError as e:
            result.warnings.append(f"{where}: {vuln_id} {package['name']}: {e}")
            continue
        result.advisories.append(
            Advisory(
                id=vuln_id,
                namespace=normalize_namespace(ecosystem),
                package=str(package["name"]),
                status=RANGES,
                ranges=ranges,
                versions=tuple(str(v) for v in entry.get("versions") or []),
                aliases=aliases,
                severity=severity,
                summary=summary,
                link=link,
                source=SOURCE,
                published=published,
            )
        )
    return result
