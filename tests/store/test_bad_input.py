"""Bad input for the gifee store: the server keeps serving and loses nothing after each abuse.

One store process (through the shared `ServerProcess` harness, with /metrics on a loopback
port) serves the whole module. Every test records the writes it got acknowledged in a shared
ledger and ends by checking that the process is alive, answers, and still holds every
acknowledged write; the last test also checks them after a kill -9 and restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import socket
import statistics
import struct
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from gifee.store.proto import rpc_pb2, rpc_pb2_grpc
from tests.store.reference import LOOPBACK, ServerProcess, free_port, gifee_command

pytestmark = pytest.mark.timeout(90)

RPC_TIMEOUT = 5.0
CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
MiB = 1024 * 1024
PREFIX = b"bad/"
PREFIX_END = b"bad0"
MALFORMED = [
    b"\xff\xff\xff",  # a tag varint that never ends
    b"\x0a\x10abc",  # a length-delimited field longer than the message
    b"\x0f",  # wire type 7 does not exist
    b"\x0a\x03abc\x12\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",  # an over-long varint length
]
OBSERVED: dict[str, set[str]] = {}  # method -> status codes seen for malformed bytes (printed in the summary)


class _Server(ServerProcess):
    """The shared harness's process with a loopback /metrics listener."""

    def __init__(self, workdir: Path) -> None:
        super().__init__("gifee", gifee_command(), workdir, member_name="bad")
        self.metrics_port = free_port()

    def argv(self) -> list[str]:
        return [*super().argv(), "--listen-metrics-urls", f"http://{LOOPBACK}:{self.metrics_port}"]

    def metric(self, name: str) -> float | None:
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self.metrics_port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        m = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)
        return float(m.group(1)) if m else None


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    root = Path(tempfile.mkdtemp(prefix="gifee-bad-input-"))
    srv = _Server(root / "store")
    try:
        srv.start()
        yield srv
    finally:
        srv.kill_group()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def ledger() -> dict[bytes, bytes]:
    """Every acknowledged write of this module: key -> value."""
    return {}


def channel(server: ServerProcess) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(server.endpoint, options=CHANNEL_OPTIONS)


async def put(kv: rpc_pb2_grpc.KVStub, ledger: dict[bytes, bytes], key: bytes, value: bytes) -> int:
    resp = await kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=RPC_TIMEOUT)
    ledger[key] = value
    return int(resp.header.revision)


async def check_intact(server: _Server, ledger: dict[bytes, bytes], label: str) -> None:
    """The process lives, takes a write, and holds every acknowledged write."""
    assert server.running, f"the server died after {label}\n{server.log_tail()}"
    async with channel(server) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        await put(kv, ledger, PREFIX + b"alive/" + label.encode(), b"after " + label.encode())
        resp = await kv.Range(rpc_pb2.RangeRequest(key=PREFIX, range_end=PREFIX_END), timeout=10)
        await rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=RPC_TIMEOUT)
    found = {kv.key: kv.value for kv in resp.kvs}
    lost = [k for k, v in ledger.items() if found.get(k) != v]
    assert not lost, f"after {label}: {len(lost)} acknowledged writes lost or changed, e.g. {lost[:5]}"


