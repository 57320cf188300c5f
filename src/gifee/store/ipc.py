"""The link between gRPC worker processes and the store's core process.

Why it exists: a Python gRPC server spends most of its CPU in gRPC itself,
on one core. `gifee store` therefore runs the store (state machine, WAL,
watches, leases) in one core process and terminates gRPC in worker processes
that share the client port (SO_REUSEPORT). Workers never decode messages:
they pass request bytes to the core and response bytes back, so the core's
per-request cost is only the store's own work.

The wire between them is a stream of frames over a Unix socket:

    header  <IIB  payload length, call id, frame kind
    payload       kind-specific bytes

Worker -> core: CALL (u16 method index + request; unary and server-stream
calls), OPEN (u16 method index; a bidirectional stream), SEND (a request on an
open stream), HALF_CLOSE (the client finished sending), CANCEL (the client went
away), CREDIT (u32: that many stream messages were handed to the client, so
the core may send that many more; at most STREAM_WINDOW are ever unacknowledged).
Core -> worker: HELLO (the method table, first frame on a connection),
REPLY (a response, or one message of a stream), ERROR (u8 gRPC code + UTF-8
text; ends the call), END (a stream finished), CORE_FREE (call id 0; u8: 1 when
the core offers to serve the next gRPC connection itself, 0 when it no longer
does; see `server.py`).

`FrameReader` and `encode_frame` are the codec, with no I/O; `CoreConnection` is
the core's asyncio side. The worker side lives in `worker.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import grpc

from gifee.store.errors import StoreError
from gifee.store.handlers import BIDI, SERVER_STREAM, UNARY, Method, decode

log = logging.getLogger("gifee.store.ipc")

HEADER = struct.Struct("<IIB")
METHOD_INDEX = struct.Struct("<H")

HELLO = 0
CALL = 1
OPEN = 2
SEND = 3
HALF_CLOSE = 4
CANCEL = 5
CREDIT = 6
REPLY = 10
ERROR = 11
END = 12
CORE_FREE = 13

INTERNAL_ERROR = "etcdserver: internal error"

# Stream messages the core sends ahead of the worker's CREDIT frames: a slow
# client holds back its own stream (and, for watches, gets paused and caught up
# later from the store) instead of filling the worker's memory.
STREAM_WINDOW = 16
# The worker acknowledges in batches of this many; the core stops only with a whole window unacknowledged,
# so with CREDIT_BATCH <= STREAM_WINDOW it is then owed at least one more CREDIT.
CREDIT_BATCH = STREAM_WINDOW // 2
CREDIT_COUNT = struct.Struct("<I")


def encode_frame(kind: int, call_id: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), call_id, kind) + payload


def encode_error(code: grpc.StatusCode, message: str) -> bytes:
    return bytes([code.value[0]]) + message.encode()


def decode_error(payload: bytes) -> tuple[grpc.StatusCode, str]:
    number = payload[0]
    code = next((c for c in grpc.StatusCode if c.value[0] == number), grpc.StatusCode.UNKNOWN)
    return code, payload[1:].decode(errors="replace")


# What each connection reads into. asyncio's plain Protocol allocates a fresh bytes
# object of 256 KiB for every read (an mmap, an mremap and a munmap per read: three
# system calls and a page fault per request in each process); a BufferedProtocol
# reads into this buffer, which FrameReader.feed copies from at once.
READ_BUFFER_BYTES = 256 * 1024


class FrameReader:
    """Splits a byte stream into frames; keeps the incomplete tail for the next feed."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._read = bytearray(READ_BUFFER_BYTES)
        self._read_view = memoryview(self._read)

    def get_buffer(self) -> memoryview:
        """Where the next read goes (BufferedProtocol.get_buffer); hand `feed_read` its length."""
        return self._read_view

    def feed_read(self, nbytes: int) -> list[tuple[int, int, bytes]]:
        return self.feed(self._read_view[:nbytes])

    def feed(self, data: bytes | memoryview) -> list[tuple[int, int, bytes]]:
        buf = self._buf
        # Whole frames are cut straight out of `data` when no tail is waiting (the usual case):
        # one copy per payload; only an incomplete frame is kept back in `_buf`.
        src: bytes | bytearray | memoryview
        if buf:
            buf += data
            src = buf
        else:
            src = data
        out = []
        pos = 0
        size = HEADER.size
        end = len(src)
        while end - pos >= size:
            length, call_id, kind = HEADER.unpack_from(src, pos)
            if end - pos - size < length:
                break
            start = pos + size
            out.append((kind, call_id, bytes(src[start : start + length])))
            pos = start + length
        if src is buf:
            if pos:
                del buf[:pos]
        elif pos < end:
            buf += src[pos:]
        return out


