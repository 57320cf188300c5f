"""A Python client for a remote etcd-compatible store (gifee's or etcd itself).

Thin and asyncio-based: the methods take and return the protobuf messages of
etcd's API (the same ones the in-process `Store` uses), so code written
against the embedded store moves to a remote one by swapping the object.
Errors arrive as `StoreError` with etcd's code and text.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, TypeVar

import grpc

from gifee.store.errors import StoreError
from gifee.store.mvcc import prefix_end
from gifee.store.proto import rpc_pb2, rpc_pb2_grpc

T = TypeVar("T")


async def _unary(call: Any) -> Any:
    try:
        return await call
    except grpc.aio.AioRpcError as e:
        raise StoreError(e.code(), e.details() or "") from None


class StoreClient:
    """Connects to one endpoint, e.g. StoreClient("127.0.0.1:2379")."""

    def __init__(self, endpoint: str, *, timeout: float | None = 10.0) -> None:
        self.endpoint = endpoint.removeprefix("http://")
        self.timeout = timeout
        self._channel = grpc.aio.insecure_channel(
            self.endpoint, options=[("grpc.max_receive_message_length", 2**31 - 1)]
        )
        self.kv = rpc_pb2_grpc.KVStub(self._channel)  # type: ignore[no-untyped-call]
        self.watch_stub = rpc_pb2_grpc.WatchStub(self._channel)  # type: ignore[no-untyped-call]
        self.lease = rpc_pb2_grpc.LeaseStub(self._channel)  # type: ignore[no-untyped-call]
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(self._channel)  # type: ignore[no-untyped-call]
        self.cluster = rpc_pb2_grpc.ClusterStub(self._channel)  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> StoreClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- the API, message in, message out

    async def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        return await _unary(self.kv.Range(req, timeout=self.timeout))  # type: ignore[no-any-return]

    async def put(self, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        return await _unary(self.kv.Put(req, timeout=self.timeout))  # type: ignore[no-any-return]

    async def delete_range(self, req: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
        return await _unary(self.kv.DeleteRange(req, timeout=self.timeout))  # type: ignore[no-any-return]

    async def txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        return await _unary(self.kv.Txn(req, timeout=self.timeout))  # type: ignore[no-any-return]

    async def compact(self, req: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        return await _unary(self.kv.Compact(req, timeout=self.timeout))  # type: ignore[no-any-return]

    async def lease_grant(self, req: rpc_pb2.LeaseGrantRequest) -> rpc_pb2.LeaseGrantResponse:
        return await _unary(self.lease.LeaseGrant(req, timeout=self.timeout))  # type: ignore[no-any-return]

    async def lease_revoke(self, req: rpc_pb2.LeaseRevokeRequest) -> rpc_pb2.LeaseRevokeResponse:
        return await _unary(self.lease.LeaseRevoke(req, timeout=self.timeout))  # type: ignore[no-any-return]

    async def lease_time_to_live(self, req: rpc_pb2.LeaseTimeToLiveRequest) -> rpc_pb2.LeaseTimeToLiveResponse:
        return await _unary(self.lease.LeaseTimeToLive(req, timeout=self.timeout))  # type: ignore[no-any-return]

    async def status(self) -> rpc_pb2.StatusResponse:
        return await _unary(self.maintenance.Status(rpc_pb2.StatusRequest(), timeout=self.timeout))  # type: ignore[no-any-return]

    async def member_list(self) -> rpc_pb2.MemberListResponse:
        return await _unary(self.cluster.MemberList(rpc_pb2.MemberListRequest(), timeout=self.timeout))  # type: ignore[no-any-return]

    # -- conveniences

    async def get(self, key: bytes, *, prefix: bool = False, revision: int = 0) -> list[Any]:
        req = rpc_pb2.RangeRequest(key=key, revision=revision)
        if prefix:
            req.range_end = prefix_end(key)
        return list((await self.range(req)).kvs)

    async def set(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        """Put; returns the new store revision."""
        return (await self.put(rpc_pb2.PutRequest(key=key, value=value, lease=lease))).header.revision

    async def delete(self, key: bytes, *, prefix: bool = False) -> int:
        req = rpc_pb2.DeleteRangeRequest(key=key)
        if prefix:
            req.range_end = prefix_end(key)
        return (await self.delete_range(req)).deleted

    async def watch(
        self, key: bytes, *, prefix: bool = False, start_revision: int = 0, prev_kv: bool = False
    ) -> AsyncIterator[rpc_pb2.WatchResponse]:
        """Yield watch responses (events) for key or prefix until the caller stops iterating."""
        create = rpc_pb2.WatchCreateRequest(key=key, start_revision=start_revision, prev_kv=prev_kv)
        if prefix:
            create.range_end = prefix_end(key)
        requests: asyncio.Queue[rpc_pb2.WatchRequest | None] = asyncio.Queue()
        requests.put_nowait(rpc_pb2.WatchRequest(create_request=create))

        async def outgoing() -> AsyncIterator[rpc_pb2.WatchRequest]:
            while True:
                item = await requests.get()
                if item is None:
                    return
                yield item

        call = self.watch_stub.Watch(outgoing())
        try:
            async for resp in call:
                if resp.created and not resp.events and not resp.canceled:
                    continue
                yield resp
                if resp.canceled:
                    return
        except grpc.aio.AioRpcError as e:
            raise StoreError(e.code(), e.details() or "") from None
        finally:
            requests.put_nowait(None)
            call.cancel()

    async def keep_alive_once(self, lease_id: int) -> rpc_pb2.LeaseKeepAliveResponse:
        call = self.lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)]))
        try:
            async for resp in call:
                return resp  # type: ignore[no-any-return]
        except grpc.aio.AioRpcError as e:
            raise StoreError(e.code(), e.details() or "") from None
        finally:
            with contextlib.suppress(Exception):
                call.cancel()
        raise StoreError(grpc.StatusCode.UNAVAILABLE, "keepalive stream ended")
