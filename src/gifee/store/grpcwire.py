"""gRPC's wire protocol, server side, over HTTP/2 (libnghttp2), with no I/O.

Every rule of how this server speaks gRPC lives in this module; the shell that
owns the socket (`grpcport.py`) only feeds bytes in, acts on the events that come
out and writes what `data_to_send()` returns. It never reads a socket, never
looks at a clock and knows nothing about etcd: a call is a path, messages in and
messages out, and a status at the end.

HTTP/2 itself (frames, HPACK, stream states, flow control, SETTINGS, PING,
GOAWAY) is libnghttp2's, bound in `nghttp2.py` and driven sans-I/O through
`nghttp2_session_mem_recv`/`mem_send`: its callbacks run only inside those calls,
so they find their connection in `_current`. Why not gRPC's own server, or h2:
grpc.aio hands every call through three or four threads and costs about 300 us
of CPU per call; the pure-Python h2 cost about 300 us per unary call on its own
when no other client shares the read; nghttp2 costs a small fraction of either
(`benchmarks/README.md`).

The rules (gRPC over HTTP/2, as grpc-go serves it):

* A call is one HTTP/2 stream. Its request HEADERS carry `:path` =
  `/package.Service/Method` and a content-type starting with
  `application/grpc`; an optional `grpc-timeout` gives its deadline.
* A message is length-prefixed: one flag byte (1 = compressed), four bytes of
  big-endian length, then the bytes. This server announces and accepts only the
  identity encoding; a compressed message, or a `grpc-encoding` other than
  identity, ends the call with UNIMPLEMENTED. A message longer than
  `max_receive` ends it with RESOURCE_EXHAUSTED, as soon as its prefix arrives.
* The response is HEADERS (`:status` 200, content-type) before the first
  message, the messages, then trailers (`grpc-status`, `grpc-message`
  percent-encoded). A call that ends before any message has been sent gets one
  HEADERS frame with the status in it ("trailers-only").
* When the server ends a call whose request side is still open, it resets the
  stream with NO_ERROR afterwards (so the client stops sending), as grpc-go does.
* Flow control: DATA never exceeds the client's windows. What does not fit
  waits in the stream's queue, which nghttp2 reads as the client's
  WINDOW_UPDATEs arrive, and the trailers wait behind it. `send_message` says
  whether the message fits the windows at once; `StreamWritable` says when a
  held stream's queue has drained. Received data is acknowledged at once
  (nghttp2's automatic WINDOW_UPDATEs; the shell bounds what it buffers: one
  request per unary call; stream messages go straight to the core).
* A client's RST_STREAM ends the call (`CallAborted`); a call that begins and is
  reset within one read is never reported at all. A connection error or GOAWAY
  from the client ends the connection (`ConnectionEnded`), after which nothing
  more is read.
* Header fields over 64 KiB each are a connection error in nghttp2's HPACK
  decoder (grpc-go fails only the call); no etcd client sends them.
"""

from __future__ import annotations

import ctypes
import enum
import struct
from dataclasses import dataclass
from urllib.parse import quote

from gifee.store import nghttp2
from gifee.store.nghttp2 import HeaderList, lib, string_at


class Status(enum.IntEnum):
    """gRPC status codes (the numbers are the protocol's)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


PREFIX = struct.Struct(">BI")
DEFAULT_MAX_RECEIVE = 64 * 1024 * 1024
# The windows this server offers: large, so that a client's 1.5 MiB request (etcd's
# limit) or a burst of puts on one connection never waits for a WINDOW_UPDATE.
RECEIVE_WINDOW = 16 * 1024 * 1024
MAX_STREAMS = 2**31 - 1  # etcd's is effectively unlimited too (math.MaxUint32)
STREAM_RESET_BURST = 100_000  # client resets allowed at once, then STREAM_RESET_RATE a second
STREAM_RESET_RATE = 10_000
MAX_HEADER_LIST = 16 * 1024 * 1024  # grpc-go's default: large metadata fails its call, not the connection

_FRAME_HEAD = 9  # HTTP/2 frame header: length (3), type, flags, stream id (4)
_PING = 0x6
_ACK = 0x1

_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}

_RESPONSE_HEADERS = ((b":status", b"200"), (b"content-type", b"application/grpc"))
_OK_TRAILERS = ((b"grpc-status", b"0"),)


@dataclass(frozen=True, slots=True)
class CallStarted:
    stream_id: int
    path: str
    timeout: float | None  # seconds, from grpc-timeout


@dataclass(frozen=True, slots=True)
class MessageReceived:
    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RequestEnded:
    """The client half-closed: no more messages on this call."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class CallAborted:
    """The call is over without the application's answer (client reset, or bad input answered here)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamWritable:
    """Everything queued on this stream has been handed to HTTP/2."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class ConnectionEnded:
    """The client said goodbye, or broke the protocol: close once the pending bytes are written."""


