"""A small HTTP/1.1 keep-alive client for the API clients' single requests (not watches).

Why: the controllers, the scheduler and the hollow nodes make a few requests per pod each; the
profiles had aiohttp's client machinery (request and response objects, cookie jar, timers, header
multidicts, payload writers) at a third of those processes' CPU. This client does only what those
requests need: one request line, a few headers and a body out; the answer read by httptools
(llhttp, the parser of Node.js and aiohttp), on a pool of keep-alive connections (plain TCP:
https stays with aiohttp).

Rules:
- Connections are kept for reuse while the server keeps them open (no "Connection: close"); an idle
  one is dropped after IDLE_SECONDS, well before aiohttp's server closes idle connections (75 s),
  so a request rarely meets a connection the server is closing. When it does (the connection was
  reused and closed before any byte of an answer came), an idempotent request (not POST or PATCH)
  is sent again once on a new connection; any other failure is raised.
- At most `limit` connections (aiohttp's default is 100); more requests wait for one.
- Failures raise what aiohttp raised for them, so callers catch the same exceptions:
  ClientOSError (an OSError and a ClientError) for connecting and I/O,
  ServerDisconnectedError when the server closes without a whole answer, TimeoutError on timeout.
"""

from __future__ import annotations

import asyncio
import collections
import time
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import httptools

IDLE_SECONDS = 30.0
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"


class _Answer:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


class _Conn(asyncio.Protocol):
    """One connection: one request at a time; `answer` completes with the parsed response.
    httptools (llhttp, the parser Node.js and aiohttp use) reads the answers: status line,
    headers, Content-Length, chunked and close-delimited bodies."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[_Answer] | None = None
        self.closed = False
        self.received = False  # any byte of the current answer
        self.keep = True
        self.idle_since = 0.0
        self.method = ""
        self._parser = httptools.HttpResponseParser(self)
        self._headers: dict[str, str] = {}
        self._status = 0
        self._chunks: list[bytes] = []
        self._in_body = False  # the head is read; the body ends with the message (or, without a length, the close)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ans = self.answer
        if ans is not None and not ans.done():
            if self._in_body and self._until_close():  # a body delimited by the close
                self._finish()
                return
            ans.set_exception(aiohttp.ServerDisconnectedError(
                "the server closed the connection" + (f": {exc}" if exc else "")))

    def _until_close(self) -> bool:
        h = self._headers
        return "content-length" not in h and "chunked" not in h.get("transfer-encoding", "").lower()

    def send(self, data: bytes, answer: asyncio.Future[_Answer], method: str) -> None:
        assert self.transport is not None
        self.answer = answer
        self.method = method
        self.received = False
        self._headers = {}
        self._chunks = []
        self._in_body = False
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self.answer is None or self.answer.done():  # bytes nobody asked for: not to be trusted again
            self._fail("an answer nobody asked for")
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(f"bad HTTP answer: {e}")

    def _fail(self, message: str) -> None:
        self.keep = False
        ans = self.answer
        if ans is not None and not ans.done():
            ans.set_exception(aiohttp.ClientPayloadError(message))
        if self.transport is not None:
            self.transport.close()

    # httptools' callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        if not self._parser.should_keep_alive():
            self.keep = False
        self._in_body = True
        if self.method == "HEAD":  # no body, whatever the headers say; the parser cannot know: start afresh
            self.keep = False
            self._finish()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # an interim answer: the real one follows
            self._headers, self._chunks, self._in_body = {}, [], False
            return
        self._finish()

    def _finish(self) -> None:
        ans = self.answer
        if ans is not None and not ans.done():
            ans.set_result(_Answer(self._status, self._headers, b"".join(self._chunks)))


class Http11Pool:
    def __init__(self, server: str, *, limit: int = 100) -> None:
        u = urlsplit(server)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"plain http:// servers only, not {server!r}")
        self.host, self.port = u.hostname, u.port or 80
        self.host_header = u.netloc
        self.base = u.path.rstrip("/")
        self.limit = max(1, limit)
        self._idle: collections.deque[_Conn] = collections.deque()
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._all: set[_Conn] = set()

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(_Conn, self.host, self.port)
        except OSError as e:
            raise aiohttp.ClientOSError(e.errno or 0, f"cannot connect to {self.host}:{self.port}: {e}") from e
        self._all.add(conn)
        return conn

    async def _take(self) -> tuple[_Conn, bool]:
        """A connection (reused: True) with a slot counted for it."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: warmest, least likely closed
            if conn.closed or now - conn.idle_since > IDLE_SECONDS:
                self._drop(conn)
                continue
            return conn, True
        while self._open >= self.limit:
            w: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(w)
            try:
                await w
            except BaseException:
                if not w.cancelled() and w.done():
                    self._wake()  # a slot handed to us that we cannot use goes to the next waiter
                raise
            if self._idle:
                return await self._take()
        self._open += 1
        try:
            return await self._connect(), False
        except BaseException:
            self._open -= 1
            self._wake()
            raise

    def _wake(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    def _drop(self, conn: _Conn) -> None:
        self._all.discard(conn)
        self._open -= 1
        if conn.transport is not None and not conn.closed:
            conn.transport.close()
        self._wake()

    def _give_back(self, conn: _Conn) -> None:
        if conn.closed or not conn.keep:
            self._drop(conn)
            return
        conn.idle_since = time.monotonic()
        conn.answer = None
        self._idle.append(conn)
        self._wake()

    async def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
                      params: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        target = quote(self.base + path, safe=_PATH_SAFE)
        if params:
            target += "?" + urlencode(params)
        head = [f"{method} {target} HTTP/1.1\r\nHost: {self.host_header}\r\n"]
        for k, v in headers.items():
            head.append(f"{k}: {v}\r\n")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body or b'')}\r\n")
        head.append("\r\n")
        data = "".join(head).encode("latin-1") + (body or b"")
        for attempt in (0, 1):
            conn, reused = await self._take()
            answer: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
            try:
                conn.send(data, answer, method)
                got = await answer
            except aiohttp.ServerDisconnectedError:
                retry = reused and not conn.received and attempt == 0 and method in IDEMPOTENT
                self._drop(conn)
                if retry:
                    continue
                raise
            except BaseException:  # cancelled or timed out mid-answer: the connection's state is unknown
                self._drop(conn)
                raise
            self._give_back(conn)
            return got.status, got.headers, got.body
        raise AssertionError("unreachable")

    async def close(self) -> None:
        for conn in list(self._all):
            if conn.transport is not None and not conn.closed:
                conn.transport.close()
        self._all.clear()
        self._idle.clear()
        self._open = 0
