"""Hollow nodes' shell: N simulated kubelets in one process.

Theory of operation: each hollow node registers (creates its Node, or refreshes
the status of an existing one), then renews its Lease every `lease_interval`
seconds (one PUT of the lease it wrote last; the nodes' beats are spread over the
interval); every `node_check_every` beats, and on the first after a pause, it reads
its Node and, if the Ready condition is not True (the node lifecycle controller
marked it Unknown while we were away), refreshes the status. One pod informer
(pods bound to some node), indexed by node, serves all nodes: an event for a pod bound to one of them
that needs the kubelet (hollownode.needs_sync) queues that node, whose sync (the core's `pod_actions`
over that node's pods) starts pods (Running, Ready, an IP) and finishes deletions; `workers` nodes
sync at once. `pause(name)` stops a node's heartbeats, to test the lifecycle controller.
"""

from __future__ import annotations

import asyncio
import logging
import random

from gifee.api.client import ApiClient
from gifee.api.errors import ApiError
from gifee.controllers import hollownode
from gifee.controllers.framework import Informer, WorkQueue, apply_actions, by_node_name, run_worker, utcnow
from gifee.controllers.objects import Obj, condition

log = logging.getLogger("gifee.hollow")


class HollowNodes:
    def __init__(self, api: ApiClient, count: int, *, prefix: str = "hollow-node-", start_index: int = 0,
                 capacity: dict[str, str] | None = None, labels: dict[str, str] | None = None,
                 lease_interval: float = 10.0, resync: float = 30.0, workers: int = 64,
                 node_check_every: int = 6) -> None:
        self.api = api
        self.names = {f"{prefix}{i}": start_index + i for i in range(count)}
        self.capacity = capacity or {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi"}
        self.labels = labels or {}
        self.lease_interval = lease_interval
        self.node_check_every = node_check_every
        self.paused: set[str] = set()
        # only pods bound to a node, as a kubelet watches only its own (spec.nodeName=<node>): one watch
        # for all the hollow nodes, without every pod's creation and scheduling-time events
        self.pods = Informer(api, "pods", resync=resync, field_selector="spec.nodeName!=")
        self.pods.add_index("node", by_node_name)
        self.queue = WorkQueue()
        self.pods.on_event(self._on_pod)
        # nodes syncing at once: each kubelet syncs on its own; 16 shared by 1,000 nodes, a node's status
        # PUTs one after the other, held pods becoming Running to ~450/s while the API server had room
        self.workers = workers
        self._leases: dict[str, Obj] = {}  # the last lease written per node: renewals need no GET
        self._beats: dict[str, int] = {}

    def _on_pod(self, typ: str, pod: Obj, old: Obj | None) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        # (a pod the sync would leave alone does not queue its node: every status written came back as
        # an event through the write-through, and its node was synced again for nothing)
        if node in self.names and typ != "DELETED" and hollownode.needs_sync(pod):
            self.queue.add(str(node))

    def pause(self, name: str) -> None:
        self.paused.add(name)

    def resume(self, name: str) -> None:
        self.paused.discard(name)
        self._beats.pop(name, None)  # look at the node's Ready condition on the next beat

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
        """Renew the lease (from the copy last written: one PUT; a conflict reads it again), and
        every `node_check_every` beats (and the first after a pause) make sure the node is Ready,
        as a kubelet's lease renewals and its rarer status reports."""
        now = utcnow()
        lease: Obj | None = self._leases.get(name)
        if lease is None:
            try:
                lease = await self.api.get("leases", name, namespace=hollownode.LEASE_NAMESPACE)
            except ApiError as e:
                if e.code != 404:
                    raise
        body = hollownode.lease_body(name, now, lease)
        try:
            if lease is None:
                written = await self.api.create("leases", body, namespace=hollownode.LEASE_NAMESPACE)
            else:
                written = await self.api.update("leases", body)
        except ApiError as e:
            self._leases.pop(name, None)
            if e.code != 409:
                raise
            written = None
        if written is not None:
            self._leases[name] = written
        beat = self._beats.get(name, 0)
        self._beats[name] = beat + 1
        if beat % self.node_check_every:
            return
        # as a kubelet: the first read may come from the API server's cache (resourceVersion=0); a write
        # on a stale copy conflicts, and is done again on a fresh read
        node = await self.api.get("nodes", name, resource_version="0")
        if (condition(node, "Ready") or {}).get("status") != "True":
            try:
                await self.api.update("nodes", hollownode.ready_status_body(node, now), subresource="status")
            except ApiError as e:
                if e.code != 409:
                    raise
                node = await self.api.get("nodes", name)
                if (condition(node, "Ready") or {}).get("status") != "True":
                    await self.api.update("nodes", hollownode.ready_status_body(node, now), subresource="status")

    async def _node_loop(self, name: str) -> None:
        # spread the nodes' beats over the interval, rather than all at once
        await asyncio.sleep(self.lease_interval * random.random())
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
        acts = hollownode.pod_actions(name, self.names[name], self.pods.by_index("node", name), utcnow())
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
        tasks += [asyncio.create_task(run_worker("hollow", self.queue, self.sync_node))
                  for _ in range(self.workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