Event = CallStarted | MessageReceived | RequestEnded | CallAborted | StreamWritable | ConnectionEnded


def _is_grpc(content_type: bytes) -> bool:
    # "application/grpc", or that followed by "+codec" or ";parameters", as grpc-go accepts.
    return content_type.startswith(b"application/grpc") and content_type[16:17] in (b"", b"+", b";")


def parse_timeout(value: bytes) -> float | None:
    """grpc-timeout: up to 8 digits and a unit (H M S m u n); None if malformed."""
    text = value.decode("ascii", "replace")
    if not 2 <= len(text) <= 9 or not text[:-1].isdigit() or text[-1] not in _TIMEOUT_UNITS:
        return None
    return int(text[:-1]) * _TIMEOUT_UNITS[text[-1]]


def encode_message(data: bytes) -> bytes:
    return PREFIX.pack(0, len(data)) + data


def status_headers(code: int, message: str) -> list[tuple[bytes, bytes]]:
    headers = [(b"grpc-status", str(int(code)).encode())]
    if message:
        # gRPC's percent-encoding: printable ASCII except '%' stays, everything else is %XX of UTF-8.
        headers.append((b"grpc-message", quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode()))
    return headers


_RESPONSE_NVA = HeaderList(_RESPONSE_HEADERS)
_OK_TRAILERS_NVA = HeaderList(_OK_TRAILERS)
# The request headers this server looks at, and where `_Request` keeps them.
_WANTED = {b":path": 0, b"content-type": 1, b"grpc-timeout": 2, b"grpc-encoding": 3}
_WANTED_LENGTHS = frozenset(len(name) for name in _WANTED)  # the other headers are not even copied


class _Call:
    __slots__ = ("buffer", "headers_sent", "request_open", "pending", "sent", "trailers", "done", "deferred")

    def __init__(self, request_open: bool) -> None:
        self.buffer = bytearray()  # received bytes not yet a whole message
        self.headers_sent = False
        self.request_open = request_open
        self.pending = bytearray()  # framed messages that nghttp2 has not read yet, from `sent` on
        self.sent = 0
        self.trailers: HeaderList | None = None  # set by finish(): sent once `pending` is read
        self.done = False  # the server has ended the call (trailers sent or waiting)
        self.deferred = False  # nghttp2 was told there is nothing to read: resume it on the next message


# The connection whose nghttp2 call is running: nghttp2 calls back only from inside
# mem_recv/mem_send, on this thread, so the callbacks need no registry.
_current: ServerConnection | None = None


def _failed(conn: ServerConnection, exc: BaseException) -> int:
    # An exception must not unwind through nghttp2's C frames (ctypes would print it and hand
    # nghttp2 an undefined result): kept, the call fails, and receive() or data_to_send() raises it.
    if conn._failure is None:
        conn._failure = exc
    return nghttp2.ERR_CALLBACK_FAILURE


def _on_begin_headers(session: int, frame: ctypes._Pointer[nghttp2.FrameHd], user_data: int | None) -> int:
    conn = _current
    if conn is None or conn.ended:
        return 0
    try:
        hd = frame.contents
        # A HEADERS frame on a known stream is the client's trailers: nothing in them matters here.
        known = hd.type != nghttp2.HEADERS or hd.stream_id in conn._calls
        conn._head = None if known else [b"", b"", b"", b"identity"]
    except BaseException as e:
        return _failed(conn, e)
    return 0


def _on_header(
    session: int,
    frame: int,
    name: int,
    namelen: int,
    value: int,
    valuelen: int,
    flags: int,
    user_data: int | None,
) -> int:
    conn = _current
    if conn is None or conn._head is None or namelen not in _WANTED_LENGTHS:
        return 0
    try:
        slot = _WANTED.get(string_at(name, namelen))
        if slot is not None:
            conn._head[slot] = string_at(value, valuelen)
    except BaseException as e:
        return _failed(conn, e)
    return 0


