"""The API server's watch-fed object cache only supplies the first guess of a guarded write:
a stale copy must never decide a precondition, a conflict or a no-op (in-memory store)."""

from __future__ import annotations

import asyncio
import copy
from types import SimpleNamespace
from typing import Any

import pytest

from gifee.api import errors, resources
from gifee.api.rest import Rest
from gifee.api.storage import Storage
from gifee.store.proto import rpc_pb2

CONFIGMAPS = resources.by_plural("configmaps")
PODS = resources.by_plural("pods")
NAMESPACES = resources.by_plural("namespaces")


class MemoryStore:
    """Just enough of the etcd API for Storage's single-key reads and guarded writes."""

    def __init__(self) -> None:
        self.kv: dict[bytes, tuple[bytes, int, int]] = {}  # key -> (value, create, mod revision)
        self.rev = 1
        self.reads = 0
        self.failed_txns = 0

    async def range(self, req: Any) -> Any:
        self.reads += 1
        found = self.kv.get(req.key)
        kvs = [SimpleNamespace(key=req.key, value=found[0], mod_revision=found[2])] if found else []
        return SimpleNamespace(kvs=kvs, more=False, count=len(kvs), header=SimpleNamespace(revision=self.rev))

    async def txn(self, req: Any) -> Any:
        cmp = req.compare[0]
        cur = self.kv.get(cmp.key)
        if cmp.target == rpc_pb2.Compare.CREATE:
            ok = cur is None
        else:
            ok = (cur[2] if cur else 0) == cmp.mod_revision
        if ok:
            self.rev += 1
            op = req.success[0]
            if op.HasField("request_put"):
                self.kv[op.request_put.key] = (op.request_put.value, cur[1] if cur else self.rev, self.rev)
            else:
                self.kv.pop(op.request_delete_range.key, None)
        else:
            self.failed_txns += 1
        return SimpleNamespace(succeeded=ok, header=SimpleNamespace(revision=self.rev))


def setup() -> tuple[MemoryStore, Storage, Rest, dict[tuple[str, str, str], Any]]:
    store = MemoryStore()
    storage = Storage(store)  # type: ignore[arg-type]
    cache: dict[tuple[str, str, str], Any] = {}
    storage.cached = lambda res, ns, name: cache.get((res.plural, ns, name))
    return store, storage, Rest(storage), cache


def cm(data: str, rv: str = "") -> dict[str, Any]:
    meta = {"name": "c", "namespace": "default"} | ({"resourceVersion": rv} if rv else {})
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"v": data}}


async def _stale_cache_scenario() -> None:
    assert CONFIGMAPS is not None and PODS is not None and NAMESPACES is not None
    store, storage, rest, cache = setup()
    await rest.create(NAMESPACES, "", {"metadata": {"name": "default"}})
    first = await rest.create(CONFIGMAPS, "default", cm("1"))
    cache[("configmaps", "default", "c")] = copy.deepcopy(first)  # the watch saw the first version only
    second = await storage.guaranteed_update(CONFIGMAPS, "default", "c", lambda cur: {**cur, "data": {"v": "2"}})
    latest = second[1]["metadata"]["resourceVersion"]
    # no precondition: written on top of the store's object, not the cached one
    third = await rest.update(CONFIGMAPS, "default", "c", cm("3"))
    assert third["data"] == {"v": "3"} and store.failed_txns == 1
    latest = third["metadata"]["resourceVersion"]
    # the client's resourceVersion is the store's latest while the cache lags: no false conflict
    fourth = await rest.update(CONFIGMAPS, "default", "c", cm("4", latest))
    assert fourth["data"] == {"v": "4"}
    # an old resourceVersion is still a conflict, decided on the store's object
    with pytest.raises(errors.ApiError) as e:
        await rest.update(CONFIGMAPS, "default", "c", cm("5", latest))
    assert e.value.code == 409
    # a write the cached copy would call a no-op (same data) is not one in the store
    cache[("configmaps", "default", "c")] = copy.deepcopy(fourth | {"data": {"v": "6"}})
    sixth = await rest.update(CONFIGMAPS, "default", "c", cm("6"))
    assert sixth["data"] == {"v": "6"} and sixth["metadata"]["resourceVersion"] != fourth["metadata"]["resourceVersion"]
    # binding: the cache shows the pod unbound, the store has it bound already -> 409
    pod = await rest.create(PODS, "default", {"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "image": "i"}]}})
    cache[("pods", "default", "p")] = copy.deepcopy(pod)
    await rest.bind("default", "p", {"metadata": {"name": "p"}, "target": {"name": "n1"}})
    with pytest.raises(errors.ApiError) as e:
        await rest.bind("default", "p", {"metadata": {"name": "p"}, "target": {"name": "n2"}})
    assert e.value.code == 409 and "n1" in e.value.message
    # the cached copy says already bound, the store says not (a stale no-op decision): bound anyway
    pod2 = await rest.create(PODS, "default", {"metadata": {"name": "q"}, "spec": {"containers": [
        {"name": "c", "image": "i"}]}})
    cache[("pods", "default", "q")] = copy.deepcopy(pod2) | {"spec": {"nodeName": "other"}}
    await rest.bind("default", "q", {"metadata": {"name": "q"}, "target": {"name": "n3"}})
    assert (await storage.get(PODS, "default", "q"))["spec"]["nodeName"] == "n3"
    # a current cache saves the read before the write
    bound = await storage.get(PODS, "default", "q")
    cache[("pods", "default", "q")] = bound
    reads = store.reads
    await rest.update(PODS, "default", "q", {**copy.deepcopy(bound), "metadata": {**bound["metadata"],
                                                                                   "labels": {"a": "b"}}})
    assert store.reads == reads
    assert bound["metadata"].get("labels") is None  # the cached object itself is never changed


def test_stale_cache_never_decides() -> None:
    asyncio.run(_stale_cache_scenario())
