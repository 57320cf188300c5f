"""Image names, tags and trust prefixes (pure).

Rules: a name is `repository[:tag]`, the tag defaulting to "latest". A repository
is slash-separated path segments; the first may be a registry host with a port
(`localhost:5000/app`), the others are lower-case `[a-z0-9]` runs joined by
`.`, `_`, `__` or `-` runs, as in the distribution spec. A trust prefix is a
repository (no tag) and covers itself and everything below it, segment-wise:
`example.com/app` covers `example.com/app/x`, never `example.com/apple`.

Theory of operation: everything is string parsing; nothing here touches disk.
`parse_reference` is the single place a user's name becomes a `Reference`;
whatever passes it is safe to use as a directory path below the trust store.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from gifee.image.errors import BadReference

DEFAULT_TAG = "latest"
_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?$")
_SEGMENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_MAX_NAME = 255


class Reference(NamedTuple):
    """A parsed image name (a named tuple: cheaper to define than a frozen dataclass)."""

    repository: str
    tag: str

    def __str__(self) -> str:
        return f"{self.repository}:{self.tag}"


def _check_repository(repository: str, what: str) -> None:
    if not repository or len(repository) > _MAX_NAME:
        raise BadReference(f"{what} {repository!r}: must be 1 to {_MAX_NAME} characters")
    segments = repository.split("/")
    first_ok = _SEGMENT.match(segments[0]) or (len(segments) > 1 and _HOST.match(segments[0]))
    if not first_ok or not all(_SEGMENT.match(s) for s in segments[1:]):
        raise BadReference(
            f"{what} {repository!r}: path segments must be lower-case letters and digits joined by "
            "'.', '_' or '-' (the first may be a host[:port])"
        )


def parse_reference(text: str) -> Reference:
    """`example.com/app:1.0` -> Reference("example.com/app", "1.0"); the tag defaults to latest."""
    if "@" in text:
        raise BadReference(f"image name {text!r}: digests are given alone, as sha256:<hex>")
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        repository, tag = text[:colon], text[colon + 1:]
        if not _TAG.match(tag):
            raise BadReference(f"image name {text!r}: tag {tag!r} must be letters, digits, '_', '.', '-'")
    else:
        repository, tag = text, DEFAULT_TAG
    _check_repository(repository, "image name")
    return Reference(repository, tag)


def parse_prefix(text: str) -> str:
    """A trust prefix: a repository without a tag; a trailing slash is dropped."""
    prefix = text.rstrip("/")
    if ":" in prefix.rpartition("/")[2] and "/" in prefix:
        raise BadReference(f"trust prefix {text!r}: a prefix has no tag")
    _check_repository(prefix, "trust prefix")
    return prefix


def prefix_covers(prefix: str, repository: str) -> bool:
    """Whether trust given to `prefix` extends to `repository` (whole path segments only)."""
    return repository == prefix or repository.startswith(prefix + "/")


def prefixes_of(repository: str) -> list[str]:
    """Every prefix that covers `repository`, shortest first."""
    segments = repository.split("/")
    return ["/".join(segments[: i + 1]) for i in range(len(segments))]
