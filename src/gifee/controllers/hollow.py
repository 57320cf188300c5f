"""Hollow nodes' shell: N simulated kubelets in one process.

Theory of operation: each hollow node registers (creates its Node, or refreshes
the status of an existing one), then renews its Lease every `lease_interval`
seconds; if its Ready condition is not True (the node lifecycle controller marked
it Unknown while we were away) the status is refreshed too. One pod informer
serves all nodes: an event for a pod bound to one of them queues that node, whose
sync (the core's `pod_actions`) starts pods (Running, Ready, an IP) and finishes
deletions. `pause(name)` stops a node's heartbeats, to test the lifecycle controller.
"""

from __future__ import annotations

import asyncio
import logging

from gifee.api.client import ApiClient
from gifee.api.errors import ApiError
from gifee.controllers import hollownode
from gifee.controllers.framework import Informer, WorkQueue, apply_actions, run_worker, utcnow
from gifee.controllers.objects import Obj, condition

log = logging.getLogger("gifee.hollow")


class HollowNodes:
    def __init__(self, api: ApiClient, count: int, *, prefix: str = "hollow-node-", start_index: int = 0,
                 capacity: dict[str, str] | None = None, labels: dict[str, str] | None = None,
                 lease_interval: float = 10.0, resync: float = 30.0) -> None:
        self.api = api
        self.names = {f"{prefix}{i}": start_index + i for i in range(count)}
        self.capacity = capacity or {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi"}
        self.labels = labels or {}
        self.lease_interval = lease_interval
        self.paused: set[str] = set()
        self.pods = Informer(api, "pods", resync=resync)
        self.queue = WorkQueue()
        self.pods.on_event(self._on_pod)

    def _on_pod(self, typ: str, pod: Obj, old: Obj | None) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if node in self.names and typ != "DELETED":
            self.queue.add(str(node))

    def pause(self, name: str) -> None:
        self.paused.add(name)

    def resume(self, name: str) -> None:
        self.paused.discard(name)

    async def register(self, name: str) -> None:
        now = utcnow()
        body = hollownode.node_body(name, self.names[name], self.capacity, now, self.labels)
        try:
            await self.api.create("nodes", body)
        except ApiError as e:
            if e.code != 409:
                raise
            current = await self.api.get("nodes", name)
            await self.api.update("nodes", hollownode.ready_status_body(current, now), subresource="status")

    async def heartbeat(self, name: str) -> None:
        now = utcnow()
        try:
            lease: Obj | None = await self.api.get("leases", name, namespace=hollownode.LEASE_NAMESPACE)
        except ApiError as e:
            if e.code != 404:
                raise
            lease = None
        body = hollownode.lease_body(name, now, lease)
        if lease is None:
            await self.api.create("leases", body, namespace=hollownode.LEASE_NAMESPACE)
        else:
            await self.api.update("leases", body)
        node = await self.api.get("nodes", name)
        if (condition(node, "Ready") or {}).get("status") != "True":
            await self.api.update("nodes", hollownode.ready_status_body(node, now), subresource="status")

    async def _node_loop(self, name: str) -> None:
        while True:
            try:
                if name not in self.paused:
                    await self.heartbeat(name)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - keep beating
                log.info("%s: heartbeat: %s", name, e)
                if isinstance(e, ApiError) and e.code == 404:
                    await self.register(name)
            await asyncio.sleep(self.lease_interval)

    async def sync_node(self, name: str) -> float | None:
        if name in self.paused:
            return 1.0
        acts = hollownode.pod_actions(name, self.names[name], self.pods.list(), utcnow())
        await apply_actions(self.api, acts, {"pods": self.pods})
        return None

    async def run(self) -> None:
        for name in self.names:
            while True:
                try:
                    await self.register(name)
                    break
                except (ApiError, OSError) as e:
                    log.info("%s: register: %s", name, e)
                    await asyncio.sleep(0.5)
        tasks = [asyncio.create_task(self.pods.run())]
        tasks += [asyncio.create_task(self._node_loop(n)) for n in self.names]
        tasks += [asyncio.create_task(run_worker("hollow", self.queue, self.sync_node)) for _ in range(2)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
