"""The API server's HTTP/1.1 server (gifee.api.httpserver) against raw sockets: keep-alive,
pipelining, bodies and their limit, Expect, HEAD, malformed requests, streams, the handover of
upgrades to aiohttp, TLS."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from gifee.api.httpapi import Answer, Reply, Stream, Write
from gifee.api.httpserver import HttpServer, Request
from gifee.api.nodeproxy import _RawParser

MAX_BODY = 1000


class Toy:
    """A handler whose answers tell what it saw."""

    def __init__(self) -> None:
        self.stream_ended = asyncio.Event()

    async def __call__(self, request: Request) -> Answer:
        if request.path == "/slow":
            await asyncio.sleep(0.2)
        if request.path == "/boom":
            raise RuntimeError("boom")
        if request.path == "/stream":
            async def produce(write: Write) -> None:
                try:
                    await write(b"first\n")
                    await write(b"second\n")
                    if request.query.get("end") != "1":
                        await asyncio.Event().wait()
                finally:
                    self.stream_ended.set()
            return Stream(produce)
        seen = {"method": request.method, "path": request.path, "query": list(request.query.items()),
                "body": (await request.read()).decode(), "type": request.content_type}
        return Reply(json.dumps(seen).encode(), 201 if request.method == "POST" else 200)


async def _aiohttp_handler(request: web.BaseRequest) -> web.StreamResponse:
    after = b""
    if request.headers.get("Upgrade") == "websocket":  # the upgraded bytes (raw, as nodeproxy's SPDY exec takes them)
        incoming: asyncio.Queue[bytes] = asyncio.Queue()
        request.protocol.set_parser(_RawParser(incoming))  # type: ignore[arg-type]
        after = await incoming.get()
    return web.Response(text=f"aiohttp {request.path} {request.headers.get('Upgrade')} {after.decode()}")


Test = Callable[[HttpServer, Toy], Awaitable[None]]


def run(test: Test, ssl_context: ssl.SSLContext | None = None) -> None:
    async def main() -> None:
        toy = Toy()
        fallback = web.Server(_aiohttp_handler)
        server = HttpServer(toy, max_body=MAX_BODY, fallback=fallback,
                            too_large=lambda: Reply(b'{"kind":"Status","code":413}', 413))
        await server.start("127.0.0.1", 0, ssl=ssl_context)
        try:
            await asyncio.wait_for(test(server, toy), 10)
        finally:
            await server.close()
            await fallback.shutdown(1)
    asyncio.run(main())


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One answer: status, headers (lower-case names), body (Content-Length, chunked or until the close)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readexactly(2)
        return status, headers, body
    return status, headers, await reader.read()


def test_pipelined_requests_are_answered_in_order_on_one_connection() -> None:
    async def test(server: HttpServer, toy: Toy) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /a%20b?x=1&x=2&y= HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"HEAD /head HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Type: application/json; charset=utf-8\r\n"
                     b"Content-Length: 2\r\n\r\n{}")
        status, _, body = await read_answer(reader)
        assert status == 200 and json.loads(body)["path"] == "/slow"
        status, _, body = await read_answer(reader)
        assert json.loads(body)["path"] == "/a b"
        assert json.loads(body)["query"] == [["x", "1"], ["x", "2"], ["y", ""]]
        status, headers, _ = await read_answer_head_only(reader)
        assert status == 200 and int(headers["content-length"]) > 0  # the GET's length, no body
        status, _, body = await read_answer(reader)
        assert status == 201 and json.loads(body) == {"method": "POST", "path": "/post", "query": [], "body": "{}",
                                                      "type": "application/json"}
        writer.close()
    run(test)


async def read_answer_head_only(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    return int(head[0].split()[1]), headers, b""


def test_chunked_request_body() -> None:
    async def test(server: HttpServer, toy: Toy) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        status, _, body = await read_answer(reader)
        assert status == 201 and json.loads(body)["body"] == "abcde"
        assert json.loads(body)["type"] == "application/octet-stream"  # none given: what aiohttp says
        writer.close()
    run(test)


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_body_over_the_limit_is_refused_and_the_connection_closed(framing: str) -> None:
    async def test(server: HttpServer, toy: Toy) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        big = b"x" * (MAX_BODY + 1)
        if framing == "length":
            writer.write(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(big))
        else:
            writer.write(b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n"
                         % (len(big), big))
        status, headers, body = await read_answer(reader)
        assert status == 413 and json.loads(body)["code"] == 413
        assert headers["connection"] == "close" and await reader.read() == b""
        writer.close()
    run(test)


def test_expect_100_continue_waits_for_the_answers_before_it() -> None:
    async def test(server: HttpServer, toy: Toy) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        status, _, _ = await read_answer(reader)
        assert status == 200
        assert await reader.readexactly(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"{}")
        status, _, body = await read_answer(reader)
        assert status == 201 and json.loads(body)["body"] == "{}"
        writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n")
        status, _, _ = await read_answer(reader)
        assert status == 417 and await reader.read() == b""
        writer.close()
    run(test)


def test_malformed_requests_and_failing_handlers_do_not_stop_the_server() -> None:
    async def test(server: HttpServer, toy: Toy) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_answer(reader))[0] == 500
        assert json.loads((await read_answer(reader))[2])["path"] == "/after"  # the same connection goes on
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        assert (await read_answer(reader))[0] == 400 and await reader.read() == b""
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /again HTTP/1.0\r\n\r\n")
        status, headers, body = await read_answer(reader)
        assert status == 200 and headers["connection"] == "close" and json.loads(body)["path"] == "/again"
        writer.close()
    run(test)


def test_a_stream_is_chunked_and_its_handler_cancelled_when_the_client_goes_away() -> None:
    async def test(server: HttpServer, toy: Toy) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /stream?end=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = await read_answer(reader)
        assert headers["transfer-encoding"] == "chunked" and body == b"first\nsecond\n"
        assert json.loads((await read_answer(reader))[2])["path"] == "/next"  # kept alive after the stream
        toy.stream_ended.clear()
        writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"second\n\r\n")
        assert not toy.stream_ended.is_set()
        writer.close()
        await toy.stream_ended.wait()
        await asyncio.sleep(0.05)
        assert not server.connections
    run(test)


def test_upgrades_are_handed_to_the_fallback_after_the_answers_before_them() -> None:
    async def test(server: HttpServer, toy: Toy) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /exec HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        await asyncio.sleep(0.05)
        writer.write(b"hello")  # the upgraded protocol's bytes, before the handover
        assert json.loads((await read_answer(reader))[2])["path"] == "/slow"
        assert (await read_answer(reader))[2] == b"aiohttp /exec websocket hello"
        writer.close()
    run(test)


def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    client_context.check_hostname = False

    async def test(server: HttpServer, toy: Toy) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=client_context)
        writer.write(b"GET /tls HTTP/1.1\r\nHost: x\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                     b"Upgrade: SPDY/3.1\r\n\r\n")
        assert json.loads((await read_answer(reader))[2])["path"] == "/tls"
        assert (await read_answer(reader))[2] == b"aiohttp /x SPDY/3.1 "
        writer.close()
    run(test, server_context)
