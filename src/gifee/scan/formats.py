"""A report as text (pure): a table for people, JSON, and SARIF 2.1.0 for code-scanning tools.

Rules: every format shows every finding of the report it is given (filtering happens before)
and the warnings. SARIF: one rule per vulnerability id (`runs[].tool.driver.rules`), one
result per finding with `ruleId`/`ruleIndex`, `level` (critical and high -> error, medium and
unknown -> warning, low and negligible -> note), a message carrying the update action, and
the package database file as the location (`artifactLocation.uri`, relative to the image
root); warnings become `invocations[].toolExecutionNotifications`.
"""

from __future__ import annotations

import json
from typing import Any

from gifee.scan.report import Report, ReportFinding

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_SARIF_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "unknown": "warning",
                "low": "note", "negligible": "note"}
# GitHub code scanning orders by this numeric property; the middle of each CVSS band.
_SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "2.0", "negligible": "0.5",
                      "unknown": "5.0"}


def _ids(f: ReportFinding) -> str:
    return " ".join((f.id, *f.aliases[:3])) + (" ..." if len(f.aliases) > 3 else "")


def _describe(report: Report) -> str:
    d = report.distro
    what = f"{d.id} {d.version_id}".strip() if d else "unknown distribution"
    return f"{report.target} ({what}, {len(report.layers)} layers, {report.packages} packages)"


def summary_line(report: Report) -> str:
    counts = ", ".join(f"{n} {level}" for level, n in report.summary().items() if n)
    return (f"{len(report.findings)} findings ({report.vulnerabilities()} vulnerabilities)"
            + (f": {counts}" if counts else "") + f"; {len(report.warnings)} warnings")


def table(report: Report, max_warnings: int = 20) -> str:
    rows = [("SEVERITY", "VULNERABILITY", "PACKAGE", "INSTALLED", "FIXED")]
    rows += [(f.severity, _ids(f), f.package, f.installed, f.fixed or "-") for f in report.findings]
    widths = [min(max(len(r[i]) for r in rows), 48) for i in range(4)]
    lines = [f"scan of {_describe(report)}"]
    if report.findings:
        lines += ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows]
        lines += ["", "Actions:"] + [f"  {a}" for a in report.upgrades()]
    else:
        lines.append("no known vulnerabilities")
    lines += ["", "Summary: " + summary_line(report)]
    for w in report.warnings[:max_warnings]:
        lines.append(f"warning: {w}")
    if len(report.warnings) > max_warnings:
        lines.append(f"warning: ... and {len(report.warnings) - max_warnings} more (--format json shows all)")
    return "\n".join(lines) + "\n"


def as_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2) + "\n"


def sarif(report: Report, tool_version: str = "") -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    rule_index: dict[str, int] = {}
    results: list[dict[str, Any]] = []
    for f in report.findings:
        if f.id not in rule_index:
            rule_index[f.id] = len(rules)
            rule: dict[str, Any] = {
                "id": f.id,
                "shortDescription": {"text": f"{f.id} in {f.source_package}" + (f" ({', '.join(f.aliases)})" if f.aliases else "")},
                "fullDescription": {"text": f.summary or f"{f.id}: vulnerability in {f.source_package}"},
                "defaultConfiguration": {"level": _SARIF_LEVEL[f.severity]},
                "properties": {"tags": ["security", "vulnerability", f.kind], "security-severity": _SECURITY_SEVERITY[f.severity],
                               "severity": f.severity, "aliases": list(f.aliases)},
            }
            if f.link:
                rule["helpUri"] = f.link
            rules.append(rule)
        results.append({
            "ruleId": f.id,
            "ruleIndex": rule_index[f.id],
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": f"{_ids(f)}: {f.package} {f.installed} is vulnerable; {f.action}"},
            "locations": [{
                "physicalLocation": {"artifactLocation": {"uri": f.path.lstrip("/") or report.target}},
                "logicalLocations": [{"name": f.package, "kind": "package",
                                      "fullyQualifiedName": f"{f.namespace}/{f.package}@{f.installed}"}],
            }],
            "properties": {"installed": f.installed, "fixed": f.fixed, "severity": f.severity, "layer": f.layer,
                           "namespace": f.namespace},
        })
    driver: dict[str, Any] = {"name": "gifee-scan", "rules": rules}
    if tool_version:
        driver["version"] = tool_version
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": driver},
            "results": results,
            "invocations": [{
                "executionSuccessful": True,
                "toolExecutionNotifications": [{"level": "warning", "message": {"text": w}} for w in report.warnings],
            }],
            "properties": {"target": report.target, "summary": report.summary()},
        }],
    }


def as_sarif(report: Report, tool_version: str = "") -> str:
    return json.dumps(sarif(report, tool_version), indent=2) + "\n"


FORMATTERS = {"table": table, "json": as_json, "sarif": as_sarif}
