"""The scan report: what is vulnerable, how badly, and what to do about it (pure).

Rules:
- Namespaces: Debian and Ubuntu packages match in the distribution's namespace by their
  SOURCE package and version (what the advisories name); Alpine packages by their origin;
  rpm packages by their binary name in the distribution's namespace; Python distributions in
  "PyPI", npm packages in "npm". Distribution packages without a known distribution, or in a
  namespace no version ordering exists for, are not matched: one warning says so.
- One finding per (advisory, installed binary package, location). A Debian advisory on
  source openssl gives a finding for each installed binary built from it (openssl,
  libssl1.0.0), each with its own upgrade action.
- The action: "upgrade P from INSTALLED to FIXED", or "no fix available for P INSTALLED".
- Severity is `severity.normalize` of what the advisory says.

Theory of operation: `build_report` takes the inventory and a `match` function (namespace,
package, version) -> (findings, warnings); packages sharing (namespace, name, version) are
matched once. Formatting lives in `formats`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from gifee.scan import osrelease, severity
from gifee.scan.inventory import APK, DEB, NPM, PYTHON, RPM, Distro, Inventory, Package
from gifee.scan.versions import InvalidVersion, scheme_for_namespace
from gifee.scan.vulndb.matcher import Finding

Match = Callable[[str, str, str], tuple[list[Finding], list[str]]]
Orderable = Callable[[str], bool]
REPORT_FORMAT = 1
_DISTRO_FAMILIES = {DEB: ("debian", "ubuntu"), APK: ("alpine",), RPM: None}


@dataclass(frozen=True)
class ReportFinding:
    id: str
    aliases: tuple[str, ...]
    severity: str
    package: str
    kind: str
    installed: str
    fixed: str | None
    action: str
    namespace: str
    source_package: str
    path: str
    layer: str
    summary: str = ""
    link: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["aliases"] = list(self.aliases)
        return d


@dataclass
class Report:
    target: str
    distro: Distro | None = None
    namespace: str | None = None
    packages: int = 0
    layers: list[str] = field(default_factory=list)
    findings: list[ReportFinding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        counts = {level: 0 for level in reversed(severity.LEVELS)}
        for f in self.findings:
            counts[f.severity] += 1
        return counts

    def vulnerabilities(self) -> int:
        return len({f.id for f in self.findings})

    def filtered(self, minimum: str) -> Report:
        """The same report with only findings at or above `minimum`."""
        kept = [f for f in self.findings if severity.at_least(f.severity, minimum)]
        return Report(self.target, self.distro, self.namespace, self.packages, self.layers, kept, self.warnings)

    def worst(self) -> str | None:
        return max((f.severity for f in self.findings), key=severity.RANK.__getitem__, default=None)

    def upgrades(self) -> list[str]:
        """One action per vulnerable package: the upgrade to the highest fixed version found,
        which fixes every finding that has a fix (versions ordered by the package's scheme)."""
        best: dict[tuple[str, str, str], tuple[str, int]] = {}
        unfixed: set[tuple[str, str]] = set()
        for f in self.findings:
            key = (f.namespace, f.package, f.installed)
            if f.fixed is None:
                unfixed.add((f.package, f.installed))
                continue
            current = best.get(key)
            if current is None:
                best[key] = (f.fixed, 1)
                continue
            try:
                higher = scheme_for_namespace(f.namespace).compare(f.fixed, current[0]) > 0
            except (KeyError, InvalidVersion):
                higher = False
            best[key] = (f.fixed if higher else current[0], current[1] + 1)
        out = [f"{action(p, installed, fixed)} ({n} finding{'s' if n > 1 else ''})"
               for (_, p, installed), (fixed, n) in sorted(best.items(), key=lambda kv: kv[0][1:])]
        return out + [action(p, installed, None) + " (some findings)" for p, installed in sorted(unfixed)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "target": self.target,
            "distro": self.distro.to_dict() if self.distro else None,
            "namespace": self.namespace,
            "packages": self.packages,
            "layers": list(self.layers),
            "summary": {"findings": len(self.findings), "vulnerabilities": self.vulnerabilities(),
                        "by_severity": self.summary()},
            "upgrades": self.upgrades(),
            "findings": [f.to_dict() for f in self.findings],
            "warnings": list(self.warnings),
        }


def action(package: str, installed: str, fixed: str | None) -> str:
    if fixed:
        return f"upgrade {package} from {installed} to {fixed}"
    return f"no fix available for {package} {installed}"


def _namespace(package: Package, distro_ns: str | None, distro: Distro | None) -> str | None:
    if package.kind == PYTHON:
        return "PyPI"
    if package.kind == NPM:
        return "npm"
    families = _DISTRO_FAMILIES.get(package.kind)
    if distro is None or distro_ns is None:
        return None
    if families is not None and distro.id not in families:
        return None
    return distro_ns


def build_report(target: str, inventory: Inventory, match: Match, layers: list[str] | None = None,
                 orderable: Orderable | None = None) -> Report:
    distro = inventory.distro
    distro_ns = osrelease.namespace(distro) if distro else None
    report = Report(target, distro, distro_ns, len(inventory.packages), list(layers or []),
                    warnings=list(inventory.warnings))
    groups: dict[tuple[str, str, str], list[Package]] = {}
    unmatched: dict[str, int] = {}
    for p in inventory.packages:
        ns = _namespace(p, distro_ns, distro)
        if ns is None or (orderable is not None and not orderable(ns)):
            label = f"{p.kind} packages in {ns}" if ns else f"{p.kind} packages"
            unmatched[label] = unmatched.get(label, 0) + 1
            continue
        groups.setdefault((ns, p.match_name, p.match_version), []).append(p)
    for label, count in sorted(unmatched.items()):
        why = "no version ordering for this namespace" if " in " in label else (
            "the distribution is unknown or does not fit these packages")
        report.warnings.append(f"{count} {label} not matched: {why}")
    seen: set[tuple[str, str, str, str]] = set()
    for (ns, name, version), members in sorted(groups.items()):
        found, problems = match(ns, name, version)
        report.warnings.extend(problems)
        for finding in found:
            a = finding.advisory
            for p in members:
                key = (a.id, p.name, p.version, p.path)
                if key in seen:
                    continue
                seen.add(key)
                report.findings.append(ReportFinding(
                    id=a.id, aliases=a.aliases, severity=severity.normalize(a.severity), package=p.name,
                    kind=p.kind, installed=p.version, fixed=finding.fixed,
                    action=action(p.name, p.version, finding.fixed), namespace=ns, source_package=name,
                    path=p.path, layer=p.layer, summary=a.summary, link=a.link,
                ))
    report.findings.sort(key=lambda f: (-severity.RANK[f.severity], f.package, f.id, f.path))
    return report
