"""gRPC's wire protocol, server side (`grpcwire`), driven by an h2 client in memory.

Every test joins a `ServerConnection` to a client-side `h2` connection with no socket
and no event loop: the client's bytes go to `receive`, the server's `data_to_send()`
go to the client, and the assertions look at both the server's events and the frames
(and headers) the client got.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gifee import compiled
from gifee.store.grpcwire import (
    PREFIX,
    RECEIVE_WINDOW,
    CallAborted,
    CallStarted,
    ConnectionEnded,
    MessageReceived,
    RequestEnded,
    ServerConnection,
    Status,
    StreamWritable,
    encode_message,
    only_ping_acks,
    parse_timeout,
    status_headers,
)

PUT = "/etcdserverpb.KV/Put"
OK_HEADERS = [(b":status", b"200"), (b"content-type", b"application/grpc")]


def request_headers(
    path: str = PUT, content_type: bytes = b"application/grpc", extra: tuple[tuple[bytes, bytes], ...] = ()
) -> list[tuple[bytes, bytes]]:
    """A gRPC client's request HEADERS."""
    return [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", b"127.0.0.1:2379"),
        (b"content-type", content_type),
        (b"te", b"trailers"),
        *extra,
    ]


@dataclass(frozen=True)
class Frame:
    """One frame the server wrote, as the test reads it (HEADERS are decoded by the client)."""

    kind: str  # "HEADERS", "DATA", "RST_STREAM", "GOAWAY", ...
    stream_id: int
    flags: frozenset[str]
    data: bytes = b""  # DATA's payload
    error_code: int | None = None  # RST_STREAM's and GOAWAY's


