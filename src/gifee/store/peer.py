"""Peer transport: Raft messages between store members over TCP or TLS (the role of etcd's rafthttp).

Rules
-----
* Every connection carries frames: a header ``struct.Struct(">IB")`` -- payload length (u32), frame kind
  (u8) -- then the payload.  Kinds: HELLO, BATCH (a `gifeeraftpb.Batch`, see `raft/wire.py`), ERROR,
  MEMBERS_REQUEST, MEMBERS and SNAPSHOT_ACK (empty).  Before the handshake a frame may hold
  `MAX_HANDSHAKE_FRAME` bytes, after it `MAX_FRAME` (room for a snapshot); a longer frame, an unexpected
  kind or a payload that does not decode closes that one connection (with an ERROR frame when it can be
  written), never the listener.
* A connection is one-way for Raft traffic: the member that dials writes BATCH frames, the member that
  accepts reads them and writes back nothing but its HELLO, one SNAPSHOT_ACK per SNAPSHOT message it has
  handed to ``on_messages``, and an ERROR before it closes.  Each member dials each of its peers itself,
  so two members share two connections.
* The dialler's first frame is a HELLO naming the cluster, itself and the member it means to reach.  The
  acceptor refuses a different cluster id (different cluster token), a HELLO not addressed to it, or
  another protocol version with an ERROR frame and closes; otherwise it answers with its own HELLO, which
  the dialler checks the same way before it sends anything.  A MEMBERS_REQUEST (whose HELLO may leave the
  cluster id 0: any cluster) is answered with one MEMBERS frame holding ``members_json()``.
* Received messages must be addressed to this member and come from the member that said HELLO (except a
  forwarded TRANSFER_LEADER, whose ``from_`` names the transferee); anything else is a bad frame.  Any
  member id of the right cluster may say HELLO: ignoring members removed from the cluster is the caller's
  job, as it is for etcd's raft node.
* `send` never blocks and never raises, and no callback runs inside it: reports are scheduled with
  ``call_soon``.  Messages leave in the order they were sent, per peer.  A peer's queue holds at most
  ``max_queue_messages`` messages and ``max_queue_bytes`` encoded bytes, plus one SNAPSHOT message;
  messages beyond that, messages to unknown members, and messages sent while a peer is in back-off after
  a failure are dropped and reported with ``on_unreachable``.  When a connection breaks, everything queued
  or not yet drained on it is dropped and reported the same way -- Raft resends what matters.
* A SNAPSHOT message is reported with ``on_snapshot_status(to, True)`` once the receiving member's
  transport acknowledges it (SNAPSHOT_ACK: read whole, decoded and handed to its ``on_messages``), and
  with ``(to, False)`` (plus ``on_unreachable``) if it is dropped or the connection fails first.  Received
  is not applied: the follower's response tells the leader that.
* This module opens connections only to the URLs it is given and listens only on the URLs it is given.

Theory of operation
-------------------
Each remote member has a `_Peer` with a queue of encoded frames and one task that owns its connection.
`send` groups messages by recipient, encodes each group into one BATCH payload (a SNAPSHOT message gets a
payload of its own) and appends it to that peer's queue.  The task dials lazily when the queue is no
longer empty, trying each of the peer's URLs in turn; while it connects, or while a write drains, further
`send` calls only queue.  When the task gets to write, it takes the whole queue: consecutive payloads are
merged into a single BATCH frame -- a `Batch` has nothing but one repeated field, so concatenated
encodings are the encoding of the concatenated batches -- and the frames go out in one write.  Under
load, then, one write carries everything sent since the last one.  A snapshot's frame is written on its
own (never copied into a joined buffer), and the snapshot waits in a FIFO for its SNAPSHOT_ACK; the
buffer's draining is no proof of delivery with TLS, where asyncio's SSL layer hands everything to the
socket transport's own buffer at once, so the receiver says so instead (as etcd's snapshot POST gets a
response).  Snapshots share the connection with other traffic: a large one delays the heartbeats behind
it, which followers with CheckQuorum leases tolerate.

A failed dial or a broken connection puts the peer in back-off: 50 ms doubling to 1 s, reset by the next
successful handshake; while it lasts `send` drops at once, and the next `send` after it dials again.  A
small task reads the dialled connection too, for snapshot acknowledgements and to notice the remote
closing it (or an ERROR frame) while nothing is being written.  On the accepting side one task per
connection reads frames and hands each batch to ``on_messages`` on the event loop; reading the next frame
waits for that call to return, so a slow member slows its senders down through TCP (their queues fill
and drop) rather than buffering without bound.  When a member dials again, its older incoming connection
is closed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from urllib.parse import urlsplit

from google.protobuf.message import DecodeError

from gifee.store.listen import host_port
from gifee.store.proto import raft_pb2
from gifee.store.raft.types import Message, MessageType
from gifee.store.raft.wire import NETWORK_MESSAGES, decode_batch, encode_batch

__all__ = [
    "MAX_FRAME",
    "PeerProtocolError",
    "PeerRefusedError",
    "PeerStats",
    "PeerTransport",
    "fetch_members",
]

log = logging.getLogger("gifee.store.peer")

PROTOCOL_VERSION = 1
HEADER = struct.Struct(">IB")  # payload length, frame kind

KIND_HELLO = 1
KIND_BATCH = 2
KIND_ERROR = 3
KIND_MEMBERS_REQUEST = 4
KIND_MEMBERS = 5
KIND_SNAPSHOT_ACK = 6

ERROR_BAD_FRAME = 1
ERROR_CLUSTER_MISMATCH = 2
ERROR_WRONG_MEMBER = 3
ERROR_PROTOCOL_VERSION = 4
ERROR_UNAVAILABLE = 5
ERROR_REMOVED = 6  # the dialling member was removed from the cluster: it must stop
REMOVED_TEXT = "the member has been permanently removed from the cluster"

MAX_HANDSHAKE_FRAME = 64 * 1024
MAX_MEMBERS_FRAME = 64 * 1024 * 1024
MAX_FRAME = 512 * 1024 * 1024
MAX_QUEUE_MESSAGES = 4096
MAX_QUEUE_BYTES = 64 * 1024 * 1024
MERGE_BYTES = 16 * 1024 * 1024  # consecutive payloads are merged into frames of up to this size
BACKOFF_MIN = 0.05
BACKOFF_MAX = 1.0
DIAL_TIMEOUT = 2.0  # connect and handshake, per URL
HANDSHAKE_TIMEOUT = 5.0  # an accepted connection must say HELLO within this
STREAM_LIMIT = 1024 * 1024
WRITE_HIGH_WATER = 1024 * 1024

_SNAPSHOT = MessageType.SNAPSHOT
_TRANSFER_LEADER = MessageType.TRANSFER_LEADER


class PeerProtocolError(Exception):
    """A frame that breaks the protocol: too long, of the wrong kind, or undecodable."""


class PeerRefusedError(ConnectionError):
    """The other side refused the handshake (its ERROR frame), or answered as the wrong member."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"refused ({code}): {message}")
        self.code = code
        self.message = message


