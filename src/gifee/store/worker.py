"""A gRPC worker process of `gifee store`: serves gRPC's wire protocol, forwards each call to the core.

Started by the core with the addresses of its Unix sockets. It learns the
method table from the core's HELLO frame, listens on the client URLs (sharing
the port with its sibling workers through SO_REUSEPORT) and routes each
connection by its first bytes (`clientport.py`): a gRPC connection is served
here, on the event loop (`GrpcConnection`: HTTP/2 and gRPC's framing by
`grpcwire.py`); an HTTP/1.x connection is passed, unread, to the core. With
`--grpc-only` (the store's HTTP side has URLs of its own) it listens on the
client URLs with nothing to route. Each call's request bytes go to the core
as frames (see `ipc.py`) undecoded, and the core's answer bytes go back to the
client as they are. It exits as soon as the core's socket closes, so a killed
core never leaves workers answering for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from typing import cast

from gifee import eventloop
from gifee.store import clientport, grpcwire, ipc
from gifee.store.handlers import BIDI, UNARY, receive_limit

log = logging.getLogger("gifee.store.worker")

KEEPALIVE_IDLE = 7200  # s: etcd's --grpc-keepalive-interval default
KEEPALIVE_TIMEOUT = 20  # s: etcd's --grpc-keepalive-timeout default


class CoreLink(asyncio.BufferedProtocol):
    """The worker's connection to the core: numbered calls, each call's frames routed to its callback."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._reader = ipc.FrameReader()
        self._next_id = 1
        self._calls: dict[int, Callable[[int, bytes], None]] = {}
        self._writer: ipc.FrameWriter | None = None
        # Connections with answers to write: written once per batch of frames from the core, so
        # the replies that one read brings for one client connection leave in one write.
        self.dirty: set[GrpcConnection] = set()
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
        calls = self._calls
        for kind, call_id, payload in self._reader.feed_read(nbytes):
            if kind == ipc.HELLO:
                if not self.table.done():
                    self.table.set_result(json.loads(payload))
                continue
            on_frame = calls.get(call_id)
            if on_frame is not None:
                try:
                    on_frame(kind, payload)
                except Exception:  # one client's connection fails, never the link to the core
                    log.exception("answering a call failed")
                    calls.pop(call_id, None)
        if self.dirty:
            for conn in self.dirty:
                conn.flush()
            self.dirty.clear()

    def _new_id(self) -> int:
        call_id = self._next_id
        self._next_id = call_id + 1 if call_id < 2**32 - 1 else 1
        return call_id

    def send(self, kind: int, call_id: int, payload: bytes = b"") -> None:
        assert self._writer is not None
        self._writer.send(kind, call_id, payload)

    def call(self, index: int, request: bytes, on_frame: Callable[[int, bytes], None]) -> int:
        """Start a call with its one request (unary or server-streaming); its frames go to on_frame."""
        call_id = self._new_id()
        self._calls[call_id] = on_frame
        self.send(ipc.CALL, call_id, ipc.METHOD_INDEX.pack(index) + request)
        return call_id

    def open(self, index: int, on_frame: Callable[[int, bytes], None]) -> int:
        """Start a bidirectional call; its requests follow as SEND frames."""
        call_id = self._new_id()
        self._calls[call_id] = on_frame
        self.send(ipc.OPEN, call_id, ipc.METHOD_INDEX.pack(index))
        return call_id

    def forget(self, call_id: int, cancel: bool) -> None:
        """No more frames for this call; with cancel, stop it in the core too.

        A client that went away (reset, deadline) must stop the call in the core, so that
        a waiting Lock or Campaign withdraws its key as etcd's would.
        """
        if self._calls.pop(call_id, None) is not None and cancel:
            self.send(ipc.CANCEL, call_id)


class _Call:
    """One gRPC call on a client connection and the core call that answers it."""

    __slots__ = ("kind", "index", "call_id", "request", "owed", "waiting", "timer")

    def __init__(self, kind: str, index: int) -> None:
        self.kind = kind
        self.index = index
        self.call_id = 0  # the core's number once started
        self.request: bytes | None = None  # unary and server-streaming calls: their one request
        self.owed = 0  # stream messages handed to HTTP/2 and not yet credited to the core
        self.waiting = 0  # stream messages waiting (whole or in part) for the client's window
        self.timer: asyncio.TimerHandle | None = None


