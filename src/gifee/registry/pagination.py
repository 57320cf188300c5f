"""Tag lists: lexical order, `n`/`last` pagination and the `Link` header.

Rules: tags are listed in lexical (byte) order; `last` excludes every tag up to and
including it; `n` caps the page (a missing `n` means all; `n=0` an empty page); when
the page was cut short, `Link: </v2/<name>/tags/list?n=<n>&last=<last tag>>; rel="next"`
points at the next page. A non-integer or negative `n` is refused.

Nothing here does I/O.
"""

from __future__ import annotations

import bisect
import urllib.parse
from collections.abc import Iterable

MAX_PAGE = 10_000


def parse_n(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise ValueError(f"n={value!r} is not a non-negative integer")
    return min(int(value), MAX_PAGE)


def page(tags: Iterable[str], n: int | None, last: str | None) -> tuple[list[str], str | None]:
    """The tags of one page and the `last` of the next page (None when this is the end)."""
    ordered = sorted(tags)
    start = bisect.bisect_right(ordered, last) if last else 0
    rest = ordered[start:]
    if n is None or len(rest) <= n:
        return rest, None
    chosen = rest[:n]
    return chosen, (chosen[-1] if chosen else None)


def link_header(name: str, n: int, next_last: str) -> str:
    query = urllib.parse.urlencode({"n": n, "last": next_last})
    return f'</v2/{name}/tags/list?{query}>; rel="next"'
