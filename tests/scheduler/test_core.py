from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gifee.scheduler import core
from gifee.scheduler.nodetable import NodeTable


def node(name: str, cpu: str = "2", mem: str = "4Gi", pods: str = "110", labels: dict[str, str] | None = None,
         taints: list[dict[str, str]] | None = None, unschedulable: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"taints": taints or []}
    if unschedulable:
        spec["unschedulable"] = True
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec,
            "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": pods}}}


def pod(name: str, cpu: str | None = None, mem: str | None = None, node_name: str | None = None,
        **spec: Any) -> dict[str, Any]:
    req = {k: v for k, v in (("cpu", cpu), ("memory", mem)) if v}
    s: dict[str, Any] = {"containers": [{"name": "c", "resources": {"requests": req}}], **spec}
    if node_name:
        s["nodeName"] = node_name
    return {"metadata": {"name": name, "namespace": "default", "uid": name}, "spec": s, "status": {"phase": "Running"}}


@settings(max_examples=100, deadline=None)
@given(nodes=st.lists(st.tuples(st.integers(1, 4000), st.integers(1, 8)), min_size=1, max_size=5),
       pods=st.lists(st.tuples(st.integers(0, 1500), st.integers(0, 3)), max_size=25))
def test_never_places_a_pod_without_room(nodes: list[tuple[int, int]], pods: list[tuple[int, int]]) -> None:
    ns = [node(f"n{i}", cpu=f"{c}m", mem=f"{m}Gi") for i, (c, m) in enumerate(nodes)]
    placed: list[dict[str, Any]] = []
    for i, (c, m) in enumerate(pods):
        p = pod(f"p{i}", cpu=f"{c}m", mem=f"{m}Gi" if m else None)
        r = core.schedule(p, ns, placed)
        used = {n["metadata"]["name"]: [0, 0] for n in ns}
        for q in placed:
            req = core.pod_requests(q)
            used[q["spec"]["nodeName"]][0] += req.get("cpu", 0)
            used[q["spec"]["nodeName"]][1] += req.get("memory", 0)
        fits = [n for n in ns if used[n["metadata"]["name"]][0] + c <= core.allocatable(n)["cpu"]
                and used[n["metadata"]["name"]][1] + m * 2**30 * 1000 <= core.allocatable(n)["memory"]]
        if r.node is None:
            assert not fits and r.message.startswith(f"0/{len(ns)} nodes are available:")
        else:
            assert r.node in {n["metadata"]["name"] for n in fits}
            p["spec"]["nodeName"] = r.node
            placed.append(p)


