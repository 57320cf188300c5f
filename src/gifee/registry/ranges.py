"""Byte ranges: the `Range` of a blob GET and the `Content-Range` of an upload chunk.

Rules:
* An upload chunk's Content-Range is `<start>-<end>` (inclusive, as the distribution
  spec writes it; a `bytes ` prefix and a `/<total>` suffix are tolerated). A chunk is
  accepted only when `start` is exactly the bytes received so far: anything else is
  out of order (416), including a retry of an earlier chunk.
* A blob GET's Range is one `bytes=` range: `a-b`, `a-` or `-n`. A range that starts
  beyond the blob is unsatisfiable (416); several ranges, or one that does not parse,
  are ignored (the whole blob is served), as RFC 9110 allows.
* The upload status header `Range: 0-<last>` names the last byte received; an empty
  upload reports `0-0`, as distribution does (the spec leaves it open).

Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import re

CONTENT_RANGE_RE = re.compile(r"(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?")
RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclasses.dataclass(frozen=True)
class ChunkRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def parse_content_range(value: str) -> ChunkRange:
    m = CONTENT_RANGE_RE.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"Content-Range {value!r} is not <start>-<end>")
    start, end = int(m.group(1)), int(m.group(2))
    if end < start:
        raise ValueError(f"Content-Range {value!r} ends before it starts")
    return ChunkRange(start, end)


def chunk_in_order(chunk: ChunkRange, received: int) -> bool:
    return chunk.start == received


def upload_range_header(received: int) -> str:
    return f"0-{max(received - 1, 0)}"


class Unsatisfiable(Exception):
    pass


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) to serve, None for the whole blob; raises Unsatisfiable."""
    if not value:
        return None
    m = RANGE_RE.fullmatch(value.strip())
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # suffix: the last n bytes
        n = int(last)
        if n == 0:
            raise Unsatisfiable(value)
        return max(size - n, 0), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise Unsatisfiable(value)
    return start, min(end, size - 1)
