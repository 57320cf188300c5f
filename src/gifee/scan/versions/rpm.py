"""RPM package versions, ordered as rpm's `rpmvercmp` / `rpm.vercmp` order them (rpm >= 4.15).

Rules:
- `[epoch:]version[-release]`: the epoch is the number before a colon (absent means 0), the
  release is what follows the last hyphen. Epochs compare numerically, then versions, then
  releases, each with rpmvercmp. A missing release sorts before any release (rpm itself
  skips the release when either side lacks one, which is not a total order).
- rpmvercmp splits a string into alphanumeric segments; every other character is only a
  separator (so 1.0 == 1_0 == 1..0). Digit runs and letter runs are separate segments
  (1a == 1.a). Segment by segment: `~` sorts before anything, even the end; `^` sorts after
  the end but before any segment; a numeric segment is newer than an alphabetic one; numbers
  compare numerically (leading zeros ignored), letters as ASCII strings. When one side runs
  out, the side with segments left is newer.
- Only ASCII letters and digits form segments; whitespace and control characters are refused.

Theory of operation: `parse` tokenises each part once into tuples of segments; comparison walks
the token tuples exactly as rpmvercmp walks the strings. No I/O here.
"""

from __future__ import annotations

import re
from typing import Any

from gifee.scan.versions.base import OrderedVersion
from gifee.scan.versions.errors import InvalidVersion

NAME = "rpm"
_TOKENS = re.compile(r"[0-9]+|[A-Za-z]+|~|\^")
_TILDE: tuple[int, str] = (0, "~")
_CARET: tuple[int, str] = (0, "^")
# A segment is (1, digits-as-int-text) for numbers, (2, letters) for letters, or a marker.
Token = tuple[int, Any]
Tokens = tuple[Token, ...]


def _tokens(text: str) -> Tokens:
    out: list[Token] = []
    for t in _TOKENS.findall(text):
        if t == "~":
            out.append(_TILDE)
        elif t == "^":
            out.append(_CARET)
        elif t[0].isdigit():
            out.append((1, int(t)))
        else:
            out.append((2, t))
    return tuple(out)


def _vercmp(a: Tokens, b: Tokens) -> int:
    i = 0
    while i < len(a) or i < len(b):
        ta = a[i] if i < len(a) else None
        tb = b[i] if i < len(b) else None
        i += 1
        if ta == _TILDE or tb == _TILDE:
            if ta != _TILDE:
                return 1
            if tb != _TILDE:
                return -1
            continue
        if ta == _CARET or tb == _CARET:
            if ta is None:
                return -1
            if tb is None:
                return 1
            if ta != _CARET:
                return 1
            if tb != _CARET:
                return -1
            continue
        if ta is None:
            return -1  # the side with segments left is newer
        if tb is None:
            return 1
        if ta[0] != tb[0]:
            return 1 if ta[0] == 1 else -1  # numeric beats alphabetic
        if ta[1] != tb[1]:
            return -1 if ta[1] < tb[1] else 1
    return 0


def vercmp(a: str, b: str) -> int:
    """rpmvercmp on two bare strings (one part of an EVR)."""
    return _vercmp(_tokens(a), _tokens(b))


class RpmVersion(OrderedVersion):
    __slots__ = ("epoch", "version", "release", "_key")

    def __init__(self, text: str, epoch: int, version: str, release: str | None) -> None:
        super().__init__(text)
        self.epoch = epoch
        self.version = version
        self.release = release
        self._key = (epoch, _tokens(version), None if release is None else _tokens(release))

    def _compare(self, other: Any) -> int:
        assert isinstance(other, RpmVersion)
        if self.epoch != other.epoch:
            return -1 if self.epoch < other.epoch else 1
        c = _vercmp(self._key[1], other._key[1])
        if c:
            return c
        ra, rb = self._key[2], other._key[2]
        if ra is None or rb is None:
            return 0 if ra is rb else (-1 if ra is None else 1)
        return _vercmp(ra, rb)

    def _identity(self) -> object:
        return self._key


def parse(text: str) -> RpmVersion:
    if not isinstance(text, str):
        raise InvalidVersion(repr(text), "not a string", NAME)
    s = text.strip()
    if not s:
        raise InvalidVersion(text, "version string is empty", NAME)
    if any(c.isspace() or not c.isprintable() or not c.isascii() for c in s):
        raise InvalidVersion(text, "whitespace, control or non-ASCII character in version", NAME)
    epoch = 0
    head, colon, rest = s.partition(":")
    if colon:
        if not re.fullmatch(r"[0-9]+", head):
            raise InvalidVersion(text, "epoch is not a number", NAME)
        epoch = int(head)
        s = rest
    version, hyphen, release = s.rpartition("-")
    if not hyphen:
        version, release_or_none = s, None
    else:
        if not release:
            raise InvalidVersion(text, "release is empty", NAME)
        release_or_none = release
    if not version:
        raise InvalidVersion(text, "version is empty", NAME)
    if ":" in version:
        raise InvalidVersion(text, "more than one colon", NAME)
    return RpmVersion(text, epoch, version, release_or_none)


def compare(a: str | RpmVersion, b: str | RpmVersion) -> int:
    va = a if isinstance(a, RpmVersion) else parse(a)
    vb = b if isinstance(b, RpmVersion) else parse(b)
    return va._compare(vb)