_KINDS = {0: "DATA", 1: "HEADERS", 3: "RST_STREAM", 4: "SETTINGS", 6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE"}


def parse_frames(data: bytes) -> list[Frame]:
    """Cut the server's bytes into frames (HEADERS' header blocks are left to the client's HPACK)."""
    frames = []
    view = memoryview(data)
    while view:
        frame, length = hyperframe.frame.Frame.parse_frame_header(view[:9])
        assert frame.type is not None
        frame.parse_body(view[9 : 9 + length])
        view = view[9 + length :]
        frames.append(
            Frame(
                _KINDS[frame.type],
                frame.stream_id,
                frozenset(frame.flags),
                bytes(frame.data) if isinstance(frame, hyperframe.frame.DataFrame) else b"",
                getattr(frame, "error_code", None),
            )
        )
    return frames


class Wire:
    """A `ServerConnection` and an h2 client joined in memory."""

    def __init__(
        self,
        max_receive: int | None = None,
        client_window: int | None = None,
        handshake: bool = True,
        server: ServerConnection | None = None,
    ) -> None:
        if server is None:
            server = ServerConnection() if max_receive is None else ServerConnection(max_receive)
        self.server = server
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.client.initiate_connection()
        if client_window is not None:
            self.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: client_window})
        if handshake:
            assert self.to_server() == []
            self.to_client()
            assert self.to_server() == []  # the client's SETTINGS ACK
            assert self.to_client() == ([], [])

    def to_server(self, data: bytes | None = None) -> list[object]:
        """The client's pending bytes (or `data`) into the server; the server's events."""
        return list(self.server.receive(self.client.data_to_send() if data is None else data))

    def to_client(self) -> tuple[list[Frame], list[h2.events.Event]]:
        """The server's pending bytes into the client: the frames and the client's events.

        SETTINGS, their ACKs and WINDOW_UPDATEs are left out of both lists, so that a
        test sees the calls' frames only.
        """
        data = self.server.data_to_send()
        frames = [f for f in parse_frames(data) if f.kind not in ("SETTINGS", "WINDOW_UPDATE")]
        events = [
            e
            for e in self.client.receive_data(data)
            if not isinstance(
                e,
                h2.events.RemoteSettingsChanged | h2.events.SettingsAcknowledged | h2.events.WindowUpdated,
            )
        ]
        return frames, events

    def start(
        self,
        sid: int,
        *messages: bytes,
        end: bool = True,
        content_type: bytes = b"application/grpc",
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> list[object]:
        """Open a call with these messages (half-closed if `end`) and hand it to the server."""
        self.client.send_headers(sid, request_headers(content_type=content_type, extra=extra))
        body = b"".join(encode_message(m) for m in messages)
        if body or end:
            self.client.send_data(sid, body, end_stream=end)
        return self.to_server()


def headers_of(events: list[h2.events.Event], kind: type) -> list[tuple[bytes, bytes]]:
    """The headers of the one event of this kind (ResponseReceived or TrailersReceived)."""
    [found] = [e for e in events if isinstance(e, kind)]
    return list(found.headers)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- unary calls


def test_unary_call_round_trip() -> None:
    """A unary call: CallStarted, the exact message, RequestEnded; the answer is HEADERS, one DATA, trailers."""
    wire = Wire()
    request = b"\x0a\x03foo\x12\x03bar"
    assert wire.start(1, request) == [
        CallStarted(1, PUT, None),
        MessageReceived(1, request),
        RequestEnded(1),
    ]
    reply = b"\x0a\x00" * 7
    assert wire.server.send_message(1, reply) is True
    wire.server.finish(1)
    frames, events = wire.to_client()
    assert [(f.kind, f.stream_id, f.flags) for f in frames] == [
        ("HEADERS", 1, frozenset({"END_HEADERS"})),
        ("DATA", 1, frozenset()),
        ("HEADERS", 1, frozenset({"END_HEADERS", "END_STREAM"})),
    ]
    assert frames[1].data == b"\x00\x00\x00\x00\x0e" + reply
    assert [type(e) for e in events] == [
        h2.events.ResponseReceived,
        h2.events.DataReceived,
        h2.events.TrailersReceived,
        h2.events.StreamEnded,
    ]
    assert headers_of(events, h2.events.ResponseReceived) == OK_HEADERS
    assert headers_of(events, h2.events.TrailersReceived) == [(b"grpc-status", b"0")]
    # The call is forgotten: more output on it is dropped.
    assert wire.server.send_message(1, b"late") is True
    wire.server.finish(1, Status.INTERNAL, "late")
    assert wire.server.data_to_send() == b""


def test_encode_message_prefix() -> None:
    """The length prefix is a zero flag byte and the big-endian length."""
    assert encode_message(b"") == b"\x00\x00\x00\x00\x00"
    assert encode_message(b"ab") == b"\x00\x00\x00\x00\x02ab"
    assert encode_message(bytes(70000))[:5] == b"\x00\x00\x01\x11\x70"
    assert PREFIX.size == 5


def test_headers_with_end_stream_and_no_message() -> None:
    """A request that ends on its HEADERS: CallStarted then RequestEnded, no message."""
    wire = Wire()
    wire.client.send_headers(1, request_headers(), end_stream=True)
    assert wire.to_server() == [CallStarted(1, PUT, None), RequestEnded(1)]


def test_several_messages_in_one_data_frame() -> None:
    """Several whole messages (one of them empty) in one DATA frame come out one by one, in order."""
    wire = Wire()
    messages = [b"one", b"", b"three" * 100, b"\x00\x00\x00\x00\x05"]
    assert wire.start(1, *messages) == [
        CallStarted(1, PUT, None),
        *(MessageReceived(1, m) for m in messages),
        RequestEnded(1),
    ]


def test_message_split_across_frames_and_reads() -> None:
    """A message cut inside its prefix and inside its body, one byte per DATA frame, arrives once."""
    wire = Wire()
    assert wire.start(1, end=False) == [CallStarted(1, PUT, None)]
    body = encode_message(b"hello")
    for byte in body[:-1]:
        wire.client.send_data(1, bytes([byte]))
        assert wire.to_server() == []
    wire.client.send_data(1, body[-1:], end_stream=True)
    assert wire.to_server() == [MessageReceived(1, b"hello"), RequestEnded(1)]


def test_message_of_exactly_max_receive_is_accepted() -> None:
    """`max_receive` is the largest message allowed, not the first one refused."""
    wire = Wire(max_receive=1000)
    message = bytes(range(250)) * 4
    assert wire.start(1, message) == [CallStarted(1, PUT, None), MessageReceived(1, message), RequestEnded(1)]


@st.composite
def _split_request(draw: st.DrawFn) -> tuple[list[bytes], list[bytes], list[int]]:
    messages = draw(
        st.lists(
            st.one_of(st.binary(max_size=40), st.binary(min_size=300, max_size=700)), min_size=0, max_size=8
        )
    )
    body = b"".join(encode_message(m) for m in messages)
    cuts = sorted(draw(st.sets(st.integers(0, len(body)), max_size=12)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    read_cuts = draw(st.lists(st.integers(1, 200), max_size=20))
    return messages, pieces, read_cuts


@settings(max_examples=80, deadline=None)
@given(_split_request(), st.booleans())
def test_messages_survive_any_split(
    request: tuple[list[bytes], list[bytes], list[int]], bare_end: bool
) -> None:
    """Whatever the DATA frames' boundaries and the reads' boundaries, the messages come out whole, in order."""
    messages, pieces, read_cuts = request
    wire = Wire()
    wire.client.send_headers(1, request_headers())
    for i, piece in enumerate(pieces):  # empty pieces are empty DATA frames
        wire.client.send_data(1, piece, end_stream=not bare_end and i == len(pieces) - 1)
    if bare_end:
        wire.client.end_stream(1)  # END_STREAM on an empty DATA frame of its own
    stream = wire.client.data_to_send()
    events: list[object] = []
    pos = 0
    for size in read_cuts:
        events += wire.to_server(stream[pos : pos + size])
        pos += size
    events += wire.to_server(stream[pos:])
    assert events == [CallStarted(1, PUT, None), *(MessageReceived(1, m) for m in messages), RequestEnded(1)]


# ---------------------------------------------------------------------- grpc-timeout


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (b"1H", 3600.0),
        (b"2M", 120.0),
        (b"3S", 3.0),
        (b"250m", 0.25),
        (b"5u", 5e-6),
        (b"6n", 6e-9),
        (b"0S", 0.0),
        (b"00000007S", 7.0),
        (b"99999999H", 99999999 * 3600.0),
    ],
)
def test_parse_timeout_units(value: bytes, seconds: float) -> None:
    """Every unit of grpc-timeout, with up to eight digits."""
    assert parse_timeout(value) == pytest.approx(seconds, rel=1e-12, abs=0.0)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"S",
        b"1",
        b"10",
        b"123456789S",  # nine digits
        b"1s",
        b"1h",
        b"1x",
        b"1.5S",
        b"-1S",
        b"+1S",
        b" 1S",
        b"1 S",
        b"1S ",
        b"1SS",
        b"\xff1S",
        "\u0661S".encode(),  # an Arabic-Indic digit one: a digit to str.isdigit, not to gRPC
        "\u00b2S".encode(),
    ],
)
def test_parse_timeout_malformed(value: bytes) -> None:
    """A malformed grpc-timeout means no deadline, never an exception."""
    assert parse_timeout(value) is None


def test_call_started_carries_the_timeout() -> None:
    """CallStarted has the parsed grpc-timeout; None when it is malformed or absent."""
    wire = Wire()
    assert wire.start(1, extra=((b"grpc-timeout", b"250m"),))[0] == CallStarted(1, PUT, 0.25)
    assert wire.start(3, extra=((b"grpc-timeout", b"2H"),))[0] == CallStarted(3, PUT, 7200.0)
    assert wire.start(5, extra=((b"grpc-timeout", b"1.5S"),))[0] == CallStarted(5, PUT, None)
    assert wire.start(7)[0] == CallStarted(7, PUT, None)


