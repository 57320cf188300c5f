"""The shape every parsed version shares: the original text for display, an order that is the
scheme's own comparison, and equality/hashing that agree with that order (two spellings that
compare equal, such as dpkg's 1.0 and 1.00, are equal and hash alike)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any


class OrderedVersion:
    """Subclasses provide `_compare` (the scheme's -1/0/1 against the same type) and `_identity`
    (a value equal exactly when `_compare` says 0)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def _compare(self, other: Any) -> int:
        raise NotImplementedError

    def _identity(self) -> Hashable:
        raise NotImplementedError

    def _same(self, other: object) -> bool:
        return type(other) is type(self)

    def __eq__(self, other: object) -> bool:
        if not self._same(other):
            return NotImplemented
        return self._compare(other) == 0

    def __lt__(self, other: object) -> bool:
        if not self._same(other):
            return NotImplemented
        return self._compare(other) < 0

    def __le__(self, other: object) -> bool:
        if not self._same(other):
            return NotImplemented
        return self._compare(other) <= 0

    def __gt__(self, other: object) -> bool:
        if not self._same(other):
            return NotImplemented
        return self._compare(other) > 0

    def __ge__(self, other: object) -> bool:
        if not self._same(other):
            return NotImplemented
        return self._compare(other) >= 0

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._identity()))

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.text!r})"


def sign(value: int) -> int:
    return (value > 0) - (value < 0)