@dataclass
class PeerStats:
    """Counters for tests and metrics; all totals since the transport was made."""

    writes: int = 0  # times a peer's queue was taken and written to its connection in one go
    frames_sent: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0
    messages_dropped: int = 0
    dials: int = 0  # outgoing connections that completed the handshake
    dial_failures: int = 0
    connections_lost: int = 0  # outgoing connections that broke after the handshake
    accepted: int = 0  # incoming connections that completed the handshake
    refused: int = 0  # incoming connections refused at the handshake or closed for a bad frame
    frames_received: int = 0
    messages_received: int = 0


@dataclass(slots=True)
class _Payload:
    data: bytes  # an encoded Batch
    messages: int
    snapshot_to: int  # the recipient, if this is a SNAPSHOT message's payload; else 0


# ---------------------------------------------------------------- framing


def _frame(kind: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), kind) + payload


async def _read_frame(reader: asyncio.StreamReader, max_size: int) -> tuple[int, bytes]:
    size, kind = HEADER.unpack(await reader.readexactly(HEADER.size))
    if size > max_size:
        raise PeerProtocolError(f"frame of {size} bytes exceeds the limit of {max_size}")
    return kind, (await reader.readexactly(size) if size else b"")


_SNAPSHOT_ACK = HEADER.pack(0, KIND_SNAPSHOT_ACK)