class GrpcConnection(asyncio.Protocol):
    """A client's gRPC connection, served here: HTTP/2 by `grpcwire`, each call answered by the core."""

    def __init__(self, link: CoreLink, methods: dict[str, tuple[str, int]], max_receive: int) -> None:
        self._link = link
        self._methods = methods
        self._wire = grpcwire.ServerConnection(max_receive)
        self._calls: dict[int, _Call] = {}
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # A client that vanished (its machine off, a partition) is noticed as etcd notices it:
            # after 2 h without a word and 20 s more (its --grpc-keepalive-interval and -timeout).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_TIMEOUT)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 1)
        self.flush()

    def pause_writing(self) -> None:
        # The client does not read: stop reading its requests until it has caught up.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        try:
            self._handle(data)
        except Exception:  # a bug must cost this connection only, never the worker
            log.exception("a gRPC connection failed")
            if self._transport is not None:
                self._transport.abort()

    def _handle(self, data: bytes) -> None:
        for ev in self._wire.receive(data):
            kind = type(ev)
            if kind is grpcwire.MessageReceived:
                self._message(ev.stream_id, ev.data)  # type: ignore[union-attr]
            elif kind is grpcwire.RequestEnded:
                self._request_ended(ev.stream_id)  # type: ignore[union-attr]
            elif kind is grpcwire.CallStarted:
                self._started(ev)  # type: ignore[arg-type]
            elif kind is grpcwire.StreamWritable:
                self._writable(ev.stream_id)  # type: ignore[union-attr]
            elif kind is grpcwire.CallAborted:
                self._aborted(ev.stream_id)  # type: ignore[union-attr]
            elif kind is grpcwire.ConnectionEnded:
                self.flush()
                if self._transport is not None:
                    self._transport.close()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        for sid in list(self._calls):
            self._aborted(sid)
        self._transport = None

    def flush(self) -> None:
        data = self._wire.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    # ------------------------------------------------------------------ calls

    def _started(self, ev: grpcwire.CallStarted) -> None:
        sid = ev.stream_id
        method = self._methods.get(ev.path)
        if method is None:
            self._wire.finish(sid, grpcwire.Status.UNIMPLEMENTED, _unknown(ev.path, self._methods))
            return
        kind, index = method
        call = _Call(kind, index)
        self._calls[sid] = call
        if kind == BIDI:
            call.call_id = self._link.open(index, self._on_frame(sid, call))
        if ev.timeout is not None:
            call.timer = self._loop.call_later(ev.timeout, self._expired, sid)

    def _message(self, sid: int, data: bytes) -> None:
        call = self._calls.get(sid)
        if call is None:
            return
        if call.kind == BIDI:
            self._link.send(ipc.SEND, call.call_id, data)
        elif call.request is None:
            call.request = data
        else:
            self._fail(sid, grpcwire.Status.INTERNAL, "grpc: too many messages for a call that takes one")

    def _request_ended(self, sid: int) -> None:
        call = self._calls.get(sid)
        if call is None:
            return
        if call.kind == BIDI:
            self._link.send(ipc.HALF_CLOSE, call.call_id)
        elif call.request is None:
            self._fail(sid, grpcwire.Status.INTERNAL, "grpc: the request ended without a message")
        elif call.call_id == 0:
            call.call_id = self._link.call(call.index, call.request, self._on_frame(sid, call))
            call.request = None

    def _on_frame(self, sid: int, call: _Call) -> Callable[[int, bytes], None]:
        wire = self._wire
        link = self._link

        def on_frame(kind: int, payload: bytes) -> None:
            if kind == ipc.REPLY:
                if call.kind == UNARY:
                    wire.send_message(sid, payload)
                    self._end(sid, call)
                    wire.finish(sid)
                elif wire.send_message(sid, payload):
                    call.owed += 1
                    if call.owed >= ipc.CREDIT_BATCH:
                        link.send(ipc.CREDIT, call.call_id, ipc.CREDIT_COUNT.pack(call.owed))
                        call.owed = 0
                else:
                    call.waiting += 1
            elif kind == ipc.END:
                self._end(sid, call)
                wire.finish(sid)
            elif kind == ipc.ERROR:
                self._end(sid, call)
                wire.finish(sid, payload[0], payload[1:].decode(errors="replace"))
            else:
                return
            link.dirty.add(self)

        return on_frame

    def _writable(self, sid: int) -> None:
        call = self._calls.get(sid)
        if call is not None and call.waiting:
            # The messages that waited for the client's window have gone: the core may send more.
            self._link.send(ipc.CREDIT, call.call_id, ipc.CREDIT_COUNT.pack(call.owed + call.waiting))
            call.owed = call.waiting = 0

    def _end(self, sid: int, call: _Call) -> None:
        """The core has answered in full: forget the call here (the stream may still be draining)."""
        self._calls.pop(sid, None)
        self._link.forget(call.call_id, cancel=False)
        if call.timer is not None:
            call.timer.cancel()

    def _aborted(self, sid: int) -> None:
        call = self._calls.pop(sid, None)
        if call is None:
            return
        if call.timer is not None:
            call.timer.cancel()
        if call.call_id:
            self._link.forget(call.call_id, cancel=True)

    def _fail(self, sid: int, code: int, message: str) -> None:
        self._aborted(sid)
        self._wire.finish(sid, code, message)

    def _expired(self, sid: int) -> None:
        if sid in self._calls:
            self._fail(sid, grpcwire.Status.DEADLINE_EXCEEDED, "context deadline exceeded")
            self.flush()


