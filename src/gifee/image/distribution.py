"""The OCI distribution protocol's decisions, without I/O (pure).

Rules:
- Auth challenges (`WWW-Authenticate`) are parsed per RFC 7235: a scheme and
  comma-separated `key="quoted value"` or `key=token` parameters; a Bearer
  challenge names the token realm, service and scope; the token answer is
  `{"token"}` or `{"access_token"}`.
- Resuming a download: `bytes=N-` is asked for when N bytes are already on
  disk; a 206 counts only if its Content-Range starts exactly at N and ends at
  the blob's last byte; anything else restarts from zero.
- Uploads: blobs up to `chunk` bytes go in one PUT, larger ones as PATCH
  chunks with `Content-Range: start-end` (inclusive).
- Signatures are found through the referrers API or, on registries without it,
  through the fallback tag `sha256-<hex>` holding an image index of referrers.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from gifee.image import oci
from gifee.image.errors import BadImage

MANIFEST_ACCEPT = ", ".join([oci.MANIFEST, oci.INDEX, oci.DOCKER_MANIFEST, oci.DOCKER_LIST])
MAX_MANIFEST = 4 << 20
ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


# --- auth ---------------------------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "basic", "bearer", ...
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge:
    """`Bearer realm="https://r/token",service="reg",scope="repository:a:pull"` -> Challenge."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " ,":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().lower()
        i = eq + 1
        if i < n and rest[i] == '"':
            i += 1
            value = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(rest[i])
                i += 1
            i += 1
            params[key] = "".join(value)
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            params[key] = rest[i:end].strip()
            i = end
    return Challenge(scheme.lower(), params)


def token_url(challenge: Challenge, scopes: list[str]) -> str:
    realm = challenge.params.get("realm", "")
    if not realm.startswith(("http://", "https://")):
        raise BadImage(f"bearer challenge: realm {realm!r} is not an http(s) URL")
    query: list[tuple[str, str]] = []
    if "service" in challenge.params:
        query.append(("service", challenge.params["service"]))
    query += [("scope", s) for s in scopes]
    sep = "&" if "?" in realm else "?"
    return realm + (sep + urllib.parse.urlencode(query) if query else "")


def challenge_scopes(challenge: Challenge) -> list[str]:
    return challenge.params.get("scope", "").split()


def token_from(body: bytes) -> str:
    try:
        answer = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        answer = None
    token = answer.get("token") or answer.get("access_token") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        raise BadImage("token endpoint: the answer holds no token")
    return token


def repository_scope(repository: str, *actions: str) -> str:
    return f"repository:{repository}:{','.join(actions)}"


# --- downloads ------------------------------------------------------------------


def range_for(have: int, size: int) -> str | None:
    """The Range header to ask for the rest of a blob of which `have` bytes are on disk."""
    return f"bytes={have}-" if 0 < have < size else None


def parse_content_range(header: str | None) -> tuple[int, int, int | None] | None:
    """`bytes 10-99/100` -> (10, 99, 100); `*` total -> None; malformed -> None."""
    if not header or not header.startswith("bytes "):
        return None
    span, _, total = header[len("bytes "):].partition("/")
    start, _, end = span.partition("-")
    try:
        return int(start), int(end), None if total.strip() == "*" else int(total)
    except ValueError:
        return None


def resume_accepted(status: int, content_range: str | None, have: int, size: int) -> bool:
    """Whether a response continues the partial file (True) or restarts it (False)."""
    if status != 206:
        return False
    parsed = parse_content_range(content_range)
    return parsed is not None and parsed[0] == have and parsed[1] == size - 1 and parsed[2] in (None, size)


# --- uploads --------------------------------------------------------------------


def upload_chunks(size: int, chunk: int) -> list[tuple[int, int]]:
    """(start, end exclusive) of each PATCH; one empty list means a monolithic PUT."""
    if size <= chunk:
        return []
    return [(start, min(start + chunk, size)) for start in range(0, size, chunk)]


def with_query(location: str, **params: str) -> str:
    sep = "&" if "?" in location else "?"
    return location + sep + urllib.parse.urlencode(params)


# --- manifests and referrers ----------------------------------------------------------


def pick_platform(index: dict[str, Any], machine: str, what: str) -> oci.Descriptor:
    """The index entry for linux on this machine's architecture."""
    arch = ARCH.get(machine, machine)
    for d in index["manifests"]:
        p = d.get("platform", {})
        if d["mediaType"] in oci.MANIFEST_TYPES and p.get("os") == "linux" and p.get("architecture") == arch:
            return dict(d)
    raise BadImage(f"{what}: the image index has no image for linux/{arch}")


def fallback_tag(digest: str) -> str:
    return "sha256-" + oci.digest_hex(digest)


def referrer_descriptor(manifest_bytes: bytes, manifest: dict[str, Any]) -> oci.Descriptor:
    desc = oci.descriptor(manifest.get("mediaType", oci.MANIFEST), manifest_bytes)
    artifact = manifest.get("artifactType") or manifest["config"]["mediaType"]
    desc["artifactType"] = artifact
    if isinstance(manifest.get("annotations"), dict):
        desc["annotations"] = manifest["annotations"]
    return desc


def add_referrer(index: dict[str, Any] | None, desc: oci.Descriptor) -> dict[str, Any]:
    """The fallback index with `desc` in it (once)."""
    manifests = [d for d in (index or {}).get("manifests", []) if d.get("digest") != desc["digest"]]
    return {"schemaVersion": 2, "mediaType": oci.INDEX, "manifests": manifests + [desc]}


def signature_referrers(index: dict[str, Any]) -> list[oci.Descriptor]:
    """Entries of a referrers (or fallback) index that are gifee signatures."""
    return [d for d in index["manifests"] if d.get("artifactType") == oci.SIGNATURE
            and d["mediaType"] in oci.MANIFEST_TYPES]