def _on_frame_recv(session: int, frame: ctypes._Pointer[nghttp2.FrameHd], user_data: int | None) -> int:
    conn = _current
    if conn is None or conn.ended:
        return 0
    try:
        hd = frame.contents
        kind = hd.type
        if kind == nghttp2.HEADERS:
            head = conn._head
            conn._head = None
            if head is not None:
                conn._request(hd.stream_id, head, bool(hd.flags & nghttp2.FLAG_END_STREAM))
            elif hd.flags & nghttp2.FLAG_END_STREAM:
                conn._request_ended(hd.stream_id)
        elif kind == nghttp2.DATA:
            if hd.flags & nghttp2.FLAG_END_STREAM:
                conn._request_ended(hd.stream_id)
        elif kind == nghttp2.GOAWAY:
            conn._end_all()
    except BaseException as e:
        return _failed(conn, e)
    return 0


def _on_data_chunk_recv(
    session: int, flags: int, stream_id: int, data: int, length: int, user_data: int | None
) -> int:
    conn = _current
    if conn is None or conn.ended:
        return 0
    try:
        conn._data(stream_id, string_at(data, length))
    except BaseException as e:
        return _failed(conn, e)
    return 0


def _on_stream_close(session: int, stream_id: int, error_code: int, user_data: int | None) -> int:
    conn = _current
    if conn is None:
        return 0
    try:
        call = conn._calls.pop(stream_id, None)
        if conn._resets:
            conn._resets.pop(stream_id, None)
        if call is not None:
            conn._unsent -= len(call.pending) - call.sent
            conn._blocked.discard(stream_id)
            if conn._receiving:
                conn._reset_in_read.add(stream_id)
            if not call.done and not conn.ended:
                conn._events.append(CallAborted(stream_id))
    except BaseException as e:
        return _failed(conn, e)
    return 0


def _read_response(
    session: int, stream_id: int, buf: int, length: int, data_flags: int, source: int, user_data: int | None
) -> int:
    """nghttp2 asks for up to `length` bytes of a stream's DATA (its windows allow that much)."""
    conn = _current
    if conn is None:
        return nghttp2.ERR_DEFERRED
    try:
        return _read_call(conn, stream_id, buf, length, data_flags)
    except BaseException as e:
        return _failed(conn, e)


def _read_call(conn: ServerConnection, stream_id: int, buf: int, length: int, data_flags: int) -> int:
    call = conn._calls.get(stream_id)
    if call is None:
        return nghttp2.ERR_DEFERRED
    pending = call.pending
    n = min(length, len(pending) - call.sent)
    if n:
        view = (ctypes.c_char * n).from_buffer(pending, call.sent)
        ctypes.memmove(buf, view, n)
        del view
        call.sent += n
        conn._unsent -= n
        if call.sent == len(pending):
            pending.clear()
            call.sent = 0
    if call.sent < len(pending):
        return n
    if call.trailers is not None:
        nghttp2.set_data_flags(data_flags, nghttp2.DATA_FLAG_EOF | nghttp2.DATA_FLAG_NO_END_STREAM)
        lib.nghttp2_submit_trailer(conn._session, stream_id, call.trailers.array, call.trailers.length)
        call.trailers = None
        conn._reset_if_open(stream_id, call)
        return n
    if stream_id in conn._blocked:
        conn._blocked.discard(stream_id)
        conn._events.append(StreamWritable(stream_id))
    if n:
        return n
    call.deferred = True
    return nghttp2.ERR_DEFERRED


_CALLBACKS_KEEP = (
    nghttp2.FrameCallback(_on_begin_headers),
    nghttp2.HeaderCallback(_on_header),
    nghttp2.FrameCallback(_on_frame_recv),
    nghttp2.DataChunkRecvCallback(_on_data_chunk_recv),
    nghttp2.StreamCloseCallback(_on_stream_close),
)
_PROVIDER = nghttp2.DataProvider()
_PROVIDER.read_callback = nghttp2.DataSourceReadCallback(_read_response)


