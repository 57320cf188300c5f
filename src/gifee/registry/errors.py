"""The distribution spec's errors: codes, their HTTP statuses, and the JSON body.

Rules: every error answer is `{"errors": [{"code", "message", "detail"}]}` with a code
from the spec's table; a handler raises `RegistryError` and the server's shell turns it
into the response. Nothing here does I/O.
"""

from __future__ import annotations

import json
from typing import Any

# code -> (default HTTP status, message), the spec's table (plus 416 and 413 uses below).
CODES: dict[str, tuple[int, str]] = {
    "BLOB_UNKNOWN": (404, "blob unknown to registry"),
    "BLOB_UPLOAD_INVALID": (400, "blob upload invalid"),
    "BLOB_UPLOAD_UNKNOWN": (404, "blob upload unknown to registry"),
    "DIGEST_INVALID": (400, "provided digest did not match uploaded content"),
    "MANIFEST_BLOB_UNKNOWN": (400, "manifest references a manifest or blob unknown to registry"),
    "MANIFEST_INVALID": (400, "manifest invalid"),
    "MANIFEST_UNKNOWN": (404, "manifest unknown to registry"),
    "NAME_INVALID": (400, "invalid repository name"),
    "NAME_UNKNOWN": (404, "repository name not known to registry"),
    "SIZE_INVALID": (400, "provided length did not match content length"),
    "UNAUTHORIZED": (401, "authentication required"),
    "DENIED": (403, "requested access to the resource is denied"),
    "UNSUPPORTED": (405, "the operation is unsupported"),
    "TOOMANYREQUESTS": (429, "too many requests"),
    # Not in the spec's table, with distribution's names: a bad `n`, a server fault.
    "PAGINATION_NUMBER_INVALID": (400, "invalid number of results requested"),
    "UNKNOWN": (500, "unknown error"),
}


class RegistryError(Exception):
    def __init__(self, code: str, detail: Any = None, *, status: int | None = None,
                 message: str | None = None, headers: dict[str, str] | None = None) -> None:
        default_status, default_message = CODES[code]
        self.code = code
        self.status = status if status is not None else default_status
        self.message = message if message is not None else default_message
        self.detail = detail
        self.headers = headers or {}
        super().__init__(f"{code}: {self.message}" + (f" ({detail})" if detail is not None else ""))

    def body(self) -> bytes:
        entry: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            entry["detail"] = self.detail
        return json.dumps({"errors": [entry]}).encode()
