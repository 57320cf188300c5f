"""Alpine package versions, ordered as apk-tools orders them (`apk version -t`; the tokeniser
of apk-tools 2.12 and later, Alpine 3.13 onwards).

Grammar: `digits{.digits}[letter]{_suffix[digits]}[~hexhash][-rN]`, with suffixes
`_alpha _beta _pre _rc` (pre-releases: before the bare version, in that order) and
`_cvs _svn _git _hg _p` (post-releases: after it, in that order).

Order, token by token from the left while both sides have the same kind of token:
- the first number, suffix numbers and the `-r` revision compare as integers;
- a later dot-separated number compares as an integer, unless either side starts with a
  zero: then the digit strings compare as strings (so 1.01 < 1.1 and 1.001 < 1.01);
- a letter by its character, a suffix by its rank (alpha < beta < pre < rc < none < cvs <
  svn < git < hg < p), a commit hash as a string.
When the kinds differ (one side ended or went on differently): a pre-release suffix next makes
that side older; otherwise the side whose next kind comes earlier in (number, letter, suffix,
suffix number, hash, revision, end) is newer: 1.0_rc1 < 1.0 < 1.0-r1 < 1.0a < 1.0.1.

Theory of operation: `parse` checks the grammar, then tokenises into (kind, value) pairs
whose values compare as apk compares them; comparison walks two token tuples. No I/O here.
"""

from __future__ import annotations

import re
from typing import Any

from gifee.scan.versions.base import OrderedVersion
from gifee.scan.versions.errors import InvalidVersion

NAME = "apk"
_GRAMMAR = re.compile(
    r"[0-9]+(?:\.[0-9]+)*[a-z]?(?:_(?:alpha|beta|pre|rc|cvs|svn|git|hg|p)[0-9]*)*(?:~[0-9a-fA-F]+)?(?:-r[0-9]+)?"
)
_TOKEN = re.compile(r"([0-9]+)|\.([0-9]+)|([a-z])|_([a-z]+)|~([0-9a-fA-F]+)|-r([0-9]+)")

# Token kinds in apk-tools' order; the order decides which side is newer when kinds differ.
FIRST_NUMBER, NUMBER, LETTER, SUFFIX, SUFFIX_NUMBER, COMMIT_HASH, REVISION, END = range(8)
SUFFIX_RANK = {"alpha": -4, "beta": -3, "pre": -2, "rc": -1, "cvs": 1, "svn": 2, "git": 3, "hg": 4, "p": 5}

Token = tuple[int, Any]


def _tokenise(s: str) -> tuple[Token, ...]:
    out: list[Token] = []
    previous = None
    for m in _TOKEN.finditer(s):
        first, dotted, letter, suffix, commit, revision = m.groups()
        if first is not None:
            kind = SUFFIX_NUMBER if previous == SUFFIX else FIRST_NUMBER
            out.append((kind, int(first)))
        elif dotted is not None:
            # Leading zero on either side means string order; strings starting "0" sort below
            # all others, so (0, text) vs (1, number) keeps that one total order.
            out.append((NUMBER, (0, dotted) if dotted.startswith("0") else (1, int(dotted))))
        elif letter is not None:
            out.append((LETTER, letter))
        elif suffix is not None:
            out.append((SUFFIX, SUFFIX_RANK[suffix]))
        elif commit is not None:
            out.append((COMMIT_HASH, commit))
        else:
            out.append((REVISION, int(revision)))
        previous = out[-1][0]
    out.append((END, 0))
    return tuple(out)


def _compare_tokens(a: tuple[Token, ...], b: tuple[Token, ...]) -> int:
    for (ka, va), (kb, vb) in zip(a, b, strict=False):
        if ka != kb:
            if ka == SUFFIX and va < 0:
                return -1
            if kb == SUFFIX and vb < 0:
                return 1
            return -1 if ka > kb else 1
        if ka == END:
            return 0
        if va != vb:
            return -1 if va < vb else 1
    return 0


class ApkVersion(OrderedVersion):
    __slots__ = ("_tokens",)

    def __init__(self, text: str, tokens: tuple[Token, ...]) -> None:
        super().__init__(text)
        self._tokens = tokens

    def _compare(self, other: Any) -> int:
        assert isinstance(other, ApkVersion)
        return _compare_tokens(self._tokens, other._tokens)

    def _identity(self) -> tuple[Token, ...]:
        return self._tokens


def parse(text: str) -> ApkVersion:
    if not isinstance(text, str):
        raise InvalidVersion(repr(text), "not a string", NAME)
    s = text.strip()
    if not s:
        raise InvalidVersion(text, "version string is empty", NAME)
    if not _GRAMMAR.fullmatch(s):
        raise InvalidVersion(text, "not digits{.digits}[letter]{_suffix[N]}[~hash][-rN]", NAME)
    return ApkVersion(text, _tokenise(s))


def compare(a: str | ApkVersion, b: str | ApkVersion) -> int:
    va = a if isinstance(a, ApkVersion) else parse(a)
    vb = b if isinstance(b, ApkVersion) else parse(b)
    return va._compare(vb)
