"""The client port's gRPC side: each connection served on the event loop, each call handed to a link.

HTTP/2 and gRPC's framing are `grpcwire`'s; this is the shell around it. A
`GrpcConnection` owns one client socket: it feeds the bytes to a
`grpcwire.ServerConnection`, starts a call on its `Link` for each call the
client makes, and writes the answers. A link numbers the calls and carries
their frames (the kinds of `ipc.py`: CALL, OPEN, SEND, HALF_CLOSE, CANCEL,
CREDIT one way; REPLY, ERROR, END back) to whatever runs them:

* `worker.CoreLink`: over a Unix socket to the core process (a gRPC worker);
* `LocalLink`: to the core's dispatcher in this same process (`--grpc-workers 0`).

The request and answer bytes pass through undecoded; the core decodes them.
Stream answers are credited back to the core as they leave (`ipc.STREAM_WINDOW`),
so a client that does not read holds back its own stream, not the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from mypy_extensions import mypyc_attr

from gifee.store import clientport, grpcwire, ipc
from gifee.store.handlers import BIDI, UNARY

if TYPE_CHECKING:
    from gifee.store.handlers import Method

log = logging.getLogger("gifee.store.grpcport")

KEEPALIVE_IDLE = 7200  # s: etcd's --grpc-keepalive-interval default
KEEPALIVE_TIMEOUT = 20  # s: etcd's --grpc-keepalive-timeout default

OnFrame = Callable[[int, bytes], None]

# How long a PING's ACK may wait to leave with the connection's next answer (see `GrpcConnection.flush`).
ACK_HOLD = 0.002  # s


@mypyc_attr(allow_interpreted_subclasses=True)  # the worker's CoreLink
class Link:
    """Numbered calls to the core; each call's frames routed back to its callback."""

    def __init__(self) -> None:
        self._next_id = 1
        self._calls: dict[int, OnFrame] = {}
        # Connections with answers to write: written once per batch of answers, so the replies
        # that arrive together for one client connection leave in one write.
        self.dirty: set[GrpcConnection] = set()
        self._loop = asyncio.get_running_loop()
        self._flush_scheduled = False

    def send(self, kind: int, call_id: int, payload: bytes = b"") -> None:
        raise NotImplementedError

    def has_queued(self) -> bool:
        """Frames for the core wait to be written at the end of this loop iteration."""
        return False

    def flush_soon(self, conn: GrpcConnection | None = None) -> None:
        """Write the dirty connections (and `conn`) after the callbacks already queued in this iteration."""
        if conn is not None:
            self.dirty.add(conn)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_later)

    def _flush_later(self) -> None:
        self._flush_scheduled = False
        self.flush_dirty()

    def _new_id(self) -> int:
        call_id = self._next_id
        self._next_id = call_id + 1 if call_id < 2**32 - 1 else 1
        return call_id

    def call(self, index: int, request: bytes, on_frame: OnFrame) -> int:
        """Start a call with its one request (unary or server-streaming); its frames go to on_frame."""
        call_id = self._new_id()
        self._calls[call_id] = on_frame
        self.send(ipc.CALL, call_id, ipc.METHOD_INDEX.pack(index) + request)
        return call_id

    def open(self, index: int, on_frame: OnFrame) -> int:
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

    def route(self, kind: int, call_id: int, payload: bytes) -> None:
        """One frame from the core to its call."""
        on_frame = self._calls.get(call_id)
        if on_frame is not None:
            try:
                on_frame(kind, payload)
            except Exception:  # one client's connection fails, never the link to the core
                log.exception("answering a call failed")
                self._calls.pop(call_id, None)

    def flush_dirty(self) -> None:
        if self.dirty:
            dirty, self.dirty = self.dirty, set()
            for conn in dirty:
                conn.flush_safely()


