"""Repository names, tags and digests: the distribution spec's grammar.

Rules: a repository name is `<component>(/<component>)*` where a component is
`[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*` (so no `..`, no empty component, no leading `/` or
`_`: this grammar alone keeps names from escaping the storage root); a tag is
`[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`; a digest is `algorithm:encoded`, and only the
algorithms this registry can verify (sha256, sha512) are accepted, with their exact
lowercase-hex lengths.

Theory of operation: pure functions on strings; they never touch files or sockets.
Parsing returns a value or raises `ValueError`; the server maps that to the spec's
error code for the position (NAME_INVALID, DIGEST_INVALID, MANIFEST_INVALID).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

NAME_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"{NAME_COMPONENT}(?:/{NAME_COMPONENT})*")
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
DIGEST_RE = re.compile(r"([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")
UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")
# Names longer than this make paths nobody can use (filesystem limits), as in distribution.
MAX_NAME_LENGTH = 255
HEX_LENGTHS = {"sha256": 64, "sha512": 128}


def is_valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and NAME_RE.fullmatch(name) is not None


def is_valid_tag(tag: str) -> bool:
    return TAG_RE.fullmatch(tag) is not None


def is_valid_upload_id(upload_id: str) -> bool:
    return UPLOAD_ID_RE.fullmatch(upload_id) is not None


@dataclasses.dataclass(frozen=True, order=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @staticmethod
    def parse(text: str) -> Digest:
        m = DIGEST_RE.fullmatch(text)
        if m is None:
            raise ValueError(f"{text!r} is not a digest")
        algorithm, encoded = m.group(1), m.group(2)
        length = HEX_LENGTHS.get(algorithm)
        if length is None:
            raise ValueError(f"unsupported digest algorithm {algorithm!r}")
        if len(encoded) != length or re.fullmatch(r"[0-9a-f]+", encoded) is None:
            raise ValueError(f"{text!r}: {algorithm} wants {length} lowercase hex digits")
        return Digest(algorithm, encoded)

    @staticmethod
    def of(data: bytes, algorithm: str = "sha256") -> Digest:
        return Digest(algorithm, hashlib.new(algorithm, data).hexdigest())


def new_hasher(algorithm: str) -> hashlib._Hash:
    return hashlib.new(algorithm)


def is_digest_like(reference: str) -> bool:
    """A manifest reference is a digest when it has a colon (tags cannot)."""
    return ":" in reference
