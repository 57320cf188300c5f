"""The /v2 path grammar: which endpoint a path names.

Rules: repository names contain slashes, so a path is split from the right at the last
`/blobs/`, `/manifests/`, `/tags/list` or `/referrers/` marker, and what is left of it
must be a valid name (else NAME_INVALID). References are checked per endpoint: blob and
referrer paths take a digest, manifest paths a tag or a digest, upload paths an upload
id of this registry's form (32 hex). Percent-decoding has already happened (aiohttp),
so `..` and `%2e%2e` arrive the same way and fail the name grammar.

Nothing here does I/O; `match` returns a `Route` or None (an unknown path, 404).
"""

from __future__ import annotations

import dataclasses
import enum
import re

from gifee.registry.errors import RegistryError
from gifee.registry.names import Digest, is_digest_like, is_valid_name, is_valid_tag, is_valid_upload_id


class Endpoint(enum.Enum):
    BASE = "base"
    BLOB = "blob"
    UPLOADS = "uploads"  # POST: start (or finish, or mount)
    UPLOAD = "upload"  # GET/PATCH/PUT/DELETE one upload session
    MANIFEST = "manifest"
    TAGS = "tags"
    REFERRERS = "referrers"


@dataclasses.dataclass(frozen=True)
class Route:
    endpoint: Endpoint
    name: str = ""
    reference: str = ""  # digest, tag or upload id

    @property
    def digest(self) -> Digest:
        return Digest.parse(self.reference)


PATTERNS: list[tuple[Endpoint, re.Pattern[str]]] = [
    (Endpoint.UPLOADS, re.compile(r"/v2/(?P<name>.+)/blobs/uploads/?")),
    (Endpoint.UPLOAD, re.compile(r"/v2/(?P<name>.+)/blobs/uploads/(?P<ref>[^/]+)")),
    (Endpoint.BLOB, re.compile(r"/v2/(?P<name>.+)/blobs/(?P<ref>[^/]+)")),
    (Endpoint.MANIFEST, re.compile(r"/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)")),
    (Endpoint.TAGS, re.compile(r"/v2/(?P<name>.+)/tags/list")),
    (Endpoint.REFERRERS, re.compile(r"/v2/(?P<name>.+)/referrers/(?P<ref>[^/]+)")),
]


def match(path: str) -> Route | None:
    """The route of a path; raises RegistryError for a malformed name or reference."""
    if path in ("/v2", "/v2/"):
        return Route(Endpoint.BASE)
    for endpoint, pattern in PATTERNS:
        m = pattern.fullmatch(path)
        if m is None:
            continue
        name = m.group("name")
        if not is_valid_name(name):
            raise RegistryError("NAME_INVALID", {"name": name[:300]})
        ref = m.groupdict().get("ref") or ""
        check_reference(endpoint, ref)
        return Route(endpoint, name, ref)
    return None


def check_reference(endpoint: Endpoint, ref: str) -> None:
    if endpoint in (Endpoint.BLOB, Endpoint.REFERRERS):
        try:
            Digest.parse(ref)
        except ValueError as e:
            raise RegistryError("DIGEST_INVALID", str(e)) from None
    elif endpoint is Endpoint.MANIFEST:
        if is_digest_like(ref):
            try:
                Digest.parse(ref)
            except ValueError as e:
                raise RegistryError("DIGEST_INVALID", str(e)) from None
        elif not is_valid_tag(ref):
            raise RegistryError("MANIFEST_INVALID", f"{ref[:200]!r} is not a valid tag", status=400)
    elif endpoint is Endpoint.UPLOAD and not is_valid_upload_id(ref):
        raise RegistryError("BLOB_UPLOAD_UNKNOWN", {"upload": ref[:100]})
