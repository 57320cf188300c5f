"""The controller manager shell: one set of informers, one work queue per controller,
the pure cores in between.

Controllers (names as kube-controller-manager's --controllers takes them):
  replicaset, replicationcontroller, deployment, endpoints, namespace,
  garbagecollector, nodelifecycle, podgc.
Event routing: pods -> their controller's key (or every RS/RC of the namespace
for orphans, which may be adopted), the services of their namespace, their node;
replica sets -> their deployment; leases in kube-node-lease -> their node;
anything with owner references, GC finalizers or a deletion -> the GC's single
"all" key (its reconcile looks at every cached object at once).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from gifee.api.client import ApiClient
from gifee.controllers import deployment, endpoints, gc, namespace, nodelifecycle, podgc, replicas
from gifee.controllers.framework import (
    Informer,
    WorkQueue,
    apply_actions,
    by_namespace,
    by_node_name,
    run_worker,
    seconds_until,
    utcnow,
)
from gifee.controllers.objects import (
    Obj,
    controller_ref,
    is_deleting,
    key_of,
    map_selector_matches,
    meta,
    namespace_of,
    owner_refs,
    split_key,
    uid_of,
)

log = logging.getLogger("gifee.controllers")
ALL_CONTROLLERS = ("replicaset", "replicationcontroller", "deployment", "endpoints", "namespace",
                   "garbagecollector", "nodelifecycle", "podgc")
GC_RESOURCES = ("pods", "replicasets", "replicationcontrollers", "deployments", "services", "endpoints",
                "configmaps", "secrets")


GC_DEBOUNCE = 0.5


def _controller_uid(pod: Obj) -> list[str]:
    ref = controller_ref(pod)
    return [str(ref.get("uid"))] if ref is not None and ref.get("uid") else []


def _uid(obj: Obj) -> list[str]:
    return [uid_of(obj)] if uid_of(obj) else []


def _orphan_namespace(pod: Obj) -> list[str]:
    return [namespace_of(pod)] if controller_ref(pod) is None else []


@dataclass
class Options:
    controllers: tuple[str, ...] = ALL_CONTROLLERS
    resync: float = 30.0
    node_monitor_grace_period: int = nodelifecycle.GRACE
    default_toleration_seconds: int = nodelifecycle.DEFAULT_TOLERATION_SECONDS
    # workers per controller: Kubernetes' --concurrent-{rc,replicaset,deployment,endpoint}-syncs are 5;
    # with 2, replica controllers creating pods in slow-start batches held creation to ~600 pods/s
    workers: int = 5


class ControllerManager:
    def __init__(self, api: ApiClient, options: Options | None = None) -> None:
        self.api = api
        self.opts = options or Options()
        r = self.opts.resync
        self.inf: dict[str, Informer] = {
            plural: Informer(api, plural, resync=r)
            for plural in ("pods", "replicasets", "replicationcontrollers", "deployments", "services", "endpoints",
                           "nodes", "namespaces", "configmaps", "secrets")}
        self.inf["leases"] = Informer(api, "leases", namespace="kube-node-lease", resync=r)
        self.queues: dict[str, WorkQueue] = {c: WorkQueue() for c in self.opts.controllers}
        pods = self.inf["pods"]
        pods.add_index("node", by_node_name)
        pods.add_index("namespace", by_namespace)
        pods.add_index("controller", _controller_uid)
        pods.add_index("orphan", _orphan_namespace)
        for plural in GC_RESOURCES:
            self.inf[plural].add_index("uid", _uid)
        self._wire()

    # --- routing ---------------------------------------------------------------------------------

    def _add(self, controller: str, key: str) -> None:
        q = self.queues.get(controller)
        if q is not None:
            q.add(key)

    def _wire(self) -> None:
        self.inf["pods"].on_event(self._on_pod)
        self.inf["replicasets"].on_event(self._on_rs)
        self.inf["replicationcontrollers"].on_event(lambda t, o, old: self._add("replicationcontroller", key_of(o)))
        self.inf["deployments"].on_event(lambda t, o, old: self._add("deployment", key_of(o)))
        self.inf["services"].on_event(lambda t, o, old: self._add("endpoints", key_of(o)))
        self.inf["endpoints"].on_event(lambda t, o, old: self._add("endpoints", key_of(o)))
        self.inf["nodes"].on_event(lambda t, o, old: self._add("nodelifecycle", key_of(o)))
        self.inf["nodes"].on_event(lambda t, o, old: self._add("podgc", "all") if t in ("DELETED", "RESYNC") else None)
        self.inf["leases"].on_event(lambda t, o, old: self._add("nodelifecycle", str(meta(o).get("name", ""))))
        self.inf["namespaces"].on_event(self._on_namespace)
        for plural in GC_RESOURCES:
            self.inf[plural].on_event(self._on_any)

    def _on_pod(self, typ: str, pod: Obj, old: Obj | None) -> None:
        ns = namespace_of(pod)
        ref = controller_ref(pod)
        old_ref = controller_ref(old) if old else None
        for r in (ref, old_ref):
            if r is not None:
                c = {"ReplicaSet": "replicaset", "ReplicationController": "replicationcontroller"}.get(str(r.get("kind")))
                if c:
                    self._add(c, f"{ns}/{r.get('name')}")
        if ref is None and typ in ("ADDED", "MODIFIED"):
            for rs in self.inf["replicasets"].list():
                if namespace_of(rs) == ns:
                    self._add("replicaset", key_of(rs))
            for rc in self.inf["replicationcontrollers"].list():
                if namespace_of(rc) == ns:
                    self._add("replicationcontroller", key_of(rc))
        # the services whose selector takes the pod (now or before the change): as Kubernetes' endpoints
        # controller, a pod no selector takes cannot change any endpoints (and a service without a
        # selector has no managed endpoints); requeueing every service of the namespace on every pod
        # event reconciled the `kubernetes` service three times per pod
        labels = (pod.get("metadata") or {}).get("labels") or {}
        old_labels = ((old.get("metadata") or {}).get("labels") or {}) if old else labels
        for svc in self.inf["services"].list():
            if namespace_of(svc) != ns:
                continue
            sel = (svc.get("spec") or {}).get("selector")
            if sel and isinstance(sel, dict) and (map_selector_matches(sel, labels)
                                                  or (old_labels is not labels and map_selector_matches(sel, old_labels))):
                self._add("endpoints", key_of(svc))
        node = (pod.get("spec") or {}).get("nodeName")
        if node and nodelifecycle.pod_events_matter(self.inf["nodes"].get(str(node)),
                                                    self.inf["leases"].get(f"kube-node-lease/{node}"), utcnow(),
                                                    self.opts.node_monitor_grace_period):
            self._add("nodelifecycle", str(node))
        if ns and ns in self.inf["namespaces"].cache and is_deleting(self.inf["namespaces"].cache[ns]):
            self._add("namespace", ns)

    def _on_rs(self, typ: str, rs: Obj, old: Obj | None) -> None:
        self._add("replicaset", key_of(rs))
        ref = controller_ref(rs)
        if ref is not None and ref.get("kind") == "Deployment":
            self._add("deployment", f"{namespace_of(rs)}/{ref.get('name')}")
        elif ref is None:
            for d in self.inf["deployments"].list():
                if namespace_of(d) == namespace_of(rs):
                    self._add("deployment", key_of(d))

    def _on_namespace(self, typ: str, ns: Obj, old: Obj | None) -> None:
        if is_deleting(ns):
            self._add("namespace", key_of(ns))

    def _gc_relevant(self, typ: str, obj: Obj, old: Obj | None) -> bool:
        """Whether a GC pass may have something to do after this event: a deletion, an object
        being deleted, a resync, or owner references that changed and name an owner not cached
        (a pod's status update, or a new pod of a cached RC, changes nothing for the GC)."""
        if typ in ("DELETED", "RESYNC") or is_deleting(obj):
            return True
        refs = owner_refs(obj)
        if not refs or (old is not None and typ == "MODIFIED" and owner_refs(old) == refs):
            return False
        return any(not self._uid_cached(str(r.get("uid") or "")) for r in refs)

    def _uid_cached(self, uid: str) -> bool:
        return any(self.inf[plural].in_index("uid", uid) for plural in GC_RESOURCES)

    def _on_any(self, typ: str, obj: Obj, old: Obj | None) -> None:
        if self._gc_relevant(typ, obj, old):
            q = self.queues.get("garbagecollector")
            if q is not None:  # debounced: a pass looks at every object, one per event would be quadratic
                q.add_after("all", GC_DEBOUNCE)
        ns = namespace_of(obj)
        if ns and ns in self.inf["namespaces"].cache and is_deleting(self.inf["namespaces"].cache[ns]):
            self._add("namespace", ns)

    # --- reconcilers -----------------------------------------------------------------------------

    async def _replicas(self, kind: str, plural: str, key: str) -> float | None:
        owner = self.inf[plural].get(key)
        if owner is None:
            return None
        now = utcnow()
        # the pods the core can claim: its own, and the namespace's orphans (others are skipped anyway)
        pods = self.inf["pods"].by_index("controller", uid_of(owner)) + \
            self.inf["pods"].by_index("orphan", namespace_of(owner))
        out = replicas.reconcile(owner, kind, pods, now)
        await apply_actions(self.api, out.actions, self.inf)
        return seconds_until(out.next_check, now)

    async def reconcile_replicaset(self, key: str) -> float | None:
        return await self._replicas("ReplicaSet", "replicasets", key)

    async def reconcile_replicationcontroller(self, key: str) -> float | None:
        return await self._replicas("ReplicationController", "replicationcontrollers", key)

    async def reconcile_deployment(self, key: str) -> float | None:
        d = self.inf["deployments"].get(key)
        if d is None:
            return None
        actions = deployment.reconcile(d, self.inf["replicasets"].list(), self.inf["pods"].list(), utcnow())
        await apply_actions(self.api, actions, self.inf)
        return None

    async def reconcile_endpoints(self, key: str) -> float | None:
        ns, name = split_key(key)
        svc = self.inf["services"].get(key)
        selects = svc is not None and bool((svc.get("spec") or {}).get("selector"))
        acts = endpoints.reconcile(ns, name, svc, self.inf["endpoints"].get(key),
                                   self.inf["pods"].by_index("namespace", ns) if selects else [])
        await apply_actions(self.api, acts, self.inf)
        return None

    async def reconcile_namespace(self, key: str) -> float | None:
        ns = self.inf["namespaces"].get(key)
        if ns is None or not is_deleting(ns):
            return None
        contents = [o for plural, inf in self.inf.items() if plural not in ("nodes", "namespaces")
                    for o in inf.list() if namespace_of(o) == key]
        await apply_actions(self.api, namespace.reconcile(ns, contents), self.inf)
        return 1.0

    async def reconcile_garbagecollector(self, key: str) -> float | None:
        objects = [o for plural in GC_RESOURCES for o in self.inf[plural].list()]
        acts = gc.reconcile(objects)
        await apply_actions(self.api, acts, self.inf)
        return 1.0 if acts else None

    async def reconcile_nodelifecycle(self, key: str) -> float | None:
        node = self.inf["nodes"].get(key)
        if node is None:
            return None
        now = utcnow()
        out = nodelifecycle.reconcile(node, self.inf["leases"].get(f"kube-node-lease/{key}"),
                                      self.inf["pods"].by_index("node", key), now,
                                      self.opts.node_monitor_grace_period, self.opts.default_toleration_seconds)
        await apply_actions(self.api, out.actions, self.inf)
        return seconds_until(out.next_check, now)

    async def reconcile_podgc(self, key: str) -> float | None:
        acts = podgc.reconcile(self.inf["pods"].list(), self.inf["nodes"].list())
        await apply_actions(self.api, acts, self.inf)
        return None

    # --- running ---------------------------------------------------------------------------------

    async def run(self) -> None:
        tasks = [asyncio.create_task(inf.run()) for inf in self.inf.values()]
        try:
            await asyncio.gather(*(inf.synced.wait() for inf in self.inf.values()))
            log.info("caches synced; starting %s", ", ".join(self.queues))
            for name, q in self.queues.items():
                fn = getattr(self, f"reconcile_{name}")
                for _ in range(self.opts.workers if name != "garbagecollector" else 1):
                    tasks.append(asyncio.create_task(run_worker(name, q, fn)))
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