def test_filters() -> None:
    nodes = [node("a", labels={"disk": "ssd"}), node("b", taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]),
             node("c", unschedulable=True)]
    assert core.schedule(pod("p", nodeSelector={"disk": "ssd"}), nodes, []).node == "a"
    tol = [{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}]
    assert core.schedule(pod("p", nodeSelector={"kubernetes.io/hostname": "x"}), nodes, []).node is None
    r = core.schedule(pod("p", tolerations=tol, affinity={"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "disk", "operator": "DoesNotExist"}]}]}}}), nodes, [])
    assert r.node == "b"
    r = core.schedule(pod("p", cpu="3"), nodes, [])
    assert r.node is None
    assert r.message == ("0/3 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint "
                         "{gpu: yes}, 1 node(s) were unschedulable.")


def test_host_ports_conflict() -> None:
    def hp(name: str, node_name: str | None = None) -> dict[str, Any]:
        p = pod(name, node_name=node_name)
        p["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 8080, "protocol": "TCP"}]
        return p
    nodes = [node("a"), node("b")]
    r = core.schedule(hp("new"), nodes, [hp("old", "a")])
    assert r.node == "b"
    assert core.schedule(hp("new"), nodes, [hp("x", "a"), hp("y", "b")]).node is None


def test_spreads_replicas_of_one_controller() -> None:
    nodes = [node(f"n{i}") for i in range(3)]
    ref = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs1", "controller": True}]
    placed: list[dict[str, Any]] = []
    for i in range(6):
        p = pod(f"p{i}", cpu="100m", mem="128Mi")
        p["metadata"]["ownerReferences"] = ref
        r = core.schedule(p, nodes, placed)
        assert r.node is not None
        p["spec"]["nodeName"] = r.node
        placed.append(p)
    counts = sorted(sum(1 for p in placed if p["spec"]["nodeName"] == n["metadata"]["name"]) for n in nodes)
    assert counts == [2, 2, 2]


def test_bind_and_unschedulable_actions() -> None:
    import datetime as dt
    p = pod("p")
    a = core.bind_action(p, "n1")
    assert (a.verb, a.resource, a.name, (a.body or {})["target"]) == (
        "bind", "pods", "p", {"apiVersion": "v1", "kind": "Node", "name": "n1"})
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    u = core.unschedulable_action(p, "0/1 nodes are available.", now)
    assert u is not None
    p["status"] = (u.body or {})["status"]
    assert core.unschedulable_action(p, "0/1 nodes are available.", now) is None


def test_large_clusters_score_a_rotating_sample() -> None:
    assert core.nodes_to_find(50) == 50
    assert core.nodes_to_find(1000) == 420  # Kubernetes' adaptive percentage: 50 - 1000/125 = 42%
    assert core.nodes_to_find(5000) == 500  # 10%
    assert core.nodes_to_find(100_000) == 5000  # never below 5%
    assert core.nodes_to_find(1000, 100) == 1000 and core.nodes_to_find(1000, 1) == 100
    infos = list(core.node_infos([node(f"n{i}") for i in range(300)], []).values())
    first = core.schedule_on(pod("a"), infos, start=0, percentage=0)  # 300 nodes: 48% = 144
    assert first.checked == 144 and first.node in set(first.scores) == {f"n{i}" for i in range(144)}
    second = core.schedule_on(pod("b"), infos, start=first.checked, percentage=0)
    assert set(second.scores) == {f"n{i}" for i in range(144, 288)}
    wrapped = core.schedule_on(pod("c"), infos, start=250, percentage=0)
    assert set(wrapped.scores) == {f"n{i}" for i in [*range(250, 300), *range(94)]}
    # every node is looked at before none is found
    full = [node(f"f{i}", cpu="100m") for i in range(300)]
    r = core.schedule(pod("big", cpu="1"), full, [])
    assert r.node is None and r.message == "0/300 nodes are available: 300 Insufficient cpu."


def _sums(info: core.NodeInfo) -> tuple[Any, ...]:
    return (sorted(info.pods), +info.requested, info.cpu, info.mem, +info.ports, +info.groups, info.open)


def _row(table: NodeTable, row: int) -> tuple[Any, ...]:
    """What the decisions read of one row of a table."""
    return (bool(table.open[row]), bool(table.plain[row]), bool(table.soft[row]), bool(table.big[row]),
            float(table.cpu[row]), float(table.mem[row]), float(table.alloc_cpu[row]),
            float(table.alloc_mem[row]), int(table.crc[row]), int(table.name_len[row]),
            {g: c[row] for g, c in table.groups.items() if row in c})


def test_adding_a_placed_pod_again_replaces_it() -> None:
    """NodeInfo.add of a pod it holds: the sums, and the attached table's row, are those of the pods
    as they are now, whether only the object changed (a status update) or its requests did."""
    owner = [{"kind": "ReplicationController", "name": "rc", "uid": "rc1", "controller": True}]
    first = pod("a", cpu="100m", node_name="n", hostPort=None)
    first["metadata"]["ownerReferences"] = owner
    info = core.NodeInfo(node("n"))
    table = NodeTable([info], attach=True)
    info.add("default/a", core.pod_facts(first))
    running = {**first, "status": {"phase": "Running", "podIP": "10.0.0.2"}}
    info.add("default/a", core.pod_facts(running))
    assert info.pods["default/a"].pod is running
    fresh = core.NodeInfo(node("n"))
    fresh.add("default/a", core.pod_facts(running))
    assert _sums(info) == _sums(fresh)
    assert _row(table, 0) == _row(NodeTable([fresh]), 0) and table.groups == {"default/rc1": {0: 1}}
    bigger = pod("a", cpu="300m", node_name="n")
    info.add("default/a", core.pod_facts(bigger))
    fresh = core.NodeInfo(node("n"))
    fresh.add("default/a", core.pod_facts(bigger))
    assert _sums(info) == _sums(fresh)
    assert _row(table, 0) == _row(NodeTable([fresh]), 0) and table.groups == {}