async def wait_watchers(server: _Server, expected: int, timeout: float = 5.0) -> float | None:
    """Poll etcd_debugging_mvcc_watcher_total until it equals `expected`; None without /metrics."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(server.metric, "etcd_debugging_mvcc_watcher_total")
        if value is None or value == expected or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def expect_error(call: Any, code: grpc.StatusCode, details: str | None = None) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, f"{info.value.code()} {info.value.details()!r}, expected {code}"
    if details is not None:
        assert info.value.details() == details


# --------------------------------------------------------------------------- watch helper


class Watch:
    """A Watch stream whose responses are collected in the background."""

    def __init__(self, ch: grpc.aio.Channel) -> None:
        self.requests: asyncio.Queue[rpc_pb2.WatchRequest | None] = asyncio.Queue()
        self.responses: list[rpc_pb2.WatchResponse] = []
        self.error: grpc.aio.AioRpcError | None = None
        self.call = rpc_pb2_grpc.WatchStub(ch).Watch(self._gen())
        self.task = asyncio.create_task(self._read())

    async def _gen(self) -> AsyncIterator[rpc_pb2.WatchRequest]:
        while (req := await self.requests.get()) is not None:
            yield req

    async def _read(self) -> None:
        try:
            async for resp in self.call:
                self.responses.append(resp)
        except grpc.aio.AioRpcError as e:
            self.error = e
        except asyncio.CancelledError:
            pass

    def create(self, key: bytes, range_end: bytes = b"") -> None:
        self.requests.put_nowait(
            rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key, range_end=range_end))
        )

    def created_ids(self) -> list[int]:
        return [r.watch_id for r in self.responses if r.created]

    def events(self) -> list[tuple[int, bytes]]:
        return [(r.watch_id, ev.kv.key) for r in self.responses for ev in r.events]

    async def wait(self, pred: Any, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred(self):
            if self.task.done():
                raise AssertionError(f"watch stream ended early: {self.error}")
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting on a watch stream")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        self.call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


# --------------------------------------------------------------------------- malformed messages


async def test_malformed_protobuf(server: _Server, ledger: dict[bytes, bytes]) -> None:
    async with channel(server) as ch:
        for method in ["/etcdserverpb.KV/Put", "/etcdserverpb.KV/Range", "/etcdserverpb.KV/Txn",
                       "/etcdserverpb.Lease/LeaseGrant"]:  # fmt: skip
            call = ch.unary_unary(method, request_serializer=None, response_deserializer=None)
            for raw in MALFORMED:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call(raw, timeout=RPC_TIMEOUT)
                OBSERVED.setdefault(method, set()).add(info.value.code().name)
                assert info.value.code() != grpc.StatusCode.OK
        # Streams: the call must end (with whatever status) instead of hanging or taking the server down.
        for method in ["/etcdserverpb.Watch/Watch", "/etcdserverpb.Lease/LeaseKeepAlive"]:
            stream = ch.stream_stream(method, request_serializer=None, response_deserializer=None)
            for raw in MALFORMED:
                call = stream(iter([raw]), timeout=RPC_TIMEOUT)
                try:
                    async for _ in call:
                        pass
                    OBSERVED.setdefault(method, set()).add(f"{(await call.code()).name} (stream ended)")
                except grpc.aio.AioRpcError as e:
                    assert e.code() != grpc.StatusCode.DEADLINE_EXCEEDED, f"{method} hung on {raw!r}"
                    OBSERVED.setdefault(method, set()).add(e.code().name)
    print(f"status codes for malformed protobuf: { {k: sorted(v) for k, v in OBSERVED.items()} }")
    await check_intact(server, ledger, "malformed-protobuf")
    assert await wait_watchers(server, 0) == 0, "a malformed watch request left a watcher behind"


# --------------------------------------------------------------------------- sizes and etcd errors


async def test_request_size_limits(server: _Server, ledger: dict[bytes, bytes]) -> None:
    async with channel(server) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        await expect_error(
            kv.Put(rpc_pb2.PutRequest(key=PREFIX + b"big/2MiB", value=b"x" * (2 * MiB)), timeout=10),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        await expect_error(
            kv.Put(rpc_pb2.PutRequest(key=PREFIX + b"big/1.6MiB", value=b"y" * int(1.6 * MiB)), timeout=10),
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: request is too large",
        )
        txn = rpc_pb2.TxnRequest(
            success=[
                rpc_pb2.RequestOp(
                    request_put=rpc_pb2.PutRequest(key=PREFIX + b"big/txn", value=b"t" * int(1.6 * MiB))
                )
            ]
        )
        await expect_error(
            kv.Txn(txn, timeout=10), grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large"
        )
        value = bytes(range(256)) * (int(1.4 * MiB) // 256)
        await put(kv, ledger, PREFIX + b"big/1.4MiB", value)
        got = await kv.Range(
            rpc_pb2.RangeRequest(key=PREFIX + b"big/", range_end=PREFIX + b"big0"), timeout=10
        )
        assert [(k.key, k.value == value) for k in got.kvs] == [(PREFIX + b"big/1.4MiB", True)]
    await check_intact(server, ledger, "request-sizes")


async def test_etcd_request_errors(server: _Server, ledger: dict[bytes, bytes]) -> None:
    async with channel(server) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        lease = rpc_pb2_grpc.LeaseStub(ch)
        no_key = "etcdserver: key is not provided"
        await expect_error(
            kv.Put(rpc_pb2.PutRequest(key=b"", value=b"v")), grpc.StatusCode.INVALID_ARGUMENT, no_key
        )
        await expect_error(kv.Range(rpc_pb2.RangeRequest(key=b"")), grpc.StatusCode.INVALID_ARGUMENT, no_key)
        await expect_error(
            kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"")), grpc.StatusCode.INVALID_ARGUMENT, no_key
        )

        rev = await put(kv, ledger, PREFIX + b"errors/base", b"base")
        await expect_error(
            kv.Range(rpc_pb2.RangeRequest(key=PREFIX + b"errors/base", revision=rev + 1000)),
            grpc.StatusCode.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision is a future revision",
        )
        lease_gone = "etcdserver: requested lease not found"
        await expect_error(
            kv.Put(rpc_pb2.PutRequest(key=PREFIX + b"errors/leased", value=b"v", lease=0x7EADBEEF)),
            grpc.StatusCode.NOT_FOUND,
            lease_gone,
        )
        await expect_error(
            lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=0x7EADBEEF)),
            grpc.StatusCode.NOT_FOUND,
            lease_gone,
        )

        def puts(n: int, tag: bytes) -> rpc_pb2.TxnRequest:
            return rpc_pb2.TxnRequest(
                success=[
                    rpc_pb2.RequestOp(
                        request_put=rpc_pb2.PutRequest(key=PREFIX + b"txn%s/%03d" % (tag, i), value=b"%d" % i)
                    )
                    for i in range(n)
                ]
            )

        await expect_error(
            kv.Txn(puts(129, b"129")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: too many operations in txn request",
        )
        resp = await kv.Txn(puts(128, b"128"), timeout=RPC_TIMEOUT)  # the limit itself is allowed
        assert resp.succeeded
        ledger.update({PREFIX + b"txn128/%03d" % i: b"%d" % i for i in range(128)})
        absent = await kv.Range(rpc_pb2.RangeRequest(key=PREFIX + b"txn129/", range_end=PREFIX + b"txn1290"))
        assert absent.count == 0, "a rejected txn wrote something"
    await check_intact(server, ledger, "etcd-errors")


# --------------------------------------------------------------------------- abrupt disconnects


async def _putter(server: _Server, ledger: dict[bytes, bytes], prefix: bytes, n: int) -> None:
    async with channel(server) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for i in range(n):
            await put(kv, ledger, prefix + b"%04d" % i, b"v%d" % i)


@pytest.mark.parametrize("how", ["cancel-call", "close-channel"])
async def test_watch_client_vanishes_mid_stream(
    server: _Server, ledger: dict[bytes, bytes], how: str
) -> None:
    base = await wait_watchers(server, 0)
    prefix = PREFIX + b"vanish-" + how.encode() + b"/"
    ch = channel(server)
    try:
        watches = [Watch(ch) for _ in range(3)]
        for w in watches:
            w.create(prefix, prefix[:-1] + b"0")
        for w in watches:
            await w.wait(lambda w: len(w.created_ids()) == 1)
        assert await wait_watchers(server, 3) == 3
        putter = asyncio.create_task(_putter(server, ledger, prefix, 150))
        await watches[0].wait(lambda w: len(w.events()) >= 10)  # events are flowing: now vanish
        if how == "cancel-call":
            for w in watches:
                w.call.cancel()
        else:
            await ch.close(grace=None)
        await asyncio.wait_for(putter, 30)  # the server keeps taking writes while it drops the streams
        for w in watches:
            await w.close()
    finally:
        await ch.close()
    assert await wait_watchers(server, 0) == 0, "the vanished client's watchers were not released"
    assert base == 0
    await check_intact(server, ledger, f"watch-{how}")


def _h2_frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def _hpack_literal(name: bytes, value: bytes) -> bytes:
    assert len(name) < 127 and len(value) < 127
    return (
        b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value
    )  # literal, not indexed, no Huffman


def _grpc_message(msg: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(msg)) + msg


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, int, int, bytes]:
    head = await reader.readexactly(9)
    length = int.from_bytes(head[:3], "big")
    stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
    return head[3], head[4], stream, await reader.readexactly(length)


@pytest.mark.parametrize("cut", ["mid-frame-header", "mid-data-frame", "mid-grpc-message"])
async def test_raw_tcp_watch_dropped_mid_http2_frame(
    server: _Server, ledger: dict[bytes, bytes], cut: str
) -> None:
    """A hand-written HTTP/2 client opens a Watch, sees it work, then resets the TCP connection mid-frame."""
    key = PREFIX + b"raw/" + cut.encode()
    await wait_watchers(server, 0)
    reader, writer = await asyncio.open_connection(LOOPBACK, server.client_port)
    try:
        headers = b"".join(
            _hpack_literal(n, v)
            for n, v in [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", b"/etcdserverpb.Watch/Watch"),
                (b":authority", server.endpoint.encode()),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
            ]
        )
        create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key)).SerializeToString()
        writer.write(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            + _h2_frame(0x4, 0, 0)  # SETTINGS
            + _h2_frame(0x1, 0x4, 1, headers)  # HEADERS, END_HEADERS
            + _h2_frame(0x0, 0, 1, _grpc_message(create))  # DATA
        )
        await writer.drain()

        async def until_data() -> bytes:
            while True:
                ftype, flags, stream, payload = await _read_frame(reader)
                if ftype == 0x4 and not flags & 0x1:
                    writer.write(_h2_frame(0x4, 0x1, 0))  # SETTINGS ACK
                elif ftype == 0x6 and not flags & 0x1:
                    writer.write(_h2_frame(0x6, 0x1, 0, payload))  # PING ACK
                elif ftype in (0x3, 0x7):
                    raise AssertionError(f"server reset the raw stream: frame type {ftype} {payload!r}")
                elif ftype == 0x0 and stream == 1 and payload:
                    return payload

        created = await asyncio.wait_for(until_data(), 5)  # the "created" response
        assert len(created) > 5
        assert await wait_watchers(server, 1) == 1
        async with channel(server) as ch:
            await put(rpc_pb2_grpc.KVStub(ch), ledger, key, b"seen by a raw client")
        event = await asyncio.wait_for(until_data(), 5)
        assert key in event

        second = rpc_pb2.WatchRequest(
            create_request=rpc_pb2.WatchCreateRequest(key=key + b"/2")
        ).SerializeToString()
        frame = _h2_frame(0x0, 0, 1, _grpc_message(second))
        partial = {
            "mid-frame-header": frame[:5],
            "mid-data-frame": frame[: 9 + len(frame[9:]) // 2],
            "mid-grpc-message": _h2_frame(
                0x0, 0, 1, _grpc_message(second)[:8]
            ),  # whole frame, partial message
        }[cut]
        writer.write(partial)
        await writer.drain()
        await asyncio.sleep(0.1)  # let the server read the fragment
    finally:
        sock = writer.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    assert await wait_watchers(server, 0) == 0, f"{cut}: the raw client's watcher was not released"
    await check_intact(server, ledger, f"raw-{cut}")


@pytest.mark.parametrize("how", ["cancel-call", "close-channel"])
async def test_keepalive_stream_cancelled_mid_way(
    server: _Server, ledger: dict[bytes, bytes], how: str
) -> None:
    async with channel(server) as ch:
        grant = await rpc_pb2_grpc.LeaseStub(ch).LeaseGrant(
            rpc_pb2.LeaseGrantRequest(TTL=30), timeout=RPC_TIMEOUT
        )
    lease_id = grant.ID
    ch = channel(server)
    try:

        async def requests() -> AsyncIterator[rpc_pb2.LeaseKeepAliveRequest]:
            while True:
                yield rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)
                await asyncio.sleep(0.02)

        call = rpc_pb2_grpc.LeaseStub(ch).LeaseKeepAlive(requests())
        answers = 0
        async for resp in call:
            assert resp.ID == lease_id and resp.TTL == 30
            answers += 1
            if answers == 5:
                break
        if how == "cancel-call":
            call.cancel()
        else:
            await ch.close(grace=None)
    finally:
        await ch.close()
    async with channel(server) as ch:
        lease = rpc_pb2_grpc.LeaseStub(ch)
        ttl = await lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id), timeout=RPC_TIMEOUT)
        assert ttl.grantedTTL == 30 and 0 < ttl.TTL <= 30, (
            f"the lease was lost with its keepalive stream: {ttl}"
        )
        # A new keepalive stream for the same lease works.
        call = lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)]))
        assert [r.TTL async for r in call] == [30]
        await lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lease_id), timeout=RPC_TIMEOUT)
    await check_intact(server, ledger, f"keepalive-{how}")


# --------------------------------------------------------------------------- many idle watchers


async def _put_latency(kv: rpc_pb2_grpc.KVStub, tag: bytes, n: int = 40) -> float:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        await kv.Put(
            rpc_pb2.PutRequest(key=PREFIX + b"latency/" + tag + b"/%03d" % i, value=b"x"), timeout=RPC_TIMEOUT
        )
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


@pytest.mark.parametrize("streams", [1, 100])
async def test_thousand_idle_watchers(server: _Server, ledger: dict[bytes, bytes], streams: int) -> None:
    n = 1000
    tag = b"%d" % streams
    base = await wait_watchers(server, 0)
    async with channel(server) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        await _put_latency(kv, tag + b"-warmup", 10)
        before = await _put_latency(kv, tag + b"-before")

        # Half single-key watchers, half prefix watchers, spread round-robin over the streams.
        def watched(i: int) -> tuple[bytes, bytes, bytes]:
            if i % 2:
                p = PREFIX + b"idle%s/p%04d/" % (tag, i)
                return p, p[:-1] + b"0", p + b"x"  # (key, range_end, the key that we put)
            k = PREFIX + b"idle%s/k%04d" % (tag, i)
            return k, b"", k

        watches = [Watch(ch) for _ in range(streams)]
        for i in range(n):
            key, end, _ = watched(i)
            watches[i % streams].create(key, end)
        for s, w in enumerate(watches):
            expected = len(range(s, n, streams))
            await w.wait(lambda w, e=expected: len(w.created_ids()) == e, timeout=20)
        assert await wait_watchers(server, n) == n, "the watcher gauge does not count the new watchers"

        after = await _put_latency(kv, tag + b"-after")
        print(
            f"put latency with {n} idle watchers on {streams} stream(s): {before * 1e3:.2f} ms -> {after * 1e3:.2f} ms"
        )
        assert after < 5 * before + 0.002, f"median put latency {before * 1e3:.2f} ms -> {after * 1e3:.2f} ms"

        # Every watcher gets the event for its key (txns of 100 puts).
        for lo in range(0, n, 100):
            ops = [
                rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=watched(i)[2], value=b"w%d" % i))
                for i in range(lo, lo + 100)
            ]
            await kv.Txn(rpc_pb2.TxnRequest(success=ops), timeout=RPC_TIMEOUT)
            ledger.update({watched(i)[2]: b"w%d" % i for i in range(lo, lo + 100)})
        for s, w in enumerate(watches):
            ids = w.created_ids()
            count = len(ids)
            await w.wait(lambda w, e=count: len(w.events()) >= e, timeout=20)
            got = dict(w.events())
            assert len(w.events()) == len(ids), f"stream {s}: duplicate events"
            want = {wid: watched(i)[2] for wid, i in zip(ids, range(s, n, streams), strict=True)}
            assert got == want, f"stream {s}: watchers saw the wrong events"

        for w in watches:
            await w.close()
    assert await wait_watchers(server, 0) == 0, "closing the streams did not release the watchers"
    assert base == 0
    await check_intact(server, ledger, f"idle-watchers-{streams}")


# --------------------------------------------------------------------------- last


async def test_final_consistency(server: _Server, ledger: dict[bytes, bytes]) -> None:
    await check_intact(server, ledger, "everything")
    assert len(ledger) > 1000, f"expected the earlier tests' writes in the ledger, found {len(ledger)}"
    # What was acknowledged is durable, not just in memory.
    server.kill(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while (pids := server.group_pids()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not pids, f"processes {pids} outlived the killed core"
    server.launch()
    server.wait_ready()
    await check_intact(server, ledger, "kill-9-restart")


async def test_malformed_watch_request_fails_the_stream(server: _Server, ledger: dict[bytes, bytes]) -> None:
    """Garbage on an open Watch stream must end it with an error status (etcd: INTERNAL), not a clean OK.

    A clean end-of-stream tells the client the server closed the stream on purpose; clientv3 then sees
    no error for what was its own broken request. Kept after the final check so that, with -x, every
    other test runs first.
    """
    async with channel(server) as ch:
        sent = asyncio.Event()
        create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=PREFIX + b"garbage"))

        async def requests() -> AsyncIterator[bytes]:
            yield create.SerializeToString()
            yield MALFORMED[0]
            sent.set()
            await asyncio.sleep(3600)  # keep our side open: only the garbage can end the stream

        stream = ch.stream_stream(
            "/etcdserverpb.Watch/Watch", request_serializer=None, response_deserializer=None
        )
        call = stream(requests(), timeout=RPC_TIMEOUT)
        responses = 0
        try:
            async for _ in call:
                responses += 1
            code, details = await call.code(), await call.details()
        except grpc.aio.AioRpcError as e:
            code, details = e.code(), e.details()
        call.cancel()
    assert sent.is_set()
    assert await wait_watchers(server, 0) == 0, "the broken stream's watcher was not released"
    await check_intact(server, ledger, "malformed-watch-mid-stream")
    assert code not in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED), (
        f"a Watch stream that received unparseable bytes ended with {code.name} {details!r} after "
        f"{responses} response(s); etcd ends it with INTERNAL"
    )
