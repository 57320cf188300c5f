"""Group commit for the API server's writes: guarded single-key Txns that arrive while earlier ones
are still at the store go to it together, as one Txn whose operations are the original Txns.

Why: each store call costs both sides a gRPC round trip, and the store one Raft entry and WAL write;
the profiles had per-call costs as the largest share of the API server and the store. Grouping only
kicks in under load: with fewer than `depth` calls in flight a write goes out alone, at once.

Semantics kept: every write is its own nested Txn with its own compare (create-if-absent, or the
object's mod revision), so each object is guarded by its own revision and succeeds or fails alone; a
store error fails every write of the group, as it would have failed each alone. Keys in one group are
distinct (etcd refuses a Txn that puts a key twice); a second write to a key waits for the next group.
What changes: the writes of one group share the store revision, so objects written together have the
same resourceVersion (each object's own versions still increase; watch events of one revision are
sent together, see server.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc

from gifee.store.client import StoreClient
from gifee.store.errors import StoreError
from gifee.store.proto import rpc_pb2

MAX_OPS = 64  # etcd's --max-txn-ops is 128, and a nested Txn counts against its parent's budget
MAX_BYTES = 1 << 20  # etcd's default --max-request-bytes is 1.5 MiB
DEPTH = 2  # store calls in flight before writes start to wait and group


@dataclass
class _Write:
    key: bytes
    txn: rpc_pb2.TxnRequest
    size: int
    done: asyncio.Future[tuple[bool, int]] = field(repr=False)


def take_group(pending: list[_Write], max_ops: int = MAX_OPS,
               max_bytes: int = MAX_BYTES) -> tuple[list[_Write], list[_Write]]:
    """The next group (oldest first, distinct keys, within the limits; the first write always goes,
    whatever its size) and what stays pending, in order. Writes whose caller went away (a cancelled
    request) are dropped: a write nobody waits for is never sent."""
    group: list[_Write] = []
    rest: list[_Write] = []
    keys: set[bytes] = set()
    size = 0
    for w in pending:
        if w.done.done():
            continue
        if len(group) < max_ops and w.key not in keys and (not group or size + w.size <= max_bytes):
            group.append(w)
            keys.add(w.key)
            size += w.size
        else:
            rest.append(w)
    return group, rest


def group_request(group: list[_Write]) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_txn=w.txn) for w in group])


def group_results(resp: rpc_pb2.TxnResponse, n: int) -> list[tuple[bool, int]]:
    """(succeeded, revision) per write of a group's answer."""
    revision = int(resp.header.revision)
    results = [(bool(op.response_txn.succeeded), revision) for op in resp.responses]
    if len(results) != n:
        raise RuntimeError(f"the store answered {len(results)} of {n} grouped writes")
    return results


class TxnBatcher:
    def __init__(self, client: StoreClient, *, max_ops: int = MAX_OPS, max_bytes: int = MAX_BYTES,
                 depth: int = DEPTH) -> None:
        self.client = client
        self.max_ops, self.max_bytes, self.depth = max(1, max_ops), max_bytes, max(1, depth)
        self._pending: list[_Write] = []
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def txn(self, key: bytes, txn: rpc_pb2.TxnRequest) -> tuple[bool, int]:
        """Run a Txn that writes only `key` (its compare guards it); (succeeded, store revision).
        Raises the store's error (StoreError) as a lone call would."""
        if self.max_ops == 1:
            resp = await self.client.txn(txn)
            return bool(resp.succeeded), int(resp.header.revision)
        done: asyncio.Future[tuple[bool, int]] = asyncio.get_running_loop().create_future()
        write = _Write(key, txn, txn.ByteSize(), done)
        self._pending.append(write)
        self._start()
        try:
            return await done
        except asyncio.CancelledError:  # the request went away: unsent, the write must not happen later
            if write in self._pending:
                self._pending.remove(write)
            raise

    def _start(self) -> None:
        while self._pending and self._inflight < self.depth:
            group, self._pending = take_group(self._pending, self.max_ops, self.max_bytes)
            self._inflight += 1
            task = asyncio.create_task(self._send(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, group: list[_Write]) -> None:
        results: list[tuple[bool, int] | BaseException]
        try:
            if len(group) == 1:  # alone: the Txn as it is
                resp = await self.client.txn(group[0].txn)
                results = [(bool(resp.succeeded), int(resp.header.revision))]
            else:
                try:
                    results = list(group_results(await self.client.txn(group_request(group)), len(group)))
                except StoreError as e:
                    if e.code != grpc.StatusCode.INVALID_ARGUMENT:
                        raise
                    # Refused as a whole (a store with a lower --max-txn-ops or --max-request-bytes than
                    # assumed): each write alone may fit, and gets its own answer.
                    results = await self._one_by_one(group)
            for w, result in zip(group, results, strict=True):
                if w.done.done():
                    continue
                if isinstance(result, BaseException):
                    w.done.set_exception(result)
                else:
                    w.done.set_result(result)
        except BaseException as e:  # noqa: BLE001 - every waiter gets the failure (cancellation too)
            for w in group:
                if not w.done.done():
                    w.done.set_exception(e if isinstance(e, Exception) else asyncio.CancelledError())
            if not isinstance(e, Exception):
                raise
        finally:
            self._inflight -= 1
            self._start()

    async def _one_by_one(self, group: list[_Write]) -> list[tuple[bool, int] | BaseException]:
        out: list[tuple[bool, int] | BaseException] = []
        for w in group:
            try:
                resp = await self.client.txn(w.txn)
                out.append((bool(resp.succeeded), int(resp.header.revision)))
            except StoreError as e:
                out.append(e)
        return out
