"""The store used in-process (the asyncio `Store` API) and through `StoreClient`.

These run without gRPC for the embedded part: the same operations, watch
streams, lease expiry, the space quota with its NOSPACE alarm, compaction and
defragmentation reclaiming disk, and a restart that keeps everything.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gifee.store import errors
from gifee.store.client import StoreClient
from gifee.store.errors import StoreError
from gifee.store.mvcc import prefix_end
from gifee.store.node import Store, StoreConfig
from gifee.store.proto import kv_pb2, rpc_pb2
from tests.store.reference import ServerProcess

P = rpc_pb2


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(StoreConfig(data_dir=str(tmp_path / "s"), lease_check_interval=0.05))
    await s.start()
    yield s
    await s.close()


async def next_response(stream: object, timeout: float = 3.0) -> rpc_pb2.WatchResponse:
    queue = stream.queue  # type: ignore[attr-defined]
    resp = await asyncio.wait_for(queue.get(), timeout)
    assert resp is not None
    return resp  # type: ignore[no-any-return]


async def test_kv_and_watch_in_process(store: Store) -> None:
    stream = store.watch_stream()
    stream.create(P.WatchCreateRequest(key=b"app/", range_end=prefix_end(b"app/"), prev_kv=True))
    created = await next_response(stream)
    assert created.created and created.watch_id == 0

    r1 = await store.put(P.PutRequest(key=b"app/a", value=b"1"))
    r2 = await store.put(P.PutRequest(key=b"app/a", value=b"2", prev_kv=True))
    assert (r1.header.revision, r2.header.revision) == (2, 3)
    assert r2.prev_kv.value == b"1"
    got = await store.range(P.RangeRequest(key=b"app/", range_end=prefix_end(b"app/")))
    assert [(kv.key, kv.value, kv.version) for kv in got.kvs] == [(b"app/a", b"2", 2)]

    events = [(await next_response(stream)).events[0] for _ in range(2)]
    assert [(e.type, e.kv.value) for e in events] == [(kv_pb2.Event.PUT, b"1"), (kv_pb2.Event.PUT, b"2")]
    assert events[1].prev_kv.value == b"1"
    stream.close()


async def test_lease_expiry_deletes_keys_and_emits_deletes(store: Store) -> None:
    grant = await store.lease_grant(P.LeaseGrantRequest(TTL=1))
    assert grant.TTL == 2  # raised to etcd's minimum
    await store.put(P.PutRequest(key=b"eph/1", value=b"x", lease=grant.ID))
    await store.put(P.PutRequest(key=b"eph/2", value=b"y", lease=grant.ID))
    stream = store.watch_stream()
    stream.create(P.WatchCreateRequest(key=b"eph/", range_end=prefix_end(b"eph/")))
    await next_response(stream)
    resp = await next_response(stream, timeout=6.0)
    assert [(e.type, e.kv.key) for e in resp.events] == [
        (kv_pb2.Event.DELETE, b"eph/1"),
        (kv_pb2.Event.DELETE, b"eph/2"),
    ]
    assert len({e.kv.mod_revision for e in resp.events}) == 1  # one revision for the whole revoke
    ttl = await store.lease_time_to_live(P.LeaseTimeToLiveRequest(ID=grant.ID))
    assert ttl.TTL == -1
    assert (await store.range(P.RangeRequest(key=b"eph/", range_end=prefix_end(b"eph/")))).count == 0
    stream.close()


async def test_keepalive_holds_a_lease(store: Store) -> None:
    grant = await store.lease_grant(P.LeaseGrantRequest(TTL=2))
    await store.put(P.PutRequest(key=b"held", value=b"x", lease=grant.ID))
    for _ in range(6):
        assert (await store.lease_keepalive(grant.ID)).TTL == 2
        await asyncio.sleep(0.5)
    assert (await store.range(P.RangeRequest(key=b"held"))).count == 1
    assert (await store.lease_keepalive(12345)).TTL == 0


async def test_quota_raises_nospace_until_disarmed(tmp_path: Path) -> None:
    s = Store(StoreConfig(data_dir=str(tmp_path / "q"), quota_bytes=64 * 1024))
    await s.start()
    try:
        value = b"v" * 4096
        with pytest.raises(StoreError) as info:
            for i in range(100):
                await s.put(P.PutRequest(key=b"k%d" % i, value=value))
        assert info.value == errors.NO_SPACE
        await asyncio.sleep(0.1)  # the alarm is proposed through the log
        alarms = await s.alarm(P.AlarmRequest(action=P.AlarmRequest.GET))
        assert [(a.memberID, a.alarm) for a in alarms.alarms] == [(s.member_id, P.NOSPACE)]
        # Deletes still work; puts and grants do not.
        await s.delete_range(P.DeleteRangeRequest(key=b"k", range_end=prefix_end(b"k")))
        with pytest.raises(StoreError):
            await s.put(P.PutRequest(key=b"small", value=b"x"))
        with pytest.raises(StoreError):
            await s.lease_grant(P.LeaseGrantRequest(TTL=10))
        # etcd's recovery: compact, defragment, disarm.
        await s.compact(P.CompactionRequest(revision=s.sm.mvcc.revision))
        await s.defragment()
        await s.alarm(P.AlarmRequest(action=P.AlarmRequest.DEACTIVATE, memberID=s.member_id, alarm=P.NOSPACE))
        await s.put(P.PutRequest(key=b"small", value=b"x"))
    finally:
        await s.close()


async def test_compaction_and_defragment_reclaim_disk(store: Store) -> None:
    for i in range(300):
        await store.put(P.PutRequest(key=b"churn", value=b"%d" % i * 200))
    before = store.db_size()
    await store.compact(P.CompactionRequest(revision=store.sm.mvcc.revision))
    await store.defragment()
    after = store.db_size()
    assert after < before / 10, (before, after)
    assert (await store.range(P.RangeRequest(key=b"churn"))).kvs[0].version == 300


async def test_restart_keeps_state(tmp_path: Path) -> None:
    config = StoreConfig(data_dir=str(tmp_path / "r"))
    s = Store(config)
    await s.start()
    await s.put(P.PutRequest(key=b"a", value=b"1"))
    await s.put(P.PutRequest(key=b"a", value=b"2"))
    grant = await s.lease_grant(P.LeaseGrantRequest(TTL=60))
    await s.put(P.PutRequest(key=b"l", value=b"x", lease=grant.ID))
    await s.compact(P.CompactionRequest(revision=3))
    revision, hash_before = s.sm.mvcc.revision, (await s.hash_kv(P.HashKVRequest())).hash
    await s.close()

    s = Store(config)
    await s.start()
    try:
        assert s.sm.mvcc.revision == revision
        assert (await s.hash_kv(P.HashKVRequest())).hash == hash_before
        assert (await s.range(P.RangeRequest(key=b"a"))).kvs[0].value == b"2"
        ttl = await s.lease_time_to_live(P.LeaseTimeToLiveRequest(ID=grant.ID, keys=True))
        assert list(ttl.keys) == [b"l"] and ttl.grantedTTL == 60
        with pytest.raises(StoreError) as info:
            await s.range(P.RangeRequest(key=b"a", revision=2))
        assert info.value == errors.COMPACTED
    finally:
        await s.close()


async def test_second_process_on_a_data_dir_is_refused(store: Store) -> None:
    other = Store(StoreConfig(data_dir=store.config.data_dir))
    with pytest.raises(RuntimeError, match="in use"):
        await other.start()


@pytest.mark.reference
async def test_python_client_against_a_server(gifee_server: ServerProcess) -> None:
    async with StoreClient(gifee_server.endpoint) as client:
        rev = await client.set(b"c/1", b"one")
        assert [(kv.key, kv.value) for kv in await client.get(b"c/", prefix=True)] == [(b"c/1", b"one")]
        seen: list[tuple[int, bytes]] = []

        async def watch() -> None:
            async for resp in client.watch(b"c/", prefix=True, start_revision=rev):
                seen.extend((e.type, e.kv.key) for e in resp.events)
                if len(seen) >= 4:
                    return

        watcher = asyncio.create_task(watch())
        await client.set(b"c/2", b"two")
        assert await client.delete(b"c/", prefix=True) == 2
        await asyncio.wait_for(watcher, 5)
        assert seen == [
            (kv_pb2.Event.PUT, b"c/1"),
            (kv_pb2.Event.PUT, b"c/2"),
            (kv_pb2.Event.DELETE, b"c/1"),
            (kv_pb2.Event.DELETE, b"c/2"),
        ]
        with pytest.raises(StoreError) as info:
            await client.put(P.PutRequest(key=b""))
        assert info.value == errors.EMPTY_KEY
        grant = await client.lease_grant(P.LeaseGrantRequest(TTL=30))
        assert (await client.keep_alive_once(grant.ID)).TTL == 30
        assert (await client.member_list()).members[0].ID == (await client.status()).header.member_id


async def test_periodic_auto_compaction(tmp_path: Path) -> None:
    # --auto-compaction-retention is in hours; 2 s here, so the compactor wakes every second.
    s = Store(StoreConfig(data_dir=str(tmp_path / "ac"), auto_compaction_retention=2 / 3600))
    await s.start()
    try:
        for i in range(5):
            await s.put(P.PutRequest(key=b"k", value=b"%d" % i))
        assert s.sm.mvcc.compact_revision == -1
        async with asyncio.timeout(8):
            while s.sm.mvcc.compact_revision < 6:
                await s.put(P.PutRequest(key=b"k", value=b"more"))
                await asyncio.sleep(0.2)
        with pytest.raises(StoreError) as info:
            await s.range(P.RangeRequest(key=b"k", revision=2))
        assert info.value == errors.COMPACTED
    finally:
        await s.close()


async def test_progress_notify(tmp_path: Path) -> None:
    s = Store(StoreConfig(data_dir=str(tmp_path / "pn"), progress_notify_interval=0.2))
    await s.start()
    try:
        stream = s.watch_stream()
        stream.create(P.WatchCreateRequest(key=b"quiet", progress_notify=True))
        assert (await next_response(stream)).created
        await s.put(P.PutRequest(key=b"other", value=b"x"))
        progress = await next_response(stream)
        assert not progress.events and progress.watch_id == 0 and progress.header.revision == 2
        stream.progress()  # an explicit progress request answers with watch_id -1
        while (resp := await next_response(stream)).watch_id != -1:
            pass
        assert resp.header.revision == 2
        stream.close()
    finally:
        await s.close()


async def test_watch_fragments_large_responses(tmp_path: Path) -> None:
    s = Store(StoreConfig(data_dir=str(tmp_path / "fr"), max_request_bytes=64 * 1024))
    await s.start()
    try:
        for i in range(10):
            await s.put(P.PutRequest(key=b"f/%d" % i, value=b"x" * 20_000))
        # A watch from the past gets its backlog in one response: over the limit, so fragmented.
        stream = s.watch_stream()
        stream.create(
            P.WatchCreateRequest(key=b"f/", range_end=prefix_end(b"f/"), start_revision=2, fragment=True)
        )
        whole = s.watch_stream()
        whole.create(P.WatchCreateRequest(key=b"f/", range_end=prefix_end(b"f/"), start_revision=2))
        await next_response(stream)
        await next_response(whole)
        parts = [await next_response(stream)]
        while parts[-1].fragment:
            parts.append(await next_response(stream))
        assert len(parts) > 1 and all(p.ByteSize() < 64 * 1024 for p in parts)
        assert [e.kv.key for p in parts for e in p.events] == [b"f/%d" % i for i in range(10)]
        assert len((await next_response(whole)).events) == 10  # without fragment: one response
        stream.close()
        whole.close()
    finally:
        await s.close()


async def test_wal_failure_stops_writes_without_a_definite_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Store(StoreConfig(data_dir=str(tmp_path / "f")))
    fatal: list[BaseException] = []
    s.on_fatal = fatal.append
    await s.start()
    try:
        await s.put(P.PutRequest(key=b"a", value=b"1"))
        assert s.raft_node is not None
        wal_fd = s.raft_node.storage.wal._fd
        real_fdatasync = os.fdatasync

        # The disk fails the WAL's sync (the WAL may be compiled: its methods cannot be replaced).
        def broken_fdatasync(fd: int) -> None:
            if fd == wal_fd:
                raise OSError(5, "Input/output error")
            real_fdatasync(fd)

        monkeypatch.setattr(os, "fdatasync", broken_fdatasync)
        with pytest.raises(StoreError) as info:
            await s.put(P.PutRequest(key=b"a", value=b"2"))
        # The write may be on disk: the client must not be told it failed for sure.
        assert info.value == errors.TIMEOUT
        assert len(fatal) == 1 and s.failed is not None
        with pytest.raises(StoreError):
            await s.put(P.PutRequest(key=b"b", value=b"x"))
        with pytest.raises(StoreError):
            await s.defragment()
    finally:
        await s.close()


async def test_unknown_alarm_type_keeps_status_working(store: Store) -> None:
    await store.alarm(P.AlarmRequest(action=P.AlarmRequest.ACTIVATE, memberID=7, alarm=9))  # type: ignore[arg-type]
    status = await store.status()
    assert list(status.errors) == ["memberID:7 alarm:9 "]


async def test_corrupt_alarm_stops_writes(store: Store) -> None:
    await store.put(P.PutRequest(key=b"k", value=b"v"))
    await store.alarm(
        P.AlarmRequest(action=P.AlarmRequest.ACTIVATE, memberID=store.member_id, alarm=P.CORRUPT)
    )
    with pytest.raises(StoreError) as info:
        await store.put(P.PutRequest(key=b"k", value=b"w"))
    assert info.value == errors.CORRUPT
    assert (await store.range(P.RangeRequest(key=b"k"))).kvs[0].value == b"v"  # reads go on


async def test_backlog_never_splits_a_revision(store: Store) -> None:
    grant = await store.lease_grant(P.LeaseGrantRequest(TTL=60))
    for i in range(1200):
        await store.put(P.PutRequest(key=b"many/%04d" % i, value=b"x", lease=grant.ID))
    revoked = await store.lease_revoke(P.LeaseRevokeRequest(ID=grant.ID))
    stream = store.watch_stream()
    stream.create(
        P.WatchCreateRequest(
            key=b"many/", range_end=prefix_end(b"many/"), start_revision=revoked.header.revision
        )
    )
    assert (await next_response(stream)).created
    resp = await next_response(stream)
    assert len(resp.events) == 1200 and {e.kv.mod_revision for e in resp.events} == {revoked.header.revision}
    stream.close()


async def test_watch_on_an_empty_range_is_refused(store: Store) -> None:
    stream = store.watch_stream()
    stream.create(P.WatchCreateRequest(key=b"b", range_end=b"a"))
    resp = await next_response(stream)
    assert (resp.watch_id, resp.created, resp.canceled, resp.cancel_reason) == (
        -1,
        True,
        True,
        "mvcc: watcher range is empty",
    )
    stream.create(P.WatchCreateRequest(key=b"b", range_end=b"\0"))  # from-key: fine
    assert (await next_response(stream)).watch_id == 0
    stream.close()


async def test_keepalive_never_revives_an_expired_lease(tmp_path: Path) -> None:
    s = Store(StoreConfig(data_dir=str(tmp_path / "k"), lease_check_interval=30))
    await s.start()
    try:
        grant = await s.lease_grant(P.LeaseGrantRequest(TTL=2))
        await asyncio.sleep(2.1)  # expired; the expiry loop has not looked yet
        assert (await s.lease_keepalive(grant.ID)).TTL == 0
        async with asyncio.timeout(3):
            while grant.ID in s.sm.leases:
                await asyncio.sleep(0.05)
    finally:
        await s.close()


@pytest.mark.reference
async def test_lock_waiter_that_gives_up_withdraws(gifee_server: ServerProcess) -> None:
    """Through the gRPC workers: a Lock call that times out must not leave its key behind."""
    import grpc

    from gifee.store.proto import v3lock_pb2, v3lock_pb2_grpc

    async with grpc.aio.insecure_channel(gifee_server.endpoint) as channel:
        lock = v3lock_pb2_grpc.LockStub(channel)  # type: ignore[no-untyped-call]
        async with StoreClient(gifee_server.endpoint) as client:
            a = await client.lease_grant(P.LeaseGrantRequest(TTL=60))
            b = await client.lease_grant(P.LeaseGrantRequest(TTL=60))
            held = await lock.Lock(v3lock_pb2.LockRequest(name=b"L", lease=a.ID), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await lock.Lock(v3lock_pb2.LockRequest(name=b"L", lease=b.ID), timeout=1)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            async with asyncio.timeout(5):
                while len(await client.get(b"L/", prefix=True)) != 1:
                    await asyncio.sleep(0.05)
            await lock.Unlock(v3lock_pb2.UnlockRequest(key=held.key), timeout=5)
            await asyncio.sleep(0.3)
            assert await client.get(b"L/", prefix=True) == []


async def test_slow_watch_client_is_paused_and_caught_up(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gifee.store.node import WatchStream

    monkeypatch.setattr(WatchStream, "max_queued", 50)
    monkeypatch.setattr(WatchStream, "resume_below", 5)
    stream = store.watch_stream()
    stream.create(P.WatchCreateRequest(key=b"s/", range_end=prefix_end(b"s/")))
    stream.create(P.WatchCreateRequest(key=b"s/0007"))
    await store.put(P.PutRequest(key=b"s/first", value=b"x"))
    for i in range(400):  # nobody reads meanwhile
        await store.put(P.PutRequest(key=b"s/%04d" % (i % 20), value=b"%d" % i))
    assert stream.queue.qsize() <= 50 + 2  # bounded: the watchers were paused
    seen: dict[int, list[int]] = {0: [], 1: []}
    async with asyncio.timeout(10):
        async for resp in stream.responses():
            for ev in resp.events:
                seen[resp.watch_id].append(ev.kv.mod_revision)
            if len(seen[0]) == 401 and len(seen[1]) == 20:
                break
    # Every change exactly once, in order, across the pause.
    assert seen[0] == list(range(2, 403))
    assert seen[1] == [rev for rev in range(3, 403) if (rev - 3) % 20 == 7]
    stream.close()


def _rss_of_children_mib(pid: int) -> float:
    total = 0
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        for line in Path(f"/proc/{child}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


@pytest.mark.reference
async def test_watch_client_that_does_not_read_does_not_fill_the_workers(gifee_server: ServerProcess) -> None:
    import grpc

    from gifee.store.proto import rpc_pb2_grpc

    requests: asyncio.Queue[rpc_pb2.WatchRequest | None] = asyncio.Queue()

    async def outgoing() -> AsyncIterator[rpc_pb2.WatchRequest]:
        while (item := await requests.get()) is not None:
            yield item

    async with (
        grpc.aio.insecure_channel(gifee_server.endpoint) as channel,
        StoreClient(gifee_server.endpoint) as client,
    ):
        watch = rpc_pb2_grpc.WatchStub(channel).Watch(outgoing())  # type: ignore[no-untyped-call]
        requests.put_nowait(P.WatchRequest(create_request=P.WatchCreateRequest(key=b"big")))
        assert (await watch.read()).created
        before = _rss_of_children_mib(gifee_server.pid)
        value = b"v" * 500_000
        for i in range(150):  # 75 MB of events that nobody reads
            rev = await client.set(b"big", value)
            if i % 10 == 9:
                await client.compact(P.CompactionRequest(revision=rev))
        await asyncio.sleep(0.5)
        grown = _rss_of_children_mib(gifee_server.pid) - before
        assert grown < 40, f"gRPC workers grew by {grown:.0f} MiB for a watch nobody reads"
        # Reading again: the watch resumes; what compaction removed meanwhile ends it as etcd would.
        got = 0
        async with asyncio.timeout(20):
            while True:
                resp = await watch.read()
                got += len(resp.events)
                if resp.canceled or got == 150:
                    break
        assert got == 150 or resp.compact_revision > 0
        requests.put_nowait(None)
        watch.cancel()
