"""The store's own gRPC server (`grpcwire` + `grpcport`), end to end, seen by grpcio's client.

Each test runs against a `gifee store` with its gRPC worker processes (`--grpc-workers 2`)
and with gRPC served in the core (`--grpc-workers 0`, `grpcport.LocalLink`). Where etcd's
answer is part of the contract (status codes and texts, the Lock recipe's withdrawal), the
same script also runs against Debian's etcd 3.4 and the answers must be equal.

Not repeated here: malformed protobuf, size limits, etcd's request errors and clients that
vanish mid-stream (`test_bad_input.py`); routing, TLS and HTTP beside gRPC on the client port
(`test_client_port_http.py`); HTTP/2 framing in memory (`test_grpcwire.py`).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from gifee.store.proto import kv_pb2, rpc_pb2, rpc_pb2_grpc, v3lock_pb2, v3lock_pb2_grpc
from tests.store.reference import ETCD_BINARY, GIFEE_CMD_ENV, LOOPBACK, ServerProcess, require_etcd
from tests.store.test_bad_input import Watch
from tests.store.test_client_port_http import GifeeWith, _overridden

pytestmark = pytest.mark.timeout(90)

STEP = 5.0
KiB = 1024
UNLIMITED = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
# A client that offers a 16 KiB stream window and never grows it (no BDP probing): a response
# of megabytes can only arrive through many WINDOW_UPDATEs.
SMALL_WINDOW = 16 * KiB
SMALL_WINDOW_OPTIONS = [
    *UNLIMITED,
    ("grpc.http2.lookahead_bytes", SMALL_WINDOW),
    ("grpc.http2.bdp_probe", 0),
]
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED
GZIP = grpc.Compression.Gzip
Answer = tuple[grpc.StatusCode, str]


# --------------------------------------------------------------------------- servers


@pytest.fixture(scope="module", params=["2", "0"], ids=["workers", "in-process"])
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """One gifee store per mode for the module: gRPC workers (2), and `--grpc-workers 0`."""
    if request.param == "0" and _overridden():
        pytest.skip(f"{GIFEE_CMD_ENV} is set: --grpc-workers is gifee's own flag")
    root = Path(tempfile.mkdtemp(prefix="gifee-grpcport-"))
    s = GifeeWith(root / "gifee", [] if _overridden() else ["--grpc-workers", request.param])
    try:
        s.start()
        yield s
    finally:
        s.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def etcd() -> Iterator[ServerProcess]:
    """Debian's etcd 3.4, the reference, started once for the module's differential tests."""
    require_etcd()
    root = Path(tempfile.mkdtemp(prefix="gifee-grpcport-etcd-"))
    s = ServerProcess("etcd", [ETCD_BINARY], root / "etcd")
    try:
        s.start()
        yield s
    finally:
        s.stop()
        shutil.rmtree(root, ignore_errors=True)


def channel(s: ServerProcess, options: list[tuple[str, Any]] = UNLIMITED) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(s.endpoint, options=options)


async def answer(call: Awaitable[Any]) -> Answer:
    """The status a call ends with: (OK, "") or the error's code and text."""
    try:
        await call
    except grpc.aio.AioRpcError as e:
        return e.code(), e.details() or ""
    return grpc.StatusCode.OK, ""


async def wait_for(predicate: Any, timeout: float = STEP, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def _eq(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


# --------------------------------------------------------------------------- unknown methods


# grpc-go's texts, which etcd's clients get from etcd.
UNKNOWN = {
    "/etcdserverpb.KV/Nope": "unknown method Nope for service etcdserverpb.KV",
    "/nope.Svc/X": "unknown service nope.Svc",
    "/etcdserverpb.Watch/Range": "unknown method Range for service etcdserverpb.Watch",
    "/etcdserverpb.kv/Range": "unknown service etcdserverpb.kv",
    "/etcdserverpb.KV/": "unknown method  for service etcdserverpb.KV",
    "/etcdserverpb.KV/Range/x": "unknown service etcdserverpb.KV/Range",
    "//etcdserverpb.KV/Range": "unknown service /etcdserverpb.KV",
    "etcdserverpb.KV/Nope": "unknown method Nope for service etcdserverpb.KV",  # no leading "/"
}
MALFORMED = {
    "/etcdserverpb.KV": 'malformed method name: "/etcdserverpb.KV"',
    "/": 'malformed method name: "/"',
}


async def unknown_path_answers(s: ServerProcess) -> dict[str, Answer]:
    """Each path called on one channel with a valid RangeRequest; the channel must still serve after."""
    request = rpc_pb2.RangeRequest(key=b"unknown/probe").SerializeToString()
    out = {}
    async with channel(s) as ch:
        for path in [*UNKNOWN, *MALFORMED]:
            out[path] = await answer(ch.unary_unary(path)(request, timeout=STEP))
        resp = await rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"unknown/probe"), timeout=STEP)
        assert resp.count == 0 and resp.header.revision > 0
    return out


