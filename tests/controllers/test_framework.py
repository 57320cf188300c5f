from __future__ import annotations

import asyncio
import copy
import datetime as dt
from typing import Any

from gifee.api.errors import ApiError
from gifee.controllers.framework import Informer, LeaderElector, WorkQueue, run_worker


async def test_work_queue_dedupes_and_reprocesses_dirty_keys() -> None:
    q = WorkQueue(base_delay=0.01)
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    k = await q.get()
    q.add(k)  # added while processing: once more afterwards, not concurrently
    assert len(q) == 1
    q.done(k)
    assert len(q) == 2
    seen: list[str] = []
    fails = {"b": 2}

    async def reconcile(key: str) -> float | None:
        seen.append(key)
        if fails.get(key, 0) > 0:
            fails[key] -= 1
            raise ApiError(409, "Conflict", "stale")
        return None

    task = asyncio.create_task(run_worker("t", q, reconcile))
    await asyncio.sleep(0.3)
    task.cancel()
    assert sorted(seen) == ["a", "b", "b", "b"]  # b retried with back-off until it succeeded


def test_informer_ignores_stale_events() -> None:
    inf = Informer(None, "pods")  # type: ignore[arg-type]
    events: list[tuple[str, str]] = []
    inf.on_event(lambda t, o, old: events.append((t, o["metadata"]["resourceVersion"])))

    def pod(rv: int) -> dict[str, Any]:
        return {"metadata": {"name": "p", "namespace": "ns", "resourceVersion": str(rv)}}

    inf.observe("ADDED", pod(5))
    inf.observe("MODIFIED", pod(7))  # written through
    inf.observe("MODIFIED", pod(6))  # the watch catching up: ignored
    assert inf.get("ns/p") == {**pod(7), "kind": "Pod"}
    inf.observe("DELETED", pod(8))
    inf.observe("MODIFIED", pod(7))  # late event after the delete: ignored
    assert inf.get("ns/p") is None
    assert events == [("ADDED", "5"), ("MODIFIED", "7"), ("DELETED", "8")]


class FakeLeases:
    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0

    async def get(self, plural: str, name: str, *, namespace: str = "") -> dict[str, Any]:
        if self.lease is None:
            raise ApiError(404, "NotFound", "no lease")
        return copy.deepcopy(self.lease)

    async def create(self, plural: str, obj: dict[str, Any], *, namespace: str = "") -> dict[str, Any]:
        if self.lease is not None:
            raise ApiError(409, "AlreadyExists", "exists")
        self.rv += 1
        self.lease = copy.deepcopy(obj)
        self.lease["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(self.lease)

    async def update(self, plural: str, obj: dict[str, Any], *, subresource: str = "") -> dict[str, Any]:
        assert self.lease is not None
        if obj["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "stale")
        self.rv += 1
        self.lease = copy.deepcopy(obj)
        self.lease["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(self.lease)


async def test_leader_election_excludes_others_until_expiry() -> None:
    api = FakeLeases()
    t = [dt.datetime(2026, 1, 1, tzinfo=dt.UTC)]
    a = LeaderElector(api, "cm", "a", lease_duration=15, clock=lambda: t[0])  # type: ignore[arg-type]
    b = LeaderElector(api, "cm", "b", lease_duration=15, clock=lambda: t[0])  # type: ignore[arg-type]
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    t[0] += dt.timedelta(seconds=10)
    assert await a.try_acquire_or_renew()  # renew
    t[0] += dt.timedelta(seconds=14)
    assert not await b.try_acquire_or_renew()  # still within a's renewed lease
    t[0] += dt.timedelta(seconds=2)
    assert await b.try_acquire_or_renew()  # a stopped renewing: b takes over
    assert api.lease is not None
    assert api.lease["spec"]["holderIdentity"] == "b" and api.lease["spec"]["leaseTransitions"] == 1
    assert not await a.try_acquire_or_renew()
