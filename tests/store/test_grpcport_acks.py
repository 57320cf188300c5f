"""`GrpcConnection` holds a PING's ACK back a moment, to leave in the same write as the next answer.

grpc-go (etcd's clients, kvbench) pings after every DATA it reads; answering each ping in
a TCP write of its own costs a write per call. These tests drive one connection in memory
(an h2 client, a transport that records writes, a link that records what would go to the core)
and check that no ACK is lost, none is late by more than `ACK_HOLD`, and a held ACK goes
out first in the next write.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h2.config
import h2.connection
import h2.events
import hyperframe.frame

from gifee.store import grpcport, ipc
from gifee.store.grpcwire import encode_message
from gifee.store.handlers import UNARY
from tests.store.test_grpcwire import parse_frames

PUT = "/etcdserverpb.KV/Put"
HEADERS = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", PUT.encode()),
    (b":authority", b"test"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
]


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def close(self) -> None:
        pass


class RecordingLink(grpcport.Link):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[int, int, bytes]] = []

    def send(self, kind: int, call_id: int, payload: bytes = b"") -> None:
        self.sent.append((kind, call_id, payload))


def _connection() -> tuple[
    grpcport.GrpcConnection, RecordingTransport, RecordingLink, h2.connection.H2Connection
]:
    link = RecordingLink()
    conn = grpcport.GrpcConnection(link, grpcport.method_paths([["etcdserverpb.KV", "Put", UNARY]]), 1 << 20)
    transport = RecordingTransport()
    conn.connection_made(transport)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    conn.data_received(client.data_to_send())
    client.receive_data(b"".join(transport.writes))
    conn.data_received(client.data_to_send())  # the client's SETTINGS ACK
    transport.writes.clear()
    return conn, transport, link, client


def _kinds(data: bytes) -> list[str]:
    return [f.kind for f in parse_frames(data) if f.kind not in ("SETTINGS", "WINDOW_UPDATE")]


async def test_a_lone_ack_leaves_within_the_hold() -> None:
    conn, transport, _, client = _connection()
    client.ping(b"abcdefgh")
    conn.data_received(client.data_to_send())
    assert transport.writes == []  # held
    await asyncio.sleep(grpcport.ACK_HOLD * 5)
    assert len(transport.writes) == 1
    events = client.receive_data(transport.writes[0])
    assert [type(e) for e in events] == [h2.events.PingAckReceived]
    assert events[0].ping_data == b"abcdefgh"  # type: ignore[attr-defined]
    conn.connection_lost(None)


async def test_a_held_ack_leaves_first_in_the_answers_write() -> None:
    conn, transport, link, client = _connection()
    # As grpc-go sends them: a WINDOW_UPDATE and a PING, then the next call, in one write.
    client.increment_flow_control_window(1000)
    client.ping(b"12345678")
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, HEADERS)
    client.send_data(sid, encode_message(b"request"), end_stream=True)
    conn.data_received(client.data_to_send())
    assert [(kind, payload[ipc.METHOD_INDEX.size :]) for kind, _, payload in link.sent] == [
        (ipc.CALL, b"request")
    ]
    assert transport.writes == []  # the ACK waits for the answer
    call_id = link.sent[0][1]
    link.route(ipc.REPLY, call_id, b"response")
    link.flush_dirty()
    assert len(transport.writes) == 1
    assert _kinds(transport.writes[0]) == ["PING", "HEADERS", "DATA", "HEADERS"]
    assert conn._held_timer is None  # the hold's timer was cancelled with the write
    await asyncio.sleep(grpcport.ACK_HOLD * 5)
    assert len(transport.writes) == 1
    events = client.receive_data(transport.writes[0])
    assert [type(e) for e in events][:1] == [h2.events.PingAckReceived]
    conn.connection_lost(None)


async def test_other_control_frames_are_not_held() -> None:
    conn, transport, _, client = _connection()
    settings = hyperframe.frame.SettingsFrame(0, settings={0x4: 1 << 20}).serialize()
    conn.data_received(settings)
    assert len(transport.writes) == 1  # the SETTINGS ACK went at once
    conn.connection_lost(None)


async def test_a_held_ack_goes_before_the_goodbye() -> None:
    conn, transport, _, client = _connection()
    client.ping(b"byebyeee")
    conn.data_received(client.data_to_send())
    assert transport.writes == []
    conn.close()
    assert len(transport.writes) == 1
    assert _kinds(transport.writes[0]) == ["PING", "GOAWAY"]
    assert conn._held_timer is None
    conn.connection_lost(None)


async def test_a_connection_lost_with_an_ack_held_leaves_no_timer() -> None:
    conn, transport, _, client = _connection()
    client.ping(b"lostlost")
    conn.data_received(client.data_to_send())
    assert conn._held_timer is not None
    conn.connection_lost(None)
    assert conn._held_timer is None
    await asyncio.sleep(grpcport.ACK_HOLD * 5)
    assert transport.writes == []  # nothing written to a connection that is gone


async def test_answers_batch_while_calls_remain_and_the_last_leaves_at_once() -> None:
    conn, transport, link, client = _connection()
    for body in (b"one", b"two"):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, HEADERS)
        client.send_data(sid, encode_message(body), end_stream=True)
    conn.data_received(client.data_to_send())
    first, second = (call_id for _, call_id, _ in link.sent)
    link.route(ipc.REPLY, first, b"1")
    assert transport.writes == []  # another call is open: its answer may come in this batch too
    link.route(ipc.REPLY, second, b"2")
    assert len(transport.writes) == 1  # the connection's last call: written at once, with the first
    assert sorted(_kinds(transport.writes[0])) == sorted(["HEADERS", "DATA", "HEADERS"] * 2)
    link.flush_dirty()
    assert len(transport.writes) == 1
    conn.connection_lost(None)


class ClosableTransport(RecordingTransport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def close(self) -> None:
        self.closed = True


async def test_a_connection_made_after_its_port_closed_says_goodbye() -> None:
    """A connection accepted as the port closes (its TLS handshake ends later) is closed with a GOAWAY,
    not served; the connections open at close() are closed too, and a lost one leaves the port's list."""
    port = grpcport.GrpcPort([], RecordingLink(), [["etcdserverpb.KV", "Put", UNARY]], 1 << 20)
    early, early_transport = port._connection(), ClosableTransport()
    early.connection_made(early_transport)
    lost, lost_transport = port._connection(), ClosableTransport()
    lost.connection_made(lost_transport)
    lost.connection_lost(None)
    assert port._connections.members == {early}
    late = port._connection()  # made by the factory before close(), connected after it
    port.close()
    assert early_transport.closed
    late_transport = ClosableTransport()
    late.connection_made(late_transport)
    assert late_transport.closed
    frames = parse_frames(b"".join(late_transport.writes))
    assert "GOAWAY" in [f.kind for f in frames]
    assert port._connections.members == {early}  # until its transport reports the close
    early.connection_lost(None)
    assert port._connections.members == set()


async def test_each_write_but_a_held_ack_tells_the_busy_poll() -> None:
    pokes: list[int] = []
    link = RecordingLink()
    conn = grpcport.GrpcConnection(
        link,
        grpcport.method_paths([["etcdserverpb.KV", "Put", UNARY]]),
        1 << 20,
        after_write=lambda: pokes.append(1),
    )
    transport = RecordingTransport()
    conn.connection_made(transport)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    conn.data_received(client.data_to_send())
    assert len(pokes) == len(transport.writes) > 0
    before = len(pokes)
    client.ping(b"abcdefgh")
    conn.data_received(client.data_to_send())
    assert len(pokes) == before  # the ACK is held: nothing written, nothing to poll for
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, HEADERS)
    client.send_data(sid, encode_message(b"request"), end_stream=True)
    conn.data_received(client.data_to_send())
    link.route(ipc.REPLY, link.sent[-1][1], b"response")
    link.flush_dirty()
    assert len(pokes) == before + 1  # the answer (with the ACK) went out: the next call may be close
    conn.connection_lost(None)
