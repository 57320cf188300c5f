"""Does an advisory affect an installed version, and which version fixes it?

Rules, in order (see `model` for the record):
1. "not-affected" never matches.
2. A distribution's own fixed version wins over everything else: installed < fixed matches,
   and `fixed` is the version to recommend.
3. "unfixed" matches every version; there is nothing to recommend.
4. Otherwise OSV semantics: each ECOSYSTEM or SEMVER range is a set of intervals built from
   its sorted events — [introduced, fixed) or [introduced, last_affected], an introduced with
   nothing after it is open-ended, introduced "0" means from the beginning; `limit` events
   and GIT ranges cannot be judged from a version number and are ignored. An installed
   version listed in `versions` matches too. The fix to recommend is the `fixed` event that
   closes the interval the installed version is in.

Theory of operation: pure functions over one advisory and a comparison function (the
ecosystem's `compare`); they raise `InvalidVersion` when the installed version or an advisory
version cannot be parsed. `match_package` is the convenience the scanner calls: it looks up a
package in a `VulnDB` and turns every such error into a warning instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cmp_to_key
from typing import TYPE_CHECKING, Any

from gifee.scan.versions import InvalidVersion, scheme_for_namespace
from gifee.scan.versions import semver as semver_scheme
from gifee.scan.vulndb.model import FIXED, NOT_AFFECTED, UNFIXED, Advisory, Event, Range

if TYPE_CHECKING:
    from gifee.scan.vulndb.store import VulnDB

Compare = Callable[[Any, Any], int]
_ZERO = "0"


@dataclass(frozen=True)
class Finding:
    advisory: Advisory
    installed: str
    fixed: str | None  # the version to upgrade to, when one is known


def _intervals(rng: Range, compare: Compare) -> list[tuple[Event | None, Event | None]]:
    """(start, end) pairs; start None means from the beginning, end None means open-ended."""

    def order(a: Event, b: Event) -> int:
        if a.version == _ZERO and a.kind == "introduced":
            return 0 if b.version == _ZERO and b.kind == "introduced" else -1
        if b.version == _ZERO and b.kind == "introduced":
            return 1
        return compare(a.version, b.version)

    events = sorted((e for e in rng.events if e.kind != "limit"), key=cmp_to_key(order))
    out: list[tuple[Event | None, Event | None]] = []
    start: Event | None = None
    open_interval = False
    for event in events:
        if event.kind == "introduced":
            if not open_interval:
                start, open_interval = (None if event.version == _ZERO else event), True
        elif open_interval:
            out.append((start, event))
            open_interval = False
    if open_interval:
        out.append((start, None))
    return out


def _range_compare(rng: Range, compare: Compare) -> Compare:
    return semver_scheme.compare if rng.kind == "SEMVER" else compare


def _containing_interval(advisory: Advisory, installed: str, compare: Compare) -> tuple[bool, str | None]:
    for rng in advisory.ranges:
        if rng.kind not in ("ECOSYSTEM", "SEMVER"):
            continue
        cmp = _range_compare(rng, compare)
        for start, end in _intervals(rng, cmp):
            if start is not None and cmp(installed, start.version) < 0:
                continue
            if end is None:
                return True, None
            c = cmp(installed, end.version)
            if (end.kind == "fixed" and c < 0) or (end.kind == "last_affected" and c <= 0):
                return True, end.version if end.kind == "fixed" else None
    return False, None


def affected(advisory: Advisory, installed: str, compare: Compare) -> bool:
    """True when `installed` is a vulnerable version according to `advisory`."""
    if advisory.status == NOT_AFFECTED:
        return False
    if advisory.fixed is not None:
        return compare(installed, advisory.fixed) < 0
    if advisory.status == UNFIXED:
        return True
    hit, _ = _containing_interval(advisory, installed, compare)
    if hit:
        return True
    if installed in advisory.versions:
        return True
    for listed in advisory.versions:
        try:
            if compare(installed, listed) == 0:
                return True
        except InvalidVersion:
            continue  # OSV lists may hold legacy spellings the scheme refuses; they match nothing
    return False


def fixed_version(advisory: Advisory, installed: str, compare: Compare) -> str | None:
    """The version that fixes `advisory` for an affected `installed` version, when known."""
    if advisory.status == FIXED or advisory.fixed is not None:
        return advisory.fixed
    if advisory.status == UNFIXED:
        return None
    return _containing_interval(advisory, installed, compare)[1]


def match_package(db: VulnDB, namespace: str, package: str, installed: str) -> tuple[list[Finding], list[str]]:
    """Every advisory in `db` that affects `package` at version `installed` in `namespace`,
    with the fix to recommend; problems (a malformed version here or in the data, an
    ecosystem we cannot order) come back as warnings, never as exceptions."""
    try:
        compare = scheme_for_namespace(namespace).compare
    except KeyError as e:
        return [], [str(e.args[0])]
    findings: list[Finding] = []
    warnings: list[str] = []
    try:
        compare(installed, installed)
    except InvalidVersion as e:
        return [], [f"{namespace} {package}: {e}"]
    for advisory in db.advisories(namespace, package):
        try:
            if affected(advisory, installed, compare):
                findings.append(Finding(advisory, installed, fixed_version(advisory, installed, compare)))
        except InvalidVersion as e:
            warnings.append(f"{advisory.id} ({namespace} {package}): {e}")
    return findings, warnings
