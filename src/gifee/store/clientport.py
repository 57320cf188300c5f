"""The client port: gRPC and HTTP/1.x on one listener, as etcd serves them (cmux).

etcd answers `curl http://host:2379/health` and gRPC on the same port: it looks
at each connection's first bytes and hands the connection to its gRPC or its
HTTP server. gifee does the same:

* The process that owns the client port (each gRPC worker, or the core with
  `--grpc-workers 0`) accepts the connections itself (SO_REUSEPORT, so the
  workers share the port) and peeks at the first bytes without reading them
  (MSG_PEEK).
* A connection that starts with the HTTP/2 client preface is gRPC: the socket,
  unread, goes to `on_grpc` (`grpcport.GrpcPort`, which serves it in that process).
* Anything else is HTTP/1.x: the socket itself, unread, goes to `on_http`, the
  core's HTTP server (`gateway.py`); a worker passes it over a Unix socket
  (SCM_RIGHTS, `HandoffSender` -> `HandoffReceiver`). The same way a worker
  passes a gRPC connection to the core when the core offers to serve one itself
  (`server.py`).
* On https URLs the first bytes are a TLS ClientHello. etcd terminates TLS
  first and then looks inside; gifee routes by the ALPN protocols the client
  offers and leaves the handshake to whoever takes the socket: a client
  offering "h2" but not "http/1.1" (every gRPC client: grpc-go offers only h2,
  gRPC's C core grpc-exp and h2) is gRPC; anything else (curl, browsers, no
  ALPN) goes to the HTTP server, which speaks HTTP/1.1.

`classify_plain` and `classify_tls` are the pure rules.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import resource
import socket
from collections.abc import Callable
from typing import Literal

from gifee.store.listen import host_port

log = logging.getLogger("gifee.store.clientport")

Kind = Literal["grpc", "http"]
GRPC: Kind = "grpc"
HTTP: Kind = "http"

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 3.4: every HTTP/2 client sends this first
MAX_HELLO = 64 * 1024  # a ClientHello longer than this is not parsed (routed as HTTP)

# A connection that has not said enough to be routed within this time is closed
# (gRPC's own server allows a new connection 120 s for its handshake).
SNIFF_TIMEOUT = 60.0
_POLL_FIRST = 0.002  # re-peek delay when the first bytes were not enough (doubles, up to _POLL_MAX)
_POLL_MAX = 0.1
_ACCEPT_BATCH = 64
_ACCEPT_PAUSE = 1.0  # after EMFILE and the like, as asyncio's own servers do
_HANDOFF_QUEUE = 1024
# What travels with each handed-over socket: its protocol and whether it speaks TLS.
_HANDOFF_TAGS = {(HTTP, False): b"p", (HTTP, True): b"t", (GRPC, False): b"g", (GRPC, True): b"s"}
_HANDOFF_KINDS = {tag: kind_tls for kind_tls, tag in _HANDOFF_TAGS.items()}


# --------------------------------------------------------------------------- routing rules


def classify_plain(data: bytes) -> Kind | None:
    """gRPC when the bytes start with the HTTP/2 preface, HTTP as soon as they cannot; else None."""
    n = min(len(data), len(PREFACE))
    if data[:n] != PREFACE[:n]:
        return HTTP
    return GRPC if n == len(PREFACE) else None


def classify_tls(data: bytes) -> Kind | None:
    """gRPC when the ClientHello offers h2 and not http/1.1; None until the ClientHello is complete."""
    offered = offered_alpn(data)
    if offered is None:
        return HTTP if len(data) >= MAX_HELLO else None
    return GRPC if b"h2" in offered and b"http/1.1" not in offered else HTTP


def offered_alpn(data: bytes) -> list[bytes] | None:
    """The ALPN protocols of the TLS ClientHello at the start of `data`.

    None while the ClientHello is incomplete; [] when the bytes are not a
    well-formed ClientHello or it has no ALPN extension.
    """
    handshake = bytearray()
    pos = 0
    while True:
        if len(data) - pos < 5:
            return None
        if data[pos] != 22:  # not a handshake record
            return []
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if len(data) - pos - 5 < length:
            return None
        handshake += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if len(handshake) >= 4:
            if handshake[0] != 1:  # not a ClientHello
                return []
            end = 4 + int.from_bytes(handshake[1:4], "big")
            if len(handshake) >= end:
                try:
                    return _alpn_of_client_hello(bytes(handshake[4:end]))
                except (IndexError, ValueError):
                    return []


def _alpn_of_client_hello(body: bytes) -> list[bytes]:
    pos = 2 + 32  # client_version, random
    pos += 1 + body[pos]  # session_id
    pos += 2 + int.from_bytes(body[pos : pos + 2], "big")  # cipher_suites
    pos += 1 + body[pos]  # compression_methods
    if pos >= len(body):
        return []  # no extensions
    end = pos + 2 + int.from_bytes(body[pos : pos + 2], "big")
    pos += 2
    if end > len(body):
        raise ValueError("extensions overrun the ClientHello")
    while pos + 4 <= end:
        ext_type = int.from_bytes(body[pos : pos + 2], "big")
        ext_len = int.from_bytes(body[pos + 2 : pos + 4], "big")
        pos += 4
        if pos + ext_len > end:
            raise ValueError("extension overruns the ClientHello")
        if ext_type == 16:  # application_layer_protocol_negotiation
            ext = body[pos : pos + ext_len]
            names: list[bytes] = []
            i = 2
            stop = 2 + int.from_bytes(ext[0:2], "big")
            while i < stop and i < len(ext):
                n = ext[i]
                names.append(ext[i + 1 : i + 1 + n])
                i += 1 + n
            return names
        pos += ext_len
    return []


# --------------------------------------------------------------------------- accepting and routing


def listen_sockets(url: str) -> list[socket.socket]:
    """Non-blocking listening sockets for a client URL, shared with sibling processes (SO_REUSEPORT).

    A name with several addresses (localhost: 127.0.0.1 and ::1) gets a socket on
    each that the machine has; only if none can be bound is that an error.
    """
    host, port = host_port(url)
    out: list[socket.socket] = []
    seen: set[tuple[int, str]] = set()
    failure: OSError | None = None
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            if (family, str(address[0])) in seen:
                continue
            seen.add((family, str(address[0])))
            s = socket.socket(family, kind, proto)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind(address)
                s.listen(socket.SOMAXCONN)
                s.setblocking(False)
            except OSError as e:
                s.close()
                if e.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    raise OSError(e.errno, f"listen tcp {host}:{port}: bind: {e.strerror}") from None
                failure = e
                continue
            out.append(s)
    except BaseException:
        for s in out:
            s.close()
        raise
    if not out:
        reason = failure.strerror if failure is not None else "no address"
        raise OSError(errno.EADDRNOTAVAIL, f"listen tcp {host}:{port}: {reason}")
    return out


def raise_descriptor_limit() -> None:
    """Raise the soft limit on open files to the hard one, as Go (and so etcd) does at start."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class ClientPort:
    """Accepts connections on the client URLs and routes each by its first bytes.

    `on_grpc(sock, tls)` takes over a gRPC connection's socket and `on_http(sock, tls)`
    an HTTP one, nothing read from either yet.
    """

    def __init__(
        self,
        urls: list[str],
        *,
        on_grpc: Callable[[socket.socket, bool], None],
        on_http: Callable[[socket.socket, bool], None],
        sniff_timeout: float = SNIFF_TIMEOUT,
    ) -> None:
        self._urls = urls
        self._on_grpc = on_grpc
        self._on_http = on_http
        self._sniff_timeout = sniff_timeout
        self._listeners: list[tuple[socket.socket, bool]] = []
        self._sniffers: set[_Sniffer] = set()
        self._loop = asyncio.get_running_loop()
        self._closed = False

    def start(self) -> None:
        try:
            for url in self._urls:
                tls = url.startswith("https://")
                for s in listen_sockets(url):
                    self._listeners.append((s, tls))
        except BaseException:
            self.close()
            raise
        for s, tls in self._listeners:
            self._loop.add_reader(s.fileno(), self._accept, s, tls)

    def _accept(self, listener: socket.socket, tls: bool) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                # Out of file descriptors or memory: stop accepting for a moment.
                log.error("accept on the client port failed: %s", e)
                self._loop.remove_reader(listener.fileno())
                self._loop.call_later(_ACCEPT_PAUSE, self._resume_accept, listener, tls)
                return
            conn.setblocking(False)
            _Sniffer(self, conn, tls).start()

    def _resume_accept(self, listener: socket.socket, tls: bool) -> None:
        if not self._closed and listener.fileno() >= 0:
            self._loop.add_reader(listener.fileno(), self._accept, listener, tls)

    def _route(self, sock: socket.socket, tls: bool, kind: Kind) -> None:
        if self._closed:
            sock.close()
        elif kind == GRPC:
            self._hand_over(self._on_grpc, sock, tls)
        else:
            self._hand_over(self._on_http, sock, tls)

    @staticmethod
    def _hand_over(take: Callable[[socket.socket, bool], None], sock: socket.socket, tls: bool) -> None:
        try:
            take(sock, tls)
        except Exception:
            log.exception("a client connection could not be handed over")
            sock.close()

    def close(self) -> None:
        """Stop accepting; drop connections not yet routed."""
        self._closed = True
        for s, _ in self._listeners:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(s.fileno())
            s.close()
        self._listeners.clear()
        for sniffer in list(self._sniffers):
            sniffer.close()


