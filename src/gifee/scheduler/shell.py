"""The scheduler's shell: watch pods, nodes and services; bind each pending pod.

Theory of operation: informers keep pods, nodes and services cached. Every pod
that wants this scheduler (no nodeName, schedulerName matching, not terminal) is
queued; a single worker pops one pod at a time and asks the core for a node. A
placement is bound through pods/<name>/binding and the pod is *assumed* on that
node (counted by the next decisions) until the watch shows the binding, or for at
most `assume_ttl` seconds. An unschedulable pod gets PodScheduled=False with the
core's message and is retried with back-off, and again whenever a node changes or
a pod goes away (room may have appeared). A 409 on bind means someone bound it
first: the pod is dropped from the queue.
"""

from __future__ import annotations

import asyncio
import logging
import time

from gifee.api.client import ApiClient
from gifee.api.errors import ApiError
from gifee.controllers.framework import Informer, WorkQueue, apply_action, run_worker, utcnow
from gifee.controllers.objects import Obj, key_of
from gifee.scheduler import core
from gifee.scheduler.nodetable import NodeTable

log = logging.getLogger("gifee.scheduler")


class Scheduler:
    def __init__(self, api: ApiClient, *, scheduler_name: str = core.DEFAULT_SCHEDULER, resync: float = 30.0,
                 assume_ttl: float = 30.0, binders: int = 128, percentage_of_nodes_to_score: int = 0) -> None:
        self.api, self.name, self.assume_ttl = api, scheduler_name, assume_ttl
        self.percentage = percentage_of_nodes_to_score  # 0: adaptive (core.nodes_to_find)
        self._next_start = 0  # where the next decision's filters begin (every node gets its turn)
        self.pods = Informer(api, "pods", resync=resync)
        self.nodes = Informer(api, "nodes", resync=resync)
        self.services = Informer(api, "services", resync=resync)
        self.queue = WorkQueue(base_delay=0.5, max_delay=30.0)
        self.assumed: dict[str, tuple[Obj, float]] = {}
        self.unschedulable: set[str] = set()
        self.infos: dict[str, core.NodeInfo] = {}  # node name -> the node and the pods placed on it
        self._placed: dict[str, str] = {}  # pod key -> the node its NodeInfo counts it on
        # the NodeInfos with a node, as columns the NodeInfos keep current (None: rebuild, the set changed)
        self._table: NodeTable | None = None
        self._binds: set[asyncio.Task[None]] = set()
        # bindings in flight: kube-scheduler binds each pod in a goroutine of its own, without a limit; 32
        # at ~50 ms a binding under load held decisions to ~600/s (the scale benchmark's steady state)
        self._bind_slots = asyncio.Semaphore(binders)
        self.pods.on_event(self._on_pod)
        self.nodes.on_event(self._on_node)
        self.bound = 0

    # -- the NodeInfos, kept current from the informers and the assumptions

    def _account(self, key: str, pod: Obj | None) -> None:
        node = str((pod.get("spec") or {}).get("nodeName") or "") if pod is not None else ""
        if pod is not None and (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            node = ""
        if node and pod is not None and self._placed.get(key) == node:
            self.infos[node].add(key, core.pod_facts(pod))  # on the same node: add replaces it (cheaply)
            return
        old = self._placed.pop(key, None)
        if old is not None:
            info = self.infos.get(old)
            if info is not None:
                info.remove(key)
        if node and pod is not None:
            self._info(node).add(key, core.pod_facts(pod))
            self._placed[key] = node

    def _info(self, name: str) -> core.NodeInfo:
        info = self.infos.get(name)
        if info is None:  # (not setdefault: a NodeInfo built for nothing on every call was 12% of the profile)
            info = self.infos[name] = core.NodeInfo()
        return info

    def table(self) -> NodeTable:
        """The NodeInfos that have their node, in the infos' order, attached (rebuilt only when that set
        changes: in between, each NodeInfo writes its own row)."""
        if self._table is None:
            self._table = NodeTable([i for i in self.infos.values() if i.node is not None], attach=True)
        return self._table

    def _drop_table(self) -> None:
        if self._table is not None:
            self._table.detach()
            self._table = None

    def _on_node(self, typ: str, node: Obj, old: Obj | None) -> None:
        name = key_of(node)
        if typ == "DELETED":
            info = self.infos.get(name)
            if info is not None:
                self._drop_table()
                info.set_node(None)
        else:
            info = self._info(name)
            if info.node is None:
                self._drop_table()
            info.set_node(node)
        self._retry_unschedulable()

    def _on_pod(self, typ: str, pod: Obj, old: Obj | None) -> None:
        key = key_of(pod)
        if typ == "DELETED":
            self.assumed.pop(key, None)
            self._account(key, None)
            self._retry_unschedulable()
            return
        if (pod.get("spec") or {}).get("nodeName"):
            self.assumed.pop(key, None)
            self.unschedulable.discard(key)
            self._account(key, pod)
            return
        if key not in self.assumed:  # an assumed pod stays counted on its node until the binding shows
            self._account(key, pod)
        if core.wants_scheduling(pod, self.name):
            self.queue.add(key)

    def _retry_unschedulable(self) -> None:
        for key in list(self.unschedulable):
            self.queue.add(key)

    def _forget(self, key: str) -> None:
        """Drop an assumption (expired, or the binding failed): count the pod as the cache has it."""
        if self.assumed.pop(key, None) is not None:
            self._account(key, self.pods.get(key))

    def _expire_assumed(self) -> None:
        # `assumed` is in the order of the assumptions (a pod is assumed again only after it was dropped,
        # which re-inserts it at the end), so the expired ones lead: stop at the first that is not, rather
        # than walk every assumed pod (a hundred and more with the bindings in flight) on every decision
        now = time.monotonic()
        expired = []
        for k, (_, t) in self.assumed.items():
            if now - t <= self.assume_ttl:
                break
            expired.append(k)
        for k in expired:
            self._forget(k)

    def placed_pods(self) -> list[Obj]:
        """Every pod counted on a node (bound, or assumed while its binding is on the way)."""
        return [f.pod for info in self.infos.values() for f in info.pods.values()]

    # -- decisions and bindings

    async def schedule_one(self, key: str) -> float | None:
        pod = self.pods.get(key)
        if pod is None or key in self.assumed or not core.wants_scheduling(pod, self.name):
            return None
        self._expire_assumed()
        result = core.schedule_on(pod, self.table(), self.services.list(), start=self._next_start,
                                  percentage=self.percentage, with_scores=False)
        self._next_start += result.checked
        if result.node is None:
            self.unschedulable.add(key)
            log.info("%s: %s", key, result.message)
            act = core.unschedulable_action(pod, result.message, utcnow())
            if act is not None:
                try:
                    await apply_action(self.api, act)
                except ApiError as e:
                    log.info("%s: status: %s", key, e)
            raise _Unschedulable(result.message)
        self.unschedulable.discard(key)
        # the pod as bound (its spec copied, the rest shared: nothing changes what the informer holds)
        assumed = {**pod, "spec": {**pod["spec"], "nodeName": result.node}}
        self.assumed[key] = (assumed, time.monotonic())
        self._account(key, assumed)
        # the binding goes out while the next pods are decided (they count this one as placed)
        await self._bind_slots.acquire()
        task = asyncio.create_task(self._bind(key, pod, result.node))
        self._binds.add(task)
        task.add_done_callback(self._binds.discard)
        return None

    async def _bind(self, key: str, pod: Obj, node: str) -> None:
        try:
            await apply_action(self.api, core.bind_action(pod, node))
        except ApiError as e:
            self._forget(key)
            if e.code not in (404, 409):  # 409: bound by someone else; 404: gone
                log.info("bind %s: %s %s (requeued)", key, e.code, e)
                self.queue.rate_limited(key)
            return
        except Exception as e:  # noqa: BLE001 - the API server went away: try again later
            self._forget(key)
            log.info("bind %s: %s (requeued)", key, e)
            self.queue.rate_limited(key)
            return
        finally:
            self._bind_slots.release()
        self.bound += 1
        log.info("bound %s to %s", key, node)

    async def run(self) -> None:
        tasks = [asyncio.create_task(i.run()) for i in (self.pods, self.nodes, self.services)]
        try:
            await asyncio.gather(self.pods.synced.wait(), self.nodes.synced.wait(), self.services.synced.wait())
            tasks.append(asyncio.create_task(run_worker("scheduler", self.queue, self.schedule_one)))
            await asyncio.gather(*tasks)
        finally:
            for t in tasks + list(self._binds):
                t.cancel()
            await asyncio.gather(*tasks, *self._binds, return_exceptions=True)


class _Unschedulable(Exception):
    """Raised so the worker requeues the pod with back-off."""
