"""A gRPC worker process of `gifee store`: terminates gRPC, forwards bytes to the core.

Started by the core with the addresses of its Unix sockets. It learns the
method table from the core's HELLO frame, listens on the client URLs (sharing
the port with its sibling workers through SO_REUSEPORT) and routes each
connection by its first bytes (`clientport.py`): gRPC connections are relayed
to its own gRPC server, which listens only on private Unix sockets; HTTP/1.x
connections are passed, unread, to the core. With `--grpc-only` (the store's
HTTP side has URLs of its own) its gRPC server listens on the client URLs
itself, with nothing to route or relay. It relays every gRPC call to the
core as frames (see `ipc.py`). It exits as soon as the core's socket closes,
so a killed core never leaves workers answering for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import grpc

from gifee import eventloop
from gifee.store import clientport, ipc
from gifee.store.handlers import SERVER_STREAM, UNARY
from gifee.store.listen import grpc_options_for


class CoreLink(asyncio.BufferedProtocol):
    """The worker's connection to the core: numbered calls, replies routed back by number."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._reader = ipc.FrameReader()
        self._next_id = 1
        self._waiting: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._streams: dict[int, asyncio.Queue[tuple[int, bytes]]] = {}
        self._writer: ipc.FrameWriter | None = None
        self.table: asyncio.Future[list[list[str]]] = self._loop.create_future()
        self.closed: asyncio.Future[None] = self._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._writer = ipc.FrameWriter(cast(asyncio.Transport, transport).write, self._loop)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._reader.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        for kind, call_id, payload in self._reader.feed_read(nbytes):
            if kind == ipc.HELLO:
                if not self.table.done():
                    self.table.set_result(json.loads(payload))
                continue
            fut = self._waiting.pop(call_id, None)
            if fut is not None:
                if not fut.done():
                    fut.set_result((kind, payload))
                continue
            queue = self._streams.get(call_id)
            if queue is not None:
                queue.put_nowait((kind, payload))

    def _new_id(self) -> int:
        call_id = self._next_id
        self._next_id = call_id + 1 if call_id < 2**32 - 1 else 1
        return call_id

    def send(self, kind: int, call_id: int, payload: bytes = b"") -> None:
        assert self._writer is not None
        self._writer.send(kind, call_id, payload)

    async def unary(self, index: int, request: bytes) -> tuple[int, bytes]:
        call_id = self._new_id()
        fut: asyncio.Future[tuple[int, bytes]] = self._loop.create_future()
        self._waiting[call_id] = fut
        self.send(ipc.CALL, call_id, ipc.METHOD_INDEX.pack(index) + request)
        try:
            return await fut
        finally:
            self._waiting.pop(call_id, None)
            # Cancelling the waiting handler cancels fut too: "no reply arrived" is what counts.
            if fut.cancelled() or not fut.done():
                # The client went away (cancel, deadline): stop the call in the core too,
                # so that a waiting Lock or Campaign withdraws its key as etcd's would.
                self.send(ipc.CANCEL, call_id)

    def open_stream(self, index: int, request: bytes | None) -> tuple[int, asyncio.Queue[tuple[int, bytes]]]:
        call_id = self._new_id()
        queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        self._streams[call_id] = queue
        if request is None:
            self.send(ipc.OPEN, call_id, ipc.METHOD_INDEX.pack(index))
        else:
            self.send(ipc.CALL, call_id, ipc.METHOD_INDEX.pack(index) + request)
        return call_id, queue

    def close_stream(self, call_id: int, cancel: bool) -> None:
        if self._streams.pop(call_id, None) is not None and cancel:
            self.send(ipc.CANCEL, call_id)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], payload: bytes) -> None:
    code, message = ipc.decode_error(payload)
    await context.abort(code, message)


