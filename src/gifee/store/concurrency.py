"""etcd's v3lock and v3election services, built from KV, Lease and Watch.

The recipes are etcd's client-side concurrency ones, run inside the server:
a contender writes `<name>/<lease in hex>` with its lease if it is not there
yet; the contender whose key has the lowest create revision holds the lock
(or leads); the others each wait for the deletion of the key created just
before theirs. Keys die with their lease, so a crashed holder releases by
expiry. `etcdctl lock` and `etcdctl elect` run the same recipe on the client
side over KV, Lease and Watch, so both paths meet on the same keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from gifee.store import errors
from gifee.store.errors import StoreError
from gifee.store.mvcc import prefix_end
from gifee.store.node import Store
from gifee.store.proto import (
    kv_pb2,
    rpc_pb2,
    v3election_pb2,
    v3lock_pb2,
)

Compare = rpc_pb2.Compare
RangeRequest = rpc_pb2.RangeRequest


def _contender_key(prefix: bytes, lease: int) -> bytes:
    return prefix + b"%x" % lease


async def _wait_delete(store: Store, key: bytes, after: int) -> None:
    """Return once key is deleted at a revision after `after`."""
    stream = store.watch_stream()
    try:
        stream.create(rpc_pb2.WatchCreateRequest(key=key, start_revision=after + 1))
        async for resp in stream.responses():
            if resp.canceled:
                return
            if any(ev.type == kv_pb2.Event.DELETE for ev in resp.events):
                return
    finally:
        stream.close()


async def _wait_deletes(store: Store, prefix: bytes, max_create_rev: int) -> rpc_pb2.ResponseHeader:
    """Wait until no key under prefix has a create revision <= max_create_rev (etcd's waitDeletes)."""
    while True:
        resp = await store.range(
            RangeRequest(
                key=prefix,
                range_end=prefix_end(prefix),
                max_create_revision=max_create_rev,
                sort_target=RangeRequest.CREATE,
                sort_order=RangeRequest.DESCEND,
                limit=1,
            )
        )
        if not resp.kvs:
            return resp.header
        await _wait_delete(store, resp.kvs[0].key, resp.header.revision)


async def _wait_withdrawing(store: Store, prefix: bytes, my_rev: int, key: bytes) -> rpc_pb2.ResponseHeader:
    """Wait for our turn; a caller who gives up (cancels) withdraws its key, as etcd's Mutex does."""
    try:
        return await _wait_deletes(store, prefix, my_rev - 1)
    except asyncio.CancelledError:
        cleanup = rpc_pb2.TxnRequest(
            compare=[Compare(key=key, target=Compare.CREATE, result=Compare.EQUAL, create_revision=my_rev)],
            success=[rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key))],
        )
        # Shielded: the withdrawal must finish although the waiter was cancelled.
        await asyncio.shield(asyncio.ensure_future(store.txn(cleanup)))
        raise


async def _claim(store: Store, key: bytes, value: bytes, lease: int, prefix: bytes) -> rpc_pb2.TxnResponse:
    """Create key with the lease unless it exists; also read the key and the current owner."""
    get_key = rpc_pb2.RequestOp(request_range=RangeRequest(key=key))
    get_owner = rpc_pb2.RequestOp(
        request_range=RangeRequest(
            key=prefix, range_end=prefix_end(prefix), sort_target=RangeRequest.CREATE,
            sort_order=RangeRequest.ASCEND, limit=1,
        )
    )
    txn = rpc_pb2.TxnRequest(
        compare=[Compare(key=key, target=Compare.CREATE, result=Compare.EQUAL, create_revision=0)],
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease)), get_owner],
        failure=[get_key, get_owner],
    )
    return await store.txn(txn)


class LockService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def _lock(self, req: v3lock_pb2.LockRequest) -> v3lock_pb2.LockResponse:
        prefix = req.name + b"/"
        key = _contender_key(prefix, req.lease)
        resp = await _claim(self.store, key, b"", req.lease, prefix)
        my_rev = resp.header.revision if resp.succeeded else resp.responses[0].response_range.kvs[0].create_revision
        owner = resp.responses[1].response_range.kvs
        header = resp.header
        if not owner or owner[0].create_revision != my_rev:
            header = await _wait_withdrawing(self.store, prefix, my_rev, key)
        out = v3lock_pb2.LockResponse(key=key)
        out.header.CopyFrom(header)
        return out


