"""Semantic versions (semver 2.0.0), ordered by the spec's precedence rules.

Rules:
- `MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`; the three numbers have no leading zeros;
  pre-release identifiers are dot-separated, non-empty `[0-9A-Za-z-]`, numeric ones without
  leading zeros; build identifiers are dot-separated, non-empty `[0-9A-Za-z-]`. A leading `v`
  or `=` (as Go modules and npm write them) and surrounding whitespace are tolerated.
- Precedence: major, minor, patch numerically; a version with a pre-release is lower than the
  same version without; pre-releases compare identifier by identifier: numeric identifiers
  numerically and below alphanumeric ones, alphanumeric ones in ASCII order, and a longer list
  is higher when the shorter is its prefix. Build metadata is ignored (1.0.0+a == 1.0.0+b).

Theory of operation: a regular expression per the spec's grammar, then a sort key of plain
tuples; equality and hashing follow the key, so they ignore build metadata too. No I/O here.
"""

from __future__ import annotations

import re
from typing import Any

from gifee.scan.versions.base import OrderedVersion
from gifee.scan.versions.errors import InvalidVersion

NAME = "semver"
_NUMBER = r"0|[1-9][0-9]*"
_PRE_ID = r"0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*"
_PATTERN = re.compile(
    rf"[v=]?(?P<major>{_NUMBER})\.(?P<minor>{_NUMBER})\.(?P<patch>{_NUMBER})"
    rf"(?:-(?P<pre>(?:{_PRE_ID})(?:\.(?:{_PRE_ID}))*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?",
    re.ASCII,
)


class SemVersion(OrderedVersion):
    __slots__ = ("major", "minor", "patch", "prerelease", "build", "_key")

    def __init__(
        self, text: str, major: int, minor: int, patch: int, prerelease: tuple[int | str, ...], build: str
    ) -> None:
        super().__init__(text)
        self.major, self.minor, self.patch = major, minor, patch
        self.prerelease, self.build = prerelease, build
        pre_key = (1, ()) if not prerelease else (
            0, tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in prerelease)
        )
        self._key = (major, minor, patch, pre_key)

    def _compare(self, other: Any) -> int:
        assert isinstance(other, SemVersion)
        return (self._key > other._key) - (self._key < other._key)

    def _identity(self) -> object:
        return self._key


def parse(text: str) -> SemVersion:
    if not isinstance(text, str):
        raise InvalidVersion(repr(text), "not a string", NAME)
    m = _PATTERN.fullmatch(text.strip())
    if m is None:
        raise InvalidVersion(text, "not MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD] (semver 2.0.0)", NAME)
    pre = tuple(int(p) if p.isdigit() else p for p in m["pre"].split(".")) if m["pre"] else ()
    return SemVersion(text, int(m["major"]), int(m["minor"]), int(m["patch"]), pre, m["build"] or "")


def compare(a: str | SemVersion, b: str | SemVersion) -> int:
    va = a if isinstance(a, SemVersion) else parse(a)
    vb = b if isinstance(b, SemVersion) else parse(b)
    return va._compare(vb)