@pytest.mark.reference
async def test_unknown_method_and_service_answer_like_etcd(
    server: ServerProcess, etcd: ServerProcess
) -> None:
    """Unknown methods and services: UNIMPLEMENTED with grpc-go's exact texts, as etcd 3.4 answers."""
    ours, reference = await asyncio.gather(unknown_path_answers(server), unknown_path_answers(etcd))
    expected = {path: (UNIMPLEMENTED, text) for path, text in UNKNOWN.items()}
    assert {p: ours[p] for p in UNKNOWN} == expected
    assert {p: reference[p] for p in UNKNOWN} == expected
    # A path that is no /service/method: the same text as etcd's. The code is UNIMPLEMENTED, as
    # grpc-go has answered since 1.39 (grpc/grpc-go#4456, etcd 3.5); etcd 3.4's grpc-go said
    # RESOURCE_EXHAUSTED, which no client could take for "this method does not exist".
    assert {p: ours[p] for p in MALFORMED} == {p: (UNIMPLEMENTED, t) for p, t in MALFORMED.items()}
    assert {p: reference[p] for p in MALFORMED} == {
        p: (grpc.StatusCode.RESOURCE_EXHAUSTED, t) for p, t in MALFORMED.items()
    }


@pytest.mark.reference
async def test_path_without_leading_slash_is_served_like_etcd(
    server: ServerProcess, etcd: ServerProcess
) -> None:
    """A :path without its leading slash reaches the method, as grpc-go (etcd) routes it."""

    async def range_without_slash(s: ServerProcess) -> Answer:
        async with channel(s) as ch:
            request = rpc_pb2.RangeRequest(key=b"slash").SerializeToString()
            return await answer(ch.unary_unary("etcdserverpb.KV/Range")(request, timeout=STEP))

    reference = await range_without_slash(etcd)
    assert reference == (grpc.StatusCode.OK, "")
    assert await range_without_slash(server) == reference


# --------------------------------------------------------------------------- compression


async def compressed_then_plain(s: ServerProcess, key: bytes) -> list[Any]:
    """gzip-compressed calls on a channel, then plain calls on the same channel.

    (Not a stream: grpcio then races its own first message against the refusal and may report
    INTERNAL "Internal error from Core" instead of the server's status; seen against etcd.)
    """
    out: list[Any] = []
    async with channel(s) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        put = rpc_pb2.PutRequest(key=key, value=b"z" * 4096)
        out.append(await answer(kv.Put(put, timeout=STEP, compression=GZIP)))
        out.append(await answer(kv.Range(rpc_pb2.RangeRequest(key=key), timeout=STEP, compression=GZIP)))
        refused = await kv.Range(rpc_pb2.RangeRequest(key=key), timeout=STEP)
        out.append(("after refusal", refused.count))  # the refused Put wrote nothing
        await kv.Put(rpc_pb2.PutRequest(key=key, value=b"plain"), timeout=STEP)
        got = await kv.Range(rpc_pb2.RangeRequest(key=key), timeout=STEP)
        out.append(("after plain put", [(k.key, k.value, k.version) for k in got.kvs]))
    return out