def _unknown(path: str, methods: dict[str, tuple[str, int]]) -> str:
    # grpc-go's texts, which etcd's clients see from etcd.
    service, _, name = path.removeprefix("/").rpartition("/")
    if not path.startswith("/") or not service:
        return f"malformed method name: {json.dumps(path)}"
    if not any(known.startswith(f"/{service}/") for known in methods):
        return f"unknown service {service}"
    return f"unknown method {name} for service {service}"


def _close_if_failed(task: asyncio.Task[object], sock: socket.socket) -> None:
    # A TLS handshake that failed or timed out: make sure the socket does not stay open.
    if not task.cancelled() and task.exception() is not None:
        sock.close()


def _method_paths(table: list[list[str]]) -> dict[str, tuple[str, int]]:
    return {f"/{service}/{name}": (kind, index) for index, (service, name, kind) in enumerate(table)}


def _tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["h2"])
    return context


def _unix_address(address: str) -> str:
    # "@name" is a Linux abstract socket; a NUL byte cannot travel in argv.
    return "\0" + address[1:] if address.startswith("@") else address


async def serve(
    core_address: str,
    handoff_address: str,
    urls: list[str],
    max_request_bytes: int,
    cert: str,
    key: str,
    grpc_only: bool = False,
) -> None:
    loop = asyncio.get_running_loop()
    _, link = await eventloop.connect_unix(CoreLink, _unix_address(core_address))
    methods = _method_paths(await link.table)
    # etcd's limit and grpc-go's text (as the core's check_size), refused as soon as a message's length is read.
    max_receive = receive_limit(max_request_bytes)
    tls = _tls_context(cert, key) if any(url.startswith("https://") for url in urls) else None

    def connection() -> GrpcConnection:
        return GrpcConnection(link, methods, max_receive)

    handshakes: set[asyncio.Task[object]] = set()

    def on_grpc(sock: socket.socket, secure: bool) -> None:
        task = loop.create_task(loop.connect_accepted_socket(connection, sock, ssl=tls if secure else None))
        handshakes.add(task)
        task.add_done_callback(handshakes.discard)
        task.add_done_callback(lambda t: _close_if_failed(t, sock))

    if grpc_only:
        for url in urls:
            for sock in clientport.listen_sockets(url):
                await loop.create_server(
                    connection, sock=sock, ssl=tls if url.startswith("https://") else None
                )
    else:
        handoff = clientport.HandoffSender(_unix_address(handoff_address))
        await handoff.connect()
        port = clientport.ClientPort(urls, on_grpc=on_grpc, on_http=handoff.send)
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
