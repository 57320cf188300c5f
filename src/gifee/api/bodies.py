"""Request bodies in Kubernetes' protobuf encoding, as the JSON dicts the verbs take.

Rules: a body whose envelope names a kind the table in protobuf.py covers
decodes to the same dict its JSON would give; any other kind is 415
UnsupportedMediaType with a Status naming the kind and the kinds that work; so is
a body setting a field the table does not cover (strict decoding: nothing is
dropped silently); malformed wire data is 400 BadRequest. Pure: bytes in, dicts or ApiError out.
"""

from __future__ import annotations

from typing import Any

from gifee.api import errors, protobuf


def protobuf_body(raw: bytes) -> dict[str, Any]:
    try:
        return protobuf.decode_object(raw, strict=True)
    except protobuf.UnsupportedKind as e:
        raise errors.ApiError(
            415, "UnsupportedMediaType",
            f"the body of the request was in an unknown format - {protobuf.MEDIA_TYPE} is accepted for "
            f"{', '.join(sorted({k for _, k in protobuf.KINDS}))}, not for "
            f"{e.api_version or '?'}/{e.kind or '?'}; send application/json", {}) from None
    except protobuf.UnsupportedField as e:
        raise errors.ApiError(
            415, "UnsupportedMediaType",
            f"the body of the request sets a field this server cannot read in {protobuf.MEDIA_TYPE} ({e}); "
            f"send application/json", {}) from None
    except protobuf.ProtobufError as e:
        raise errors.bad_request(f"the body of the request could not be decoded as {protobuf.MEDIA_TYPE}: {e}") \
            from None
