"""Debian package versions, ordered as `dpkg --compare-versions` orders them.

Rules (deb-version(7)):
- `[epoch:]upstream[-revision]`. The epoch is the decimal number before the first colon
  (absent means 0); the revision is everything after the last hyphen (absent means empty,
  which sorts like "0"); the upstream version is what lies between.
- Epochs compare numerically, then upstream, then revision, each with the same string rule:
  alternate a run of non-digits and a run of digits from the left. Non-digit runs compare
  character by character where `~` sorts before everything, even the end of the run; the end
  of the run sorts before any other character; letters sort before non-letters. Digit runs
  compare as numbers (so 1.0 == 1.00 and 1.01 == 1.1). A missing run is empty / zero.
- Accepted characters: upstream `[A-Za-z0-9.+~:-]` starting with a digit (dpkg itself only
  warns about a non-digit start; we refuse it, no real package has one), revision
  `[A-Za-z0-9.+~]`. Surrounding whitespace is ignored, embedded whitespace is refused.

Theory of operation: `parse` splits and validates once, turning each part into a tuple of
(non-digit weights, number) pairs; comparison walks those pairs. No I/O here.
"""

from __future__ import annotations

import re
from typing import Any

from gifee.scan.versions.base import OrderedVersion
from gifee.scan.versions.errors import InvalidVersion

NAME = "dpkg"
_EPOCH_MAX = 2**31 - 1  # dpkg stores the epoch in an int
_UPSTREAM_CHARS = re.compile(r"[A-Za-z0-9.+~:-]*")
_REVISION_CHARS = re.compile(r"[A-Za-z0-9.+~]*")
_RUNS = re.compile(r"([^0-9]*)([0-9]*)")

# A part is a tuple of (weights of the non-digit run, value of the digit run) pairs.
Part = tuple[tuple[tuple[int, ...], int], ...]


def _weight(char: str) -> int:
    if char == "~":
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _part(text: str) -> Part:
    pairs: list[tuple[tuple[int, ...], int]] = []
    for letters, digits in _RUNS.findall(text):
        if not letters and not digits:
            continue
        pairs.append((tuple(_weight(c) for c in letters), int(digits) if digits else 0))
    # Trailing empty pairs are what a shorter string is padded with: drop them so that
    # spellings dpkg treats as equal ("1.0" vs "1.0" + nothing) have one identity.
    while pairs and pairs[-1] == ((), 0):
        pairs.pop()
    return tuple(pairs)


def _compare_weights(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    for i in range(max(len(a), len(b))):
        wa = a[i] if i < len(a) else 0  # the end of a run weighs 0: after ~, before all else
        wb = b[i] if i < len(b) else 0
        if wa != wb:
            return -1 if wa < wb else 1
    return 0


def _compare_parts(a: Part, b: Part) -> int:
    empty: tuple[tuple[int, ...], int] = ((), 0)
    for i in range(max(len(a), len(b))):
        la, na = a[i] if i < len(a) else empty
        lb, nb = b[i] if i < len(b) else empty
        c = _compare_weights(la, lb)
        if c:
            return c
        if na != nb:
            return -1 if na < nb else 1
    return 0


class DebianVersion(OrderedVersion):
    __slots__ = ("epoch", "upstream", "revision", "_key")

    def __init__(self, text: str, epoch: int, upstream: str, revision: str) -> None:
        super().__init__(text)
        self.epoch = epoch
        self.upstream = upstream
        self.revision = revision
        self._key = (epoch, _part(upstream), _part(revision))

    def _compare(self, other: Any) -> int:
        assert isinstance(other, DebianVersion)
        if self.epoch != other.epoch:
            return -1 if self.epoch < other.epoch else 1
        return _compare_parts(self._key[1], other._key[1]) or _compare_parts(self._key[2], other._key[2])

    def _identity(self) -> tuple[int, Part, Part]:
        return self._key


def parse(text: str) -> DebianVersion:
    if not isinstance(text, str):
        raise InvalidVersion(repr(text), "not a string", NAME)
    s = text.strip()
    if not s:
        raise InvalidVersion(text, "version string is empty", NAME)
    if any(c.isspace() for c in s):
        raise InvalidVersion(text, "version string has embedded spaces", NAME)
    epoch = 0
    head, colon, rest = s.partition(":")
    if colon:
        if not head:
            raise InvalidVersion(text, "epoch in version is empty", NAME)
        if not head.isdigit() or not head.isascii():
            raise InvalidVersion(text, "epoch in version is not number", NAME)
        epoch = int(head)
        if epoch > _EPOCH_MAX:
            raise InvalidVersion(text, "epoch in version is too big", NAME)
        if not rest:
            raise InvalidVersion(text, "nothing after colon in version number", NAME)
        s = rest
    upstream, hyphen, revision = s.rpartition("-")
    if not hyphen:
        upstream, revision = s, ""
    elif not revision:
        raise InvalidVersion(text, "revision number is empty", NAME)
    if not upstream:
        raise InvalidVersion(text, "version number is empty", NAME)
    if not ("0" <= upstream[0] <= "9"):
        raise InvalidVersion(text, "version number does not start with digit", NAME)
    if not _UPSTREAM_CHARS.fullmatch(upstream):
        raise InvalidVersion(text, "invalid character in version number", NAME)
    if not _REVISION_CHARS.fullmatch(revision):
        raise InvalidVersion(text, "invalid character in revision number", NAME)
    return DebianVersion(text, epoch, upstream, revision)


def compare(a: str | DebianVersion, b: str | DebianVersion) -> int:
    va = a if isinstance(a, DebianVersion) else parse(a)
    vb = b if isinstance(b, DebianVersion) else parse(b)
    return va._compare(vb)