def _parse_hello(payload: bytes) -> raft_pb2.Hello:
    hello = raft_pb2.Hello()
    try:
        hello.ParseFromString(payload)
    except (DecodeError, RuntimeError) as e:
        raise PeerProtocolError(f"malformed hello: {e}") from None
    return hello


def _parse_error(payload: bytes) -> PeerRefusedError:
    err = raft_pb2.Error()
    try:
        err.ParseFromString(payload)
    except (DecodeError, RuntimeError):
        return PeerRefusedError(ERROR_BAD_FRAME, "undecodable error frame")
    return PeerRefusedError(err.code, err.message)


def _error_frame(code: int, message: str) -> bytes:
    return _frame(KIND_ERROR, raft_pb2.Error(code=code, message=message).SerializeToString())


# asyncio's socket transport reads up to 256 KiB at a time into a fresh bytes object:
# above glibc's mmap threshold (128 KiB), so every read cost an mmap, an mremap and a
# munmap (a 300-byte round trip over a StreamReader: 60 us -> 28 us with 64 KiB here).
# A StreamReader joins short reads itself, so smaller reads lose nothing.
READ_CHUNK_BYTES = 64 * 1024


def _set_nodelay(writer: asyncio.StreamWriter) -> None:
    """Tune a peer connection: no Nagle delay, reads below the mmap threshold."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = writer.transport
    # `max_size` is the plain socket transport's read size (TLS transports read through their
    # own buffers and lack it).
    if isinstance(getattr(transport, "max_size", None), int):
        transport.max_size = READ_CHUNK_BYTES  # type: ignore[attr-defined]


def _check_url(url: str) -> tuple[str, str, int]:
    scheme = urlsplit(url).scheme if "://" in url else "http"
    if scheme not in ("http", "https"):
        raise ValueError(f"peer URL {url!r}: scheme must be http or https")
    host, port = host_port(url)
    return scheme, host, port


async def _open(
    url: str, client_ssl: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    scheme, host, port = _check_url(url)
    if scheme == "https":
        ctx = client_ssl if client_ssl is not None else ssl.create_default_context()
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ctx, server_hostname=host, limit=STREAM_LIMIT
        )
    else:
        reader, writer = await asyncio.open_connection(host, port, limit=STREAM_LIMIT)
    _set_nodelay(writer)
    return reader, writer


async def _close_quietly(writer: asyncio.StreamWriter, timeout: float = 1.0) -> None:
    writer.close()
    with suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), timeout)


def _write_payloads(writer: asyncio.StreamWriter, payloads: list[_Payload]) -> tuple[int, int]:
    """Write `payloads` as BATCH frames, merging consecutive non-snapshot ones: (frames, snapshots)."""
    chunks: list[bytes] = []  # small frames, joined into one write
    merged: list[bytes] = []
    merged_size = frames = snapshots = 0
    for p in payloads:
        if p.snapshot_to or merged_size + len(p.data) > MERGE_BYTES:
            if merged:
                chunks.append(HEADER.pack(merged_size, KIND_BATCH))
                chunks.extend(merged)
                frames += 1
                merged, merged_size = [], 0
        if p.snapshot_to:  # large: written as is, not copied into a joined buffer
            if chunks:
                writer.writelines(chunks)
                chunks = []
            writer.write(HEADER.pack(len(p.data), KIND_BATCH))
            writer.write(p.data)
            frames += 1
            snapshots += 1
        else:
            merged.append(p.data)
            merged_size += len(p.data)
    if merged:
        chunks.append(HEADER.pack(merged_size, KIND_BATCH))
        chunks.extend(merged)
        frames += 1
    if chunks:
        writer.writelines(chunks)
    return frames, snapshots


# ---------------------------------------------------------------- one remote member


class _Peer:
    def __init__(self, transport: PeerTransport, member_id: int, urls: list[str]) -> None:
        self.transport = transport
        self.id = member_id
        self.urls = urls
        self.queue: list[_Payload] = []
        self.queued_messages = 0
        self.queued_bytes = 0
        self.queued_snapshots = 0
        self.inflight: list[_Payload] = []  # written, not yet known to be drained
        self.idle_writer: asyncio.StreamWriter | None = None  # the connection, while its pump waits
        self.unacked: deque[int] = deque()  # SNAPSHOT messages written, receipt not yet acknowledged
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connected_url = ""
        self.down_until = 0.0
        self.backoff = BACKOFF_MIN
        self.failures = 0  # consecutive; only the first is logged as a warning
        self.closed = False

    # -- called by send() on the loop

    def enqueue(self, messages: list[Message], unreachable: set[int], immediate: bool = False) -> None:
        t = self.transport
        loop = asyncio.get_running_loop()
        if loop.time() < self.down_until:
            self._drop(messages, unreachable)
            return
        if any(m.type == _SNAPSHOT for m in messages):
            groups: list[list[Message]] = []  # a SNAPSHOT message alone, the others in runs, in order
            run: list[Message] = []
            for m in messages:
                if m.type == _SNAPSHOT:
                    if run:
                        groups.append(run)
                        run = []
                    groups.append([m])
                else:
                    run.append(m)
            if run:
                groups.append(run)
        else:
            groups = [messages]
        added = False
        for group in groups:
            snapshot = group[0].type == _SNAPSHOT
            if self.queued_messages + len(group) > t.max_queue_messages or (
                snapshot and self.queued_snapshots
            ):
                log.debug("queue to member %x full, dropping %d message(s)", self.id, len(group))
                self._drop(group, unreachable)
                continue
            try:
                data = encode_batch(group)
            except ValueError as e:
                log.error("cannot encode messages to member %x, dropping them: %s", self.id, e)
                self._drop(group, unreachable)
                continue
            if len(data) > MAX_FRAME or (not snapshot and self.queued_bytes + len(data) > t.max_queue_bytes):
                log.debug("queue to member %x full (%d bytes), dropping a batch", self.id, len(data))
                self._drop(group, unreachable)
                continue
            self.queue.append(_Payload(data, len(group), self.id if snapshot else 0))
            self.queued_messages += len(group)
            if snapshot:
                self.queued_snapshots += 1
            else:
                self.queued_bytes += len(data)
            added = True
        idle = self.idle_writer
        if (
            added
            and immediate
            and idle is not None
            and not self.queued_snapshots
            and idle.transport.get_write_buffer_size() < WRITE_HIGH_WATER
        ):
            # The connection is idle: write at once, so the bytes leave before the caller goes on
            # (the leader sends its appends, then fsyncs while they travel).
            self._write(idle)
            self.inflight = []
            return
        if added:
            if self.task is None or self.task.done():
                self.task = loop.create_task(self._run(), name=f"peer-{self.id:x}")
                t._tasks.add(self.task)
                self.task.add_done_callback(t._tasks.discard)
            self.wake.set()

    def _drop(self, messages: list[Message], unreachable: set[int]) -> None:
        t = self.transport
        t.stats.messages_dropped += len(messages)
        unreachable.add(self.id)
        for m in messages:
            if m.type == _SNAPSHOT:
                t._report_snapshot(self.id, False)

    # -- the connection task

    async def _run(self) -> None:
        while not self.closed:
            await self.wake.wait()
            self.wake.clear()
            if not self.queue:
                continue
            try:
                reader, writer = await self._dial()
            except (OSError, EOFError, PeerProtocolError, ValueError) as e:
                self.transport.stats.dial_failures += 1
                self._failed(f"cannot connect: {e}")
                continue
            self.writer = writer
            self.transport.stats.dials += 1
            if self.failures:
                log.info("connected to member %x at %s", self.id, self.connected_url)
            self.failures = 0
            self.backoff = BACKOFF_MIN
            watcher = asyncio.get_running_loop().create_task(self._watch(reader))
            try:
                await self._pump(writer, watcher)
            except (OSError, EOFError, PeerProtocolError) as e:
                self.transport.stats.connections_lost += 1
                self._failed(f"connection lost: {e}")
            except Exception as e:  # a bug: never leave the peer without its task
                log.exception("peer %x: connection task failed", self.id)
                self.transport.stats.connections_lost += 1
                self._failed(f"internal error: {e!r}")
            finally:
                watcher.cancel()
                writer.transport.abort()
                self.writer = None

    async def _dial(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        errors: list[str] = []
        for url in list(self.urls):
            try:
                reader, writer = await asyncio.wait_for(self._dial_one(url), self.transport.dial_timeout)
            except PeerRefusedError as e:
                if e.code == ERROR_REMOVED:
                    self.transport._removed()
                errors.append(f"{url}: {e}")
                continue
            except (OSError, EOFError, PeerProtocolError, ValueError) as e:
                errors.append(f"{url}: {e!r}" if isinstance(e, TimeoutError) else f"{url}: {e}")
                continue
            self.connected_url = url
            return reader, writer
        raise ConnectionError("; ".join(errors) or "no peer URLs")

    async def _dial_one(self, url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        t = self.transport
        reader, writer = await _open(url, t.client_ssl)
        try:
            hello = raft_pb2.Hello(
                cluster_id=t.cluster_id, from_id=t.member_id, to_id=self.id, protocol_version=PROTOCOL_VERSION
            )
            writer.write(_frame(KIND_HELLO, hello.SerializeToString()))
            kind, payload = await _read_frame(reader, MAX_HANDSHAKE_FRAME)
            if kind == KIND_ERROR:
                raise _parse_error(payload)
            if kind != KIND_HELLO:
                raise PeerProtocolError(f"expected a hello, got frame kind {kind}")
            reply = _parse_hello(payload)
            if reply.cluster_id != t.cluster_id:
                raise PeerRefusedError(
                    ERROR_CLUSTER_MISMATCH, f"cluster id {reply.cluster_id:x}, ours is {t.cluster_id:x}"
                )
            if reply.from_id != self.id or reply.to_id != t.member_id:
                raise PeerRefusedError(
                    ERROR_WRONG_MEMBER, f"answered as member {reply.from_id:x} (expected {self.id:x})"
                )
            writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
            return reader, writer
        except BaseException:
            writer.transport.abort()
            raise

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        """Read the dialled connection: snapshot receipts, and an ERROR frame or the end."""
        try:
            while True:
                kind, payload = await _read_frame(reader, MAX_HANDSHAKE_FRAME)
                if kind == KIND_SNAPSHOT_ACK and self.unacked:
                    self.transport._report_snapshot(self.unacked.popleft(), True)
                    continue
                if kind == KIND_ERROR:
                    refused = _parse_error(payload)
                    log.warning("member %x closed our connection: %s", self.id, refused)
                    if refused.code == ERROR_REMOVED:
                        self.transport._removed()
                else:
                    log.warning("member %x sent an unexpected frame of kind %d", self.id, kind)
                return
        except (OSError, EOFError, PeerProtocolError):
            pass
        finally:
            self.wake.set()

    async def _pump(self, writer: asyncio.StreamWriter, watcher: asyncio.Task[None]) -> None:
        while True:
            if watcher.done():
                raise ConnectionResetError("closed by the peer")
            if not self.queue:
                self.idle_writer = writer
                try:
                    await self.wake.wait()
                finally:
                    self.idle_writer = None
                self.wake.clear()
                continue
            self._write(writer)
            await writer.drain()
            self.inflight = []

    def _write(self, writer: asyncio.StreamWriter) -> None:
        """Write everything queued as frames; `inflight` holds it until the caller knows it drained."""
        stats = self.transport.stats
        payloads, self.queue = self.queue, []
        self.inflight = payloads
        self.queued_messages = self.queued_bytes = self.queued_snapshots = 0
        frames, snapshots = _write_payloads(writer, payloads)
        if snapshots:
            self.unacked.extend(p.snapshot_to for p in payloads if p.snapshot_to)
        stats.writes += 1
        stats.frames_sent += frames
        stats.messages_sent += sum(p.messages for p in payloads)
        stats.bytes_sent += sum(len(p.data) for p in payloads) + HEADER.size * frames

    def _failed(self, reason: str) -> None:
        t = self.transport
        lost = self.inflight + self.queue
        for p in self.queue:
            if p.snapshot_to:
                t._report_snapshot(p.snapshot_to, False)
        for to in self.unacked:  # written or not, their receipt will never be acknowledged now
            t._report_snapshot(to, False)
        self.inflight, self.queue = [], []
        self.unacked.clear()
        self.queued_messages = self.queued_bytes = self.queued_snapshots = 0
        t.stats.messages_dropped += sum(p.messages for p in lost)
        self.down_until = asyncio.get_running_loop().time() + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        self.failures += 1
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        log.log(level, "member %x unreachable (%d message(s) dropped): %s", self.id, len(lost), reason)
        t._report_unreachable(self.id)

    def close(self) -> None:
        """Stop for good: nothing queued is reported (the member is being removed, or we are closing)."""
        self.closed = True
        self.queue, self.inflight = [], []
        self.unacked.clear()
        if self.writer is not None:
            self.writer.transport.abort()
        if self.task is not None:
            self.task.cancel()


# ---------------------------------------------------------------- the transport


class PeerTransport:
    def __init__(
        self,
        member_id: int,
        cluster_id: int,
        on_messages: Callable[[int, list[Message]], None],
        on_unreachable: Callable[[int], None],
        on_snapshot_status: Callable[[int, bool], None],
        members_json: Callable[[], bytes],
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        *,
        max_queue_messages: int = MAX_QUEUE_MESSAGES,
        max_queue_bytes: int = MAX_QUEUE_BYTES,
        dial_timeout: float = DIAL_TIMEOUT,
        is_removed: Callable[[int], bool] = lambda member_id: False,
        on_removed: Callable[[], None] = lambda: None,
    ) -> None:
        if not member_id:
            raise ValueError("member id must not be 0")
        self.member_id = member_id
        self.cluster_id = cluster_id
        self.on_messages = on_messages
        self.on_unreachable = on_unreachable
        self.on_snapshot_status = on_snapshot_status
        self.members_json = members_json
        self.server_ssl = server_ssl
        self.client_ssl = client_ssl
        self.max_queue_messages = max_queue_messages
        self.max_queue_bytes = max_queue_bytes
        self.dial_timeout = dial_timeout
        # etcd answers a removed member's traffic with "removed", and that member then stops.
        self.is_removed = is_removed
        self.on_removed = on_removed
        self.stats = PeerStats()
        self.bound_urls: list[str] = []  # the URLs actually listened on (port 0 resolved)
        self._peers: dict[int, _Peer] = {}
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._inbound: dict[int, asyncio.StreamWriter] = {}  # member -> its latest incoming connection
        self._writers: set[asyncio.StreamWriter] = set()  # every open incoming connection
        self._closed = False

    # -- lifecycle

    async def start(self, listen_urls: list[str]) -> None:
        """Listen on each URL (``http://host:port`` or ``https://host:port``; port 0 picks a free one)."""
        for url in listen_urls:
            scheme, host, port = _check_url(url)
            if scheme == "https" and self.server_ssl is None:
                raise ValueError(f"listen URL {url!r} is https but no server TLS context was given")
            server = await asyncio.start_server(
                self._accept,
                host,
                port,
                ssl=self.server_ssl if scheme == "https" else None,
                limit=STREAM_LIMIT,
                reuse_address=True,
            )
            self._servers.append(server)
            for sock in server.sockets:
                addr = sock.getsockname()
                shown = f"[{addr[0]}]" if sock.family == socket.AF_INET6 else addr[0]
                self.bound_urls.append(f"{scheme}://{shown}:{addr[1]}")

    async def close(self) -> None:
        self._closed = True
        for server in self._servers:
            server.close()
        for peer in self._peers.values():
            peer.close()
        self._peers.clear()
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = list(self._tasks)
        if tasks:  # incoming connections end on their own once aborted; the peers' tasks were cancelled
            _, pending = await asyncio.wait(tasks, timeout=1.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for server in self._servers:
            with suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()

    # -- membership

    def set_peer(self, member_id: int, peer_urls: list[str]) -> None:
        """Add a remote member or change its URLs (a connection to a URL no longer listed is closed)."""
        if member_id == self.member_id or not member_id:
            raise ValueError(f"cannot add member {member_id:x} as a peer of member {self.member_id:x}")
        for url in peer_urls:
            _check_url(url)
        urls = list(peer_urls)
        peer = self._peers.get(member_id)
        if peer is None:
            self._peers[member_id] = _Peer(self, member_id, urls)
            return
        peer.urls = urls
        if peer.writer is not None and peer.connected_url not in urls:
            peer.writer.transport.abort()

    def remove_peer(self, member_id: int) -> None:
        peer = self._peers.pop(member_id, None)
        if peer is not None:
            peer.close()
        writer = self._inbound.pop(member_id, None)
        if writer is not None:
            writer.transport.abort()

    # -- sending

    def send(self, messages: list[Message], immediate: bool = False) -> None:
        """Queue messages for their recipients; never blocks, never raises (see the module's rules).

        `immediate` writes them to an idle connection at once instead of at the pump's next
        turn (no coalescing with later sends): for a caller about to block, like a leader that
        sends its appends and then fsyncs.
        """
        unreachable: set[int] = set()
        try:
            if self._closed:
                return
            by_peer: dict[int, list[Message]] = {}
            for m in messages:
                if m.type not in NETWORK_MESSAGES:
                    log.error("not sending message of member-local or unknown type %r", m.type)
                    self.stats.messages_dropped += 1
                    continue
                group = by_peer.get(m.to)
                if group is None:
                    by_peer[m.to] = [m]
                else:
                    group.append(m)
            for to, group in by_peer.items():
                peer = self._peers.get(to)
                if peer is None:
                    log.debug("dropping %d message(s) to unknown member %x", len(group), to)
                    self.stats.messages_dropped += len(group)
                    unreachable.add(to)
                    for m in group:
                        if m.type == _SNAPSHOT:
                            self._report_snapshot(to, False)
                    continue
                peer.enqueue(group, unreachable, immediate)
        except Exception:
            log.exception("peer transport: send failed")
        for member in unreachable:
            self._report_unreachable(member)

    # -- reports, never from inside send()

    def _report_unreachable(self, member: int) -> None:
        with suppress(RuntimeError):
            asyncio.get_running_loop().call_soon(self._call, self.on_unreachable, member)

    def _report_snapshot(self, member: int, ok: bool) -> None:
        with suppress(RuntimeError):
            asyncio.get_running_loop().call_soon(self._call, self.on_snapshot_status, member, ok)

    def _call(self, callback: Callable[..., None], *args: object) -> None:
        if self._closed:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("peer transport: callback %r failed", callback)

    # -- receiving

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closed:
            writer.transport.abort()
            return
        self._tasks.add(task)
        self._writers.add(writer)
        _set_nodelay(writer)
        where = writer.get_extra_info("peername")
        from_id = 0
        try:
            kind, payload = await asyncio.wait_for(
                _read_frame(reader, MAX_HANDSHAKE_FRAME), HANDSHAKE_TIMEOUT
            )
            hello = _parse_hello(payload) if kind in (KIND_HELLO, KIND_MEMBERS_REQUEST) else None
            if hello is None:
                raise PeerProtocolError(f"expected a hello, got frame kind {kind}")
            refusal = self._check_hello(hello, members=kind == KIND_MEMBERS_REQUEST)
            if refusal is not None:
                code, message = refusal
                self.stats.refused += 1
                log.warning("refusing peer connection from %s: %s", where, message)
                writer.write(_error_frame(code, message))
                await _close_quietly(writer)
                return
            if kind == KIND_MEMBERS_REQUEST:
                await self._answer_members(writer)
                return
            from_id = hello.from_id
            reply = raft_pb2.Hello(
                cluster_id=self.cluster_id,
                from_id=self.member_id,
                to_id=from_id,
                protocol_version=PROTOCOL_VERSION,
            )
            writer.write(_frame(KIND_HELLO, reply.SerializeToString()))
            old = self._inbound.get(from_id)
            if old is not None:
                old.transport.abort()  # the member dialled again: its old connection is stale
            self._inbound[from_id] = writer
            self.stats.accepted += 1
            await self._receive(reader, writer, from_id)
        except asyncio.IncompleteReadError as e:
            if e.partial:
                log.debug("peer connection from %s ended inside a frame", where)
        except (PeerProtocolError, ValueError) as e:
            self.stats.refused += 1
            log.warning("closing peer connection from %s (member %x): %s", where, from_id, e)
            with suppress(Exception):
                writer.write(_error_frame(ERROR_BAD_FRAME, str(e)[:1000]))
                await _close_quietly(writer)
        except OSError as e:  # also TimeoutError: no hello in time
            log.debug("peer connection from %s: %r", where, e)
        except Exception:
            log.exception("peer connection from %s failed", where)
        except asyncio.CancelledError:
            pass  # close() gave up waiting; asyncio's server would log a cancelled handler as an error
        finally:
            if from_id and self._inbound.get(from_id) is writer:
                del self._inbound[from_id]
            self._writers.discard(writer)
            writer.transport.abort()
            self._tasks.discard(task)

    def _check_hello(self, hello: raft_pb2.Hello, members: bool) -> tuple[int, str] | None:
        if hello.protocol_version != PROTOCOL_VERSION:
            return ERROR_PROTOCOL_VERSION, (
                f"protocol version {hello.protocol_version}, this member speaks {PROTOCOL_VERSION}"
            )
        if hello.cluster_id != self.cluster_id and not (members and hello.cluster_id == 0):
            return ERROR_CLUSTER_MISMATCH, (
                f"cluster id mismatch: this member is in cluster {self.cluster_id:x}, "
                f"the peer in {hello.cluster_id:x}"
            )
        if members:
            return None
        if hello.to_id != self.member_id:
            return ERROR_WRONG_MEMBER, f"this is member {self.member_id:x}, not {hello.to_id:x}"
        if not hello.from_id or hello.from_id == self.member_id:
            return ERROR_WRONG_MEMBER, f"the peer cannot be member {hello.from_id:x}"
        if self.is_removed(hello.from_id):
            return ERROR_REMOVED, REMOVED_TEXT
        return None

    def _removed(self) -> None:
        asyncio.get_running_loop().call_soon(self.on_removed)

    async def _answer_members(self, writer: asyncio.StreamWriter) -> None:
        try:
            body = self.members_json()
        except Exception as e:
            log.exception("members_json failed")
            writer.write(_error_frame(ERROR_UNAVAILABLE, f"cannot list members: {e}"))
        else:
            writer.write(_frame(KIND_MEMBERS, body))
        await _close_quietly(writer)

    async def _receive(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, from_id: int
    ) -> None:
        stats = self.stats
        me = self.member_id
        while True:
            kind, payload = await _read_frame(reader, MAX_FRAME)
            if kind != KIND_BATCH:
                raise PeerProtocolError(f"unexpected frame kind {kind}")
            messages = decode_batch(payload)
            for m in messages:
                if m.to != me or (m.from_ != from_id and m.type != _TRANSFER_LEADER):
                    raise PeerProtocolError(
                        f"{m.type.name} from {m.from_:x} to {m.to:x} on member {from_id:x}'s connection"
                    )
            stats.frames_received += 1
            stats.messages_received += len(messages)
            if self.is_removed(from_id):
                writer.write(_error_frame(ERROR_REMOVED, REMOVED_TEXT))
                await _close_quietly(writer)
                return
            if messages and not self._closed:
                try:
                    self.on_messages(from_id, messages)
                except Exception:
                    log.exception("peer transport: on_messages failed")
            for m in messages:
                if m.type == _SNAPSHOT:
                    writer.write(_SNAPSHOT_ACK)


# ---------------------------------------------------------------- joining


async def fetch_members(
    peer_urls: list[str],
    cluster_id: int | None = None,
    client_ssl: ssl.SSLContext | None = None,
    timeout: float = 5.0,
) -> bytes:
    """Ask the members at `peer_urls`, one after another, for their ``members_json()``.

    With `cluster_id`, a member of another cluster refuses to answer; without, any member answers.
    `timeout` bounds each attempt.  Raises `PeerRefusedError` if every URL failed and one refused,
    else `ConnectionError` naming each failure.
    """
    errors: list[str] = []
    refused: PeerRefusedError | None = None
    hello = raft_pb2.Hello(cluster_id=cluster_id or 0, protocol_version=PROTOCOL_VERSION)
    request = _frame(KIND_MEMBERS_REQUEST, hello.SerializeToString())
    for url in peer_urls:
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await _open(url, client_ssl)
                writer.write(request)
                kind, payload = await _read_frame(reader, MAX_MEMBERS_FRAME)
            if kind == KIND_MEMBERS:
                return payload
            if kind == KIND_ERROR:
                raise _parse_error(payload)
            raise PeerProtocolError(f"unexpected frame kind {kind}")
        except PeerRefusedError as e:
            refused = e
            errors.append(f"{url}: {e}")
        except (OSError, EOFError, PeerProtocolError, ValueError) as e:
            errors.append(f"{url}: {e!r}" if isinstance(e, TimeoutError) else f"{url}: {e}")
        finally:
            if writer is not None:
                await _close_quietly(writer)
    if refused is not None:
        raise refused
    raise ConnectionError("no member answered: " + ("; ".join(errors) or "no peer URLs"))
