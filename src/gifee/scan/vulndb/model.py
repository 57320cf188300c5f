"""The normalised advisory record every loader produces and the matcher consumes.

One `Advisory` is one vulnerability (or distribution advisory) as it applies to one package in
one namespace: "debian:7" (Debian release by number), "alpine:v3.11" (Alpine release), or an
OSV ecosystem such as "PyPI". What it says about versions is one of:
- `status == "not-affected"`: no version in this namespace is affected;
- `fixed` set: the distribution's own fixed version; older versions are affected and any
  upstream ranges are ignored (a patched Debian openssl still says 1.0.1e);
- `status == "unfixed"`: every version is affected, no fix is known;
- otherwise `ranges` (OSV events: introduced / fixed / last_affected) and `versions` (an
  explicit list of affected versions) decide.
Package names are stored normalised (`normalize_package`) so lookups need not guess spelling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FIXED = "fixed"
UNFIXED = "unfixed"
NOT_AFFECTED = "not-affected"
RANGES = "ranges"
STATUSES = (FIXED, UNFIXED, NOT_AFFECTED, RANGES)

EVENT_KINDS = ("introduced", "fixed", "last_affected", "limit")


@dataclass(frozen=True)
class Event:
    kind: str  # one of EVENT_KINDS
    version: str


@dataclass(frozen=True)
class Range:
    kind: str  # OSV range type: ECOSYSTEM, SEMVER or GIT
    events: tuple[Event, ...]


@dataclass(frozen=True)
class Advisory:
    id: str
    namespace: str
    package: str
    status: str
    fixed: str | None = None
    ranges: tuple[Range, ...] = ()
    versions: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    severity: str = ""
    summary: str = ""
    link: str = ""
    source: str = ""
    published: str = ""

    @property
    def ids(self) -> tuple[str, ...]:
        """The advisory's own id first, then the ids it is also known by (CVE, GHSA, ...)."""
        return (self.id, *self.aliases)


@dataclass
class ParseResult:
    """What a parser got out of one input: the records, and a readable line per problem."""

    advisories: list[Advisory] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def extend(self, other: ParseResult) -> None:
        self.advisories.extend(other.advisories)
        self.warnings.extend(other.warnings)


_PEP503 = re.compile(r"[-_.]+")


def normalize_namespace(namespace: str) -> str:
    """OSV spells distributions "Debian:11", "Alpine:v3.18"; the database says "debian:11"."""
    family, sep, release = namespace.partition(":")
    if family.lower() in ("debian", "alpine", "ubuntu"):
        return f"{family.lower()}{sep}{release}"
    return namespace


def normalize_package(namespace: str, name: str) -> str:
    """PyPI names compare by their PEP 503 form (Flask, flask and flask_ are one package)."""
    if namespace.lower() == "pypi":
        return _PEP503.sub("-", name).lower()
    return name
