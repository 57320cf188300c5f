"""The peer transport and its wire format: round trips, malformed input, and transports on loopback.

Every transport listens on 127.0.0.1 with an ephemeral port and is closed by the `net` fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gifee.store import peer as peer_mod
from gifee.store.peer import PeerRefusedError, PeerTransport, fetch_members
from gifee.store.proto import raft_pb2
from gifee.store.raft.types import (
    LOCAL_MESSAGES,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)
from gifee.store.raft.wire import NETWORK_MESSAGES, decode_batch, encode_batch

MT = MessageType
CLUSTER = 0xC1
U64 = st.integers(min_value=0, max_value=2**64 - 1)

# ---------------------------------------------------------------- wire


def full_message(mtype: MessageType) -> Message:
    snap = None
    if mtype == MT.SNAPSHOT:
        snap = Snapshot(SnapshotMeta(40, 3, ConfState(frozenset({1, 2, 3}), frozenset({9}))), b"state" * 10)
    return Message(
        mtype,
        to=2,
        from_=1,
        term=3,
        log_term=2,
        index=41,
        entries=[Entry(3, 42, EntryType.NORMAL, b"a"), Entry(3, 43, EntryType.CONF_CHANGE, b"\x00" * 9)],
        commit=40,
        reject=True,
        reject_hint=7,
        snapshot=snap,
        context=b"ctx",
    )


@pytest.mark.parametrize("mtype", sorted(NETWORK_MESSAGES))
def test_every_network_message_type_round_trips(mtype: MessageType) -> None:
    full = full_message(mtype)
    bare = Message(mtype, snapshot=full.snapshot)
    assert decode_batch(encode_batch([full, bare])) == [full, bare]


def test_empty_batch_and_extremes() -> None:
    assert decode_batch(encode_batch([])) == []
    assert decode_batch(b"") == []
    big = 2**64 - 1
    m = Message(MT.APPEND, to=big, from_=big, term=big, log_term=big, index=big, commit=big, reject_hint=big)
    m.entries = [Entry(big, big, EntryType.NORMAL, b""), Entry(0, 0)]
    snap = Snapshot(SnapshotMeta(big, big, ConfState()))  # empty ConfState survives
    s = Message(MT.SNAPSHOT, to=1, snapshot=snap)
    assert decode_batch(encode_batch([m, s])) == [m, s]


def test_concatenated_batches_decode_as_one() -> None:
    """The transport merges queued payloads by concatenation; protobuf makes that a valid Batch."""
    a = [full_message(MT.APPEND), full_message(MT.HEARTBEAT)]
    b = [full_message(MT.SNAPSHOT), full_message(MT.VOTE)]
    assert decode_batch(encode_batch(a) + encode_batch(b)) == a + b


@pytest.mark.parametrize("mtype", sorted(LOCAL_MESSAGES))
def test_local_message_types_never_cross_the_wire(mtype: MessageType) -> None:
    with pytest.raises(ValueError, match="member-local"):
        encode_batch([Message(mtype, to=2)])
    raw = raft_pb2.Batch(messages=[raft_pb2.Message(type=int(mtype), to=2)]).SerializeToString()
    with pytest.raises(ValueError, match="member-local"):
        decode_batch(raw)


def _pb_batch(**fields: object) -> bytes:
    return raft_pb2.Batch(messages=[raft_pb2.Message(**fields)]).SerializeToString()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\xff\xff\xff", "malformed"),
        (b"\x0a\x05\x08", "malformed"),  # a message field longer than what follows
        (encode_batch([full_message(MT.APPEND)])[:-3], "malformed"),
        (_pb_batch(type=99), "type 99"),
        (_pb_batch(type=6), "type 6"),
        (_pb_batch(type=int(MT.APPEND), entries=[raft_pb2.Entry(type=7)]), "entry type 7"),
        (_pb_batch(type=int(MT.SNAPSHOT)), "without a snapshot"),
        (_pb_batch(type=int(MT.SNAPSHOT), snapshot=raft_pb2.Snapshot(data=b"x")), "without meta"),
    ],
)
def test_malformed_batches_are_rejected(data: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decode_batch(data)


@pytest.mark.parametrize(
    "message",
    [
        Message(MT.APPEND, to=-1),
        Message(MT.APPEND, to=2, term=2**64),
        Message(MT.APPEND, to=2, entries=[Entry(1, 1, 5, b"")]),  # type: ignore[arg-type]
        Message(MT.APPEND, to=2, entries=[Entry(1, 1, EntryType.NORMAL, "text")]),  # type: ignore[arg-type]
        Message(99, to=2),  # type: ignore[arg-type]
    ],
)
def test_unencodable_messages_raise_value_error(message: Message) -> None:
    with pytest.raises(ValueError):
        encode_batch([message])


entries_st = st.lists(
    st.builds(Entry, U64, U64, st.sampled_from(list(EntryType)), st.binary(max_size=40)), max_size=6
)
conf_st = st.builds(ConfState, st.frozensets(U64, max_size=5), st.frozensets(U64, max_size=3))
snapshot_st = st.builds(Snapshot, st.builds(SnapshotMeta, U64, U64, conf_st), st.binary(max_size=100))


@st.composite
def messages_st(draw: st.DrawFn) -> Message:
    mtype = draw(st.sampled_from(sorted(NETWORK_MESSAGES)))
    snap = draw(snapshot_st) if mtype == MT.SNAPSHOT else draw(st.none() | snapshot_st)
    return Message(
        mtype,
        to=draw(U64),
        from_=draw(U64),
        term=draw(U64),
        log_term=draw(U64),
        index=draw(U64),
        entries=draw(entries_st),
        commit=draw(U64),
        reject=draw(st.booleans()),
        reject_hint=draw(U64),
        snapshot=snap,
        context=draw(st.binary(max_size=20)),
    )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages_st(), max_size=8))
def test_random_batches_round_trip(messages: list[Message]) -> None:
    assert decode_batch(encode_batch(messages)) == messages


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_value_error(data: bytes) -> None:
    try:
        decode_batch(data)
    except ValueError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.lists(messages_st(), min_size=1, max_size=3), st.data())
def test_damaged_batches_decode_or_raise_value_error(messages: list[Message], data: st.DataObject) -> None:
    raw = bytearray(encode_batch(messages))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        decode_batch(bytes(raw))
    except ValueError:
        pass


# ---------------------------------------------------------------- transports on loopback


class Member:
    def __init__(self, member_id: int, transport: PeerTransport) -> None:
        self.id = member_id
        self.transport = transport
        self.received: list[tuple[int, list[Message]]] = []
        self.unreachable: list[int] = []
        self.snapshot_status: list[tuple[int, bool]] = []

    @property
    def url(self) -> str:
        return self.transport.bound_urls[0]

    def messages_from(self, sender: int) -> list[Message]:
        return [m for frm, batch in self.received if frm == sender for m in batch]


class Net:
    def __init__(self) -> None:
        self.transports: list[PeerTransport] = []

    async def member(
        self,
        member_id: int,
        *,
        cluster_id: int = CLUSTER,
        listen: str = "http://127.0.0.1:0",
        members: Callable[[], bytes] = lambda: b'{"members": []}',
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        **kwargs: int,
    ) -> Member:
        box: list[Member] = []
        t = PeerTransport(
            member_id,
            cluster_id,
            lambda frm, msgs: box[0].received.append((frm, msgs)),
            lambda to: box[0].unreachable.append(to),
            lambda to, ok: box[0].snapshot_status.append((to, ok)),
            members,
            server_ssl=server_ssl,
            client_ssl=client_ssl,
            **kwargs,
        )
        box.append(Member(member_id, t))
        self.transports.append(t)
        await t.start([listen])
        return box[0]

    @staticmethod
    def connect(*members: Member) -> None:
        for a in members:
            for b in members:
                if a is not b:
                    a.transport.set_peer(b.id, [b.url])


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    n = Net()
    try:
        yield n
    finally:
        for t in n.transports:
            await t.close()


async def until(cond: Callable[[], object], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def beat(frm: int, to: int, n: int) -> Message:
    return Message(MT.HEARTBEAT, to=to, from_=frm, term=1, commit=n)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_three_members_exchange_batches_in_order(net: Net) -> None:
    ms = [await net.member(i) for i in (1, 2, 3)]
    Net.connect(*ms)
    sent: dict[tuple[int, int], list[int]] = {}
    for round_ in range(60):
        for a in ms:
            batch = []
            for b in ms:
                if a is not b:
                    for k in range(round_ % 4 + 1):
                        n = round_ * 10 + k
                        sent.setdefault((a.id, b.id), []).append(n)
                        batch.append(beat(a.id, b.id, n))
            a.transport.send(batch)
        if round_ % 7 == 0:
            await asyncio.sleep(0)
    total = sum(len(v) for v in sent.values())
    await until(lambda: sum(len(m.messages_from(x.id)) for m in ms for x in ms) == total)
    for (frm, to), numbers in sent.items():
        got = ms[to - 1].messages_from(frm)
        assert [m.commit for m in got] == numbers
        assert all(m.from_ == frm and m.to == to for m in got)
    assert not any(m.unreachable for m in ms)


async def test_appends_with_entries_arrive_intact(net: Net) -> None:
    a, b = await net.member(1), await net.member(2)
    Net.connect(a, b)
    entries = [Entry(2, i, EntryType.NORMAL, bytes([i % 256]) * 300) for i in range(1, 2001)]
    msgs = [
        Message(MT.APPEND, to=2, from_=1, term=2, log_term=2, index=k, entries=entries[k : k + 100], commit=k)
        for k in range(0, 2000, 100)
    ]
    a.transport.send(msgs)
    await until(lambda: len(b.messages_from(1)) == len(msgs))
    assert b.messages_from(1) == msgs


async def test_many_sends_coalesce_into_few_writes(net: Net) -> None:
    a, b = await net.member(1), await net.member(2)
    Net.connect(a, b)
    a.transport.send([beat(1, 2, 0)])
    await until(lambda: b.received)  # connected
    writes_before = a.transport.stats.writes
    for i in range(1, 1001):
        a.transport.send([beat(1, 2, i)])
    await until(lambda: len(b.messages_from(1)) == 1001)
    assert [m.commit for m in b.messages_from(1)] == list(range(1001))
    writes = a.transport.stats.writes - writes_before
    assert writes <= 5, writes  # nothing awaited between the sends: all in one write
    assert len(b.received) <= 6  # and merged into one frame, one on_messages call
    assert b.transport.stats.frames_received == len(b.received)


async def test_batching_under_a_slow_connection(net: Net) -> None:
    a, b = await net.member(1), await net.member(2)
    Net.connect(a, b)
    payload = [Entry(1, i, EntryType.NORMAL, b"x" * 4000) for i in range(1, 51)]
    for i in range(300):  # ~60 MB in 300 sends with a yield after each: the writer falls behind
        a.transport.send([Message(MT.APPEND, to=2, from_=1, term=1, index=i, entries=payload)])
        await asyncio.sleep(0)
    await until(lambda: len(b.messages_from(1)) + a.transport.stats.messages_dropped == 300, timeout=15)
    assert [m.index for m in b.messages_from(1)] == sorted(m.index for m in b.messages_from(1))
    assert a.transport.stats.writes < 300


async def test_unreachable_when_the_peer_is_down(net: Net) -> None:
    a = await net.member(1)
    a.transport.set_peer(2, [f"http://127.0.0.1:{free_port()}"])
    a.transport.send([beat(1, 2, 1)])
    await until(lambda: a.unreachable)
    assert a.unreachable[0] == 2
    assert a.transport.stats.dial_failures == 1
    # In back-off: dropped and reported at once, without dialling.
    a.transport.send([beat(1, 2, 2)])
    await until(lambda: len(a.unreachable) == 2)
    assert a.transport.stats.dial_failures == 1
    # Unknown members, and snapshots to them.
    snap = Snapshot(SnapshotMeta(1, 1, ConfState(frozenset({1}))), b"s")
    a.transport.send([beat(1, 7, 1), Message(MT.SNAPSHOT, to=7, from_=1, snapshot=snap)])
    await until(lambda: a.snapshot_status)
    assert a.snapshot_status == [(7, False)]
    assert a.unreachable[-1] == 7


async def test_unreachable_reports_are_never_made_inside_send(net: Net) -> None:
    a = await net.member(1)
    a.transport.send([beat(1, 5, 1)])
    assert a.unreachable == []  # scheduled, not called
    await asyncio.sleep(0)
    assert a.unreachable == [5]


async def test_queue_is_bounded(net: Net) -> None:
    a, b = await net.member(1, max_queue_messages=10), await net.member(2)
    Net.connect(a, b)
    for i in range(8):  # the connection task has not run yet: everything queues
        a.transport.send([beat(1, 2, 2 * i), beat(1, 2, 2 * i + 1)])
    assert a.transport.stats.messages_dropped == 6
    await until(lambda: len(b.messages_from(1)) == 10)
    assert [m.commit for m in b.messages_from(1)] == list(range(10))
    assert a.unreachable and set(a.unreachable) == {2}


async def test_queue_byte_bound(net: Net) -> None:
    a, b = await net.member(1, max_queue_bytes=100_000), await net.member(2)
    Net.connect(a, b)
    big = [Entry(1, 1, EntryType.NORMAL, b"y" * 60_000)]
    a.transport.send([Message(MT.APPEND, to=2, from_=1, entries=big, index=1)])
    a.transport.send([Message(MT.APPEND, to=2, from_=1, entries=big, index=2)])  # over the bound
    assert a.transport.stats.messages_dropped == 1
    await until(lambda: len(b.messages_from(1)) == 1)
    assert b.messages_from(1)[0].index == 1


async def test_reconnects_after_the_remote_restarts(net: Net) -> None:
    a, b = await net.member(1), await net.member(2)
    Net.connect(a, b)
    a.transport.send([beat(1, 2, 1)])
    await until(lambda: b.received)
    url = b.url
    await b.transport.close()
    await until(lambda: a.unreachable)  # noticed without sending anything
    assert a.unreachable[0] == 2
    a.transport.send([beat(1, 2, 2)])  # in back-off, or refused: dropped and reported
    b2 = await net.member(2, listen=url)
    b2.transport.set_peer(1, [a.url])
    n = 3
    while not b2.received:
        a.transport.send([beat(1, 2, n)])
        n += 1
        await asyncio.sleep(0.02)
        assert n < 200, "never reconnected"
    assert a.transport.stats.dials == 2
    # and the restarted member can answer
    b2.transport.send([beat(2, 1, 99)])
    await until(lambda: a.messages_from(2))


async def test_peer_urls_can_change(net: Net) -> None:
    a, b = await net.member(1), await net.member(2)
    Net.connect(a, b)
    a.transport.send([beat(1, 2, 1)])
    await until(lambda: b.received)
    c = await net.member(2)  # "member 2 moved"
    a.transport.set_peer(2, [c.url])
    n = 2
    while not c.received:
        a.transport.send([beat(1, 2, n)])
        n += 1
        await asyncio.sleep(0.02)
        assert n < 200


async def test_a_url_that_fails_is_skipped(net: Net) -> None:
    a, b = await net.member(1), await net.member(2)
    a.transport.set_peer(2, [f"http://127.0.0.1:{free_port()}", b.url])
    a.transport.send([beat(1, 2, 1)])
    await until(lambda: b.received)
    assert not a.unreachable


async def test_removed_peer_gets_nothing(net: Net) -> None:
    a, b = await net.member(1), await net.member(2)
    Net.connect(a, b)
    a.transport.send([beat(1, 2, 1)])
    await until(lambda: b.received)
    a.transport.remove_peer(2)
    a.transport.send([beat(1, 2, 2)])
    await until(lambda: a.unreachable == [2])
    await asyncio.sleep(0.05)
    assert len(b.messages_from(1)) == 1


async def test_cluster_id_mismatch_is_refused(net: Net, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gifee.store.peer")
    a = await net.member(1, cluster_id=0xAAA)
    b = await net.member(2, cluster_id=0xBBB)
    Net.connect(a, b)
    a.transport.send([beat(1, 2, 1)])
    await until(lambda: a.unreachable)
    assert b.received == []
    assert b.transport.stats.refused == 1
    assert a.transport.stats.dials == 0
    assert "cluster id mismatch" in caplog.text


async def test_hello_to_the_wrong_member_is_refused(net: Net) -> None:
    a, b = await net.member(1), await net.member(2)
    a.transport.set_peer(3, [b.url])  # a believes member 3 listens there
    a.transport.send([beat(1, 3, 1)])
    await until(lambda: a.unreachable)
    assert b.received == [] and b.transport.stats.refused == 1


async def test_a_member_answering_as_someone_else_is_refused(net: Net) -> None:
    """The dialler checks the acceptor's hello too, and writes nothing to the wrong member."""
    got: list[bytes] = []

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await reader.read(1000))
        writer.write(hello(5, 1))  # "I am member 5"
        with contextlib.suppress(OSError):
            got.append(await reader.read())
        writer.close()

    server = await asyncio.start_server(impostor, "127.0.0.1", 0)
    try:
        a = await net.member(1)
        a.transport.set_peer(2, [f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"])
        a.transport.send([beat(1, 2, 1)])
        await until(lambda: a.unreachable)
        await until(lambda: len(got) == 2)
        assert got == [hello(1, 2), b""]
        assert a.transport.stats.dials == 0 and a.transport.stats.dial_failures == 1
    finally:
        server.close()


async def test_snapshot_status_is_reported(net: Net) -> None:
    a, b = await net.member(1), await net.member(2)
    Net.connect(a, b)
    data = bytes(range(256)) * 40_000  # 10 MB
    snap = Snapshot(SnapshotMeta(100, 4, ConfState(frozenset({1, 2}))), data)
    before, after = beat(1, 2, 1), beat(1, 2, 2)
    a.transport.send([before, Message(MT.SNAPSHOT, to=2, from_=1, term=4, snapshot=snap), after])
    await until(lambda: a.snapshot_status, timeout=10)
    assert a.snapshot_status == [(2, True)]
    await until(lambda: len(b.messages_from(1)) == 3, timeout=10)
    got = b.messages_from(1)
    assert [m.type for m in got] == [MT.HEARTBEAT, MT.SNAPSHOT, MT.HEARTBEAT]
    assert got[1].snapshot == snap
    # Only one snapshot may wait in the queue.
    a.transport.send([Message(MT.SNAPSHOT, to=2, from_=1, snapshot=snap)] * 2)
    await until(lambda: len(a.snapshot_status) == 3, timeout=10)
    assert sorted(a.snapshot_status) == [(2, False), (2, True), (2, True)]


async def test_snapshot_to_a_down_peer_fails(net: Net) -> None:
    a = await net.member(1)
    a.transport.set_peer(2, [f"http://127.0.0.1:{free_port()}"])
    snap = Snapshot(SnapshotMeta(1, 1, ConfState(frozenset({1, 2}))), b"z" * 1000)
    a.transport.send([Message(MT.SNAPSHOT, to=2, from_=1, snapshot=snap)])
    await until(lambda: a.snapshot_status)
    assert a.snapshot_status == [(2, False)]
    assert a.unreachable == [2]


async def test_fetch_members(net: Net) -> None:
    a = await net.member(1, members=lambda: b'{"members": [1, 2, 3]}')
    dead = f"http://127.0.0.1:{free_port()}"
    assert await fetch_members([dead, a.url]) == b'{"members": [1, 2, 3]}'
    assert await fetch_members([a.url], CLUSTER) == b'{"members": [1, 2, 3]}'
    with pytest.raises(PeerRefusedError, match="cluster id mismatch"):
        await fetch_members([dead, a.url], 0x999)
    with pytest.raises(ConnectionError, match="no member answered"):
        await fetch_members([dead], timeout=1.0)
    assert a.transport.stats.refused == 1


async def test_fetch_members_when_listing_fails(net: Net) -> None:
    def broken() -> bytes:
        raise RuntimeError("no members yet")

    a = await net.member(1, members=broken)
    with pytest.raises(PeerRefusedError, match="no members yet"):
        await fetch_members([a.url])


async def _talk(url: str, data: bytes) -> bytes:
    """Send raw bytes, then read until the server closes the connection."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    reply = b""
    try:
        writer.write(data)
        writer.write_eof()
        while chunk := await asyncio.wait_for(reader.read(65536), 5):
            reply += chunk
    except ConnectionResetError:
        pass  # the server closed with our bytes unread; what it wrote first is still in `reply`
    finally:
        writer.close()
    return reply


def hello(frm: int, to: int, cluster: int = CLUSTER) -> bytes:
    payload = raft_pb2.Hello(
        cluster_id=cluster, from_id=frm, to_id=to, protocol_version=1
    ).SerializeToString()
    return peer_mod._frame(peer_mod.KIND_HELLO, payload)


def error_code(reply: bytes) -> int:
    """The code of the ERROR frame that ends `reply` (after the server's hello, if any)."""
    pos = 0
    while pos < len(reply):
        size, kind = peer_mod.HEADER.unpack_from(reply, pos)
        payload = reply[pos + 5 : pos + 5 + size]
        pos += 5 + size
        if kind == peer_mod.KIND_ERROR:
            err = raft_pb2.Error()
            err.ParseFromString(payload)
            return err.code
    raise AssertionError(f"no error frame in {reply!r}")


async def test_garbage_does_not_kill_the_receiver(net: Net) -> None:
    a, b = await net.member(1), await net.member(2)
    Net.connect(a, b)
    big_header = struct.pack(">IB", 2**31, peer_mod.KIND_HELLO)
    batch_to_3 = peer_mod._frame(peer_mod.KIND_BATCH, encode_batch([beat(1, 3, 1)]))
    batch_from_4 = peer_mod._frame(peer_mod.KIND_BATCH, encode_batch([beat(4, 2, 1)]))
    local = peer_mod._frame(peer_mod.KIND_BATCH, _pb_batch(type=int(MT.HUP), to=2, **{"from": 1}))
    cases = [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", peer_mod.ERROR_BAD_FRAME),
        (big_header, peer_mod.ERROR_BAD_FRAME),
        (peer_mod._frame(9, b""), peer_mod.ERROR_BAD_FRAME),
        (peer_mod._frame(peer_mod.KIND_HELLO, b"\xff\xff"), peer_mod.ERROR_BAD_FRAME),
        (hello(1, 2) + b"\x00\x00\x00\x03\x02\xff\xff\xff", peer_mod.ERROR_BAD_FRAME),
        (hello(1, 2) + struct.pack(">IB", MAX_FRAME_PLUS, 2), peer_mod.ERROR_BAD_FRAME),
        (hello(1, 2) + batch_to_3, peer_mod.ERROR_BAD_FRAME),
        (hello(1, 2) + batch_from_4, peer_mod.ERROR_BAD_FRAME),
        (hello(1, 2) + local, peer_mod.ERROR_BAD_FRAME),
        (hello(1, 2) + peer_mod._frame(peer_mod.KIND_HELLO, b""), peer_mod.ERROR_BAD_FRAME),
        (hello(1, 2, cluster=5), peer_mod.ERROR_CLUSTER_MISMATCH),
        (hello(2, 2), peer_mod.ERROR_WRONG_MEMBER),
        (hello(0, 2), peer_mod.ERROR_WRONG_MEMBER),
    ]
    for data, code in cases:
        assert error_code(await _talk(b.url, data)) == code, data[:40]
    # Truncated input and silence just end the connection.
    assert await _talk(b.url, hello(1, 2)[:7]) == b""
    assert b.received == []
    # The receiver still works, and a good sender on the same member id too.
    a.transport.send([beat(1, 2, 1)])
    await until(lambda: b.received)
    assert b.transport.stats.refused == len(cases)


MAX_FRAME_PLUS = peer_mod.MAX_FRAME + 1


async def test_a_failing_callback_does_not_break_the_connection(net: Net) -> None:
    a, b = await net.member(1), await net.member(2)
    Net.connect(a, b)
    calls: list[int] = []

    def flaky(frm: int, msgs: list[Message]) -> None:
        calls.append(len(msgs))
        if len(calls) == 1:
            raise RuntimeError("boom")

    b.transport.on_messages = flaky
    a.transport.send([beat(1, 2, 1)])
    await until(lambda: calls)
    a.transport.send([beat(1, 2, 2)])
    await until(lambda: len(calls) == 2)
    assert a.transport.stats.dials == 1


async def test_send_never_raises(net: Net) -> None:
    a, b = await net.member(1), await net.member(2)
    Net.connect(a, b)
    a.transport.send([Message(MT.HUP, to=2)])  # member-local: dropped
    a.transport.send([Message(MT.APPEND, to=2, term=-1)])  # unencodable: dropped, reported
    a.transport.send([Message(MT.APPEND, to=-3)])  # no such member
    a.transport.send([beat(1, 2, 5)])
    await until(lambda: b.received)
    assert [m.commit for m in b.messages_from(1)] == [5]
    assert a.transport.stats.messages_dropped == 3
    assert sorted(a.unreachable) == [-3, 2]


async def test_a_newer_connection_replaces_the_older(net: Net) -> None:
    a, b = await net.member(1), await net.member(2)
    Net.connect(a, b)
    a.transport.send([beat(1, 2, 1)])
    await until(lambda: b.received)
    a2 = await net.member(1)  # member 1 restarted elsewhere; its old connection lingers
    a2.transport.set_peer(2, [b.url])
    a2.transport.send([beat(1, 2, 2)])
    await until(lambda: len(b.received) == 2)
    await until(lambda: a.unreachable == [2])  # b closed the stale connection


async def test_close_is_clean_and_final(net: Net) -> None:
    a, b = await net.member(1), await net.member(2)
    Net.connect(a, b)
    a.transport.send([beat(1, 2, 1)])
    await until(lambda: b.received)
    await a.transport.close()
    a.transport.send([beat(1, 2, 2)])  # after close: nothing, no error
    await asyncio.sleep(0.05)
    assert a.unreachable == [] and len(b.received) == 1
    with pytest.raises(OSError):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", int(a.url.rsplit(":", 1)[1])), 1)


# ---------------------------------------------------------------- TLS


def make_tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1, used by both sides (mutual TLS)."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gifee test peer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "peer.crt", tmp_path / "peer.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    server.load_verify_locations(cert_file)
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_cert_chain(cert_file, key_file)
    client.load_verify_locations(cert_file)
    return server, client


async def test_tls(net: Net, tmp_path: Path) -> None:
    server_ssl, client_ssl = make_tls(tmp_path)
    tls = {"listen": "https://127.0.0.1:0", "server_ssl": server_ssl, "client_ssl": client_ssl}
    a = await net.member(1, **tls)  # type: ignore[arg-type]
    b = await net.member(2, **tls)  # type: ignore[arg-type]
    assert a.url.startswith("https://")
    Net.connect(a, b)
    snap = Snapshot(SnapshotMeta(9, 2, ConfState(frozenset({1, 2}))), b"q" * 3_000_000)
    a.transport.send([beat(1, 2, 1), Message(MT.SNAPSHOT, to=2, from_=1, snapshot=snap), beat(1, 2, 2)])
    b.transport.send([beat(2, 1, 3)])
    await until(lambda: len(b.messages_from(1)) == 3 and a.messages_from(2), timeout=10)
    assert b.messages_from(1)[1].snapshot == snap
    await until(lambda: a.snapshot_status == [(2, True)])
    assert await fetch_members([b.url], CLUSTER, client_ssl=client_ssl) == b'{"members": []}'
    # Without a certificate the server trusts, or without TLS, nothing gets through.
    c = await net.member(3, client_ssl=ssl.create_default_context())
    c.transport.set_peer(2, [b.url])
    c.transport.send([beat(3, 2, 1)])
    plain = await net.member(4)
    plain.transport.set_peer(2, [b.url.replace("https://", "http://")])
    plain.transport.send([beat(4, 2, 1)])
    await until(lambda: c.unreachable and plain.unreachable)
    assert not b.messages_from(3) and not b.messages_from(4)


async def test_https_listen_needs_a_server_context(net: Net) -> None:
    with pytest.raises(ValueError, match="https"):
        await net.member(1, listen="https://127.0.0.1:0")
