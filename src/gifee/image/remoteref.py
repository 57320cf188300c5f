"""Registry references and copy endpoints (pure).

Rules: a registry reference is `REGISTRY/REPO[:TAG][@sha256:HEX]`; REGISTRY is
the first path segment and must look like a host (it has a `.` or a `:port`,
or is `localhost`), so `busybox:1` is never silently sent to some default
registry. REPO follows the distribution spec's grammar (checked by
reference.py). The local name of a pulled image is the same text without the
digest, so `127.0.0.1:5000/x/busybox:1` pulls to the local name
`127.0.0.1:5000/x/busybox:1`.

Copy endpoints: `docker://REF` (a registry), `oci:DIR[:TAG]` (an OCI layout
directory), `local:NAME` or a bare NAME (the local store).

Plain HTTP is used when asked (`insecure`) and, as Docker does, for loopback
registries; everything else speaks HTTPS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gifee.image.errors import BadReference
from gifee.image.reference import parse_reference

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class RemoteRef:
    registry: str  # host[:port]
    repository: str  # path inside the registry, without the host
    tag: str | None
    digest: str | None

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def local_name(self) -> str:
        """The name the image gets in the local store (the tag defaults to latest)."""
        return f"{self.registry}/{self.repository}:{self.tag or 'latest'}"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def looks_like_host(segment: str) -> bool:
    return "." in segment or ":" in segment or segment == "localhost"


def parse_remote(text: str) -> RemoteRef:
    """`127.0.0.1:5000/x/app:1` -> RemoteRef("127.0.0.1:5000", "x/app", "1", None)."""
    name, at, digest = text.partition("@")
    if at and not _DIGEST.match(digest):
        raise BadReference(f"image reference {text!r}: {digest!r} is not a digest (sha256:<64 hex digits>)")
    registry, slash, rest = name.partition("/")
    if not slash or not rest or not looks_like_host(registry):
        raise BadReference(
            f"image reference {text!r}: must start with the registry host, "
            "e.g. 127.0.0.1:5000/example/busybox:1"
        )
    has_tag = ":" in rest.rpartition("/")[2]
    parsed = parse_reference(name)  # the single grammar check for names (host, segments, tag)
    repository = parsed.repository[len(registry) + 1:]
    return RemoteRef(registry, repository, parsed.tag if has_tag or not at else None, digest or None)


def default_scheme(registry: str, insecure: bool) -> str:
    host = registry.rsplit(":", 1)[0] if not registry.startswith("[") else registry.split("]")[0] + "]"
    return "http" if insecure or host in _LOOPBACK else "https"


@dataclass(frozen=True)
class Endpoint:
    """One side of `gifee image copy`: kind is "docker", "oci" or "local"."""

    kind: str
    remote: RemoteRef | None = None
    path: str = ""  # the layout directory (oci)
    name: str = ""  # the local name (local) or the layout tag (oci; "" when not given)


def parse_endpoint(text: str) -> Endpoint:
    if text.startswith("docker://"):
        return Endpoint("docker", remote=parse_remote(text[len("docker://"):]))
    if text.startswith("oci:"):
        rest = text[len("oci:"):]
        path, colon, tag = rest.rpartition(":")
        if not colon or "/" in tag:
            path, tag = rest, ""
        if not path:
            raise BadReference(f"{text!r}: oci: needs a directory, e.g. oci:/tmp/layout:latest")
        if tag and not re.match(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$", tag):
            raise BadReference(f"{text!r}: tag {tag!r} must be letters, digits, '_', '.', '-'")
        return Endpoint("oci", path=path, name=tag)
    if "://" in text:
        raise BadReference(f"{text!r}: unknown transport (use docker://REF, oci:DIR[:TAG] or local:NAME)")
    name = text[len("local:"):] if text.startswith("local:") else text
    if not name:
        raise BadReference(f"{text!r}: local: needs an image name")
    return Endpoint("local", name=str(parse_reference(name)))