@pytest.mark.reference
async def test_gzip_call_is_unimplemented_and_the_channel_serves_on(
    server: ServerProcess, etcd: ServerProcess
) -> None:
    """grpcio's gzip compression is refused with UNIMPLEMENTED (etcd's text); plain calls go on."""
    key = b"gzip/%d" % server.client_port  # etcd serves both modes' runs
    ours, reference = await asyncio.gather(
        compressed_then_plain(server, key), compressed_then_plain(etcd, key)
    )
    refused = (UNIMPLEMENTED, 'grpc: Decompressor is not installed for grpc-encoding "gzip"')
    assert ours == [refused, refused, ("after refusal", 0), ("after plain put", [(key, b"plain", 1)])]
    assert reference == ours


# --------------------------------------------------------------------------- deadlines


def _lock_key(name: bytes, lease: int) -> bytes:
    return name + b"/" + b"%x" % lease


async def lock_waiters_give_up(s: ServerProcess, name: bytes) -> dict[str, Any]:
    """A Lock held; a second Lock times out (0.5 s) and a third is cancelled while waiting.

    Returns what a client saw, with keys named by role: the waiters' codes, the events under
    the lock's prefix, the keys left after each one gave up, and whether a waiter that gave up
    blocks the next contender.
    """
    out: dict[str, Any] = {}
    async with channel(s) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        lease = rpc_pb2_grpc.LeaseStub(ch)
        lock = v3lock_pb2_grpc.LockStub(ch)
        ids = [(await lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=STEP)).ID for _ in range(3)]
        role = {_lock_key(name, i): r for i, r in zip(ids, ["holder", "timed-out", "cancelled"], strict=True)}

        async def keys() -> list[str]:
            resp = await kv.Range(rpc_pb2.RangeRequest(key=name + b"/", range_end=name + b"0"), timeout=STEP)
            return sorted(role.get(k.key, repr(k.key)) for k in resp.kvs)

        watch = Watch(ch)
        watch.create(name + b"/", name + b"0")
        await watch.wait(lambda w: len(w.created_ids()) == 1)

        def events() -> list[tuple[str, str]]:
            names = {kv_pb2.Event.PUT: "PUT", kv_pb2.Event.DELETE: "DELETE"}
            return [
                (names[e.type], role.get(e.kv.key, repr(e.kv.key))) for r in watch.responses for e in r.events
            ]

        held = await lock.Lock(v3lock_pb2.LockRequest(name=name, lease=ids[0]), timeout=STEP)
        out["held"] = role.get(held.key)

        started = time.monotonic()
        out["timed-out"] = await answer(
            lock.Lock(v3lock_pb2.LockRequest(name=name, lease=ids[1]), timeout=0.5)
        )
        out["timed-out after"] = time.monotonic() - started
        await wait_for(lambda: _eq(keys(), ["holder"]), what="the timed-out waiter's key to go")

        call = lock.Lock(v3lock_pb2.LockRequest(name=name, lease=ids[2]))
        await watch.wait(lambda w: ("PUT", "cancelled") in events())
        out["cancelled waiting"] = await keys()
        call.cancel()
        out["cancelled"] = (await call.code()).name
        await wait_for(lambda: _eq(keys(), ["holder"]), what="the cancelled waiter's key to go")
        await watch.wait(lambda w: ("DELETE", "cancelled") in events())
        out["events"] = events()

        # Nothing the waiters left behind stands in the way of the next contender.
        await lock.Unlock(v3lock_pb2.UnlockRequest(key=held.key), timeout=STEP)
        again = await lock.Lock(v3lock_pb2.LockRequest(name=name, lease=ids[1]), timeout=STEP)
        out["next"] = (role.get(again.key), await keys())
        await watch.close()
        for i in ids:
            await lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=i), timeout=STEP)
    return out


