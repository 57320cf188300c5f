"""Group commit of the API server's writes (txnbatch.py), on gifee's store and on etcd: concurrent
writes share store Txns, yet each object is guarded by its own revision and fails alone."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gifee.api import errors, resources
from gifee.api.storage import Storage
from gifee.api.txnbatch import _Write, take_group
from gifee.api.watchcache import QUEUE_LIMIT, Subscription
from gifee.api.watchcore import Event, WatchFilter
from gifee.store.client import StoreClient
from gifee.store.proto import rpc_pb2
from tests.api.harness import start_store

CONFIGMAPS = resources.by_plural("configmaps")
assert CONFIGMAPS is not None


@pytest.fixture(scope="module", params=["gifee", "etcd"])
def endpoint(request: pytest.FixtureRequest) -> Iterator[str]:
    workdir = Path(tempfile.mkdtemp(prefix="gifee-txnbatch-"))
    store, ep = start_store(request.param, workdir / "store")
    try:
        yield ep
    finally:
        store.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def cm(name: str, value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "batch"},
            "data": {"v": value}}


async def _scenario(endpoint: str) -> None:
    assert CONFIGMAPS is not None
    async with StoreClient(endpoint) as client:
        storage = Storage(client)
        created = await asyncio.gather(*(storage.create(CONFIGMAPS, cm(f"c{i}", "0")) for i in range(200)))
        revisions = [int(o["metadata"]["resourceVersion"]) for o in created]
        assert len(set(revisions)) < len(revisions)  # grouped: some objects share a store revision
        # every object's resourceVersion is its key's mod revision in the store
        for o in created:
            kvs = await client.get(CONFIGMAPS.key("batch", o["metadata"]["name"]))
            assert kvs[0].mod_revision == int(o["metadata"]["resourceVersion"])
        # a create of an existing name fails alone, among creates that succeed
        again = await asyncio.gather(*(storage.create(CONFIGMAPS, cm(f"c{i}" if i % 2 else f"d{i}", "0"))
                                       for i in range(100)), return_exceptions=True)
        for i, r in enumerate(again):
            if i % 2:
                assert isinstance(r, errors.ApiError) and r.reason == "AlreadyExists"
            else:
                assert isinstance(r, dict) and r["metadata"]["name"] == f"d{i}"
        # guarded updates in one burst: a stale revision fails alone, the others are written
        writes = []
        for i, o in enumerate(created[:100]):
            rv = int(o["metadata"]["resourceVersion"]) - (1 if i % 3 == 0 else 0)
            writes.append(storage.put_if(CONFIGMAPS, cm(o["metadata"]["name"], "1"), rv))
        results = await asyncio.gather(*writes)
        for i, r in enumerate(results):
            assert (r is None) == (i % 3 == 0)
        # two writes of one key in flight go in different Txns (a Txn may not put a key twice): guarded
        # by the revision both started from, exactly one is written, as when they race unbatched
        for o in created[150:160]:
            rv = int(o["metadata"]["resourceVersion"])
            pair = await asyncio.gather(storage.put_if(CONFIGMAPS, cm(o["metadata"]["name"], "a"), rv),
                                        storage.put_if(CONFIGMAPS, cm(o["metadata"]["name"], "b"), rv))
            assert sum(1 for r in pair if r is not None) == 1
        # deletes are guarded alone too
        gone = await asyncio.gather(*(storage.delete_if(CONFIGMAPS, o, int(o["metadata"]["resourceVersion"]))
                                      for o in created[100:140]))
        assert all(g is not None for g in gone)


def test_grouped_writes_stay_guarded_one_by_one(endpoint: str) -> None:
    asyncio.run(_scenario(endpoint))


def _write(key: bytes, size: int = 10) -> _Write:
    return _Write(key, rpc_pb2.TxnRequest(), size, asyncio.Future(loop=asyncio.new_event_loop()))


def test_take_group_keeps_keys_distinct_and_limits() -> None:
    pending = [_write(b"a"), _write(b"b"), _write(b"a"), _write(b"c"), _write(b"d", 500)]
    group, rest = take_group(pending, max_ops=3, max_bytes=1000)
    assert [w.key for w in group] == [b"a", b"b", b"c"] and [w.key for w in rest] == [b"a", b"d"]
    group, rest = take_group([_write(b"x", 900), _write(b"y", 200), _write(b"z", 50)], max_bytes=1000)
    assert [w.key for w in group] == [b"x", b"z"] and [w.key for w in rest] == [b"y"]
    group, rest = take_group([_write(b"huge", 5000)], max_bytes=1000)  # alone, whatever its size
    assert [w.key for w in group] == [b"huge"] and rest == []


def test_a_watcher_that_falls_behind_is_closed_between_revisions() -> None:
    async def run() -> None:
        sub = Subscription(WatchFilter("", "", (), ()), 0)

        def ev(rev: int, i: int) -> Event:
            obj = {"metadata": {"name": f"o{i}", "namespace": "", "resourceVersion": str(rev)}}
            return Event("ADDED", obj, None, rev)

        for i in range(QUEUE_LIMIT - 1):
            sub.offer(ev(i + 1, i))
        for i in range(5):  # a revision that starts below the limit is queued whole
            sub.offer(ev(QUEUE_LIMIT, QUEUE_LIMIT + i))
        assert not sub.closed and len(sub.events) == QUEUE_LIMIT + 4
        sub.offer(ev(QUEUE_LIMIT + 1, 0))
        assert sub.closed
    asyncio.run(run())


class _FakeStore:
    """Answers Txns as succeeded; holds each call until released; refuses groups if asked."""

    def __init__(self, refuse_groups: bool = False) -> None:
        self.calls: list[rpc_pb2.TxnRequest] = []
        self.release = asyncio.Event()
        self.refuse_groups = refuse_groups

    async def txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        import grpc

        from gifee.store.errors import StoreError

        self.calls.append(req)
        await self.release.wait()
        nested = [op.request_txn for op in req.success if op.HasField("request_txn")]
        if nested and self.refuse_groups:
            raise StoreError(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
        resp = rpc_pb2.TxnResponse(succeeded=True)
        resp.header.revision = len(self.calls)
        for _ in nested:
            resp.responses.add().response_txn.succeeded = True
        return resp


def _put(key: bytes) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=b"v"))])


def test_a_cancelled_request_s_write_is_never_sent() -> None:
    from gifee.api.txnbatch import TxnBatcher

    async def scenario() -> None:
        store = _FakeStore()
        batcher = TxnBatcher(store, depth=1)  # type: ignore[arg-type]
        first = asyncio.create_task(batcher.txn(b"a", _put(b"a")))
        waiting = asyncio.create_task(batcher.txn(b"b", _put(b"b")))
        await asyncio.sleep(0.05)
        assert len(store.calls) == 1  # b waits for a group
        waiting.cancel()
        await asyncio.sleep(0)
        store.release.set()
        assert (await first)[0] is True
        await asyncio.sleep(0.05)
        assert [c.success[0].request_put.key for c in store.calls] == [b"a"]

    asyncio.run(scenario())


def test_a_group_refused_whole_is_sent_again_write_by_write() -> None:
    from gifee.api.txnbatch import TxnBatcher

    async def scenario() -> None:
        store = _FakeStore(refuse_groups=True)
        batcher = TxnBatcher(store, depth=1)  # type: ignore[arg-type]
        tasks = [asyncio.create_task(batcher.txn(k, _put(k))) for k in (b"a", b"b", b"c")]
        await asyncio.sleep(0.05)
        store.release.set()
        results = await asyncio.gather(*tasks)
        assert all(ok for ok, _ in results)
        # a alone; b and c as a group (refused); then b and c one by one
        assert [len(c.success) for c in store.calls] == [1, 2, 1, 1]

    asyncio.run(scenario())