class LocalLink(Link):
    """Calls to the core's dispatcher in this process: the frames are handed over, not written."""

    def __init__(self, table: list[Method], limit: int) -> None:
        super().__init__()
        self._core = ipc.CoreConnection(table, limit, deliver=self._deliver)

    def send(self, kind: int, call_id: int, payload: bytes = b"") -> None:
        self._core.handle(kind, call_id, payload)

    def _deliver(self, kind: int, call_id: int, payload: bytes) -> None:
        self.route(kind, call_id, payload)
        if self.dirty:
            self.flush_soon()  # after the other answers of this loop iteration (a batch's puts complete together)

    def close(self) -> None:
        self._core.connection_lost(None)


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

    def __init__(
        self,
        link: Link,
        methods: dict[str, tuple[str, int]],
        max_receive: int,
        on_lost: Callable[[], None] | None = None,
        open_set: OpenConnections | None = None,
        after_write: Callable[[], None] | None = None,
    ) -> None:
        self._link = link
        self._after_write = after_write  # a port's busy poll: the client's next request may be close
        self._on_lost = on_lost
        # Where this connection is listed from connection_made to connection_lost (its port's, for close).
        self._open_set = open_set
        self._methods = methods
        self._wire = grpcwire.ServerConnection(max_receive)
        self._calls: dict[int, _Call] = {}
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._held = b""  # PING ACKs waiting for the next write
        self._held_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if self._open_set is not None:
            if self._open_set.closed:
                self.close()  # it came up (a TLS handshake ended, say) after its port closed
                return
            self._open_set.members.add(self)
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
        self._dispatch(self._wire.receive(data))
        if self._link.has_queued():
            # This read's requests leave for the core first: what the client gets now (a PING's ACK,
            # WINDOW_UPDATEs) is not worth delaying them by a write.
            self._link.flush_soon(self)
        else:
            self.flush()

    def _dispatch(self, events: list[grpcwire.Event]) -> None:
        for ev in events:
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

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._open_set is not None:
            self._open_set.members.discard(self)
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        try:
            for sid in list(self._calls):
                self._aborted(sid)
        finally:
            on_lost, self._on_lost = self._on_lost, None
            if on_lost is not None:
                on_lost()  # whatever happened above, the port's count must not keep this connection

    def close(self) -> None:
        """Say goodbye (GOAWAY) and close; the calls still open are cancelled in the core."""
        self._wire.close()
        self.flush()
        if self._transport is not None:
            self._transport.close()

    def flush(self) -> None:
        data = self._wire.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            if grpcwire.only_ping_acks(data):
                # A lone ACK would cost a write of its own (grpc-go pings after each answer it
                # reads): it waits, a moment at most, for the next answer's write.
                self._held += data
                if self._held_timer is None:
                    self._held_timer = self._loop.call_later(ACK_HOLD, self._release_held)
            else:
                if self._held:
                    data = self._held + data
                    self._end_hold()
                self._transport.write(data)
                if self._after_write is not None:
                    self._after_write()
        events = self._wire.take_events()
        if events:
            self._dispatch(events)  # a held stream that drained as its DATA was serialized

    def _end_hold(self) -> None:
        self._held = b""
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None

    def _release_held(self) -> None:
        self._held_timer = None
        held, self._held = self._held, b""
        if held and self._transport is not None and not self._transport.is_closing():
            self._transport.write(held)

    def flush_safely(self) -> None:
        """`flush`, failing this connection only (for the link, which flushes many at once)."""
        try:
            self.flush()
        except Exception:
            log.exception("a gRPC connection failed")
            if self._transport is not None:
                self._transport.abort()

    # ------------------------------------------------------------------ calls

    def _started(self, ev: grpcwire.CallStarted) -> None:
        sid = ev.stream_id
        # grpc-go (so etcd) takes the path with or without its leading "/".
        method = self._methods.get(ev.path if ev.path.startswith("/") else "/" + ev.path)
        if method is None:
            self._wire.finish(sid, grpcwire.Status.UNIMPLEMENTED, unknown_method(ev.path, self._methods))
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
            if self._calls:
                link.dirty.add(self)  # more answers may come in this batch: one write for them all
            else:
                # Its last call answered, nothing else can come for this connection now: write at
                # once rather than a loop turn later (a lone client waits for exactly this).
                link.dirty.discard(self)
                self.flush_safely()

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


def unknown_method(path: str, methods: dict[str, tuple[str, int]]) -> str:
    # grpc-go's texts, which etcd's clients see from etcd.
    service, _, name = path.removeprefix("/").rpartition("/")
    if not service:
        return f"malformed method name: {json.dumps(path)}"
    if not any(known.startswith(f"/{service}/") for known in methods):
        return f"unknown service {service}"
    return f"unknown method {name} for service {service}"


def _close_if_failed(task: asyncio.Task[object], sock: socket.socket) -> None:
    # A TLS handshake that failed or timed out: make sure the socket does not stay open.
    if not task.cancelled() and task.exception() is not None:
        sock.close()


