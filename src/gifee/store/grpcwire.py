"""gRPC's wire protocol, server side, over HTTP/2 (the `h2` library), with no I/O.

Every rule of how this server speaks gRPC lives in this module; the shell that
owns the socket (`worker.py`) only feeds bytes in, acts on the events that come
out and writes what `data_to_send()` returns. It never reads a socket, never
looks at a clock and knows nothing about etcd: a call is a path, messages in and
messages out, and a status at the end.

Why not gRPC's own server: grpc.aio hands every call through three or four
threads (its poller, its completion queue, the event loop) and costs about
300 us of CPU per call on this machine; HTTP/2 parsed by h2 on the event loop
costs about a third of that (`benchmarks/README.md`).

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
  waits in the stream's queue, sent as the client's WINDOW_UPDATEs arrive, and
  the trailers wait behind it. `send_message` says whether the message left at
  once; `StreamWritable` says when a stream's queue has drained. Received
  data is acknowledged at once (the shell bounds what it buffers: one request
  per unary call; stream messages go straight to the core).
* A client's RST_STREAM ends the call (`CallAborted`); a connection error or
  GOAWAY from the client ends the connection (`ConnectionEnded`), after which
  nothing more is read.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings


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
MAX_HEADER_LIST = 16 * 1024 * 1024  # grpc-go's default: large metadata fails its call, not the connection

_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}

_CONFIG = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,  # bytes in, bytes out: no decoding of every header on the hot path
    validate_inbound_headers=False,
    normalize_inbound_headers=False,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)
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


class _Call:
    __slots__ = ("buffer", "headers_sent", "request_open", "pending", "trailers", "done")

    def __init__(self, request_open: bool) -> None:
        self.buffer = bytearray()  # received bytes not yet a whole message
        self.headers_sent = False
        self.request_open = request_open
        self.pending = bytearray()  # DATA waiting for the client's window
        self.trailers: list[tuple[bytes, bytes]] | None = None  # waiting behind `pending`
        self.done = False  # the server has ended the call (trailers sent or waiting)


class ServerConnection:
    """One HTTP/2 connection's gRPC calls. Feed bytes to `receive`, write `data_to_send()`."""

    def __init__(self, max_receive: int = DEFAULT_MAX_RECEIVE) -> None:
        self.max_receive = max_receive
        self._h2 = h2.connection.H2Connection(_CONFIG)
        self._h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
            },
        )
        self._h2.decoder.max_header_list_size = MAX_HEADER_LIST
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(RECEIVE_WINDOW - 65535)
        self._calls: dict[int, _Call] = {}
        self._blocked: set[int] = set()  # streams with queued DATA
        self.ended = False

    # ------------------------------------------------------------------ input

    def receive(self, data: bytes) -> list[Event]:
        if self.ended:
            return []
        out: list[Event] = []
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            # h2 has queued the GOAWAY; every call on the connection is over.
            self._end_all(out)
            return out
        # Resets first: h2 has handled the whole read already, so a stream the client reset in it
        # is gone from h2 (and a later stream in the same read makes it unknown there), whatever
        # the order of the events. Nothing may be sent on it, and a call that began in this read
        # too is never started.
        reset: set[int] = set()
        for ev in events:
            if type(ev) is h2.events.StreamReset:
                sid = ev.stream_id
                reset.add(sid)
                call = self._calls.pop(sid, None)
                self._blocked.discard(sid)
                if call is not None and not call.done:
                    out.append(CallAborted(sid))
        for ev in events:
            kind = type(ev)
            if reset and getattr(ev, "stream_id", None) in reset:
                if kind is h2.events.DataReceived and ev.flow_controlled_length:  # type: ignore[attr-defined]
                    self._acknowledge(ev)  # type: ignore[arg-type]
                continue
            if kind is h2.events.DataReceived:
                self._data(ev, out)  # type: ignore[arg-type]
            elif kind is h2.events.RequestReceived:
                self._request(ev, out)  # type: ignore[arg-type]
            elif kind is h2.events.StreamEnded:
                self._request_ended(ev.stream_id, out)  # type: ignore[attr-defined]
            elif kind is h2.events.WindowUpdated:
                sid = ev.stream_id  # type: ignore[attr-defined]
                if sid:
                    if sid in self._blocked:
                        self._flush_stream(sid, out)
                elif self._blocked:
                    self._flush_blocked(out)
            elif kind is h2.events.RemoteSettingsChanged and self._blocked:
                self._flush_blocked(out)
            elif kind is h2.events.ConnectionTerminated:
                self._end_all(out)
                return out
        return out

    def _request(self, ev: h2.events.RequestReceived, out: list[Event]) -> None:
        sid = ev.stream_id
        assert sid is not None
        path = b""
        content_type = b""
        timeout: float | None = None
        encoding = b"identity"
        for name, value in ev.headers or ():
            if name == b":path":
                path = bytes(value)
            elif name == b"content-type":
                content_type = bytes(value)
            elif name == b"grpc-timeout":
                timeout = parse_timeout(bytes(value))
            elif name == b"grpc-encoding":
                encoding = bytes(value)
        ended = ev.stream_ended is not None
        call = _Call(request_open=not ended)
        self._calls[sid] = call
        if not _is_grpc(content_type):
            # grpc-go answers a request that is not gRPC with HTTP 415.
            call.done = True
            self._send_headers(sid, ((b":status", b"415"), (b"content-type", b"text/plain")), end_stream=True)
            self._reset_if_open(sid, call)
            self._calls.pop(sid, None)
            return
        if encoding != b"identity":
            # Refused before it starts: the application never hears of it.
            self.finish(
                sid,
                Status.UNIMPLEMENTED,
                f'grpc: Decompressor is not installed for grpc-encoding "{encoding.decode("ascii", "replace")}"',
            )
            return
        out.append(CallStarted(sid, path.decode("utf-8", "replace"), timeout))
        if ended:
            out.append(RequestEnded(sid))

    def _data(self, ev: h2.events.DataReceived, out: list[Event]) -> None:
        sid = ev.stream_id
        assert sid is not None
        call = self._calls.get(sid)
        if ev.flow_controlled_length:
            self._acknowledge(ev)
        if call is None or call.done:
            return  # reset, or after the server's answer: the client's late bytes are dropped
        if call.buffer:
            # A message spread over DATA frames: gathered in place, not copied again per frame.
            call.buffer += ev.data
            buf: bytes | bytearray = call.buffer
        else:
            buf = ev.data
        pos = 0
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
        if ev.stream_ended is not None:
            self._request_ended(sid, out)

    def _acknowledge(self, ev: h2.events.DataReceived) -> None:
        # Also for a stream that is over: the connection's window must not shrink by late bytes.
        try:
            self._h2.acknowledge_received_data(ev.flow_controlled_length or 0, ev.stream_id or 0)
        except h2.exceptions.ProtocolError:
            pass

    def _request_ended(self, sid: int, out: list[Event]) -> None:
        call = self._calls.get(sid)
        if call is None or not call.request_open:
            return
        call.request_open = False
        if call.done:
            self._forget_if_finished(sid, call)
            return
        if call.buffer:
            self.finish(sid, Status.INTERNAL, "grpc: the request ended inside a message")
            out.append(CallAborted(sid))
            return
        out.append(RequestEnded(sid))

    def _end_all(self, out: list[Event]) -> None:
        self.ended = True
        for sid, call in self._calls.items():
            if not call.done:
                out.append(CallAborted(sid))
        self._calls.clear()
        self._blocked.clear()
        out.append(ConnectionEnded())

    # ------------------------------------------------------------------ output

    def send_message(self, sid: int, data: bytes) -> bool:
        """Queue one message; True if it went out whole (not held by flow control)."""
        call = self._calls.get(sid)
        if call is None or call.done:
            return True  # the call is gone (reset by the client): nothing to wait for
        if not call.headers_sent:
            call.headers_sent = True
            self._send_headers(sid, _RESPONSE_HEADERS)
        framed = encode_message(data)
        if call.pending:
            call.pending += framed
            return False
        return self._push(sid, call, framed)

    def finish(self, sid: int, code: int = Status.OK, message: str = "") -> None:
        """End the call with a status (after any messages still waiting for the window)."""
        call = self._calls.get(sid)
        if call is None or call.done:
            return
        call.done = True
        if not call.headers_sent:
            call.headers_sent = True
            headers = list(_RESPONSE_HEADERS) + status_headers(code, message)
            self._send_headers(sid, headers, end_stream=True)
            self._after_end(sid, call)
            return
        trailers = list(_OK_TRAILERS) if code == Status.OK and not message else status_headers(code, message)
        if call.pending:
            call.trailers = trailers
            return
        self._send_headers(sid, trailers, end_stream=True)
        self._after_end(sid, call)

    def data_to_send(self) -> bytes:
        return self._h2.data_to_send()

    def close(self) -> None:
        """Say goodbye (GOAWAY); the shell closes the socket after writing it."""
        if not self.ended:
            self.ended = True
            self._h2.close_connection()

    # ------------------------------------------------------------------ flow control

    def _push(self, sid: int, call: _Call, data: bytes) -> bool:
        """Send what the windows allow of a new message; queue the rest. True if nothing is left."""
        h = self._h2
        try:
            room = min(h.local_flow_control_window(sid), h.max_outbound_frame_size)
            if len(data) <= room:  # the usual case: one DATA frame, no copy
                h.send_data(sid, data)
                return True
            call.pending += data
            return self._drain(sid, call)
        except h2.exceptions.ProtocolError:
            return True  # the stream is gone in h2 (reset in the read being handled)

    def _drain(self, sid: int, call: _Call) -> bool:
        """Send from the stream's queue what the windows allow. True if the queue is empty."""
        h = self._h2
        pending = call.pending
        while pending:
            room = min(h.local_flow_control_window(sid), h.max_outbound_frame_size, len(pending))
            if room <= 0:
                self._blocked.add(sid)
                return False
            h.send_data(sid, bytes(pending[:room]))
            del pending[:room]
        self._blocked.discard(sid)
        return True

    def _flush_blocked(self, out: list[Event]) -> None:
        for sid in list(self._blocked):
            self._flush_stream(sid, out)

    def _flush_stream(self, sid: int, call_out: list[Event]) -> None:
        call = self._calls.get(sid)
        if call is None:
            self._blocked.discard(sid)
            return
        try:
            if not self._drain(sid, call):
                return
        except h2.exceptions.ProtocolError:
            call.pending.clear()
            self._blocked.discard(sid)
            return
        if call.trailers is not None:
            self._send_headers(sid, call.trailers, end_stream=True)
            call.trailers = None
            self._after_end(sid, call)
        else:
            call_out.append(StreamWritable(sid))

    def _send_headers(self, sid: int, headers: Any, end_stream: bool = False) -> None:
        # The client may have reset the stream in the same read that made the server answer it
        # (h2 handles a whole read before the events are looked at): then there is no one to tell.
        try:
            self._h2.send_headers(sid, headers, end_stream=end_stream)
        except h2.exceptions.ProtocolError:  # StreamClosedError, StreamIDTooLowError
            pass

    def _after_end(self, sid: int, call: _Call) -> None:
        self._reset_if_open(sid, call)
        self._forget_if_finished(sid, call)

    def _reset_if_open(self, sid: int, call: _Call) -> None:
        if call.request_open:
            call.request_open = False
            try:
                self._h2.reset_stream(sid, h2.errors.ErrorCodes.NO_ERROR)
            except h2.exceptions.ProtocolError:
                pass

    def _forget_if_finished(self, sid: int, call: _Call) -> None:
        if call.done and not call.request_open and not call.pending and call.trailers is None:
            self._calls.pop(sid, None)
