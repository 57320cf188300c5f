from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gifee.controllers import endpoints, gc, hollownode, namespace, nodelifecycle
from gifee.controllers.objects import micro_timestamp, timestamp

from .sim import T0, Cluster

# --- garbage collection -----------------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(edges=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), max_size=14),
       deleted=st.sets(st.integers(0, 7)))
def test_gc_deletes_exactly_the_dependents_of_deleted_owners(edges: list[tuple[int, int]],
                                                            deleted: set[int]) -> None:
    owners_of: dict[int, set[int]] = {}
    for dep, owner in edges:
        if owner < dep:  # a DAG: owners have smaller numbers
            owners_of.setdefault(dep, set()).add(owner)
    c = Cluster()
    for i in range(8):
        refs = [{"apiVersion": "v1", "kind": "ConfigMap", "name": f"o{o}", "uid": f"u{o}"}
                for o in sorted(owners_of.get(i, ()))]
        c.add("configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": f"o{i}", "namespace": "ns", "uid": f"u{i}",
                                          **({"ownerReferences": refs} if refs else {})}})
    for i in deleted:
        del c.objects[("configmaps", "ns", f"o{i}")]
    for _ in range(10):
        c.apply(gc.reconcile(c.list("configmaps")))
    # expected survivors: not deleted, and (no owners, or some owner survives)
    alive: dict[int, bool] = {}
    for i in range(8):
        os_ = owners_of.get(i, set())
        alive[i] = i not in deleted and (not os_ or any(alive[o] for o in os_))
    assert {int(o["metadata"]["name"][1:]) for o in c.list("configmaps")} == {i for i in range(8) if alive[i]}
    for o in c.list("configmaps"):  # no dangling references remain
        for r in o["metadata"].get("ownerReferences") or []:
            assert ("configmaps", "ns", r["name"]) in c.objects


def _owner_with(finalizer: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "rs", "namespace": "ns", "uid": "rs-uid", "deletionTimestamp": "2026-01-01T00:00:00Z",
                         "finalizers": [finalizer]}}


def test_gc_orphan_and_foreground() -> None:
    ref = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-uid", "controller": True,
            "blockOwnerDeletion": True}]
    for fin in ("orphan", "foregroundDeletion"):
        c = Cluster()
        c.add("replicasets", _owner_with(fin))
        for i in range(2):
            c.add("pods", {"kind": "Pod", "metadata": {"name": f"p{i}", "namespace": "ns", "ownerReferences": ref}})
        for _ in range(3):
            c.apply(gc.reconcile(c.list("replicasets") + c.list("pods")))
        rs = c.get("replicasets", "ns", "rs") or {}
        assert not rs["metadata"].get("finalizers")
        if fin == "orphan":
            assert [p["metadata"].get("ownerReferences") for p in c.list("pods")] == [None, None]
        else:
            assert c.list("pods") == []


# --- endpoints -----------------------------------------------------------------------------------------

