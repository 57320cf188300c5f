from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gifee.controllers import replicas
from gifee.controllers.objects import controller_ref

from .sim import Cluster

TEMPLATE = {"metadata": {"labels": {"app": "web", "env": "prod"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}


def rs(replicas_: int) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": replicas_, "selector": {"matchLabels": {"app": "web", "env": "prod"}},
                     "template": TEMPLATE}}


def rc(replicas_: int) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": replicas_, "selector": {"app": "web", "env": "prod"}, "template": TEMPLATE}}


def run(c: Cluster, resource: str, kind: str, steps: int = 6) -> None:
    for _ in range(steps):
        owner = c.get(resource, "default", "web")
        assert owner is not None
        out = replicas.reconcile(owner, kind, c.list("pods"), c.now)
        c.apply(out.actions)
        c.kubelet()


pod_sets = st.lists(st.tuples(st.sampled_from(["web", "db"]), st.sampled_from(["prod", "dev"]),
                              st.sampled_from(["Pending", "Running", "Failed"]), st.booleans()), max_size=12)


@settings(max_examples=60, deadline=None)
@given(want=st.integers(0, 8), pods=pod_sets, kind=st.sampled_from(["ReplicaSet", "ReplicationController"]))
def test_converges_from_any_start(want: int, pods: list[tuple[str, str, str, bool]], kind: str) -> None:
    c = Cluster()
    resource = "replicasets" if kind == "ReplicaSet" else "replicationcontrollers"
    owner = c.add(resource, rs(want) if kind == "ReplicaSet" else rc(want))
    for app, env, phase, owned in pods:
        meta: dict[str, Any] = {"generateName": "pre-", "namespace": "default", "labels": {"app": app, "env": env}}
        if owned:
            meta["ownerReferences"] = [{"apiVersion": "v1", "kind": kind, "name": "web",
                                        "uid": owner["metadata"]["uid"], "controller": True}]
        c.add("pods", {"metadata": meta, "spec": {}, "status": {"phase": phase}})
    run(c, resource, kind)
    uid = owner["metadata"]["uid"]
    mine = [p for p in c.list("pods") if (controller_ref(p) or {}).get("uid") == uid
            and p["status"]["phase"] not in ("Failed", "Succeeded")]
    assert len(mine) == want
    assert all(p["metadata"]["labels"] == {"app": "web", "env": "prod"} for p in mine)
    # pods whose labels do not match are never owned
    assert not any((controller_ref(p) or {}).get("uid") == uid for p in c.list("pods")
                   if p["metadata"]["labels"] != {"app": "web", "env": "prod"})
    status = c.get(resource, "default", "web")["status"]  # type: ignore[index]
    assert status["replicas"] == want and status["readyReplicas"] == want
    # a further pass is quiet
    final = replicas.reconcile(c.get(resource, "default", "web") or {}, kind, c.list("pods"), c.now)
    assert final.actions == []


def test_scale_down_prefers_unready_and_unscheduled() -> None:
    c = Cluster()
    owner = c.add("replicasets", rs(3))
    ref = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": owner["metadata"]["uid"],
            "controller": True}]
    labels = {"app": "web", "env": "prod"}
    for name, node, ready in [("a", "n1", True), ("b", "", False), ("c", "n1", False), ("d", "n2", True),
                              ("e", "n2", True)]:
        c.add("pods", {"metadata": {"name": name, "namespace": "default", "labels": labels, "ownerReferences": ref},
                       "spec": {"nodeName": node} if node else {},
                       "status": {"phase": "Running" if node else "Pending",
                                  "conditions": [{"type": "Ready", "status": str(ready)}]}})
    out = replicas.reconcile(c.get("replicasets", "default", "web") or {}, "ReplicaSet", c.list("pods"), c.now)
    deleted = sorted(a.name for a in out.actions if a.verb == "delete")
    assert deleted == ["b", "c"]


def test_created_pods_carry_template_and_controller_ref() -> None:
    c = Cluster()
    owner = c.add("replicationcontrollers", rc(2))
    out = replicas.reconcile(owner, "ReplicationController", [], c.now)
    creates = [a for a in out.actions if a.verb == "create"]
    assert len(creates) == 2
    body = creates[0].body or {}
    assert body["metadata"]["generateName"] == "web-"
    assert body["metadata"]["labels"] == {"app": "web", "env": "prod"}
    assert body["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "ReplicationController",
                                                    "name": "web", "uid": owner["metadata"]["uid"],
                                                    "controller": True, "blockOwnerDeletion": True}]
