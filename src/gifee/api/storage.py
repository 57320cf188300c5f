"""Objects in an etcd v3 store: the thin I/O shell under the REST handlers.

Keys are /registry/<plural>/<namespace>/<name> (or /registry/<plural>/<name>),
values the object's JSON without metadata.resourceVersion; on read the version
is the key's mod_revision. Every write is one etcd Txn guarded by the key's
create or mod revision, so concurrent writers get Conflict/AlreadyExists and
nothing is half-written. Works with any etcd v3 server (gifee's store or etcd).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from gifee.api import errors, jsoncodec
from gifee.api.resources import Resource
from gifee.api.selectors import FieldRequirement, Selector, fields_match, labels_match
from gifee.api.txnbatch import MAX_OPS, TxnBatcher
from gifee.api.versions import continue_expired, decode_continue, encode_continue, too_old
from gifee.store.client import StoreClient
from gifee.store.errors import StoreError
from gifee.store.mvcc import prefix_end
from gifee.store.proto import rpc_pb2

Obj = dict[str, Any]
UPDATE_RETRIES = 16


def decode(res: Resource, value: bytes, mod_revision: int) -> Obj:
    obj: Obj = jsoncodec.loads(value)
    obj["apiVersion"] = res.api_version
    obj["kind"] = res.kind
    obj.setdefault("metadata", {})["resourceVersion"] = str(mod_revision)
    return obj


def as_written(res: Resource, obj: Obj, mod_revision: int) -> Obj:
    """The object as a read would give it after writing it at mod_revision, without decoding what
    was just encoded: a shallow copy (metadata copied too) that shares the rest with obj, which the
    writer owns and no longer changes."""
    out = dict(obj)
    out["apiVersion"] = res.api_version
    out["kind"] = res.kind
    out["metadata"] = {**obj.get("metadata", {}), "resourceVersion": str(mod_revision)}
    return out


def encode(obj: Obj) -> bytes:
    meta = obj.get("metadata", {})
    stored = {**obj, "metadata": {k: v for k, v in meta.items() if k != "resourceVersion"}}
    return jsoncodec.dumps_sorted(stored)


def store_unavailable(e: StoreError) -> errors.ApiError:
    return errors.ApiError(504 if e.code == grpc.StatusCode.DEADLINE_EXCEEDED else 503,
                           "Timeout" if e.code == grpc.StatusCode.DEADLINE_EXCEEDED else "ServiceUnavailable",
                           f"storage error: {e.message}", {})


def is_compacted(e: StoreError) -> bool:
    return e.code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in e.message


@dataclass
class ListResult:
    items: list[Obj]
    revision: int
    continue_token: str
    remaining: int | None


@dataclass(frozen=True)
class ListQuery:
    namespace: str = ""
    label_selector: Selector = ()
    field_selector: tuple[FieldRequirement, ...] = ()
    limit: int = 0
    continue_token: str = ""
    resource_version: int = 0  # exact revision to read at (0: latest)

    def matches(self, obj: Obj) -> bool:
        meta = obj.get("metadata", {})
        return labels_match(self.label_selector, meta.get("labels")) and fields_match(self.field_selector, obj)


# (resource, namespace, name) -> the object as the server's own watch last saw it, or None
CachedLookup = Callable[[Resource, str, str], "Obj | None"]
# (resource, key, mod_revision, the object as written): told of every write that succeeded
WrittenHook = Callable[[Resource, bytes, int, "Obj"], None]


class Storage:
    def __init__(self, client: StoreClient, *, batch: int = MAX_OPS) -> None:
        self.client = client
        # writes under load go to the store in groups, each still guarded alone (txnbatch.py);
        # batch 1: every write is its own store call
        self.batcher = TxnBatcher(client, max_ops=batch)
        # an object cache fed by the server's watch (watchcache.py), set by the server: it only ever
        # supplies the first guess of a guarded write; the store transaction still checks the revision
        self.cached: CachedLookup | None = None
        # told of each object written, so that the server's watch need not decode it again (watchcache.py)
        self.written: WrittenHook | None = None

    async def _call(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await fn()
        except StoreError as e:
            raise store_unavailable(e) from None

    async def revision(self) -> int:
        resp = await self._call(lambda: self.client.range(rpc_pb2.RangeRequest(key=b"/registry/", limit=1,
                                                                             keys_only=True)))
        return int(resp.header.revision)

    async def get(self, res: Resource, namespace: str, name: str) -> Obj:
        found = await self.get_or_none(res, namespace, name)
        if found is None:
            raise errors.not_found(res, name)
        return found

    async def get_or_none(self, res: Resource, namespace: str, name: str) -> Obj | None:
        resp = await self._call(lambda: self.client.range(rpc_pb2.RangeRequest(key=res.key(namespace, name))))
        if not resp.kvs:
            return None
        kv = resp.kvs[0]
        return decode(res, kv.value, kv.mod_revision)

    async def list(self, res: Resource, q: ListQuery) -> ListResult:
        prefix = res.collection_prefix(q.namespace)
        end = prefix_end(prefix)
        start = prefix
        revision = q.resource_version
        if q.continue_token:
            position = decode_continue(q.continue_token)
            start = prefix + position.start.encode()
            revision = position.revision
        items: list[Obj] = []
        filtered = bool(q.label_selector or q.field_selector)
        chunk = max(q.limit, 500) if filtered or not q.limit else q.limit + 1
        more_after = False
        remaining: int | None = None
        last_key = b""
        while True:
            req = rpc_pb2.RangeRequest(key=start, range_end=end, revision=revision, limit=chunk)
            try:
                resp = await self.client.range(req)
            except StoreError as e:
                if is_compacted(e):
                    raise (continue_expired() if q.continue_token else too_old(revision, revision)) from None
                raise store_unavailable(e) from None
            revision = revision or int(resp.header.revision)
            kvs = list(resp.kvs)
            stopped_early = False
            for i, kv in enumerate(kvs):
                obj = decode(res, kv.value, kv.mod_revision)
                if not q.matches(obj):
                    continue
                if q.limit and len(items) == q.limit:
                    stopped_early = True
                    more_after = True
                    if not filtered:
                        remaining = int(resp.count) - i
                    break
                items.append(obj)
                last_key = kv.key
            if stopped_early or not resp.more or not kvs:
                break
            start = kvs[-1].key + b"\x00"
        token = ""
        if q.limit and more_after and last_key:
            token = encode_continue(revision, (last_key + b"\x00")[len(prefix):].decode())
        return ListResult(items, revision, token, remaining if token else None)

    async def create(self, res: Resource, obj: Obj) -> Obj:
        meta = obj["metadata"]
        key = res.key(meta.get("namespace", ""), meta["name"])
        txn = rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.CREATE, result=rpc_pb2.Compare.EQUAL,
                                     create_revision=0)],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=encode(obj)))],
        )
        ok, revision = await self._call(lambda: self.batcher.txn(key, txn))
        if not ok:
            raise errors.already_exists(res, meta["name"])
        written = as_written(res, obj, revision)
        if self.written is not None:
            self.written(res, key, revision, written)
        return written

    async def put_if(self, res: Resource, obj: Obj, mod_revision: int) -> Obj | None:
        """Write obj if its key is still at mod_revision; None when someone else wrote first."""
        meta = obj["metadata"]
        key = res.key(meta.get("namespace", ""), meta["name"])
        value = encode(obj)
        txn = rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.MOD, result=rpc_pb2.Compare.EQUAL,
                                     mod_revision=mod_revision)],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value))],
        )
        ok, revision = await self._call(lambda: self.batcher.txn(key, txn))
        if not ok:
            return None
        written = as_written(res, obj, revision)
        if self.written is not None:
            self.written(res, key, revision, written)
        return written

    async def delete_if(self, res: Resource, obj: Obj, mod_revision: int) -> Obj | None:
        """Delete the key if still at mod_revision; returns the object as deleted (its last state)."""
        meta = obj["metadata"]
        key = res.key(meta.get("namespace", ""), meta["name"])
        txn = rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.MOD, result=rpc_pb2.Compare.EQUAL,
                                     mod_revision=mod_revision)],
            success=[rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key))],
        )
        ok, revision = await self._call(lambda: self.batcher.txn(key, txn))
        if not ok:
            return None
        out = dict(obj)
        out["metadata"] = {**obj["metadata"], "resourceVersion": str(revision)}
        return out

    async def guaranteed_update(
        self, res: Resource, namespace: str, name: str,
        mutate: Callable[[Obj], Obj | None],
    ) -> tuple[Obj, Obj]:
        """Read-modify-write with retries on races. mutate(current) returns the object to write
        (None: write nothing) or raises ApiError; returns (old, new).

        The first attempt may start from the watch-fed object cache (no store read): the write is
        guarded by that object's revision, so a stale copy only costs a failed transaction. A
        decision taken on a cached copy that is not a write (mutate raised, or nothing to write) is
        taken again on a fresh read, as Kubernetes' GuaranteedUpdate does with its cached object."""
        current = self.cached(res, namespace, name) if self.cached is not None else None
        from_cache = current is not None
        for _ in range(UPDATE_RETRIES):
            if current is None:
                current = await self.get(res, namespace, name)
            mod = int(current["metadata"]["resourceVersion"])
            try:
                new = mutate(current)
            except errors.ApiError:
                if not from_cache:
                    raise
                new = None
            if new is None:
                if not from_cache:
                    return current, current
                from_cache, current = False, None
                continue
            written = await self.put_if(res, new, mod)
            if written is not None:
                return current, written
            from_cache, current = False, None
        raise errors.conflict(res, name)