def _pod(name: str, ip: str | None, ready: bool, labels: dict[str, str], **extra: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running", "conditions": [{"type": "Ready", "status": str(ready)}]}
    if ip:
        status["podIP"] = ip
    return {"metadata": {"name": name, "namespace": "default", "uid": f"u-{name}", "labels": labels, **extra},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": status}


def test_endpoints_from_selector_and_readiness() -> None:
    svc = {"metadata": {"name": "web", "namespace": "default", "labels": {"tier": "front"}},
           "spec": {"selector": {"app": "web", "env": "prod"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}
    web = {"app": "web", "env": "prod"}
    pods = [_pod("a", "10.0.0.9", True, web), _pod("b", "10.0.0.10", False, web), _pod("c", None, True, web),
            _pod("d", "10.0.0.3", True, {"app": "web", "env": "dev"}),
            _pod("e", "10.0.0.4", True, web, deletionTimestamp="2026-01-01T00:00:00Z")]
    [act] = endpoints.reconcile("default", "web", svc, None, pods)
    assert act.verb == "create"
    body = act.body or {}
    assert body["metadata"]["labels"] == {"tier": "front"}
    [subset] = body["subsets"]
    assert [a["ip"] for a in subset["addresses"]] == ["10.0.0.9"]
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["10.0.0.10"]
    assert subset["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    existing = dict(body, metadata=dict(body["metadata"], uid="ep"))
    assert endpoints.reconcile("default", "web", svc, existing, pods) == []
    assert [a.verb for a in endpoints.reconcile("default", "web", None, existing, pods)] == ["delete"]


# --- namespaces ----------------------------------------------------------------------------------------

def test_namespace_deletion_deletes_contents_then_finalizes() -> None:
    ns = {"kind": "Namespace", "metadata": {"name": "team", "deletionTimestamp": "2026-01-01T00:00:00Z"},
          "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}
    contents = [{"kind": "Pod", "metadata": {"name": "p", "namespace": "team", "uid": "1"}},
                {"kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "team", "uid": "2"}}]
    acts = namespace.reconcile(ns, contents)
    assert [(a.verb, a.resource, a.name) for a in acts] == [
        ("update_status", "namespaces", "team"), ("delete", "pods", "p"), ("delete", "configmaps", "cm")]
    acts = namespace.reconcile(dict(ns, status={"phase": "Terminating"}), [])
    assert [(a.verb, a.options.get("subresource")) for a in acts] == [("update", "finalize")]
    assert (acts[0].body or {})["spec"]["finalizers"] == []
    assert namespace.reconcile({"metadata": {"name": "x"}}, contents) == []


# --- node lifecycle and hollow nodes ------------------------------------------------------------------

def test_node_goes_unknown_then_pods_are_evicted() -> None:
    node = hollownode.node_body("n1", 1, {"cpu": "2", "memory": "4Gi", "pods": "110"}, T0)
    node["metadata"]["uid"] = "n1"
    lease = hollownode.lease_body("n1", T0)
    pod = {"metadata": {"name": "p", "namespace": "default", "uid": "p1"}, "spec": {"nodeName": "n1"},
           "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    tolerant = {"metadata": {"name": "q", "namespace": "default", "uid": "q1"},
                "spec": {"nodeName": "n1", "tolerations": [{"key": nodelifecycle.UNREACHABLE, "operator": "Exists",
                                                            "effect": "NoExecute", "tolerationSeconds": 10}]}}
    out = nodelifecycle.reconcile(node, lease, [pod], T0 + dt.timedelta(seconds=30))
    assert out.actions == [] and out.next_check == T0 + dt.timedelta(seconds=41)
    later = T0 + dt.timedelta(seconds=45)
    out = nodelifecycle.reconcile(node, lease, [pod, tolerant], later)
    verbs = [(a.verb, a.resource, a.name) for a in out.actions]
    assert ("update_status", "nodes", "n1") in verbs and ("patch", "nodes", "n1") in verbs
    assert ("update_status", "pods", "p") in verbs and not any(v[0] == "delete" for v in verbs)
    status = next(a for a in out.actions if a.verb == "update_status" and a.resource == "nodes").body or {}
    ready = next(c for c in status["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "Unknown" and ready["reason"] == "NodeStatusUnknown"
    taints = (next(a for a in out.actions if a.verb == "patch").body or {})["spec"]["taints"]
    # the node as the API server now has it
    node2 = dict(status, spec=dict(node["spec"], taints=taints))
    assert out.next_check == later + dt.timedelta(seconds=10)  # the tolerant pod's deadline
    out = nodelifecycle.reconcile(node2, lease, [pod, tolerant], later + dt.timedelta(seconds=10))
    assert [a.name for a in out.actions if a.verb == "delete"] == ["q"]
    out = nodelifecycle.reconcile(node2, lease, [pod], later + dt.timedelta(seconds=300))
    assert [a.name for a in out.actions if a.verb == "delete"] == ["p"]
    # the lease is renewed: the node is Ready again and the taints go
    back = T0 + dt.timedelta(seconds=400)
    fresh = hollownode.ready_status_body(node2, back)
    out = nodelifecycle.reconcile(fresh, hollownode.lease_body("n1", back), [], back)
    assert [(a.verb, a.body) for a in out.actions] == [("patch", {"spec": {"taints": None}})]


@settings(max_examples=200, deadline=None)
@given(ready=st.sampled_from(["True", "False", "Unknown", None]),
       taints=st.lists(st.sampled_from([{"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "NoExecute"},
                                        {"key": "c", "effect": "PreferNoSchedule"}]), max_size=3),
       tolerations=st.booleans(), age=st.integers(0, 400))
def test_pod_events_matter_only_where_a_pod_can_change_the_outcome(ready: str | None, taints: list[dict[str, str]],
                                                                   tolerations: bool, age: int) -> None:
    """When pod_events_matter says no, the node's reconcile is the same with or without its pods."""
    node = hollownode.node_body("n1", 1, {"cpu": "2", "memory": "4Gi", "pods": "110"}, T0)
    node["spec"]["taints"] = [dict(t, timeAdded=timestamp(T0)) for t in taints]
    conds = node["status"]["conditions"]
    node["status"]["conditions"] = [c if c["type"] != "Ready" or ready is None else dict(c, status=ready)
                                    for c in conds if c["type"] != "Ready" or ready is not None]
    pods = [{"metadata": {"name": f"p{i}", "namespace": "default", "uid": f"p{i}"},
             "spec": {"nodeName": "n1", "tolerations": [{"operator": "Exists"}] if tolerations and i else []},
             "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}} for i in range(3)]
    lease = hollownode.lease_body("n1", T0)
    now = T0 + dt.timedelta(seconds=age)
    if not nodelifecycle.pod_events_matter(node, lease, now):
        with_pods = nodelifecycle.reconcile(node, lease, pods, now)
        without = nodelifecycle.reconcile(node, lease, [], now)
        assert with_pods.actions == without.actions and with_pods.next_check == without.next_check
    assert nodelifecycle.pod_events_matter(None, lease, now)


def test_hollow_kubelet_runs_and_deletes_pods() -> None:
    pods = [{"metadata": {"name": n, "namespace": "default", "uid": n}, "spec": {"nodeName": "n1",
             "containers": [{"name": "c", "image": "nginx"}]}, "status": {"phase": "Pending"}} for n in "ab"]
    pods.append({"metadata": {"name": "z", "namespace": "default", "uid": "z",
                              "deletionTimestamp": timestamp(T0)}, "spec": {"nodeName": "n1"}})
    pods.append({"metadata": {"name": "other", "namespace": "default"}, "spec": {"nodeName": "n2"}})
    acts = hollownode.pod_actions("n1", 3, pods, T0)
    assert [(a.verb, a.name) for a in acts] == [("update_status", "a"), ("update_status", "b"), ("delete", "z")]
    ips = [(a.body or {})["status"]["podIP"] for a in acts[:2]]
    assert ips == ["10.244.3.2", "10.244.3.3"]
    assert acts[2].options["gracePeriodSeconds"] == 0
    assert hollownode.lease_body("n1", T0)["spec"]["renewTime"] == micro_timestamp(T0)


def test_pod_gc_removes_pods_of_missing_nodes() -> None:
    from gifee.controllers import podgc
    pods = [{"metadata": {"name": n, "namespace": "d", "uid": n}, "spec": {"nodeName": node} if node else {}}
            for n, node in (("a", "n1"), ("b", "gone"), ("c", ""))]
    acts = podgc.reconcile(pods, [{"metadata": {"name": "n1"}}])
    assert [(a.verb, a.name, a.options["gracePeriodSeconds"]) for a in acts] == [("delete", "b", 0)]
    assert acts[0].options["confirmAbsent"][0]["name"] == "gone"


def test_hollow_kubelet_makes_pods_ready_again() -> None:
    pod = {"metadata": {"name": "a", "namespace": "default", "uid": "a"},
           "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}, "status": {}}
    [act] = hollownode.pod_actions("n1", 0, [pod], T0)
    running = dict(pod, status=(act.body or {})["status"])
    assert hollownode.pod_actions("n1", 0, [running], T0) == []
    for c in running["status"]["conditions"]:
        if c["type"] == "Ready":
            c["status"] = "False"
    [again] = hollownode.pod_actions("n1", 0, [running], T0)
    assert all(c["status"] == "True" for c in (again.body or {})["status"]["conditions"])


@settings(max_examples=100, deadline=None)
@given(phase=st.sampled_from([None, "Pending", "Running", "Succeeded", "Failed", "Unknown"]),
       ip=st.booleans(), ready=st.sampled_from([None, "True", "False"]), deleting=st.booleans())
def test_a_hollow_node_is_synced_only_for_pods_its_sync_acts_on(phase: str | None, ip: bool, ready: str | None,
                                                                deleting: bool) -> None:
    """hollownode.needs_sync is exactly "pod_actions would act on this pod", and the shell queues a
    node only for such pods (a status it just wrote, seen again, queued the node for nothing)."""
    import asyncio

    from gifee.api.client import ApiClient
    from gifee.controllers.hollow import HollowNodes

    status: dict[str, Any] = {}
    if phase is not None:
        status["phase"] = phase
    if ip:
        status["podIP"] = "10.244.0.9"
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": ready}]
    meta: dict[str, Any] = {"name": "a", "namespace": "default", "uid": "a"}
    if deleting:
        meta["deletionTimestamp"] = timestamp(T0)
    pod = {"metadata": meta, "spec": {"nodeName": "hollow-node-0", "containers": [{"name": "c", "image": "x"}]},
           "status": status}
    acts = bool(hollownode.pod_actions("hollow-node-0", 0, [pod], T0))
    assert hollownode.needs_sync(pod) == acts

    async def queued() -> int:
        api = ApiClient("http://127.0.0.1:1")
        try:
            nodes = HollowNodes(api, 1)
            nodes.pods.observe("MODIFIED", pod)
            return len(nodes.queue)
        finally:
            await api.close()
    assert asyncio.run(queued()) == (1 if acts else 0)