class FrameWriter:
    """Sends the frames of one loop iteration as one write, at its end (a `call_soon`).

    Writing the first frame of an iteration at once (as this did) saved the
    other side a loop iteration when idle, but under load it woke the other
    side for that frame alone and then again for the rest: the core took one
    call into a Ready (and an fsync) of its own, the worker one reply. Joined,
    64-client puts on a 3-member cluster ran faster with less CPU per put in 6
    of 7 alternated pairs (median +8 % puts a second, -8 % CPU per put); the
    cost when idle is one loop iteration, microseconds.
    """

    def __init__(self, write: Callable[[bytes], None], loop: asyncio.AbstractEventLoop) -> None:
        self._write = write
        self._loop = loop
        self._out: list[bytes] = []

    def send(self, kind: int, call_id: int, payload: bytes = b"") -> None:
        if not self._out:  # the iteration's first frame: the write is scheduled once
            self._loop.call_soon(self._end_burst)
        self._out.append(HEADER.pack(len(payload), call_id, kind) + payload)

    @property
    def pending(self) -> bool:
        """Frames wait for the end of this loop iteration's burst."""
        return bool(self._out)

    def _end_burst(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            # The connection may have closed since the frames were queued (uvloop then raises):
            # they had nowhere to go, as they would have had nowhere a moment later.
            with contextlib.suppress(RuntimeError):
                self._write(data)


def method_table(table: list[Method]) -> list[list[str]]:
    """What the gRPC side needs of the table: each method's service, name and kind, by index."""
    return [[m.service, m.name, m.kind] for m in table]


def method_table_payload(table: list[Method]) -> bytes:
    return json.dumps(method_table(table)).encode()


class _RequestQueue:
    """Requests of one bidirectional stream, as the async iterator its handler consumes."""

    def __init__(self, decode: Any) -> None:
        self._decode = decode
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def put(self, data: bytes | None) -> None:
        self._queue.put_nowait(data)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            data = await self._queue.get()
            if data is None:
                return
            yield self._decode(data)


class CoreConnection(asyncio.BufferedProtocol):
    """The core's end of one worker connection: runs each call against the method table."""

    def __init__(
        self,
        table: list[Method],
        limit: int,
        on_ready: asyncio.Future[None] | None = None,
        deliver: Callable[[int, int, bytes], None] | None = None,
        core_free: Callable[[], bool] | None = None,
    ) -> None:
        """`deliver(kind, call_id, payload)`: where answers go when calls come from this process
        (`grpcport.LocalLink`, which hands frames to `handle`) instead of over a socket.
        `core_free()`: whether the core offers to serve a gRPC connection, told to the worker
        once it listens (and by `announce` whenever that changes)."""
        self._core_free = core_free
        self._deliver = deliver
        self._table = table
        self._limit = limit
        self._on_ready = on_ready
        self._reader = FrameReader()
        self._transport: asyncio.Transport | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._streams: dict[int, _RequestQueue] = {}
        self._unacked: dict[int, int] = {}
        self._credit: dict[int, asyncio.Event] = {}
        self._loop = asyncio.get_event_loop()
        self._writer: FrameWriter | None = None

    # -- transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)
        self._writer = FrameWriter(transport.write, self._loop)
        transport.write(encode_frame(HELLO, 0, method_table_payload(self._table)))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
        self._streams.clear()
        self._unacked.clear()
        self._credit.clear()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._reader.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        for kind, call_id, payload in self._reader.feed_read(nbytes):
            self.handle(kind, call_id, payload)

    def handle(self, kind: int, call_id: int, payload: bytes) -> None:
        """One frame from a worker (or from this process's `grpcport.LocalLink`)."""
        try:
            self._dispatch(kind, call_id, payload)
        except Exception:
            log.exception("bad frame from worker (kind %d)", kind)
            self._send(ERROR, call_id, encode_error(grpc.StatusCode.INTERNAL, INTERNAL_ERROR))

    def announce(self, core_free: bool) -> None:
        """Tell the worker whether to pass its next gRPC connection to the core."""
        self._send(CORE_FREE, 0, b"\x01" if core_free else b"\x00")

    def _send(self, kind: int, call_id: int, payload: bytes = b"") -> None:
        if self._deliver is not None:
            self._deliver(kind, call_id, payload)
        elif self._transport is not None and self._writer is not None:
            self._writer.send(kind, call_id, payload)

    # -- calls

    def _dispatch(self, kind: int, call_id: int, payload: bytes) -> None:
        if kind == HELLO:
            # The worker's answer to ours: it is listening now.
            if self._on_ready is not None and not self._on_ready.done():
                self._on_ready.set_result(None)
            if self._core_free is not None:
                self.announce(self._core_free())
        elif kind == CALL:
            (index,) = METHOD_INDEX.unpack_from(payload)
            method = self._table[index]
            try:
                request = decode(method, payload[METHOD_INDEX.size :], self._limit)
            except StoreError as e:
                self._send(ERROR, call_id, encode_error(e.code, e.message))
                return
            if method.kind == UNARY:
                self._start(call_id, self._unary(call_id, method, request))
            else:
                assert method.kind == SERVER_STREAM
                self._start(call_id, self._stream(call_id, method, method.call(request)))
        elif kind == OPEN:
            (index,) = METHOD_INDEX.unpack_from(payload)
            method = self._table[index]
            assert method.kind == BIDI
            limit = self._limit
            queue = _RequestQueue(lambda data: decode(method, data, limit))
            self._streams[call_id] = queue
            self._start(call_id, self._stream(call_id, method, method.call(queue)))
        elif kind == SEND:
            stream = self._streams.get(call_id)
            if stream is not None:
                stream.put(payload)
        elif kind == HALF_CLOSE:
            stream = self._streams.get(call_id)
            if stream is not None:
                stream.put(None)
        elif kind == CREDIT:
            if call_id in self._unacked:
                (count,) = CREDIT_COUNT.unpack_from(payload)
                self._unacked[call_id] = max(0, self._unacked[call_id] - count)
                event = self._credit.get(call_id)
                if event is not None:
                    event.set()
        elif kind == CANCEL:
            task = self._tasks.pop(call_id, None)
            self._streams.pop(call_id, None)
            if task is not None:
                task.cancel()

    def _start(self, call_id: int, work: Any) -> None:
        task = self._loop.create_task(work)
        self._tasks[call_id] = task
        task.add_done_callback(lambda _: self._forget(call_id, task))

    def _forget(self, call_id: int, task: asyncio.Task[None]) -> None:
        if self._tasks.get(call_id) is task:
            del self._tasks[call_id]
            self._streams.pop(call_id, None)
        self._unacked.pop(call_id, None)
        self._credit.pop(call_id, None)

    async def _unary(self, call_id: int, method: Method, request: Any) -> None:
        try:
            response = await method.call(request)
        except StoreError as e:
            self._send(ERROR, call_id, encode_error(e.code, e.message))
        except Exception:
            log.exception("%s failed", method.path)
            self._send(ERROR, call_id, encode_error(grpc.StatusCode.UNKNOWN, INTERNAL_ERROR))
        else:
            self._send(REPLY, call_id, response.SerializeToString())

    async def _stream(self, call_id: int, method: Method, responses: AsyncIterator[Any]) -> None:
        unacked = self._unacked
        unacked[call_id] = 0
        try:
            async for response in responses:
                while unacked.get(call_id, 0) >= STREAM_WINDOW:
                    event = self._credit.setdefault(call_id, asyncio.Event())
                    event.clear()
                    await event.wait()
                unacked[call_id] = unacked.get(call_id, 0) + 1
                self._send(REPLY, call_id, response.SerializeToString())
        except StoreError as e:
            self._send(ERROR, call_id, encode_error(e.code, e.message))
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await responses.aclose()  # type: ignore[attr-defined]
            raise
        except Exception:
            log.exception("%s failed", method.path)
            self._send(ERROR, call_id, encode_error(grpc.StatusCode.UNKNOWN, INTERNAL_ERROR))
        else:
            self._send(END, call_id)
