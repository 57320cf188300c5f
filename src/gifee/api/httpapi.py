"""What the API server's handlers see of HTTP, whichever server runs them: a request with the
few attributes they read (aiohttp's `BaseRequest` has them too) and two kinds of answers, a whole
`Reply` or a `Stream` whose body is written as it comes (watches, logs).

Why: the API server answers almost every request on httpserver.py (httptools), and hands the rare
connections that upgrade (exec over WebSocket or SPDY) to aiohttp; the handlers must not care which.
`to_aiohttp` turns an answer into aiohttp's response objects for the second path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web
from multidict import MultiMapping

Write = Callable[[bytes], Awaitable[None]]


class HttpRequest(Protocol):
    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...  # percent-decoded

    @property
    def query(self) -> MultiMapping[str]: ...

    @property
    def headers(self) -> MultiMapping[str]: ...  # case-insensitive names

    @property
    def content_type(self) -> str: ...  # the media type, lower case, without parameters

    async def read(self) -> bytes: ...


class Reply:
    """A whole answer: status, body and its media type (extra headers rarely)."""

    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(self, body: bytes, status: int = 200, content_type: str = "application/json",
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.status, self.body, self.content_type, self.headers = status, body, content_type, headers


class Stream:
    """An answer whose body `produce` writes piece by piece (chunked); it ends when `produce`
    returns. If the client goes away, `write` raises ConnectionResetError or the task running
    `produce` is cancelled."""

    __slots__ = ("status", "content_type", "headers", "produce")

    def __init__(self, produce: Callable[[Write], Awaitable[None]], status: int = 200,
                 content_type: str = "application/json", headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.status, self.content_type, self.headers, self.produce = status, content_type, headers, produce


Answer = Reply | Stream | web.StreamResponse  # the last: only from handlers that need aiohttp (upgrades)


def text(body: str, status: int = 200) -> Reply:
    return Reply(body.encode(), status, "text/plain; charset=utf-8")


async def to_aiohttp(request: web.BaseRequest, answer: Answer) -> web.StreamResponse:
    if isinstance(answer, web.StreamResponse):
        return answer
    if isinstance(answer, Reply):
        resp = web.Response(body=answer.body, status=answer.status, headers=dict(answer.headers))
        resp.headers["Content-Type"] = answer.content_type
        return resp
    stream = web.StreamResponse(status=answer.status, headers={**dict(answer.headers),
                                                               "Content-Type": answer.content_type})
    stream.enable_chunked_encoding()
    await stream.prepare(request)
    await answer.produce(stream.write)
    try:
        await stream.write_eof()
    except (ConnectionResetError, RuntimeError):
        pass
    return stream
