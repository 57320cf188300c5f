"""Every RPC the store serves, as one table: path, message types, shape, and the call that answers it.

The table is the single description of the API. The core's dispatcher
(`ipc.CoreConnection`) runs calls from it, and the gRPC side (`grpcport.py`,
in a worker or in the core) routes each path to its index in it, so a method
is added or changed in one place.
Calls take decoded request messages and return (or yield) response messages;
they raise `StoreError` for etcd's errors and know nothing of transports.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from gifee.store import errors
from gifee.store.concurrency import ElectionService, LockService
from gifee.store.listen import GRPC_OVERHEAD_BYTES
from gifee.store.node import Store
from gifee.store.proto import rpc_pb2, v3election_pb2, v3lock_pb2

UNARY = "unary"
SERVER_STREAM = "server_stream"
BIDI = "bidi"


@dataclass(frozen=True)
class Method:
    service: str
    name: str
    request: type[Message]
    response: type[Message]
    kind: str
    call: Callable[..., Any]

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def receive_limit(max_request_bytes: int) -> int:
    return max_request_bytes + GRPC_OVERHEAD_BYTES


def check_size(data: bytes, limit: int) -> None:
    """grpc-go's own check and text; gRPC's C core would answer with different words."""
    if len(data) > limit:
        raise errors.StoreError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"grpc: received message larger than max ({len(data)} vs. {limit})",
        )


def decode(method: Method, data: bytes, limit: int) -> Any:
    check_size(data, limit)
    try:
        return method.request.FromString(data)
    except DecodeError as e:
        raise errors.StoreError(grpc.StatusCode.INTERNAL, f"grpc: error unmarshalling request: {e}") from None


async def watch_session(
    store: Store, requests: AsyncIterator[rpc_pb2.WatchRequest]
) -> AsyncIterator[rpc_pb2.WatchResponse]:
    """One Watch stream: requests in, responses out; ends when the client closes its side."""
    stream = store.watch_stream()
    failure: list[errors.StoreError] = []

    async def receive() -> None:
        # A client that half-closes keeps its watches: etcd ends the stream only
        # when the client goes away or sends something undecodable.
        try:
            async for req in requests:
                kind = req.WhichOneof("request_union")
                if kind == "create_request":
                    stream.create(req.create_request)
                elif kind == "cancel_request":
                    stream.cancel(req.cancel_request.watch_id)
                elif kind == "progress_request":
                    stream.progress()
        except errors.StoreError as e:
            failure.append(e)
            stream.close()
        except Exception:  # a broken client stream ends the watch, never the server
            stream.close()

    receiver = asyncio.get_running_loop().create_task(receive())
    try:
        async for resp in stream.responses():
            yield resp
        if failure:
            raise failure[0]
    finally:
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver
        stream.close()


async def keepalive_session(
    store: Store, requests: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest]
) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
    async for req in requests:
        yield await store.lease_keepalive(req.ID)


def methods(store: Store) -> list[Method]:
    locks = LockService(store)
    elections = ElectionService(store)

    async def alarm(req: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        resp = await store.alarm(req)
        resp.ClearField("header")  # etcd's Alarm answers without a header
        return resp

    async def defragment(_: rpc_pb2.DefragmentRequest) -> rpc_pb2.DefragmentResponse:
        await store.defragment()
        return rpc_pb2.DefragmentResponse()  # etcd's Defragment answers without a header

    def cluster(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        async def call(req: Any) -> Any:
            resp = await fn(req)
            resp.header.revision = 0  # the cluster service's header carries no revision in etcd
            return resp

        return call

    async def member_list(_: rpc_pb2.MemberListRequest) -> rpc_pb2.MemberListResponse:
        return await store.member_list()

    def as_client_error(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """v3lock and v3election run etcd's client recipes, whose errors reach the caller as UNKNOWN."""

        async def run(req: Any) -> Any:
            try:
                return await fn(req)
            except errors.StoreError as e:
                raise errors.StoreError(grpc.StatusCode.UNKNOWN, e.message) from None

        return run

    async def unlock(req: v3lock_pb2.UnlockRequest) -> v3lock_pb2.UnlockResponse:
        resp = await store.delete_range(rpc_pb2.DeleteRangeRequest(key=req.key))
        return v3lock_pb2.UnlockResponse(header=resp.header)

    async def proclaim(req: v3election_pb2.ProclaimRequest) -> v3election_pb2.ProclaimResponse:
        if not req.HasField("leader"):
            raise errors.StoreError(errors.ELECTION_NO_LEADER.code, '"leader" field must be provided')
        return v3election_pb2.ProclaimResponse(header=await elections._proclaim(req.leader, req.value))

    async def resign(req: v3election_pb2.ResignRequest) -> v3election_pb2.ResignResponse:
        if not req.HasField("leader"):
            raise errors.StoreError(errors.ELECTION_NO_LEADER.code, '"leader" field must be provided')
        return await elections._resign(req.leader)

    r, e, lk = rpc_pb2, v3election_pb2, v3lock_pb2
    kv, watch, lease = "etcdserverpb.KV", "etcdserverpb.Watch", "etcdserverpb.Lease"
    mt, cl = "etcdserverpb.Maintenance", "etcdserverpb.Cluster"
    lock, election = "v3lockpb.Lock", "v3electionpb.Election"
    return [
        Method(kv, "Range", r.RangeRequest, r.RangeResponse, UNARY, store.range),
        Method(kv, "Put", r.PutRequest, r.PutResponse, UNARY, store.put),
        Method(kv, "DeleteRange", r.DeleteRangeRequest, r.DeleteRangeResponse, UNARY, store.delete_range),
        Method(kv, "Txn", r.TxnRequest, r.TxnResponse, UNARY, store.txn),
        Method(kv, "Compact", r.CompactionRequest, r.CompactionResponse, UNARY, store.compact),
        Method(
            watch, "Watch", r.WatchRequest, r.WatchResponse, BIDI, lambda reqs: watch_session(store, reqs)
        ),
        Method(lease, "LeaseGrant", r.LeaseGrantRequest, r.LeaseGrantResponse, UNARY, store.lease_grant),
        Method(lease, "LeaseRevoke", r.LeaseRevokeRequest, r.LeaseRevokeResponse, UNARY, store.lease_revoke),
        Method(
            lease,
            "LeaseKeepAlive",
            r.LeaseKeepAliveRequest,
            r.LeaseKeepAliveResponse,
            BIDI,
            lambda reqs: keepalive_session(store, reqs),
        ),
        Method(
            lease,
            "LeaseTimeToLive",
            r.LeaseTimeToLiveRequest,
            r.LeaseTimeToLiveResponse,
            UNARY,
            store.lease_time_to_live,
        ),
        Method(
            lease,
            "LeaseLeases",
            r.LeaseLeasesRequest,
            r.LeaseLeasesResponse,
            UNARY,
            lambda _: store.lease_leases(),
        ),
        Method(mt, "Alarm", r.AlarmRequest, r.AlarmResponse, UNARY, alarm),
        Method(mt, "Status", r.StatusRequest, r.StatusResponse, UNARY, lambda _: store.status()),
        Method(mt, "Defragment", r.DefragmentRequest, r.DefragmentResponse, UNARY, defragment),
        Method(mt, "Hash", r.HashRequest, r.HashResponse, UNARY, lambda _: store.hash()),
        Method(mt, "HashKV", r.HashKVRequest, r.HashKVResponse, UNARY, store.hash_kv),
        Method(
            mt, "Snapshot", r.SnapshotRequest, r.SnapshotResponse, SERVER_STREAM, lambda _: store.snapshot()
        ),
        Method(mt, "MoveLeader", r.MoveLeaderRequest, r.MoveLeaderResponse, UNARY, store.move_leader),
        Method(cl, "MemberList", r.MemberListRequest, r.MemberListResponse, UNARY, cluster(member_list)),
        Method(cl, "MemberAdd", r.MemberAddRequest, r.MemberAddResponse, UNARY, cluster(store.member_add)),
        Method(
            cl,
            "MemberRemove",
            r.MemberRemoveRequest,
            r.MemberRemoveResponse,
            UNARY,
            cluster(store.member_remove),
        ),
        Method(
            cl,
            "MemberUpdate",
            r.MemberUpdateRequest,
            r.MemberUpdateResponse,
            UNARY,
            cluster(store.member_update),
        ),
        Method(
            cl,
            "MemberPromote",
            r.MemberPromoteRequest,
            r.MemberPromoteResponse,
            UNARY,
            cluster(store.member_promote),
        ),
        Method(lock, "Lock", lk.LockRequest, lk.LockResponse, UNARY, as_client_error(locks._lock)),
        Method(lock, "Unlock", lk.UnlockRequest, lk.UnlockResponse, UNARY, as_client_error(unlock)),
        Method(
            election,
            "Campaign",
            e.CampaignRequest,
            e.CampaignResponse,
            UNARY,
            as_client_error(elections._campaign),
        ),
        Method(election, "Proclaim", e.ProclaimRequest, e.ProclaimResponse, UNARY, as_client_error(proclaim)),
        Method(
            election,
            "Leader",
            e.LeaderRequest,
            e.LeaderResponse,
            UNARY,
            as_client_error(lambda req: elections._leader(req.name)),
        ),
        Method(election, "Observe", e.LeaderRequest, e.LeaderResponse, SERVER_STREAM, elections.observe),
        Method(election, "Resign", e.ResignRequest, e.ResignResponse, UNARY, as_client_error(resign)),
    ]