@pytest.mark.reference
async def test_lock_deadline_and_cancel_withdraw_the_waiter(
    server: ServerProcess, etcd: ServerProcess
) -> None:
    """A Lock waiting past its deadline gets DEADLINE_EXCEEDED in time and its key is withdrawn, as etcd's."""
    name = b"deadline-lock-%d" % server.client_port  # etcd serves both modes' runs
    ours, reference = await asyncio.gather(
        lock_waiters_give_up(server, name), lock_waiters_give_up(etcd, name)
    )
    # The client's deadline and the server's (from grpc-timeout) race. When etcd's wins, its v3lock
    # returns the bare context error, which grpc-go sends as UNKNOWN; gifee's is DEADLINE_EXCEEDED.
    expired = {grpc.StatusCode.DEADLINE_EXCEEDED}
    for label, seen, codes in (
        ("gifee", ours, expired),
        ("etcd", reference, expired | {grpc.StatusCode.UNKNOWN}),
    ):
        code, details = seen.pop("timed-out")
        assert code in codes and details in ("Deadline Exceeded", "context deadline exceeded"), (
            f"{label}: the timed-out Lock ended with {code.name} {details!r}"
        )
        elapsed = seen.pop("timed-out after")
        assert 0.45 <= elapsed < 1.5, f"{label}: {code.name} after {elapsed:.2f}s for a 0.5 s deadline"
    assert ours == {
        "held": "holder",
        "cancelled waiting": ["cancelled", "holder"],
        "cancelled": "CANCELLED",
        "events": [
            ("PUT", "holder"),
            ("PUT", "timed-out"),
            ("DELETE", "timed-out"),
            ("PUT", "cancelled"),
            ("DELETE", "cancelled"),
        ],
        "next": ("timed-out", ["timed-out"]),
    }
    assert reference == ours


# --------------------------------------------------------------------------- many calls on one channel


async def test_300_concurrent_puts_on_one_channel(server: ServerProcess) -> None:
    """300 Puts at once on one HTTP/2 connection all succeed, each its own revision, all stored."""
    prefix = b"many/"
    async with channel(server) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        puts = [
            kv.Put(rpc_pb2.PutRequest(key=prefix + b"%03d" % i, value=b"v%d" % i), timeout=30)
            for i in range(300)
        ]
        resps = await asyncio.wait_for(asyncio.gather(*puts), 60)
        revisions = sorted(r.header.revision for r in resps)
        assert revisions == list(range(revisions[0], revisions[0] + 300))
        got = await kv.Range(rpc_pb2.RangeRequest(key=prefix, range_end=b"many0"), timeout=STEP)
        assert got.count == 300
        assert [(k.key, k.value) for k in got.kvs] == [(prefix + b"%03d" % i, b"v%d" % i) for i in range(300)]


async def test_cancelled_watch_does_not_disturb_its_channel(server: ServerProcess) -> None:
    """A Watch cancelled mid-stream while Puts and another Watch run on the same channel: only it ends."""
    prefix, end = b"watched/", b"watched0"
    async with channel(server) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        doomed, survivor = Watch(ch), Watch(ch)
        for w in (doomed, survivor):
            w.create(prefix, end)
            await w.wait(lambda w: len(w.created_ids()) == 1)

        async def put(i: int) -> int:
            await asyncio.sleep(0.002 * i)  # spread out, so the cancel lands among them
            resp = await kv.Put(rpc_pb2.PutRequest(key=prefix + b"%03d" % i, value=b"x"), timeout=STEP)
            return int(resp.header.revision)

        puts = asyncio.gather(*(put(i) for i in range(200)))
        await doomed.wait(lambda w: len(w.events()) >= 20)
        doomed.call.cancel()
        revisions = await asyncio.wait_for(puts, 30)
        assert len(set(revisions)) == 200
        await doomed.close()
        assert len(doomed.events()) < 200, "the cancel did not land mid-stream"

        keys = [prefix + b"%03d" % i for i in range(200)]
        await survivor.wait(lambda w: len(w.events()) >= 200)
        assert sorted(k for _, k in survivor.events()) == keys
        got = await kv.Range(rpc_pb2.RangeRequest(key=prefix, range_end=end, count_only=True), timeout=STEP)
        assert got.count == 200

        # A new stream on the same channel works as the first did.
        late = Watch(ch)
        late.create(prefix + b"late")
        await late.wait(lambda w: len(w.created_ids()) == 1)
        await kv.Put(rpc_pb2.PutRequest(key=prefix + b"late", value=b"y"), timeout=STEP)
        await late.wait(lambda w: len(w.events()) == 1)
        assert late.events() == [(late.created_ids()[0], prefix + b"late")]
        assert not survivor.task.done()
        for w in (survivor, late):
            await w.close()


# --------------------------------------------------------------------------- flow control