# ---------------------------------------------------------------------- statuses


def test_status_headers_percent_encoding() -> None:
    """grpc-message keeps printable ASCII but '%'; '%', control characters and non-ASCII become %XX of UTF-8."""
    printable = "".join(chr(c) for c in range(0x20, 0x7F))
    assert status_headers(Status.INTERNAL, printable) == [
        (b"grpc-status", b"13"),
        (b"grpc-message", printable.replace("%", "%25").encode()),
    ]
    assert status_headers(5, "100% ünï\n\t\x7f€") == [
        (b"grpc-status", b"5"),
        (b"grpc-message", b"100%25 %C3%BCn%C3%AF%0A%09%7F%E2%82%AC"),
    ]
    assert status_headers(Status.OK, "") == [(b"grpc-status", b"0")]


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_status_message_round_trips(message: str) -> None:
    """Whatever the message, grpc-message is printable ASCII and decodes back to it."""
    headers = status_headers(Status.UNKNOWN, message)
    if not message:
        assert headers == [(b"grpc-status", b"2")]
        return
    assert len(headers) == 2 and headers[0] == (b"grpc-status", b"2")
    name, value = headers[1]
    assert name == b"grpc-message"
    assert all(0x20 <= b < 0x7F for b in value)
    assert unquote(value.decode("ascii"), errors="strict") == message


def test_error_before_any_message_is_trailers_only() -> None:
    """An error before any message: one HEADERS frame with :status 200, grpc-status, grpc-message, END_STREAM."""
    wire = Wire()
    wire.start(1, b"req")
    wire.server.finish(1, Status.NOT_FOUND, "key 100% gone: ünï\n")
    frames, events = wire.to_client()
    assert [(f.kind, f.stream_id, f.flags) for f in frames] == [
        ("HEADERS", 1, frozenset({"END_HEADERS", "END_STREAM"}))
    ]
    assert headers_of(events, h2.events.ResponseReceived) == [
        *OK_HEADERS,
        (b"grpc-status", b"5"),
        (b"grpc-message", b"key 100%25 gone: %C3%BCn%C3%AF%0A"),
    ]
    assert [type(e) for e in events] == [h2.events.ResponseReceived, h2.events.StreamEnded]


def test_ok_before_any_message_is_trailers_only() -> None:
    """finish() with OK and no message sent: trailers-only with grpc-status 0 and no grpc-message."""
    wire = Wire()
    wire.start(1)
    wire.server.finish(1)
    frames, events = wire.to_client()
    assert [(f.kind, f.flags) for f in frames] == [("HEADERS", frozenset({"END_HEADERS", "END_STREAM"}))]
    assert headers_of(events, h2.events.ResponseReceived) == [*OK_HEADERS, (b"grpc-status", b"0")]


def test_error_after_messages_goes_in_the_trailers() -> None:
    """An error after a message: the trailers carry grpc-status and the percent-encoded grpc-message."""
    wire = Wire()
    wire.start(1, b"req")
    wire.server.send_message(1, b"partial")
    wire.server.finish(1, Status.ABORTED, "lost 50%")
    frames, events = wire.to_client()
    assert [f.kind for f in frames] == ["HEADERS", "DATA", "HEADERS"]
    assert headers_of(events, h2.events.ResponseReceived) == OK_HEADERS
    assert headers_of(events, h2.events.TrailersReceived) == [
        (b"grpc-status", b"10"),
        (b"grpc-message", b"lost 50%25"),
    ]


def test_ok_with_a_message_after_messages() -> None:
    """OK with a message (not the plain OK trailers) keeps its grpc-message."""
    wire = Wire()
    wire.start(1, b"req")
    wire.server.send_message(1, b"")
    wire.server.finish(1, Status.OK, "fine")
    _, events = wire.to_client()
    assert headers_of(events, h2.events.TrailersReceived) == [
        (b"grpc-status", b"0"),
        (b"grpc-message", b"fine"),
    ]


# ---------------------------------------------------------------------- bad input


def test_message_over_max_receive_is_refused_when_its_prefix_arrives() -> None:
    """A prefix announcing more than max_receive: RESOURCE_EXHAUSTED at once, CallAborted, RST_STREAM NO_ERROR."""
    wire = Wire(max_receive=1000)
    assert wire.start(1, end=False) == [CallStarted(1, PUT, None)]
    prefix = PREFIX.pack(0, 1001)
    wire.client.send_data(1, prefix[:3])
    assert wire.to_server() == []
    wire.client.send_data(1, prefix[3:] + b"only the start of it")
    assert wire.to_server() == [CallAborted(1)]
    frames, events = wire.to_client()
    assert [(f.kind, f.stream_id, f.flags, f.error_code) for f in frames] == [
        ("HEADERS", 1, frozenset({"END_HEADERS", "END_STREAM"}), None),
        ("RST_STREAM", 1, frozenset(), h2.errors.ErrorCodes.NO_ERROR),
    ]
    assert headers_of(events, h2.events.ResponseReceived) == [
        *OK_HEADERS,
        (b"grpc-status", b"8"),
        (b"grpc-message", b"grpc: received message larger than max (1001 vs. 1000)"),
    ]
    # The connection goes on: another call works.
    assert wire.start(3, b"small") == [
        CallStarted(3, PUT, None),
        MessageReceived(3, b"small"),
        RequestEnded(3),
    ]


