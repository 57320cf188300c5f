"""The API server's HTTP/1.1 server: an asyncio Protocol on httptools (llhttp, the parser of
Node.js and aiohttp), serving `HttpRequest`s to one handler that returns a `Reply` or a `Stream`.

Why: the profiles had aiohttp's request machinery (request, payload, response and writer objects,
timers, header multidicts built twice) at 20-25% of the API server's CPU. Here a request costs a
parse, one small object and one Task; an answer is one `transport.write`.

Rules:
- Keep-alive and pipelining: requests of one connection are answered one at a time, in order;
  the ones that arrive meanwhile wait, parsed, in a queue.
- Bodies are read whole before the handler runs, at most `max_body` bytes (Content-Length or the
  chunks of a chunked body): a larger one is answered `too_large` (a Kubernetes Status, 413) and the
  connection closed, without reading the rest.
- "Expect: 100-continue" gets "100 Continue" once every answer before it is written (at once,
  without pipelining); any other expectation is 417 and the connection closed.
- Malformed HTTP is 400 and the connection closed; a handler's exception is 500; the server goes on.
- HEAD answers have the headers of the GET answer and no body.
- A `Stream` goes out chunked (HTTP/1.0: delimited by the close); when the client goes away the
  handler's task is cancelled (as aiohttp's handler_cancellation=True), also for whole answers.
- A request with "Upgrade" (exec over WebSocket or SPDY) and every request after it on that
  connection go to `fallback` (aiohttp's server): the connection is handed over, once the answers
  before it are written, with the bytes received from that request on.
- A connection idle for `keepalive_timeout` seconds is closed (aiohttp's default: 75 s).
"""

from __future__ import annotations

import asyncio
import collections
import http
import logging
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from ssl import SSLContext
from urllib.parse import parse_qsl, unquote

import httptools
from multidict import CIMultiDict, MultiDict, MultiDictProxy

from gifee.api.httpapi import Answer, Reply, Stream

log = logging.getLogger("gifee.api.http")

Handler = Callable[["Request"], Awaitable[Answer]]
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in http.HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


def _status_line(status: int) -> bytes:
    return _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode()


class _Date:
    """The Date header, formatted once a second."""

    def __init__(self) -> None:
        self.second = 0
        self.value = b""

    def header(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.value = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self.value


_date = _Date()


class Request:
    """One parsed request: what `HttpRequest` promises, and the body already read."""

    __slots__ = ("method", "path", "query_string", "headers", "body", "version", "keep_alive", "_query")

    def __init__(self, method: str, path: str, query_string: str, headers: CIMultiDict[str], version: str,
                 keep_alive: bool) -> None:
        self.method, self.path, self.query_string, self.headers = method, path, query_string, headers
        self.version, self.keep_alive = version, keep_alive
        self.body = b""
        self._query: MultiDictProxy[str] | None = None

    @property
    def query(self) -> MultiDictProxy[str]:
        if self._query is None:
            self._query = MultiDictProxy(MultiDict(parse_qsl(self.query_string, keep_blank_values=True)))
        return self._query

    @property
    def content_type(self) -> str:
        value = self.headers.get("Content-Type")
        if not value:
            return "application/octet-stream"  # what aiohttp says when there is none
        return value.partition(";")[0].strip().lower()

    async def read(self) -> bytes:
        return self.body


class _Refusal:
    """A request answered without its handler (too large, bad expectation, malformed); the
    connection closes after it."""

    __slots__ = ("reply",)

    def __init__(self, reply: Reply) -> None:
        self.reply = reply


class HttpServer:
    def __init__(self, handler: Handler, *, max_body: int, too_large: Callable[[], Reply],
                 fallback: Callable[[], asyncio.Protocol], keepalive_timeout: float = 75.0) -> None:
        self.handler, self.max_body, self.too_large, self.fallback = handler, max_body, too_large, fallback
        self.keepalive_timeout = keepalive_timeout
        self.connections: set[HttpConnection] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, ssl: SSLContext | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: HttpConnection(self), host, port, ssl=ssl, backlog=128)
        self._sweeper = loop.create_task(self._sweep())

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(1.0, self.keepalive_timeout / 5))
            limit = loop.time() - self.keepalive_timeout
            for conn in [c for c in self.connections if c.idle_since and c.idle_since < limit]:
                conn.close()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()