class _Sniffer:
    """Peeks at a new connection until its first bytes say where it goes."""

    def __init__(self, port: ClientPort, sock: socket.socket, tls: bool) -> None:
        self._port = port
        self._sock = sock
        self._fd = sock.fileno()
        self._tls = tls
        self._loop = port._loop
        self._delay = _POLL_FIRST
        self._timer: asyncio.TimerHandle | None = None
        self._poll: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._port._sniffers.add(self)
        self._timer = self._loop.call_later(self._port._sniff_timeout, self.close)
        self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        limit = MAX_HELLO if self._tls else len(PREFACE)
        try:
            data = self._sock.recv(limit, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if not data:  # closed before saying anything
            self.close()
            return
        kind = classify_tls(data) if self._tls else classify_plain(data)
        if kind is None:
            # Part of the first message has arrived. Readiness is level-triggered and the
            # bytes stay queued (peeked, not read), so look again a little later.
            self._loop.remove_reader(self._fd)
            self._poll = self._loop.call_later(self._delay, self._repeek)
            self._delay = min(2 * self._delay, _POLL_MAX)
            return
        self._finish()
        self._port._route(self._sock, self._tls, kind)

    def _repeek(self) -> None:
        self._poll = None
        self._loop.add_reader(self._fd, self._readable)

    def _finish(self) -> None:
        self._port._sniffers.discard(self)
        self._loop.remove_reader(self._fd)
        for handle in (self._timer, self._poll):
            if handle is not None:
                handle.cancel()

    def close(self) -> None:
        self._finish()
        self._sock.close()


# --------------------------------------------------------------------------- HTTP handoff to the core


class HandoffSender:
    """A worker's side: passes accepted sockets to the core (SCM_RIGHTS over SOCK_SEQPACKET).

    HTTP connections always; a gRPC connection when the core has offered to serve it.
    """

    def __init__(self, address: str) -> None:
        self._address = address
        self._sock: socket.socket | None = None
        self._queue: collections.deque[tuple[socket.socket, bytes]] = collections.deque()
        self._loop = asyncio.get_running_loop()
        self._waiting = False

    async def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.setblocking(False)
        try:
            await self._loop.sock_connect(sock, self._address)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def can_send(self) -> bool:
        """Whether `send` would take a socket now (the core's link is up and not backed up)."""
        return self._sock is not None and len(self._queue) < _HANDOFF_QUEUE

    def send(self, conn: socket.socket, tls: bool, kind: Kind = HTTP) -> None:
        if not self.can_send():
            conn.close()
            return
        self._queue.append((conn, _HANDOFF_TAGS[kind, tls]))
        if not self._waiting:
            self._flush()

    def _flush(self) -> None:
        sock = self._sock
        while self._queue and sock is not None:
            conn, tag = self._queue[0]
            try:
                socket.send_fds(sock, [tag], [conn.fileno()])
            except (BlockingIOError, InterruptedError):
                if not self._waiting:
                    self._waiting = True
                    self._loop.add_writer(sock.fileno(), self._writable)
                return
            except OSError as e:
                log.error("cannot hand a connection to the core: %s", e)
                self.close()
                return
            self._queue.popleft()
            conn.close()  # the core holds its own descriptor now
        if self._waiting and sock is not None:
            self._waiting = False
            self._loop.remove_writer(sock.fileno())

    def _writable(self) -> None:
        self._flush()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._waiting:
                self._loop.remove_writer(sock.fileno())
            sock.close()
        while self._queue:
            self._queue.popleft()[0].close()


class HandoffReceiver:
    """The core's side: receives the sockets its workers pass and calls `on_http` or `on_grpc` with each."""

    def __init__(
        self,
        address: str,
        on_http: Callable[[socket.socket, bool], None],
        on_grpc: Callable[[socket.socket, bool], None] | None = None,
    ) -> None:
        self._address = address
        self._on_http = on_http
        self._on_grpc = on_grpc
        self._loop = asyncio.get_running_loop()
        self._listener: socket.socket | None = None
        self._links: set[socket.socket] = set()

    def start(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            s.bind(self._address)
            s.listen(64)
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        self._listener = s
        self._loop.add_reader(s.fileno(), self._accept)

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            link, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.error("accept on the handoff socket failed: %s", e)
            return
        link.setblocking(False)
        self._links.add(link)
        self._loop.add_reader(link.fileno(), self._receive, link)

    def _receive(self, link: socket.socket) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                msg, fds, _flags, _ = socket.recv_fds(link, 16, 4, socket.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                msg, fds = b"", []
            if not msg and not fds:  # the worker is gone
                self._drop(link)
                return
            kind, tls = _HANDOFF_KINDS.get(msg, (None, False))
            take = self._on_http if kind == HTTP else self._on_grpc if kind == GRPC else None
            for i, fd in enumerate(fds):
                conn = socket.socket(fileno=fd)
                if i > 0 or take is None:
                    conn.close()  # never sent by a worker (or gRPC, which this core did not offer to take)
                    continue
                conn.setblocking(False)
                try:
                    take(conn, tls)
                except Exception:
                    log.exception("a handed-over connection could not be taken over")
                    conn.close()

    def _drop(self, link: socket.socket) -> None:
        self._links.discard(link)
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(link.fileno())
        link.close()

    def close(self) -> None:
        for link in list(self._links):
            self._drop(link)
        if self._listener is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