def test_oversized_message_after_the_client_half_closed_is_not_reset() -> None:
    """When the request had already ended, the refusal is the trailers-only HEADERS alone, no RST_STREAM."""
    wire = Wire(max_receive=10)
    wire.client.send_headers(1, request_headers())
    wire.client.send_data(1, PREFIX.pack(0, 11) + bytes(11), end_stream=True)
    assert wire.to_server() == [CallStarted(1, PUT, None), CallAborted(1)]
    frames, events = wire.to_client()
    assert [(f.kind, f.flags) for f in frames] == [("HEADERS", frozenset({"END_HEADERS", "END_STREAM"}))]
    assert (b"grpc-status", b"8") in headers_of(events, h2.events.ResponseReceived)


def test_compressed_message_is_internal() -> None:
    """A message with the compressed flag (no encoding agreed) ends the call with grpc-go's INTERNAL, and the
    open request is reset."""
    wire = Wire()
    assert wire.start(1, b"fine", end=False) == [CallStarted(1, PUT, None), MessageReceived(1, b"fine")]
    wire.client.send_data(1, PREFIX.pack(1, 3) + b"abc")
    assert wire.to_server() == [CallAborted(1)]
    frames, events = wire.to_client()
    assert [(f.kind, f.flags, f.error_code) for f in frames] == [
        ("HEADERS", frozenset({"END_HEADERS", "END_STREAM"}), None),
        ("RST_STREAM", frozenset(), h2.errors.ErrorCodes.NO_ERROR),
    ]
    assert headers_of(events, h2.events.ResponseReceived) == [
        *OK_HEADERS,
        (b"grpc-status", b"13"),
        (b"grpc-message", b"grpc: compressed flag set with identity or empty encoding"),
    ]


def test_grpc_encoding_gzip_is_unimplemented() -> None:
    """A grpc-encoding other than identity: UNIMPLEMENTED trailers-only; the application never hears of the call."""
    wire = Wire()
    assert wire.start(1, b"x", extra=((b"grpc-encoding", b"gzip"),)) == []
    frames, events = wire.to_client()
    assert [(f.kind, f.flags) for f in frames] == [("HEADERS", frozenset({"END_HEADERS", "END_STREAM"}))]
    assert headers_of(events, h2.events.ResponseReceived) == [
        *OK_HEADERS,
        (b"grpc-status", b"12"),
        (b"grpc-message", b'grpc: Decompressor is not installed for grpc-encoding "gzip"'),
    ]


def test_grpc_encoding_identity_is_accepted() -> None:
    """grpc-encoding identity is the one encoding this server speaks."""
    wire = Wire()
    assert wire.start(1, b"x", extra=((b"grpc-encoding", b"identity"),)) == [
        CallStarted(1, PUT, None),
        MessageReceived(1, b"x"),
        RequestEnded(1),
    ]


@pytest.mark.parametrize("content_type", [b"text/plain", b"application/json", b"", b"application/grp"])
def test_not_grpc_content_type_is_415(content_type: bytes) -> None:
    """A content-type not starting with application/grpc: HTTP 415, no event, RST_STREAM as the request was open."""
    wire = Wire()
    assert wire.start(1, end=False, content_type=content_type) == []
    frames, events = wire.to_client()
    assert [(f.kind, f.flags, f.error_code) for f in frames] == [
        ("HEADERS", frozenset({"END_HEADERS", "END_STREAM"}), None),
        ("RST_STREAM", frozenset(), h2.errors.ErrorCodes.NO_ERROR),
    ]
    assert headers_of(events, h2.events.ResponseReceived) == [
        (b":status", b"415"),
        (b"content-type", b"text/plain"),
    ]
    assert wire.server.send_message(1, b"x") is True  # no call to answer
    assert wire.server.data_to_send() == b""


def test_grpc_content_type_with_a_suffix_is_accepted() -> None:
    """application/grpc+proto is gRPC."""
    wire = Wire()
    assert wire.start(1, b"x", content_type=b"application/grpc+proto") == [
        CallStarted(1, PUT, None),
        MessageReceived(1, b"x"),
        RequestEnded(1),
    ]


def test_request_ending_inside_a_message_is_internal() -> None:
    """END_STREAM with half a message buffered: INTERNAL, CallAborted, no RequestEnded."""
    wire = Wire()
    wire.client.send_headers(1, request_headers())
    wire.client.send_data(1, encode_message(b"whole") + encode_message(b"half")[:6], end_stream=True)
    assert wire.to_server() == [CallStarted(1, PUT, None), MessageReceived(1, b"whole"), CallAborted(1)]
    frames, events = wire.to_client()
    assert [(f.kind, f.flags) for f in frames] == [("HEADERS", frozenset({"END_HEADERS", "END_STREAM"}))]
    assert headers_of(events, h2.events.ResponseReceived)[2:] == [
        (b"grpc-status", b"13"),
        (b"grpc-message", b"grpc: the request ended inside a message"),
    ]


def _rejections() -> list[tuple[str, list[tuple[bytes, bytes]], bytes]]:
    return [
        ("not gRPC", request_headers(content_type=b"text/plain"), b""),
        ("grpc-encoding gzip", request_headers(extra=((b"grpc-encoding", b"gzip"),)), b""),
        ("too large", request_headers(), PREFIX.pack(0, 2000)),
        ("compressed", request_headers(), PREFIX.pack(1, 1) + b"x"),
    ]