def _session_callbacks() -> ctypes.c_void_p:
    callbacks = ctypes.c_void_p()
    if lib.nghttp2_session_callbacks_new(ctypes.byref(callbacks)) != 0:
        raise MemoryError("nghttp2_session_callbacks_new")
    begin, header, frame_recv, data_chunk, stream_close = _CALLBACKS_KEEP
    lib.nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, begin)
    lib.nghttp2_session_callbacks_set_on_header_callback(callbacks, header)
    lib.nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, frame_recv)
    lib.nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, data_chunk)
    lib.nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, stream_close)
    return callbacks


def _session_options() -> ctypes.c_void_p:
    option = ctypes.c_void_p()
    if lib.nghttp2_option_new(ctypes.byref(option)) != 0:
        raise MemoryError("nghttp2_option_new")
    # HTTP messaging checks (pseudo-headers, content-length, te) are grpc-go's business as little as
    # this server's: a request that is not gRPC gets its 415 or UNIMPLEMENTED here instead.
    lib.nghttp2_option_set_no_http_messaging(option, 1)
    # Limits newer than 1.52 that Debian's 1.52 carries as security fixes (they may be absent):
    # RST_STREAM floods (CVE-2023-44487) and CONTINUATION floods (CVE-2024-28182). Their defaults
    # (1,000 resets then 33 a second; 8 CONTINUATIONs) would end connections that grpc-go keeps:
    # clients whose deadlines cancel many calls, large metadata.
    if hasattr(lib, "nghttp2_option_set_stream_reset_rate_limit"):
        fn = lib.nghttp2_option_set_stream_reset_rate_limit
        fn.restype, fn.argtypes = None, [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64]
        fn(option, STREAM_RESET_BURST, STREAM_RESET_RATE)
    if hasattr(lib, "nghttp2_option_set_max_continuations"):
        fn = lib.nghttp2_option_set_max_continuations
        fn.restype, fn.argtypes = None, [ctypes.c_void_p, ctypes.c_size_t]
        fn(option, MAX_HEADER_LIST // 16384)
    return option


_CALLBACKS = _session_callbacks()
_OPTIONS = _session_options()
_SETTINGS = (nghttp2.SettingsEntry * 3)(
    nghttp2.SettingsEntry(nghttp2.SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS),
    nghttp2.SettingsEntry(nghttp2.SETTINGS_INITIAL_WINDOW_SIZE, RECEIVE_WINDOW),
    nghttp2.SettingsEntry(nghttp2.SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST),
)


class ServerConnection:
    """One HTTP/2 connection's gRPC calls. Feed bytes to `receive`, write `data_to_send()`."""

    def __init__(self, max_receive: int = DEFAULT_MAX_RECEIVE) -> None:
        self.max_receive = max_receive
        self._owner = nghttp2.ServerSession(_CALLBACKS, _OPTIONS)  # frees the session with this connection
        self._session = self._owner.pointer
        lib.nghttp2_submit_settings(self._session, nghttp2.FLAG_NONE, _SETTINGS, len(_SETTINGS))
        lib.nghttp2_session_set_local_window_size(self._session, nghttp2.FLAG_NONE, 0, RECEIVE_WINDOW)
        self._calls: dict[int, _Call] = {}
        self._blocked: set[int] = set()  # streams whose queued DATA exceeded the windows
        # Bytes queued on all streams that nghttp2 has not read: what the connection's window must cover.
        self._unsent = 0
        self._events: list[Event] = []
        self._receiving = False  # inside mem_recv: a stream that closes now was closed by the client
        self._reset_in_read: set[int] = set()  # calls the client closed while this read was handled
        self._head: list[bytes] | None = None  # the request HEADERS being decoded
        self._failure: BaseException | None = None
        self._out = bytearray()
        self._resets: dict[int, None] = {}  # streams to reset (NO_ERROR) after their final HEADERS
        self._frame = ctypes.c_void_p()
        self.ended = False

    # ------------------------------------------------------------------ input

    def receive(self, data: bytes) -> list[Event]:
        if self.ended:
            return []
        global _current
        _current = self
        try:
            self._receiving = True
            used = lib.nghttp2_session_mem_recv(self._session, data, len(data))
            self._receiving = False
            if used >= 0:
                # Serialized now, not at data_to_send: WINDOW_UPDATEs or SETTINGS may have let held DATA
                # out (StreamWritable), and a connection error shows (want_read) once its GOAWAY is out.
                self._pump()
        finally:
            _current = None
            self._receiving = False
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure
        if not self.ended and (used < 0 or not lib.nghttp2_session_want_read(self._session)):
            self._end_all()  # a connection error: nghttp2 has queued its GOAWAY, if the preface was HTTP/2 at all
        events = self._events
        self._events = []
        if self._reset_in_read:
            events = _without_calls_begun_and_reset(events, self._reset_in_read)
            self._reset_in_read = set()
        return events

    def _request(self, sid: int, head: list[bytes], ended: bool) -> None:
        path, content_type, timeout, encoding = head
        call = _Call(request_open=not ended)
        self._calls[sid] = call
        if not _is_grpc(content_type):
            # grpc-go answers a request that is not gRPC with HTTP 415.
            call.done = True
            call.headers_sent = True
            refusal = HeaderList(((b":status", b"415"), (b"content-type", b"text/plain")))
            lib.nghttp2_submit_response(self._session, sid, refusal.array, refusal.length, None)
            self._reset_if_open(sid, call)
            return
        if encoding != b"identity":
            # Refused before it starts: the application never hears of it.
            self.finish(
                sid,
                Status.UNIMPLEMENTED,
                f'grpc: Decompressor is not installed for grpc-encoding "{encoding.decode("ascii", "replace")}"',
            )
            return
        self._events.append(
            CallStarted(sid, path.decode("utf-8", "replace"), parse_timeout(timeout) if timeout else None)
        )
        if ended:
            self._events.append(RequestEnded(sid))

    def _data(self, sid: int, chunk: bytes) -> None:
        call = self._calls.get(sid)
        if call is None or call.done:
            return  # reset, or after the server's answer: the client's late bytes are dropped
        if call.buffer:
            # A message spread over DATA frames: gathered in place, not copied again per frame.
            call.buffer += chunk
            buf: bytes | bytearray = call.buffer
        else:
            buf = chunk
        pos = 0
        out = self._events
        while len(buf) - pos >= 5:
            flag, length = PREFIX.unpack_from(buf, pos)
            if length > self.max_receive:
                self.finish(
                    sid,
                    Status.RESOURCE_EXHAUSTED,
                    f"grpc: received message larger than max ({length} vs. {self.max_receive})",
                )
                out.append(CallAborted(sid))
                return
            if flag:
                # Only identity is accepted (see _request), so a compressed message is malformed.
                self.finish(sid, Status.INTERNAL, "grpc: compressed flag set with identity or empty encoding")
                out.append(CallAborted(sid))
                return
            end = pos + 5 + length
            if len(buf) < end:
                break
            out.append(MessageReceived(sid, bytes(buf[pos + 5 : end])))
            pos = end
        if buf is call.buffer:
            del call.buffer[:pos]
        elif pos < len(buf):
            call.buffer = bytearray(buf[pos:])

    def _request_ended(self, sid: int) -> None:
        call = self._calls.get(sid)
        if call is None or not call.request_open:
            return
        call.request_open = False
        if call.done:
            return
        if call.buffer:
            self.finish(sid, Status.INTERNAL, "grpc: the request ended inside a message")
            self._events.append(CallAborted(sid))
            return
        self._events.append(RequestEnded(sid))

    def _end_all(self) -> None:
        self.ended = True
        for sid, call in self._calls.items():
            if not call.done:
                self._events.append(CallAborted(sid))
        self._calls.clear()
        self._blocked.clear()
        self._events.append(ConnectionEnded())

    # ------------------------------------------------------------------ output

    def send_message(self, sid: int, data: bytes) -> bool:
        """Queue one message; True if the client's windows let all that is queued on the call out now."""
        call = self._calls.get(sid)
        if call is None or call.done or self.ended:
            return True  # the call is gone (reset by the client): nothing to wait for
        call.pending += PREFIX.pack(0, len(data))
        call.pending += data
        self._unsent += len(data) + 5
        if not call.headers_sent:
            call.headers_sent = True
            lib.nghttp2_submit_response(
                self._session, sid, _RESPONSE_NVA.array, _RESPONSE_NVA.length, ctypes.byref(_PROVIDER)
            )
        elif call.deferred:
            call.deferred = False
            lib.nghttp2_session_resume_data(self._session, sid)
        if sid in self._blocked:
            return False
        session = self._session
        stream_window = lib.nghttp2_session_get_stream_remote_window_size(session, sid)
        if len(call.pending) - call.sent <= stream_window and self._unsent <= (
            lib.nghttp2_session_get_remote_window_size(session)
        ):
            return True
        self._blocked.add(sid)
        return False

    def finish(self, sid: int, code: int = Status.OK, message: str = "") -> None:
        """End the call with a status (after any messages still waiting for the window)."""
        call = self._calls.get(sid)
        if call is None or call.done or self.ended:
            return
        call.done = True
        if not call.headers_sent:
            call.headers_sent = True
            headers = HeaderList(_RESPONSE_HEADERS + tuple(status_headers(code, message)))
            lib.nghttp2_submit_response(self._session, sid, headers.array, headers.length, None)
            self._reset_if_open(sid, call)
            return
        trailers = (
            _OK_TRAILERS_NVA
            if code == Status.OK and not message
            else HeaderList(status_headers(code, message))
        )
        if call.sent < len(call.pending):
            call.trailers = trailers  # sent by _read_call after the last of the DATA
            return
        # All DATA is out already: nghttp2 may not ask for more (it does not while the client's window
        # is shut), and the trailers need no window. Its data item stays idle until the stream closes.
        call.deferred = False
        lib.nghttp2_submit_trailer(self._session, sid, trailers.array, trailers.length)
        self._reset_if_open(sid, call)

    def data_to_send(self) -> bytes:
        """The bytes to write; afterwards `take_events()` has what serializing them brought about."""
        global _current
        _current = self
        try:
            self._pump()
        finally:
            _current = None
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure
        out = bytes(self._out)
        self._out.clear()
        return out

    def take_events(self) -> list[Event]:
        """Events that arose outside `receive` (a held stream drained while its DATA was serialized)."""
        events = self._events
        self._events = []
        return events

    def close(self) -> None:
        """Say goodbye (GOAWAY); the shell closes the socket after writing it."""
        if not self.ended:
            self.ended = True
            lib.nghttp2_session_terminate_session(self._session, nghttp2.NO_ERROR)

    # ------------------------------------------------------------------ inside

    def _pump(self) -> None:
        """Move what nghttp2 has to send into `_out` (it serializes one frame per call)."""
        session = self._session
        frame = self._frame
        ref = ctypes.byref(frame)
        out = self._out
        while True:
            n = lib.nghttp2_session_mem_send(session, ref)
            if n > 0:
                out += string_at(frame.value, n)  # type: ignore[arg-type]
                continue
            if n < 0:
                # Only fatal errors come back here (a callback's failure, no memory): the session is
                # unusable, so is the connection.
                if not self.ended:
                    self._end_all()
                break
            if not self._resets:
                break
            # Every final HEADERS is out now: nghttp2 would drop one still queued behind a reset.
            for sid in self._resets:
                lib.nghttp2_submit_rst_stream(session, nghttp2.FLAG_NONE, sid, nghttp2.NO_ERROR)
            self._resets.clear()

    def _reset_if_open(self, sid: int, call: _Call) -> None:
        if call.request_open:
            call.request_open = False
            self._resets[sid] = None  # once the final HEADERS has been serialized (see _pump)


def only_ping_acks(data: bytes) -> bool:
    """Whether `data` (whole frames, as `data_to_send` returns them) is nothing but PING ACKs.

    The shell may hold those back a moment to write them with the next answer: a client
    such as grpc-go pings after each DATA it receives (its BDP estimator), and answering
    each ping in a write of its own costs the server a TCP write per call.
    """
    pos = 0
    end = len(data)
    while pos < end:
        if end - pos < _FRAME_HEAD or data[pos + 3] != _PING or not data[pos + 4] & _ACK:
            return False
        pos += _FRAME_HEAD + int.from_bytes(data[pos : pos + 3], "big")
    return pos == end and end > 0


def _without_calls_begun_and_reset(events: list[Event], reset: set[int]) -> list[Event]:
    """Drop every event of a call that both began and was reset in this read: it never starts."""
    gone = {e.stream_id for e in events if type(e) is CallStarted and e.stream_id in reset}
    if not gone:
        return events
    return [e for e in events if getattr(e, "stream_id", None) not in gone]