class HttpConnection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0  # loop time since no request is in progress; 0 while one is
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._queue: collections.deque[Request | _Refusal] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._ignore = False  # stop reading requests: refused, or being handed over
        self._upgrade_head = b""  # the upgrading request's head, for `fallback`
        self._handover: bytearray | None = None  # the bytes for `fallback` after that head
        self._closed = False
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        # the request being parsed
        self._url = b""
        self._head: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._current: Request | None = None
        self._upgrading = False
        self._continue: Request | None = None  # waits for "100 Continue" until the answers before it are out

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        self.idle_since = self._loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.server.connections.discard(self)
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()
        self._wake_writer(ConnectionResetError("the client went away"))

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_writer(None)

    def _wake_writer(self, exc: Exception | None) -> None:
        waiter, self._drain = self._drain, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    def data_received(self, data: bytes) -> None:
        if self._handover is not None:
            self._handover += data
            return
        if self._ignore:
            return
        self.idle_since = 0.0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._upgrade(data[e.args[0]:])
        except httptools.HttpParserError as e:
            self._refuse(Reply(f"bad HTTP request: {e}".encode(), 400, "text/plain; charset=utf-8"))
        if self._task is None and not self._closed:
            self._next()

    def close(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.close()

    # -- httptools' callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._head = []
        self._body = []
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if self._ignore:
            return
        parser = self._parser
        url = self._url.decode("latin-1")
        if not url.startswith("/"):  # absolute form (proxies): only the path and query matter here
            parsed = httptools.parse_url(self._url)
            url = (parsed.path or b"/").decode("latin-1") + ("?" + parsed.query.decode("latin-1")
                                                             if parsed.query else "")
        path, _, query = url.partition("?")
        if "%" in path:
            path = unquote(path)
        headers = CIMultiDict(self._head)
        request = Request(parser.get_method().decode("latin-1"), path, query, headers, parser.get_http_version(),
                          parser.should_keep_alive())
        self._current = request
        if parser.should_upgrade():
            self._upgrading = True  # handed over when the parser stops at the upgrade
            return
        length = headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > self.server.max_body:
            self._refuse(self.server.too_large())
            return
        expect = headers.get("Expect")
        if expect is not None and request.version == "1.1":
            if expect.lower() != "100-continue":
                self._refuse(Reply(f"Unknown Expect: {expect}".encode(), 417, "text/plain; charset=utf-8"))
                return
            if self._task is None and not self._queue:
                self._send_continue()
            else:
                self._continue = request

    def on_body(self, body: bytes) -> None:
        if self._ignore:
            return
        self._size += len(body)
        if self._size > self.server.max_body:
            self._refuse(self.server.too_large())
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        request = self._current
        if request is None or self._ignore or self._upgrading:
            return
        self._current = None
        if self._continue is request:
            self._continue = None
        if self._body:
            request.body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._queue.append(request)

    # -- serving

    def _refuse(self, reply: Reply) -> None:
        self._ignore = True
        self._current = None
        self._queue.append(_Refusal(reply))

    def _send_continue(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.write(_CONTINUE)

    def _upgrade(self, rest: bytes) -> None:
        request = self._current
        self._ignore = True
        if request is None:
            self._refuse(Reply(b"bad HTTP request: an upgrade without a request", 400, "text/plain; charset=utf-8"))
            return
        head = [f"{request.method} {self._url.decode('latin-1')} HTTP/{request.version}\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in self._head]
        self._upgrade_head = ("".join(head) + "\r\n").encode("latin-1")
        self._handover = bytearray(rest)
        self._current = None

    def _next(self) -> None:
        """Starts the next queued request, or hands the connection over, or waits for more."""
        if self._queue:
            item = self._queue.popleft()
            if isinstance(item, _Refusal):
                self._write_reply(item.reply, "1.1", False, False)
                self.close()
                return
            self._task = self._loop.create_task(self._serve(item))
            return
        if self._handover is not None:
            self._hand_over()
            return
        self.idle_since = self._loop.time()
        if self._continue is not None:
            self._continue = None
            self._send_continue()

    def _hand_over(self) -> None:
        assert self.transport is not None and self._handover is not None
        rest, self._handover = bytes(self._handover), None
        self.server.connections.discard(self)
        protocol = self.server.fallback()
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        protocol.data_received(self._upgrade_head)
        if rest:  # apart: aiohttp drops what comes in one piece with an upgrading request's head
            protocol.data_received(rest)

    async def _serve(self, request: Request) -> None:
        head = request.method == "HEAD"
        try:
            try:
                answer = await self.server.handler(request)
            except Exception:
                log.exception("%s %s", request.method, request.path)
                answer = Reply(b"500 Internal Server Error", 500, "text/plain; charset=utf-8")
            if self._closed:
                return
            if isinstance(answer, Reply):
                self._write_reply(answer, request.version, request.keep_alive, head)
            elif isinstance(answer, Stream):
                await self._write_stream(answer, request, head)
            else:  # an aiohttp answer (upgrades) cannot go out here; upgrades never reach this server
                log.error("%s %s: an aiohttp answer on the httptools server", request.method, request.path)
                self._write_reply(Reply(b"500 Internal Server Error", 500, "text/plain; charset=utf-8"),
                                  request.version, False, head)
                request.keep_alive = False
        except (asyncio.CancelledError, ConnectionResetError):
            return
        except Exception:  # a stream that failed after its head went out: the client sees the close
            log.exception("%s %s", request.method, request.path)
            request.keep_alive = False
        finally:
            self._task = None
        if not request.keep_alive:
            self.close()
        elif not self._closed:
            self._next()

    def _head_bytes(self, status: int, content_type: str, extra: tuple[tuple[str, str], ...], version: str,
                    keep_alive: bool) -> bytes:
        head = _status_line(status) + b"Content-Type: " + content_type.encode("latin-1") + b"\r\n" + _date.header()
        for name, value in extra:
            head += f"{name}: {value}\r\n".encode("latin-1")
        if not keep_alive:
            head += b"Connection: close\r\n"
        elif version == "1.0":
            head += b"Connection: keep-alive\r\n"
        return head

    def _write_reply(self, reply: Reply, version: str, keep_alive: bool, head_only: bool) -> None:
        if self.transport is None or self._closed:
            return
        head = self._head_bytes(reply.status, reply.content_type, reply.headers, version, keep_alive)
        head += b"Content-Length: %d\r\n\r\n" % len(reply.body)
        self.transport.write(head if head_only else head + reply.body)

    async def _write_stream(self, stream: Stream, request: Request, head_only: bool) -> None:
        assert self.transport is not None
        chunked = request.version == "1.1"
        if not chunked:
            request.keep_alive = False  # HTTP/1.0: the body ends with the connection
        head = self._head_bytes(stream.status, stream.content_type, stream.headers, request.version,
                                request.keep_alive)
        if head_only:
            self.transport.write(head + b"Content-Length: 0\r\n\r\n")
            return
        self.transport.write(head + (b"Transfer-Encoding: chunked\r\n\r\n" if chunked else b"\r\n"))
        transport = self.transport

        async def write(data: bytes) -> None:
            if not data:
                return
            if self._closed:
                raise ConnectionResetError("the client went away")
            transport.write(b"%x\r\n" % len(data) + data + b"\r\n" if chunked else data)
            if self._paused:
                if self._drain is None:
                    self._drain = self._loop.create_future()
                await self._drain

        await stream.produce(write)
        if chunked and not self._closed:
            transport.write(_LAST_CHUNK)
