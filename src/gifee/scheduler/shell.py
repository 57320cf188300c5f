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
import copy
import logging
import time

from gifee.api.client import ApiClient
from gifee.api.errors import ApiError
from gifee.controllers.framework import Informer, WorkQueue, apply_action, run_worker, utcnow
from gifee.controllers.objects import Obj, key_of
from gifee.scheduler import core

log = logging.getLogger("gifee.scheduler")


class Scheduler:
    def __init__(self, api: ApiClient, *, scheduler_name: str = core.DEFAULT_SCHEDULER, resync: float = 30.0,
                 assume_ttl: float = 30.0) -> None:
        self.api, self.name, self.assume_ttl = api, scheduler_name, assume_ttl
        self.pods = Informer(api, "pods", resync=resync)
        self.nodes = Informer(api, "nodes", resync=resync)
        self.services = Informer(api, "services", resync=resync)
        self.queue = WorkQueue(base_delay=0.5, max_delay=30.0)
        self.assumed: dict[str, tuple[Obj, float]] = {}
        self.unschedulable: set[str] = set()
        self.pods.on_event(self._on_pod)
        self.nodes.on_event(lambda t, o, old: self._retry_unschedulable())
        self.bound = 0

    def _on_pod(self, typ: str, pod: Obj, old: Obj | None) -> None:
        key = key_of(pod)
        if typ == "DELETED":
            self.assumed.pop(key, None)
            self._retry_unschedulable()
            return
        if (pod.get("spec") or {}).get("nodeName"):
            self.assumed.pop(key, None)
            self.unschedulable.discard(key)
            return
        if core.wants_scheduling(pod, self.name):
            self.queue.add(key)

    def _retry_unschedulable(self) -> None:
        for key in list(self.unschedulable):
            self.queue.add(key)

    def placed_pods(self) -> list[Obj]:
        now = time.monotonic()
        for k, (_, t) in list(self.assumed.items()):
            if now - t > self.assume_ttl:
                self.assumed.pop(k)
        seen = {k for k, p in self.pods.cache.items() if (p.get("spec") or {}).get("nodeName")}
        return list(self.pods.cache.values()) + [p for k, (p, _) in self.assumed.items() if k not in seen]

    async def schedule_one(self, key: str) -> float | None:
        pod = self.pods.get(key)
        if pod is None or key in self.assumed or not core.wants_scheduling(pod, self.name):
            return None
        result = core.schedule(pod, self.nodes.list(), self.placed_pods(), self.services.list())
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
        try:
            await apply_action(self.api, core.bind_action(pod, result.node))
        except ApiError as e:
            if e.code in (404, 409):
                return None
            raise
        self.unschedulable.discard(key)
        assumed = copy.deepcopy(pod)
        assumed["spec"]["nodeName"] = result.node
        self.assumed[key] = (assumed, time.monotonic())
        self.bound += 1
        log.info("bound %s to %s", key, result.node)
        return None

    async def run(self) -> None:
        tasks = [asyncio.create_task(i.run()) for i in (self.pods, self.nodes, self.services)]
        try:
            await asyncio.gather(self.pods.synced.wait(), self.nodes.synced.wait(), self.services.synced.wait())
            tasks.append(asyncio.create_task(run_worker("scheduler", self.queue, self.schedule_one)))
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class _Unschedulable(Exception):
    """Raised so the worker requeues the pod with back-off."""