def test_small_window_client_announces_its_window() -> None:
    """The small-window options really make grpcio offer a 16 KiB stream window and no more."""
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(1)
        listener.settimeout(STEP)
        port = listener.getsockname()[1]
        with grpc.insecure_channel(f"{LOOPBACK}:{port}", options=SMALL_WINDOW_OPTIONS) as ch:
            future = ch.unary_unary("/a/b").future(b"", timeout=STEP)
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(STEP)
                data = b""
                while len(data) < 24 + 9 or len(data) < 24 + 9 + int.from_bytes(data[24:27], "big"):
                    chunk = conn.recv(4096)
                    assert chunk, "the client closed before its SETTINGS"
                    data += chunk
            future.cancel()
    assert data[24 + 3] == 0x4, "the client's first frame is not SETTINGS"
    payload = data[24 + 9 : 24 + 9 + int.from_bytes(data[24:27], "big")]
    settings = dict(struct.unpack(">HI", payload[i : i + 6]) for i in range(0, len(payload), 6))
    assert settings[0x4] == SMALL_WINDOW  # SETTINGS_INITIAL_WINDOW_SIZE


async def test_large_response_through_a_small_client_window(server: ServerProcess) -> None:
    """A 4 MB Range answer (twice at once) reaches a client with a 16 KiB window, byte for byte."""
    prefix = b"large/"
    values = {prefix + b"%02d" % i: random.Random(i).randbytes(100 * KiB) for i in range(40)}
    async with channel(server) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        await asyncio.gather(
            *(kv.Put(rpc_pb2.PutRequest(key=k, value=v), timeout=30) for k, v in values.items())
        )
    everything = rpc_pb2.RangeRequest(key=prefix, range_end=b"large0")
    async with channel(server, SMALL_WINDOW_OPTIONS) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        first, second, small = await asyncio.wait_for(
            asyncio.gather(
                kv.Range(everything, timeout=30),
                kv.Range(everything, timeout=30),
                kv.Range(rpc_pb2.RangeRequest(key=prefix + b"07", keys_only=True), timeout=30),
            ),
            40,
        )
    assert first.ByteSize() > 4_000_000
    for resp in (first, second):
        assert resp.count == 40
        assert [(k.key, k.value) for k in resp.kvs] == list(values.items())
    assert [(k.key, k.value) for k in small.kvs] == [(prefix + b"07", b"")]


async def test_snapshot_read_slowly_arrives_whole(server: ServerProcess) -> None:
    """A Snapshot stream read slowly through a small window: every byte, remaining_bytes counting down to 0."""
    prefix = b"snap/"
    values = [random.Random(1000 + i).randbytes(128 * KiB) for i in range(12)]
    async with channel(server, SMALL_WINDOW_OPTIONS) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for i, v in enumerate(values):
            await kv.Put(rpc_pb2.PutRequest(key=prefix + b"%02d" % i, value=v), timeout=STEP)
        blobs: list[bytes] = []
        remaining: list[int] = []
        side_call: float | None = None
        async for resp in rpc_pb2_grpc.MaintenanceStub(ch).Snapshot(rpc_pb2.SnapshotRequest(), timeout=60):
            blobs.append(resp.blob)
            remaining.append(resp.remaining_bytes)
            if len(blobs) == 10:
                # The stalled stream holds back neither the connection nor the other calls on it.
                started = time.monotonic()
                await kv.Put(rpc_pb2.PutRequest(key=prefix + b"during", value=b"d"), timeout=STEP)
                got = await kv.Range(rpc_pb2.RangeRequest(key=prefix + b"during"), timeout=STEP)
                assert got.kvs[0].value == b"d"
                side_call = time.monotonic() - started
            await asyncio.sleep(0.005)
    data = b"".join(blobs)
    assert len(blobs) > 10 and all(blobs)
    assert remaining[0] + len(blobs[0]) == len(data)
    assert remaining == [len(data) - sum(map(len, blobs[: i + 1])) for i in range(len(blobs))]
    assert remaining[-1] == 0
    assert hashlib.sha256(data[:-32]).digest() == data[-32:], "the snapshot's SHA-256 trailer does not match"
    assert all(v in data for v in values)
    assert side_call is not None and side_call < 2.0, f"a Put and a Range took {side_call}s beside the stream"