def _handlers(link: CoreLink, table: list[list[str]]) -> list[grpc.GenericRpcHandler]:
    services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def unary(index: int) -> Callable[..., Any]:
        async def handle(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            kind, payload = await link.unary(index, request)
            if kind != ipc.REPLY:
                await _abort(context, payload)
            return payload

        return handle

    async def relay(
        call_id: int, queue: asyncio.Queue[tuple[int, bytes]], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        finished = False
        handed = 0
        try:
            while True:
                kind, payload = await queue.get()
                if kind == ipc.REPLY:
                    yield payload
                    # gRPC has taken the message: let the core send more. In batches of half the
                    # window, not per message: a watch event to many watchers would otherwise cost a
                    # frame (a write here, a wakeup in the core) per watcher. The core still never
                    # waits while half a window is unsent here, so it cannot stall a stream.
                    handed += 1
                    if handed >= ipc.CREDIT_BATCH:
                        link.send(ipc.CREDIT, call_id, ipc.CREDIT_COUNT.pack(handed))
                        handed = 0
                elif kind == ipc.END:
                    finished = True
                    return
                else:
                    finished = True
                    await _abort(context, payload)
        finally:
            link.close_stream(call_id, cancel=not finished)

    def server_stream(index: int) -> Callable[..., Any]:
        async def handle(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
            call_id, queue = link.open_stream(index, request)
            async for payload in relay(call_id, queue, context):
                yield payload

        return handle

    def bidi(index: int) -> Callable[..., Any]:
        async def handle(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[bytes]:
            call_id, queue = link.open_stream(index, None)

            async def pump() -> None:
                try:
                    async for request in requests:
                        link.send(ipc.SEND, call_id, request)
                    link.send(ipc.HALF_CLOSE, call_id)
                except (asyncio.CancelledError, Exception):
                    link.send(ipc.HALF_CLOSE, call_id)

            pumper = asyncio.get_running_loop().create_task(pump())
            try:
                async for payload in relay(call_id, queue, context):
                    yield payload
            finally:
                pumper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pumper

        return handle

    for index, (service, name, kind) in enumerate(table):
        if kind == UNARY:
            handler = grpc.unary_unary_rpc_method_handler(unary(index))
        elif kind == SERVER_STREAM:
            handler = grpc.unary_stream_rpc_method_handler(server_stream(index))
        else:
            handler = grpc.stream_stream_rpc_method_handler(bidi(index))
        services.setdefault(service, {})[name] = handler
    return [grpc.method_handlers_generic_handler(s, m) for s, m in services.items()]


def _unix_address(address: str) -> str:
    # "@name" is a Linux abstract socket; a NUL byte cannot travel in argv.
    return "\0" + address[1:] if address.startswith("@") else address


async def serve(
    core_address: str, handoff_address: str, urls: list[str], max_request_bytes: int, cert: str, key: str,
    grpc_only: bool = False,
) -> None:
    _, link = await eventloop.connect_unix(CoreLink, _unix_address(core_address))
    table = await link.table
    server = grpc.aio.server(options=grpc_options_for(max_request_bytes))
    server.add_generic_rpc_handlers(_handlers(link, table))
    if grpc_only:
        clientport.add_public_ports(server, urls, cert, key)
        await server.start()
    else:
        name = f"{core_address.lstrip('@')}-w{os.getpid()}"
        plain, secure = clientport.add_private_ports(server, name, urls, cert, key)
        await server.start()
        handoff = clientport.HandoffSender(_unix_address(handoff_address))
        await handoff.connect()
        port = clientport.ClientPort(urls, grpc_plain=plain, grpc_tls=secure, on_http=handoff.send)
        port.start()
    link.send(ipc.HELLO, 0)  # tells the core this worker listens
    await link.closed
    # The core is gone: leave at once, without finishing calls on its behalf.
    os._exit(0)


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gifee-store-worker")
    p.add_argument("--core", required=True)
    p.add_argument("--handoff", required=True)
    p.add_argument("--listen", required=True)
    p.add_argument("--max-request-bytes", type=int, required=True)
    p.add_argument("--cert-file", default="")
    p.add_argument("--key-file", default="")
    p.add_argument("--grpc-only", action="store_true", help="the client URLs serve gRPC alone (no HTTP)")
    args = p.parse_args(argv)
    _die_with_parent()
    clientport.raise_descriptor_limit()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the core decides when workers stop
    try:
        eventloop.run(
            serve(
                args.core,
                args.handoff,
                args.listen.split(","),
                args.max_request_bytes,
                args.cert_file,
                args.key_file,
                args.grpc_only,
            )
        )
    except Exception as e:
        print(f"gifee store worker: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
