"""Python package versions (PEP 440), parsed, normalised and ordered as the spec says.

Rules:
- Public form `[N!]N(.N)*[{a|b|rc}N][.postN][.devN]`, with an optional local part `+label`.
- Accepted spellings (normalised away): any case; a leading `v`; surrounding whitespace;
  `alpha`/`beta`/`c`/`pre`/`preview` for a/b/rc; `-`, `_` or `.` (or nothing) before a
  pre-release, post-release or dev-release; `rev`/`r` for post; an implicit post-release
  `1.0-1`; a missing pre/post/dev number means 0; `-` and `_` in the local part mean `.`.
- Order: epoch; release numbers (trailing zeros ignored, 1.0 == 1.0.0); then a dev release of
  a bare version < its pre-releases < the bare version < its post-releases, with dev releases
  before the release they belong to at every level (1.0a1.dev1 < 1.0a1 < 1.0a1.post1.dev1 <
  1.0a1.post1); then the local part: none < any; segments compared one by one, numbers as
  numbers and above any letters segment, letter segments case-insensitively, more segments
  above fewer when the shorter is a prefix.

Theory of operation: one regular expression takes the text apart; `parse` builds a sort key
of plain tuples (no infinities) from the parts, and equality/ordering/hashing use that key.
No I/O here; `packaging` is used only by the tests, as an oracle.
"""

from __future__ import annotations

import re
from typing import Any

from gifee.scan.versions.base import OrderedVersion
from gifee.scan.versions.errors import InvalidVersion

NAME = "pep440"
_PATTERN = re.compile(
    r"""
    v?
    (?:(?P<epoch>[0-9]+)!)?
    (?P<release>[0-9]+(?:\.[0-9]+)*)
    (?:[-_.]?(?P<pre_l>alpha|a|beta|b|preview|pre|c|rc)[-_.]?(?P<pre_n>[0-9]+)?)?
    (?:
        -(?P<post_implicit>[0-9]+)
      | [-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n>[0-9]+)?
    )?
    (?:[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>[0-9]+)?)?
    (?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?
    """,
    re.VERBOSE | re.IGNORECASE | re.ASCII,
)
PRE_LABELS = {"a": "a", "alpha": "a", "b": "b", "beta": "b", "rc": "rc", "c": "rc", "pre": "rc", "preview": "rc"}
PRE_RANK = {"a": 0, "b": 1, "rc": 2}


class Pep440Version(OrderedVersion):
    __slots__ = ("epoch", "release", "pre", "post", "dev", "local", "_key")

    def __init__(
        self,
        text: str,
        epoch: int,
        release: tuple[int, ...],
        pre: tuple[str, int] | None,
        post: int | None,
        dev: int | None,
        local: tuple[int | str, ...] | None,
    ) -> None:
        super().__init__(text)
        self.epoch, self.release, self.pre, self.post, self.dev, self.local = epoch, release, pre, post, dev, local
        trimmed = list(release)
        while len(trimmed) > 1 and trimmed[-1] == 0:
            trimmed.pop()
        if pre is not None:
            pre_key: tuple[int, int, int] = (1, PRE_RANK[pre[0]], pre[1])
        elif post is None and dev is not None:
            pre_key = (0, 0, 0)  # 1.0.dev0 sorts before 1.0a0
        else:
            pre_key = (2, 0, 0)
        post_key = (0, 0) if post is None else (1, post)
        dev_key = (1, 0) if dev is None else (0, dev)
        local_key = (0, ()) if local is None else (
            1, tuple((1, seg, "") if isinstance(seg, int) else (0, 0, seg) for seg in local)
        )
        self._key = (epoch, tuple(trimmed), pre_key, post_key, dev_key, local_key)

    @property
    def public(self) -> str:
        parts = [f"{self.epoch}!" if self.epoch else "", ".".join(map(str, self.release))]
        if self.pre is not None:
            parts.append(f"{self.pre[0]}{self.pre[1]}")
        if self.post is not None:
            parts.append(f".post{self.post}")
        if self.dev is not None:
            parts.append(f".dev{self.dev}")
        return "".join(parts)

    @property
    def normalized(self) -> str:
        """The canonical spelling PEP 440 defines (what `packaging` prints)."""
        if self.local is None:
            return self.public
        return self.public + "+" + ".".join(str(s) for s in self.local)

    def _compare(self, other: Any) -> int:
        assert isinstance(other, Pep440Version)
        return (self._key > other._key) - (self._key < other._key)

    def _identity(self) -> object:
        return self._key


def parse(text: str) -> Pep440Version:
    if not isinstance(text, str):
        raise InvalidVersion(repr(text), "not a string", NAME)
    m = _PATTERN.fullmatch(text.strip())
    if m is None:
        raise InvalidVersion(text, "not a PEP 440 version", NAME)
    g = m.groupdict()
    pre = None
    if g["pre_l"]:
        pre = (PRE_LABELS[g["pre_l"].lower()], int(g["pre_n"] or 0))
    post = None
    if g["post_implicit"]:
        post = int(g["post_implicit"])
    elif g["post_l"]:
        post = int(g["post_n"] or 0)
    dev = int(g["dev_n"] or 0) if g["dev_l"] else None
    local = None
    if g["local"]:
        local = tuple(
            int(seg) if seg.isdigit() else seg.lower() for seg in re.split(r"[-_.]", g["local"])
        )
    return Pep440Version(
        text, int(g["epoch"] or 0), tuple(int(n) for n in g["release"].split(".")), pre, post, dev, local
    )


def compare(a: str | Pep440Version, b: str | Pep440Version) -> int:
    va = a if isinstance(a, Pep440Version) else parse(a)
    vb = b if isinstance(b, Pep440Version) else parse(b)
    return va._compare(vb)
