"""The API clients' keep-alive HTTP/1.1 pool (gifee.api.http11) against scripted servers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from gifee.api.http11 import Http11Pool

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return lines[0], headers, body


async def with_server(serve: Serve, test: Callable[[str], Awaitable[None]]) -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await test(f"http://127.0.0.1:{port}")
    finally:
        server.close()


def test_content_length_and_chunked_answers_on_one_connection() -> None:
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                line, headers, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            if "chunked" in line:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\n\r\n")
            else:
                out = line.encode() + b"|" + headers["host"].encode() + b"|" + body
                writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\nX-A: b\r\n\r\n" % len(out) + out)
            await writer.drain()

    async def test(url: str) -> None:
        pool = Http11Pool(url)
        status, headers, body = await pool.request("PUT", "/a b/c", b"xyz", {"Content-Type": "text/plain"},
                                                   {"q": "1 2", "r": "s"})
        assert status == 201 and headers["x-a"] == "b"
        assert body == f"PUT /a%20b/c?q=1+2&r=s HTTP/1.1|{url[7:]}|xyz".encode()
        status, _, body = await pool.request("GET", "/chunked", None, {})
        assert (status, body) == (200, b"abcdefg")
        status, _, body = await pool.request("GET", "/again", None, {})
        assert status == 201 and body.startswith(b"GET /again")
        await pool.close()

    asyncio.run(with_server(serve, test))
    assert connections == 1


def test_a_connection_the_server_closed_is_retried_only_for_idempotent_requests() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # answers one request, then reads the next and closes without answering (an idle timeout race)
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        try:
            await read_request(reader)
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    async def test(url: str) -> None:
        pool = Http11Pool(url)
        assert (await pool.request("GET", "/", None, {}))[2] == b"ok"
        assert (await pool.request("GET", "/", None, {}))[2] == b"ok"  # failed on the reused one, sent again
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await pool.request("POST", "/", b"{}", {})  # never sent twice
        await pool.close()

    asyncio.run(with_server(serve, test))


def test_connection_close_and_body_until_eof() -> None:
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    async def test(url: str) -> None:
        pool = Http11Pool(url)
        for _ in range(3):
            assert (await pool.request("GET", "/", None, {}))[2] == b"all of it"
        await pool.close()

    asyncio.run(with_server(serve, test))
    assert connections == 3


def test_connection_errors_and_timeouts() -> None:
    async def test() -> None:
        with socket_closed_port() as port:
            pool = Http11Pool(f"http://127.0.0.1:{port}")
            with pytest.raises(aiohttp.ClientOSError) as e:
                await pool.request("GET", "/", None, {})
            assert isinstance(e.value, OSError)

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(5)

        async def timed(url: str) -> None:
            pool = Http11Pool(url)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await pool.request("GET", "/", None, {})
            assert pool._open == 0  # the connection in an unknown state is dropped
            await pool.close()

        await with_server(silent, timed)

    asyncio.run(test())


def socket_closed_port() -> _ClosedPort:
    return _ClosedPort()


class _ClosedPort:
    def __enter__(self) -> int:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = int(s.getsockname()[1])
        s.close()
        return self.port

    def __exit__(self, *exc: object) -> None:
        pass


def test_limit_and_reuse_against_aiohttp() -> None:
    peers: set[tuple[str, int]] = set()
    active = 0
    most = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal active, most
        peers.add(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        active += 1
        most = max(most, active)
        await asyncio.sleep(0.01)
        active -= 1
        return web.json_response({"path": request.path, "n": len(await request.read())})

    async def test() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        pool = Http11Pool(f"http://127.0.0.1:{port}", limit=4)
        results = await asyncio.gather(*(pool.request("POST", f"/p{i}", b"x" * i, {}) for i in range(40)))
        assert [r[0] for r in results] == [200] * 40
        assert results[7][2] == b'{"path": "/p7", "n": 7}'
        status, headers, body = await pool.request("HEAD", "/h", None, {})
        assert status == 200 and body == b""
        await pool.close()
        await runner.cleanup()

    asyncio.run(test())
    assert most <= 4 and len(peers) <= 4


def test_interim_answer_then_the_real_one_and_a_malformed_answer() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                line, _, _ = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            if "bad" in line:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async def test(url: str) -> None:
        pool = Http11Pool(url)
        assert await pool.request("POST", "/", b"{}", {}) == (200, {"content-length": "2"}, b"ok")
        with pytest.raises(aiohttp.ClientPayloadError):
            await pool.request("GET", "/bad", None, {})
        assert (await pool.request("GET", "/", None, {}))[2] == b"ok"  # on a new connection
        await pool.close()

    asyncio.run(with_server(serve, test))
