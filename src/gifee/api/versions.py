"""Resource versions and continue tokens.

Rules: an object's resourceVersion is the etcd mod_revision of its key, a list's
the store revision it was read at, both as decimal strings; clients must treat
them as opaque. A list's resourceVersion parameter: "" reads the latest state
(linearizable), "0" any state (we read the latest too), "N" with
resourceVersionMatch=Exact reads at revision N, otherwise (NotOlderThan) the
latest. A continue token is base64 of {"v": "meta.k8s.io/v1", "rv": revision,
"start": next key relative to the list's prefix}; a later page is read at that
revision, so paging sees one consistent snapshot, and a compacted revision makes
the token Expired (410). Pure.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from gifee.api.errors import ApiError, bad_request


def parse_resource_version(value: str | None, what: str = "resourceVersion") -> int:
    """"" and None -> 0 (unset); otherwise a non-negative integer, else BadRequest."""
    if value is None or value == "":
        return 0
    if not value.isdigit():
        raise ApiError(400, "BadRequest", f"invalid {what}: {value!r}: must be a non-negative integer", {})
    return int(value)


@dataclass(frozen=True)
class ContinueToken:
    revision: int
    start: str  # the next key, relative to the collection prefix


def encode_continue(revision: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str) -> ContinueToken:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        rev, start = data["rv"], data["start"]
        if data.get("v") != "meta.k8s.io/v1" or not isinstance(rev, int) or rev <= 0 or not isinstance(start, str):
            raise ValueError
        if start.startswith("/") or ".." in start.split("/"):
            raise ValueError
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise bad_request("continue key is not valid: the token is malformed") from None
    return ContinueToken(rev, start)


def continue_expired() -> ApiError:
    return ApiError(410, "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can "
                    "start a new list without the continue parameter, or use the continue token in this "
                    "response to retrieve the remainder of the results. Continuing with the provided token "
                    "results in an inconsistent list - objects that were created, modified, or deleted between "
                    "the time the first chunk was returned and now may show up in the list.", {})


def too_old(requested: int, oldest: int) -> ApiError:
    return ApiError(410, "Expired", f"too old resource version: {requested} ({oldest})", {})