@pytest.mark.parametrize(("name", "headers", "body"), _rejections(), ids=[r[0] for r in _rejections()])
def test_refusal_and_client_reset_in_one_read(
    name: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """A call refused by the server and reset by the client in the same read: no exception, the connection goes on."""
    wire = Wire(max_receive=1000)
    wire.client.send_headers(1, headers)
    if body:
        wire.client.send_data(1, body)
    wire.client.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
    events = wire.to_server()
    assert events == []  # a call that began and was reset in one read never starts
    assert wire.start(3, b"next") == [CallStarted(3, PUT, None), MessageReceived(3, b"next"), RequestEnded(3)]


def test_request_ending_inside_a_message_and_reset_in_one_read() -> None:
    """A request cut inside a message and then reset, all in one read: no exception, the connection goes on."""
    wire = Wire()
    wire.client.send_headers(1, request_headers())
    wire.client.send_data(1, encode_message(b"half")[:6], end_stream=True)
    wire.client.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
    assert wire.to_server() == []
    assert wire.start(3, b"next") == [CallStarted(3, PUT, None), MessageReceived(3, b"next"), RequestEnded(3)]


# ---------------------------------------------------------------------- flow control


def test_server_offers_large_windows_and_acknowledges_what_it_reads() -> None:
    """The client may send 16 MiB before any WINDOW_UPDATE, and the server's acknowledgements keep it going."""
    wire = Wire()
    assert wire.client.remote_settings.initial_window_size == RECEIVE_WINDOW
    wire.client.send_headers(1, request_headers())
    assert wire.client.local_flow_control_window(1) == RECEIVE_WINDOW
    assert wire.client.outbound_flow_control_window == RECEIVE_WINDOW
    assert wire.to_server() == [CallStarted(1, PUT, None)]
    message = bytes(1024 * 1024)
    framed = encode_message(message)
    for _ in range(20):  # 20 MiB: more than a window, so it only gets through if the server acknowledges
        assert wire.client.local_flow_control_window(1) >= len(framed)
        for pos in range(0, len(framed), 16384):
            wire.client.send_data(1, framed[pos : pos + 16384])
        assert wire.to_server() == [MessageReceived(1, message)]
        wire.to_client()  # the WINDOW_UPDATEs


def test_large_message_is_cut_into_frames_of_the_clients_max_frame_size() -> None:
    """DATA frames never exceed the client's SETTINGS_MAX_FRAME_SIZE (16384 by default)."""
    wire = Wire()
    wire.start(1)
    message = bytes(range(256)) * 160  # 40960 bytes
    assert wire.server.send_message(1, message) is True
    frames, _ = wire.to_client()
    assert [len(f.data) for f in frames if f.kind == "DATA"] == [16384, 16384, 40965 - 2 * 16384]
    assert b"".join(f.data for f in frames) == encode_message(message)


def _drain(wire: Wire, sid: int, window: int) -> tuple[bytes, list[object], list[Frame]]:
    """Acknowledge what the client got until the server has nothing more; never more DATA than `window`."""
    got = b""
    server_events: list[object] = []
    all_frames: list[Frame] = []
    for _ in range(100):
        server_events += wire.to_server()
        frames, events = wire.to_client()
        all_frames += frames
        data = [f for f in frames if f.kind == "DATA"]
        assert sum(len(f.data) for f in data) <= window
        got += b"".join(f.data for f in data)
        for e in events:
            if isinstance(e, h2.events.DataReceived):
                wire.client.acknowledge_received_data(e.flow_controlled_length, sid)
        if not frames:
            return got, server_events, all_frames
    raise AssertionError("the server never ran out of data")


def test_flow_control_holds_messages_until_the_window_opens() -> None:
    """With a 100-byte window: send_message says False, DATA stays within the window, StreamWritable at the end."""
    wire = Wire(client_window=100)
    wire.start(1, b"req", end=False)
    first, second = bytes(range(200)) + b"A" * 100, b"B" * 150
    assert wire.server.send_message(1, first) is False
    assert wire.server.send_message(1, second) is False  # queued behind the first
    frames, events = wire.to_client()
    assert [(f.kind, len(f.data)) for f in frames] == [("HEADERS", 0), ("DATA", 100)]
    assert headers_of(events, h2.events.ResponseReceived) == OK_HEADERS
    wire.client.acknowledge_received_data(100, 1)
    got, server_events, later = _drain(wire, 1, 100)
    assert frames[1].data + got == encode_message(first) + encode_message(second)
    assert server_events == [StreamWritable(1)]
    assert [len(f.data) for f in later] == [100, 100, 100, 60]
    # Writable again: the next message goes out at once.
    assert wire.server.send_message(1, b"C" * 10) is True
    frames, _ = wire.to_client()
    assert [f.data for f in frames] == [encode_message(b"C" * 10)]


def test_finish_waits_behind_held_data() -> None:
    """finish() with DATA waiting: the trailers go only after the last DATA, and no StreamWritable."""
    wire = Wire(client_window=100)
    wire.start(1, b"req")
    message = bytes(range(256)) + bytes(44)  # 300 bytes, 305 framed
    assert wire.server.send_message(1, message) is False
    wire.server.finish(1, Status.OK)
    frames, _ = wire.to_client()
    assert [(f.kind, len(f.data)) for f in frames] == [("HEADERS", 0), ("DATA", 100)]
    wire.client.acknowledge_received_data(100, 1)
    got, server_events, later = _drain(wire, 1, 100)
    assert frames[1].data + got == encode_message(message)
    assert server_events == []
    assert [(f.kind, len(f.data), f.flags) for f in later] == [
        ("DATA", 100, frozenset()),
        ("DATA", 100, frozenset()),
        ("DATA", 5, frozenset()),
        ("HEADERS", 0, frozenset({"END_HEADERS", "END_STREAM"})),
    ]
    assert wire.client.data_to_send() == b""


def test_finish_with_held_data_resets_an_open_request_after_the_trailers() -> None:
    """A server-finished call whose request is open: trailers after the held DATA, then RST_STREAM NO_ERROR."""
    wire = Wire(client_window=100)
    wire.start(1, b"req", end=False)
    assert wire.server.send_message(1, bytes(150)) is False
    wire.server.finish(1, Status.OK)
    frames, _ = wire.to_client()
    assert [f.kind for f in frames] == ["HEADERS", "DATA"]
    wire.client.send_data(1, encode_message(b"after the answer"))
    assert wire.to_server() == []  # the call is over for the server: its messages are dropped
    wire.client.acknowledge_received_data(100, 1)
    assert wire.to_server() == []
    frames, events = wire.to_client()
    assert [(f.kind, len(f.data), f.error_code) for f in frames] == [
        ("DATA", 55, None),
        ("HEADERS", 0, None),
        ("RST_STREAM", 0, h2.errors.ErrorCodes.NO_ERROR),
    ]
    assert headers_of(events, h2.events.TrailersReceived) == [(b"grpc-status", b"0")]


def test_connection_window_is_shared_by_streams() -> None:
    """The connection window holds back a second stream; opening it makes that stream writable.

    How the window is shared out between the two streams is nghttp2's choice (it takes turns), so the test
    checks the total in flight and that both messages arrive whole."""
    wire = Wire()
    wire.start(1)
    wire.start(3)
    message = bytes(40000)
    assert wire.server.send_message(1, message) is True
    assert wire.server.send_message(3, message) is False  # 65535 - 40005 left on the connection
    frames, events = wire.to_client()
    assert sum(len(f.data) for f in frames) == 65535
    got = {1: b"", 3: b""}
    for f in frames:
        got[f.stream_id] += f.data
    for e in events:
        if isinstance(e, h2.events.DataReceived):
            wire.client.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
    assert wire.to_server() == [StreamWritable(3)]
    frames, _ = wire.to_client()
    for f in frames:
        got[f.stream_id] += f.data
    assert got == {1: encode_message(message), 3: encode_message(message)}


def test_window_growth_by_settings_releases_held_data() -> None:
    """A larger SETTINGS_INITIAL_WINDOW_SIZE from the client lets held DATA out."""
    wire = Wire(client_window=10)
    wire.start(1)
    assert wire.server.send_message(1, b"x" * 95) is False
    frames, _ = wire.to_client()
    assert [len(f.data) for f in frames if f.kind == "DATA"] == [10]
    wire.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    assert wire.to_server() == [StreamWritable(1)]
    frames, _ = wire.to_client()
    assert [len(f.data) for f in frames if f.kind == "DATA"] == [90]


# ---------------------------------------------------------------------- the client ends things


def test_client_reset_aborts_the_call() -> None:
    """The client's RST_STREAM: CallAborted; later send_message and finish on it do nothing."""
    wire = Wire()
    wire.start(1, b"req")
    wire.client.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
    assert wire.to_server() == [CallAborted(1)]
    assert wire.server.send_message(1, b"answer") is True
    wire.server.finish(1, Status.OK)
    wire.server.finish(1, Status.INTERNAL, "again")
    assert wire.server.data_to_send() == b""


def test_client_reset_of_a_held_stream_forgets_its_data() -> None:
    """A reset stream's held DATA is dropped; an opened window later makes nothing writable."""
    wire = Wire(client_window=10)
    wire.start(1)
    wire.start(3)
    assert wire.server.send_message(1, bytes(100)) is False
    assert wire.server.send_message(3, bytes(100)) is False
    wire.to_client()
    wire.client.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
    assert wire.to_server() == [CallAborted(1)]
    wire.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    assert wire.to_server() == [StreamWritable(3)]
    frames, _ = wire.to_client()
    assert {f.stream_id for f in frames} == {3}


def test_client_reset_after_the_server_finished_is_not_an_abort() -> None:
    """A reset of a call the server has already finished (trailers held by flow control) is no CallAborted."""
    wire = Wire(client_window=10)
    wire.start(1)
    wire.server.send_message(1, bytes(100))
    wire.server.finish(1)
    wire.client.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
    assert wire.to_server() == []


@pytest.mark.parametrize("how", ["goaway", "garbage"])
def test_connection_end_aborts_every_open_call(how: str) -> None:
    """GOAWAY or bytes that are not HTTP/2: a CallAborted per open call, then ConnectionEnded, then silence."""
    wire = Wire()
    wire.start(1)  # open: waiting for the answer
    wire.start(3, end=False)  # open: streaming
    wire.start(5)
    wire.server.send_message(5, b"done")
    wire.server.finish(5)  # over: not aborted
    wire.start(7, content_type=b"text/plain")  # refused: not a call
    wire.to_client()
    if how == "goaway":
        wire.client.close_connection()
        data = wire.client.data_to_send()
    else:
        data = b"\x00\x00\x04\x00\x00\x00\x00\x00\x00abcd"  # DATA on stream 0: a connection error
    events = wire.to_server(data)
    assert sorted(e.stream_id for e in events[:-1]) == [1, 3]  # type: ignore[attr-defined]
    assert all(isinstance(e, CallAborted) for e in events[:-1])
    assert events[-1] == ConnectionEnded()
    assert wire.server.ended
    frames = parse_frames(wire.server.data_to_send())
    if how == "garbage":
        assert [(f.kind, f.error_code) for f in frames] == [("GOAWAY", h2.errors.ErrorCodes.PROTOCOL_ERROR)]
    # Nothing more comes out, whatever arrives.
    assert wire.to_server(b"\x00" * 100) == []
    assert wire.to_server(data) == []
    assert wire.server.send_message(1, b"x") is True
    assert wire.server.data_to_send() == b""


def test_garbage_instead_of_the_preface_ends_the_connection() -> None:
    """A client that does not speak HTTP/2 at all: ConnectionEnded, and nothing after."""
    server = ServerConnection()
    assert server.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == [ConnectionEnded()]
    assert server.receive(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") == []


def test_server_close_says_goaway_and_stops_reading() -> None:
    """close() writes GOAWAY NO_ERROR; what arrives afterwards is not read."""
    wire = Wire()
    wire.start(1, b"x")
    wire.server.close()
    frames, _ = wire.to_client()
    assert [(f.kind, f.error_code) for f in frames] == [("GOAWAY", h2.errors.ErrorCodes.NO_ERROR)]
    ping = hyperframe.frame.PingFrame(0, opaque_data=b"12345678").serialize()
    assert wire.to_server(ping) == []
    assert wire.server.data_to_send() == b""  # not even the PING's ACK: the bytes were not read


# ---------------------------------------------------------------------- many calls, streaming


@pytest.mark.parametrize("before_settings", [False, True])
def test_many_concurrent_streams(before_settings: bool) -> None:
    """200 calls open at once (more than h2's default 100) are all accepted and answered."""
    wire = Wire(handshake=not before_settings)
    sids = list(range(1, 401, 2))
    for sid in sids:
        wire.client.send_headers(sid, request_headers())
        wire.client.send_data(sid, encode_message(sid.to_bytes(2, "big")))
    events = wire.to_server()
    assert events == [
        e for sid in sids for e in (CallStarted(sid, PUT, None), MessageReceived(sid, sid.to_bytes(2, "big")))
    ]
    for sid in sids:
        wire.server.send_message(sid, b"r" + sid.to_bytes(2, "big"))
        wire.server.finish(sid)
    frames, client_events = wire.to_client()
    assert [f for f in frames if f.kind == "RST_STREAM"] == [
        Frame("RST_STREAM", sid, frozenset(), b"", 0) for sid in sids
    ]
    got = {e.stream_id: e.data for e in client_events if isinstance(e, h2.events.DataReceived)}
    assert got == {sid: encode_message(b"r" + sid.to_bytes(2, "big")) for sid in sids}
    trailers = [e for e in client_events if isinstance(e, h2.events.TrailersReceived)]
    assert [(e.stream_id, list(e.headers)) for e in trailers] == [
        (sid, [(b"grpc-status", b"0")]) for sid in sids
    ]


def test_bidirectional_stream() -> None:
    """Messages both ways on one stream; the server ends it while the client's side is open: trailers, then RST_STREAM."""
    wire = Wire()
    assert wire.start(1, b"watch-1", end=False) == [CallStarted(1, PUT, None), MessageReceived(1, b"watch-1")]
    assert wire.server.send_message(1, b"created") is True
    wire.client.send_data(1, encode_message(b"watch-2") + encode_message(b"watch-3")[:4])
    assert wire.to_server() == [MessageReceived(1, b"watch-2")]
    assert wire.server.send_message(1, b"event-1") is True
    wire.client.send_data(1, encode_message(b"watch-3")[4:])
    assert wire.to_server() == [MessageReceived(1, b"watch-3")]
    assert wire.server.send_message(1, b"event-2") is True
    frames, events = wire.to_client()
    assert [f.kind for f in frames] == ["HEADERS", "DATA", "DATA", "DATA"]
    assert [e.data for e in events if isinstance(e, h2.events.DataReceived)] == [
        encode_message(b"created"),
        encode_message(b"event-1"),
        encode_message(b"event-2"),
    ]
    wire.server.finish(1, Status.CANCELLED, "watch closed")
    frames, events = wire.to_client()
    assert [(f.kind, f.flags, f.error_code) for f in frames] == [
        ("HEADERS", frozenset({"END_HEADERS", "END_STREAM"}), None),
        ("RST_STREAM", frozenset(), h2.errors.ErrorCodes.NO_ERROR),
    ]
    assert headers_of(events, h2.events.TrailersReceived) == [
        (b"grpc-status", b"1"),
        (b"grpc-message", b"watch closed"),
    ]
    assert [type(e) for e in events] == [
        h2.events.TrailersReceived,
        h2.events.StreamEnded,
        h2.events.StreamReset,
    ]
    # The client's bytes already in flight for the stream are dropped without an event.
    raw = hyperframe.frame.DataFrame(1, data=encode_message(b"late")).serialize()
    assert wire.to_server(raw) == []


def test_client_half_close_after_server_finish_is_quiet() -> None:
    """A stream that the client ends after the server's answer (trailers held) yields no event."""
    wire = Wire(client_window=10)
    wire.start(1, end=False)
    wire.server.send_message(1, bytes(20))
    wire.server.finish(1)
    wire.to_client()
    wire.client.end_stream(1)
    assert wire.to_server() == []
    wire.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    assert wire.to_server() == []
    frames, _ = wire.to_client()
    # The rest of the DATA, the trailers, and no RST_STREAM: both sides have ended.
    assert [(f.kind, len(f.data)) for f in frames] == [("DATA", 15), ("HEADERS", 0)]


@pytest.mark.parametrize(("name", "headers", "body"), _rejections(), ids=[r[0] for r in _rejections()])
def test_refusal_reset_and_next_call_in_one_read(
    name: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """A refused call, the client's reset of it and its next call, all in one read (h2 then no longer knows
    the first stream at all): no exception, and the next call is served."""
    wire = Wire(max_receive=1000)
    wire.client.send_headers(1, headers)
    if body:
        wire.client.send_data(1, body)
    wire.client.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
    wire.client.send_headers(3, request_headers())
    wire.client.send_data(3, encode_message(b"retry"), end_stream=True)
    events = wire.to_server()
    assert events == [CallStarted(3, PUT, None), MessageReceived(3, b"retry"), RequestEnded(3)]
    wire.server.send_message(3, b"ok")
    wire.server.finish(3)
    frames, _ = wire.to_client()
    assert [(f.kind, f.stream_id) for f in frames] == [("HEADERS", 3), ("DATA", 3), ("HEADERS", 3)]


def test_queued_answer_then_window_reset_and_retry_in_one_read() -> None:
    """An answer queued behind a small window; the client's WINDOW_UPDATE, its reset of that call and its retry
    arrive in one read: nothing more is sent on the reset stream, and the retry is served."""
    wire = Wire(client_window=100)
    assert wire.start(1, b"get") == [CallStarted(1, PUT, None), MessageReceived(1, b"get"), RequestEnded(1)]
    assert wire.server.send_message(1, bytes(1000)) is False
    wire.server.finish(1)
    frames, _ = wire.to_client()
    assert [(f.kind, len(f.data)) for f in frames] == [("HEADERS", 0), ("DATA", 100)]
    wire.client.increment_flow_control_window(1000, stream_id=1)
    wire.client.increment_flow_control_window(1000)
    wire.client.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
    wire.client.send_headers(3, request_headers())
    wire.client.send_data(3, encode_message(b"retry"), end_stream=True)
    assert wire.to_server() == [CallStarted(3, PUT, None), MessageReceived(3, b"retry"), RequestEnded(3)]
    frames, _ = wire.to_client()
    assert [f for f in frames if f.stream_id == 1] == []


def test_call_begun_and_reset_in_one_read_never_starts() -> None:
    """A whole request and its reset in one read: the application hears nothing of it (else it would start a
    call that nothing ever aborts), and the connection's window is not lost."""
    wire = Wire()
    wire.client.send_headers(1, request_headers())
    framed = encode_message(bytes(9 * 1024 * 1024))  # over half the window: h2 then must say it is free again
    for pos in range(0, len(framed), 16384):
        wire.client.send_data(1, framed[pos : pos + 16384], end_stream=pos + 16384 >= len(framed))
    wire.client.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
    assert wire.to_server() == []
    wire.to_client()
    assert wire.client.outbound_flow_control_window > RECEIVE_WINDOW - len(framed)  # given back
    assert wire.start(3, b"next") == [CallStarted(3, PUT, None), MessageReceived(3, b"next"), RequestEnded(3)]


# ---------------------------------------------------------------------- found in review of the nghttp2 port


def test_stream_drained_while_serializing_is_reported_by_take_events() -> None:
    """A held stream that drains during data_to_send() (not during a receive) is reported by take_events()."""
    wire = Wire(client_window=100)
    wire.start(1, end=False)
    wire.start(3, end=False)
    assert wire.server.send_message(1, bytes(70000)) is False  # held by stream 1's own window
    wire.to_client()
    assert wire.server.send_message(3, b"x" * 10) is False  # the connection's share counts stream 1's bytes
    frames, _ = wire.to_client()
    assert [(f.kind, f.stream_id, len(f.data)) for f in frames] == [("HEADERS", 3, 0), ("DATA", 3, 15)]
    assert wire.server.take_events() == [StreamWritable(3)]
    assert wire.server.take_events() == []


def test_trailers_go_when_the_last_data_used_the_whole_window() -> None:
    """DATA that filled the client's window exactly: finish() still sends the trailers (they need no window)."""
    wire = Wire(client_window=100)
    wire.start(1)
    assert wire.server.send_message(1, bytes(95)) is True  # 100 bytes framed
    frames, _ = wire.to_client()
    assert [(f.kind, len(f.data)) for f in frames] == [("HEADERS", 0), ("DATA", 100)]
    wire.server.finish(1, Status.OK)
    frames, events = wire.to_client()
    assert [(f.kind, f.flags) for f in frames] == [("HEADERS", frozenset({"END_HEADERS", "END_STREAM"}))]
    assert headers_of(events, h2.events.TrailersReceived) == [(b"grpc-status", b"0")]


def test_a_failure_inside_a_callback_is_raised_by_receive(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception in the code nghttp2 calls back does not vanish in the C frames: receive() raises it."""
    # A compiled ServerConnection's methods cannot be replaced: the fault goes into the source's class.
    source = compiled.load_source("gifee.store.grpcwire")
    wire = Wire(server=source.ServerConnection())

    def broken(sid: int, chunk: bytes) -> None:
        raise RuntimeError("broken")

    monkeypatch.setattr(wire.server, "_data", broken)
    with pytest.raises(RuntimeError, match="broken"):
        wire.start(1, b"x")


def test_many_cancelled_calls_do_not_end_the_connection() -> None:
    """2,000 calls opened and reset by the client (deadlines, say): the connection goes on, as with grpc-go."""
    wire = Wire()
    for sid in range(1, 4001, 2):
        wire.client.send_headers(sid, request_headers())
        wire.client.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        if sid % 101 == 0:
            wire.to_server()
            wire.to_client()
    wire.to_server()
    wire.to_client()
    assert not wire.server.ended
    assert wire.start(4001, b"next") == [
        CallStarted(4001, PUT, None),
        MessageReceived(4001, b"next"),
        RequestEnded(4001),
    ]


# --------------------------------------------------------------------------- PING ACKs held by the shell


def _ping(opaque: bytes = b"12345678", ack: bool = False) -> bytes:
    return hyperframe.frame.PingFrame(0, opaque_data=opaque, flags=["ACK"] if ack else []).serialize()


def test_only_ping_acks_is_true_for_acks_alone() -> None:
    assert only_ping_acks(_ping(ack=True))
    assert only_ping_acks(_ping(b"aaaaaaaa", ack=True) + _ping(b"bbbbbbbb", ack=True))


def test_only_ping_acks_is_false_for_anything_else() -> None:
    ack = _ping(ack=True)
    window = hyperframe.frame.WindowUpdateFrame(0, window_increment=1000).serialize()
    data = hyperframe.frame.DataFrame(1, data=b"x").serialize()
    assert not only_ping_acks(b"")
    assert not only_ping_acks(_ping())  # a PING of our own would want its answer now
    assert not only_ping_acks(ack + window)
    assert not only_ping_acks(data + ack)
    assert not only_ping_acks(ack[:12])  # cut short


def test_a_ping_answered_by_the_server_is_an_ack_alone() -> None:
    wire = Wire()
    wire.to_server(_ping(b"abcdefgh"))
    out = wire.server.data_to_send()
    assert only_ping_acks(out)
    assert [f.kind for f in parse_frames(out)] == ["PING"]
