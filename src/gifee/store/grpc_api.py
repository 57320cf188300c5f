"""etcd's v3 gRPC services over a `Store`: translation only, no rules.

Each handler hands the decoded request to the store and turns a `StoreError`
into the gRPC status etcd would send. Unexpected exceptions are logged and
answered with UNKNOWN so that one bad request never takes the server down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from gifee.store.errors import StoreError
from gifee.store.node import Store
from gifee.store.proto import rpc_pb2, rpc_pb2_grpc

log = logging.getLogger("gifee.store.grpc")

T = TypeVar("T")


async def call(context: grpc.aio.ServicerContext[Any, Any], work: Awaitable[T]) -> T:
    try:
        return await work
    except StoreError as e:
        await context.abort(e.code, e.message)
    except (asyncio.CancelledError, grpc.aio.AbortError):
        raise
    except Exception:
        log.exception("request failed")
        await context.abort(grpc.StatusCode.UNKNOWN, "etcdserver: internal error")
    raise AssertionError("unreachable")


class KVService(rpc_pb2_grpc.KVServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    async def Range(self, request: rpc_pb2.RangeRequest, context: Any) -> rpc_pb2.RangeResponse:
        return await call(context, self.store.range(request))

    async def Put(self, request: rpc_pb2.PutRequest, context: Any) -> rpc_pb2.PutResponse:
        return await call(context, self.store.put(request))

    async def DeleteRange(self, request: rpc_pb2.DeleteRangeRequest, context: Any) -> rpc_pb2.DeleteRangeResponse:
        return await call(context, self.store.delete_range(request))

    async def Txn(self, request: rpc_pb2.TxnRequest, context: Any) -> rpc_pb2.TxnResponse:
        return await call(context, self.store.txn(request))

    async def Compact(self, request: rpc_pb2.CompactionRequest, context: Any) -> rpc_pb2.CompactionResponse:
        return await call(context, self.store.compact(request))


class WatchService(rpc_pb2_grpc.WatchServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    async def Watch(
        self, request_iterator: AsyncIterator[rpc_pb2.WatchRequest], context: Any
    ) -> AsyncIterator[rpc_pb2.WatchResponse]:
        stream = self.store.watch_stream()

        async def receive() -> None:
            try:
                async for req in request_iterator:
                    kind = req.WhichOneof("request_union")
                    if kind == "create_request":
                        stream.create(req.create_request)
                    elif kind == "cancel_request":
                        stream.cancel(req.cancel_request.watch_id)
                    elif kind == "progress_request":
                        stream.progress()
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                pass
            except Exception:
                log.exception("watch stream receive failed")
            finally:
                # The client closed its side (or went away): etcd ends the stream then.
                stream.close()

        receiver = asyncio.get_running_loop().create_task(receive())
        try:
            async for resp in stream.responses():
                yield resp
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
            stream.close()


class LeaseService(rpc_pb2_grpc.LeaseServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    async def LeaseGrant(self, request: rpc_pb2.LeaseGrantRequest, context: Any) -> rpc_pb2.LeaseGrantResponse:
        return await call(context, self.store.lease_grant(request))

    async def LeaseRevoke(self, request: rpc_pb2.LeaseRevokeRequest, context: Any) -> rpc_pb2.LeaseRevokeResponse:
        return await call(context, self.store.lease_revoke(request))

    async def LeaseKeepAlive(
        self, request_iterator: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest], context: Any
    ) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        async for req in request_iterator:
            yield self.store.lease_keepalive(req.ID)

    async def LeaseTimeToLive(
        self, request: rpc_pb2.LeaseTimeToLiveRequest, context: Any
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        return await call(context, self.store.lease_time_to_live(request))

    async def LeaseLeases(self, request: rpc_pb2.LeaseLeasesRequest, context: Any) -> rpc_pb2.LeaseLeasesResponse:
        return await call(context, self.store.lease_leases())


class MaintenanceService(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    async def Alarm(self, request: rpc_pb2.AlarmRequest, context: Any) -> rpc_pb2.AlarmResponse:
        return await call(context, self.store.alarm(request))

    async def Status(self, request: rpc_pb2.StatusRequest, context: Any) -> rpc_pb2.StatusResponse:
        return await call(context, self.store.status())

    async def Defragment(self, request: rpc_pb2.DefragmentRequest, context: Any) -> rpc_pb2.DefragmentResponse:
        return await call(context, self.store.defragment())

    async def Hash(self, request: rpc_pb2.HashRequest, context: Any) -> rpc_pb2.HashResponse:
        return await call(context, self.store.hash())

    async def HashKV(self, request: rpc_pb2.HashKVRequest, context: Any) -> rpc_pb2.HashKVResponse:
        return await call(context, self.store.hash_kv(request))

    async def Snapshot(
        self, request: rpc_pb2.SnapshotRequest, context: Any
    ) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        async for chunk in self.store.snapshot():
            yield chunk

    async def MoveLeader(self, request: rpc_pb2.MoveLeaderRequest, context: Any) -> rpc_pb2.MoveLeaderResponse:
        if request.targetID == self.store.member_id:
            return rpc_pb2.MoveLeaderResponse(header=self.store.sm.header())
        await context.abort(grpc.StatusCode.NOT_FOUND, "etcdserver: bad leader transferee")
        raise AssertionError("unreachable")


class ClusterService(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    async def MemberList(self, request: rpc_pb2.MemberListRequest, context: Any) -> rpc_pb2.MemberListResponse:
        return await call(context, self.store.member_list())

    async def _single_member(self, context: Any) -> Any:
        # Membership changes arrive with Raft replication (store part 2).
        await context.abort(grpc.StatusCode.UNAVAILABLE, "etcdserver/api/v3rpc: not capable")

    async def MemberAdd(self, request: rpc_pb2.MemberAddRequest, context: Any) -> rpc_pb2.MemberAddResponse:
        return await self._single_member(context)  # type: ignore[no-any-return]

    async def MemberRemove(self, request: rpc_pb2.MemberRemoveRequest, context: Any) -> rpc_pb2.MemberRemoveResponse:
        return await self._single_member(context)  # type: ignore[no-any-return]

    async def MemberUpdate(self, request: rpc_pb2.MemberUpdateRequest, context: Any) -> rpc_pb2.MemberUpdateResponse:
        return await self._single_member(context)  # type: ignore[no-any-return]

    async def MemberPromote(
        self, request: rpc_pb2.MemberPromoteRequest, context: Any
    ) -> rpc_pb2.MemberPromoteResponse:
        return await self._single_member(context)  # type: ignore[no-any-return]


ServiceAdder = Callable[[grpc.aio.Server], None]


def add_services(server: grpc.aio.Server, store: Store) -> None:
    rpc_pb2_grpc.add_KVServicer_to_server(KVService(store), server)  # type: ignore[no-untyped-call]
    rpc_pb2_grpc.add_WatchServicer_to_server(WatchService(store), server)  # type: ignore[no-untyped-call]
    rpc_pb2_grpc.add_LeaseServicer_to_server(LeaseService(store), server)  # type: ignore[no-untyped-call]
    rpc_pb2_grpc.add_MaintenanceServicer_to_server(MaintenanceService(store), server)  # type: ignore[no-untyped-call]
    rpc_pb2_grpc.add_ClusterServicer_to_server(ClusterService(store), server)  # type: ignore[no-untyped-call]