def method_paths(table: list[list[str]]) -> dict[str, tuple[str, int]]:
    return {f"/{service}/{name}": (kind, index) for index, (service, name, kind) in enumerate(table)}


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["h2"])
    return context


class OpenConnections:
    """A port's connections, each from its connection_made to its connection_lost.

    Not a WeakSet of the connections (made when the factory makes one): mypyc's compiled
    GrpcConnection does not clear weak references to itself when freed. A connection that is made
    after its port closed (its TLS handshake ended later) is closed at once.
    """

    def __init__(self) -> None:
        self.members: set[GrpcConnection] = set()
        self.closed = False


class GrpcPort:
    """The client URLs' gRPC connections served by `GrpcConnection`s on one link.

    With `on_http` the URLs are shared with HTTP/1.x (`clientport.ClientPort` routes
    each connection by its first bytes and hands HTTP sockets to `on_http`); without
    it they serve gRPC alone. With `hand_over`, each gRPC connection is first offered
    to it (a worker's offer to the core; it returns whether it took the socket).
    A port with no URLs serves only the sockets given to `take`; `served` counts those
    open (or still in their TLS handshake) and `on_served` hears when it changes.
    """

    def __init__(
        self,
        urls: list[str],
        link: Link,
        table: list[list[str]],
        max_receive: int,
        cert_file: str = "",
        key_file: str = "",
        on_http: Callable[[socket.socket, bool], None] | None = None,
        hand_over: Callable[[socket.socket, bool], bool] | None = None,
        after_write: Callable[[], None] | None = None,
    ) -> None:
        self._urls = urls
        self._after_write = after_write
        self._hand_over = hand_over
        self.served = 0
        self.on_served: Callable[[], None] | None = None
        self._link = link
        self._methods = method_paths(table)
        self._max_receive = max_receive
        # A port with no URLs of its own (the core's, for handed-over sockets) may be given TLS ones.
        secure = any(url.startswith("https://") for url in urls) or (
            not urls and bool(cert_file and key_file)
        )
        self._tls = tls_context(cert_file, key_file) if secure else None
        self._on_http = on_http
        self._loop = asyncio.get_running_loop()
        self._handshakes: set[asyncio.Task[object]] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._port: clientport.ClientPort | None = None
        self._connections = OpenConnections()

    def _connection(self, on_lost: Callable[[], None] | None = None) -> GrpcConnection:
        return GrpcConnection(
            self._link, self._methods, self._max_receive, on_lost, self._connections, self._after_write
        )

    def _route_grpc(self, sock: socket.socket, secure: bool) -> None:
        if self._hand_over is None or not self._hand_over(sock, secure):
            self._take(sock, secure)

    def _take(self, sock: socket.socket, secure: bool, on_lost: Callable[[], None] | None = None) -> None:
        task = self._loop.create_task(
            self._loop.connect_accepted_socket(
                lambda: self._connection(on_lost), sock, ssl=self._tls if secure else None
            )
        )
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)
        task.add_done_callback(lambda t: _close_if_failed(t, sock))
        if on_lost is not None:
            # A connection that never came up (a failed handshake) is never lost either.
            task.add_done_callback(lambda t: on_lost() if t.cancelled() or t.exception() else None)

    def take(self, sock: socket.socket, secure: bool) -> None:
        """Serve a gRPC connection accepted elsewhere (a worker's, handed over); counted in `served`."""
        if self._connections.closed:
            sock.close()  # handed over as the server stops: the client reconnects elsewhere
            return
        done = False

        def lost() -> None:
            nonlocal done
            if not done:
                done = True
                self._served_change(-1)

        self._served_change(1)
        self._take(sock, secure, lost)

    def _served_change(self, delta: int) -> None:
        self.served += delta
        if self.on_served is not None:
            self.on_served()

    async def start(self) -> None:
        if self._on_http is not None:
            self._port = clientport.ClientPort(self._urls, on_grpc=self._route_grpc, on_http=self._on_http)
            self._port.start()
            return
        for url in self._urls:
            tls = self._tls if url.startswith("https://") else None
            for sock in clientport.listen_sockets(url):
                self._servers.append(await self._loop.create_server(self._connection, sock=sock, ssl=tls))

    def close(self) -> None:
        self._connections.closed = True
        if self._port is not None:
            self._port.close()
        for server in self._servers:
            server.close()
        for task in self._handshakes:
            task.cancel()
        for conn in list(self._connections.members):
            conn.close()