class ElectionService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def _campaign(self, req: v3election_pb2.CampaignRequest) -> v3election_pb2.CampaignResponse:
        prefix = req.name + b"/"
        key = _contender_key(prefix, req.lease)
        resp = await _claim(self.store, key, req.value, req.lease, prefix)
        rev = resp.header.revision
        header = resp.header
        if not resp.succeeded:
            kv = resp.responses[0].response_range.kvs[0]
            rev = kv.create_revision
            if kv.value != req.value:
                await self._proclaim(v3election_pb2.LeaderKey(name=req.name, key=key, rev=rev, lease=req.lease), req.value)
        await _wait_withdrawing(self.store, prefix, rev, key)
        out = v3election_pb2.CampaignResponse(
            leader=v3election_pb2.LeaderKey(name=req.name, key=key, rev=rev, lease=req.lease)
        )
        out.header.CopyFrom(header)
        return out

    async def _proclaim(self, leader: v3election_pb2.LeaderKey, value: bytes) -> rpc_pb2.ResponseHeader:
        txn = rpc_pb2.TxnRequest(
            compare=[Compare(key=leader.key, target=Compare.CREATE, result=Compare.EQUAL, create_revision=leader.rev)],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=leader.key, value=value, lease=leader.lease))],
        )
        resp = await self.store.txn(txn)
        if not resp.succeeded:
            raise errors.ELECTION_NOT_LEADER
        return resp.header

    async def _leader(self, name: bytes) -> v3election_pb2.LeaderResponse:
        prefix = name + b"/"
        resp = await self.store.range(
            RangeRequest(
                key=prefix, range_end=prefix_end(prefix), sort_target=RangeRequest.CREATE,
                sort_order=RangeRequest.ASCEND, limit=1,
            )
        )
        if not resp.kvs:
            raise errors.ELECTION_NO_LEADER
        return v3election_pb2.LeaderResponse(header=resp.header, kv=resp.kvs[0])

    async def _resign(self, leader: v3election_pb2.LeaderKey) -> v3election_pb2.ResignResponse:
        txn = rpc_pb2.TxnRequest(
            compare=[Compare(key=leader.key, target=Compare.CREATE, result=Compare.EQUAL, create_revision=leader.rev)],
            success=[rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=leader.key))],
        )
        resp = await self.store.txn(txn)
        return v3election_pb2.ResignResponse(header=resp.header)

    async def observe(self, request: v3election_pb2.LeaderRequest) -> AsyncIterator[v3election_pb2.LeaderResponse]:
        """Stream the leader's key-value each time leadership or the proclaimed value changes."""
        prefix = request.name + b"/"
        while True:
            try:
                current = await self._leader(request.name)
            except StoreError:
                current = None
            if current is None:
                # Wait for the first contender to appear.
                stream = self.store.watch_stream()
                try:
                    rev = self.store.sm.mvcc.revision
                    stream.create(rpc_pb2.WatchCreateRequest(key=prefix, range_end=prefix_end(prefix), start_revision=rev + 1))
                    async for resp in stream.responses():
                        if any(ev.type == kv_pb2.Event.PUT for ev in resp.events):
                            break
                finally:
                    stream.close()
                continue
            yield current
            # Follow this leader's key until it is deleted; every put is a new proclamation.
            stream = self.store.watch_stream()
            try:
                stream.create(
                    rpc_pb2.WatchCreateRequest(key=current.kv.key, start_revision=current.header.revision + 1)
                )
                async for resp in stream.responses():
                    gone = False
                    for ev in resp.events:
                        if ev.type == kv_pb2.Event.DELETE:
                            gone = True
                            break
                        yield v3election_pb2.LeaderResponse(header=resp.header, kv=ev.kv)
                    if gone:
                        break
            finally:
                stream.close()
