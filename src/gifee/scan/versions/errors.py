"""The one exception every version scheme raises for input it cannot order."""

from __future__ import annotations


class InvalidVersion(ValueError):
    """A version string that its scheme cannot parse; `reason` says which rule it breaks."""

    def __init__(self, text: str, reason: str, scheme: str = "") -> None:
        self.text = text
        self.reason = reason
        self.scheme = scheme
        kind = f"{scheme} version" if scheme else "version"
        super().__init__(f"invalid {kind} {text!r}: {reason}")
