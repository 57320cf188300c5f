"""The scheduler core's fast paths (the resource-only filter, constant scores, the one-pass
tie-break) decide exactly as the plain rules: every filter on every node, every score as a list."""

from __future__ import annotations

import zlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gifee.scheduler import core
from gifee.scheduler.nodetable import NodeTable


def reference(pod: dict[str, Any], infos: list[core.NodeInfo], services: list[dict[str, Any]], *, start: int,
              percentage: int) -> core.Result:
    """schedule_on as it was before its fast paths (kept here as the oracle)."""
    w = core._wanted(pod, services)
    nodes = [i for i in infos if i.node is not None]
    total = len(nodes)
    enough = core.nodes_to_find(total, percentage)
    if total and start % total:
        start %= total
        nodes = nodes[start:] + nodes[:start]
    feasible: list[core.NodeInfo] = []
    reasons: dict[str, list[str]] = {}
    checked = 0
    for info in nodes:
        checked += 1
        why = core._fit(w, info)
        if why:
            reasons[info.name] = why
        else:
            feasible.append(info)
            if len(feasible) >= enough:
                break
    if not feasible:
        return core.Result(None, {}, reasons, core.failure_message(total, reasons), checked)
    if w.services:
        spread_raw = [float(core._same_group_count(w, i)) for i in feasible]
    elif w.group:
        spread_raw = [float(i.groups.get(w.group, 0)) for i in feasible]
    else:
        spread_raw = [0.0] * len(feasible)
    spread = core._normalized(spread_raw, True)
    taints = core._normalized([float(sum(1 for t in i.soft_taints
                                         if not any(core.tolerates(x, t) for x in w.tolerations)))
                               if i.soft_taints else 0.0 for i in feasible], True)
    aff = core._normalized([float(core.preferred_affinity(w.pod, i.node) if w.preferred and i.node else 0)
                            for i in feasible], False)
    wt = core.WEIGHTS
    scores: dict[str, float] = {}
    for k, i in enumerate(feasible):
        fc, fm = core._fractions(w, i)
        scores[i.name] = (wt["LeastAllocated"] * ((1 - fc) + (1 - fm)) / 2 * 100
                          + wt["BalancedAllocation"] * (1 - abs(fc - fm) / 2) * 100
                          + wt["Spread"] * spread[k] + wt["TaintToleration"] * taints[k]
                          + wt["NodeAffinity"] * aff[k])
    top = max(round(s, 6) for s in scores.values())
    salt = zlib.crc32(f"{core.uid_of(pod) or f'{core.namespace_of(pod)}/{core.name_of(pod)}'}/".encode())
    best = max((i for i in feasible if round(scores[i.name], 6) == top),
               key=lambda i: zlib.crc32(i.name_bytes, salt)).name
    return core.Result(best, scores, reasons, "", checked)


TAINTS = [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}, {"key": "slow", "effect": "PreferNoSchedule"},
          {"key": "old", "effect": "NoExecute"}]
TOLERATIONS = [{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"},
               {"key": "slow", "operator": "Exists"}, {"operator": "Exists"}]


def owner(i: int) -> list[dict[str, Any]]:
    return [{"apiVersion": "v1", "kind": "ReplicationController", "name": f"rc{i}", "uid": f"rc{i}",
             "controller": True}]


node_st = st.fixed_dictionaries({
    "cpu": st.sampled_from(["500m", "1", "4"]), "mem": st.sampled_from(["1Gi", "8Gi"]),
    "pods": st.sampled_from(["2", "5", "110", ""]), "taints": st.lists(st.sampled_from(TAINTS), max_size=2,
                                                                         unique_by=lambda t: t["key"]),
    "unschedulable": st.booleans(), "zone": st.sampled_from(["a", "b"])})
pod_st = st.fixed_dictionaries({
    "cpu": st.sampled_from(["", "100m", "700m"]), "mem": st.sampled_from(["", "512Mi"]),
    "group": st.integers(-1, 2), "port": st.sampled_from([0, 0, 8080]), "node": st.integers(0, 11),
    "tolerations": st.lists(st.sampled_from(TOLERATIONS), max_size=2), "selector": st.booleans(),
    "preferred": st.booleans(), "app": st.sampled_from(["web", "db"])})


def make_node(i: int, d: dict[str, Any]) -> dict[str, Any]:
    alloc = {"cpu": d["cpu"], "memory": d["mem"]}
    if d["pods"]:
        alloc["pods"] = d["pods"]
    spec: dict[str, Any] = {"taints": d["taints"]}
    if d["unschedulable"]:
        spec["unschedulable"] = True
    return {"metadata": {"name": f"n{i}", "labels": {"zone": d["zone"]}}, "spec": spec,
            "status": {"allocatable": alloc}}


def make_pod(name: str, d: dict[str, Any], node: str = "") -> dict[str, Any]:
    req = {k: v for k, v in (("cpu", d["cpu"]), ("memory", d["mem"])) if v}
    c: dict[str, Any] = {"name": "c", "resources": {"requests": req}}
    if d["port"]:
        c["ports"] = [{"containerPort": 80, "hostPort": d["port"]}]
    spec: dict[str, Any] = {"containers": [c], "tolerations": d["tolerations"]}
    if d["selector"]:
        spec["nodeSelector"] = {"zone": "a"}
    if d["preferred"]:
        spec["affinity"] = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 5, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}}]}}
    if node:
        spec["nodeName"] = node
    meta: dict[str, Any] = {"name": name, "namespace": "default", "uid": name, "labels": {"app": d["app"]}}
    if d["group"] >= 0:
        meta["ownerReferences"] = owner(d["group"])
    return {"metadata": meta, "spec": spec, "status": {"phase": "Running"}}


@settings(max_examples=300, deadline=None)
@given(nodes=st.lists(node_st, min_size=1, max_size=12), placed=st.lists(pod_st, max_size=30), pending=pod_st,
       with_service=st.booleans(), start=st.integers(0, 20), percentage=st.sampled_from([0, 10, 50, 100]))
def test_fast_paths_decide_as_the_plain_rules(nodes: list[dict[str, Any]], placed: list[dict[str, Any]],
                                              pending: dict[str, Any], with_service: bool, start: int,
                                              percentage: int) -> None:
    ns = [make_node(i, d) for i, d in enumerate(nodes)]
    pods = [make_pod(f"p{i}", d, f"n{d['node'] % len(ns)}") for i, d in enumerate(placed)]
    services = [{"metadata": {"name": "s", "namespace": "default"}, "spec": {"selector": {"app": "web"}}}] \
        if with_service else []
    infos = list(core.node_infos(ns, pods).values())
    pod = make_pod("new", pending)
    got = core.schedule_on(pod, infos, services, start=start, percentage=percentage)
    want = reference(pod, infos, services, start=start, percentage=percentage)
    assert (got.node, got.scores, got.reasons, got.message, got.checked) == \
        (want.node, want.scores, want.reasons, want.message, want.checked)


def test_large_uniform_cluster() -> None:
    """1,000 equal nodes with pods spread unevenly: the sampled, tie-broken decisions agree."""
    ns = [make_node(i, {"cpu": "4", "mem": "8Gi", "pods": "110", "taints": [], "unschedulable": False,
                        "zone": "a"}) for i in range(1000)]
    d = {"cpu": "", "mem": "", "group": 1, "port": 0, "node": 0, "tolerations": [], "selector": False,
         "preferred": False, "app": "web"}
    pods = [make_pod(f"p{i}", d, f"n{(i * 7) % 1000}") for i in range(3000)]
    infos = list(core.node_infos(ns, pods).values())
    for k in range(20):
        pod = make_pod(f"new{k}", d)
        got = core.schedule_on(pod, infos, start=k * 420, percentage=0)
        want = reference(pod, infos, [], start=k * 420, percentage=0)
        assert (got.node, got.scores, got.checked) == (want.node, want.scores, want.checked)


@settings(max_examples=200, deadline=None)
@given(pods_per_node=st.lists(st.integers(0, 3), min_size=1, max_size=150), start=st.integers(0, 300),
       percentage=st.sampled_from([0, 10, 50, 100]), taint=st.booleans())
def test_the_shells_fast_filter_finds_the_same_nodes(pods_per_node: list[int], start: int, percentage: int,
                                                     taint: bool) -> None:
    """with_scores=False (the shell): plain pods without requests on plain nodes are filtered in C;
    the decision and `checked` equal the plain loop's (with_scores=True), room or not."""
    plain = {"cpu": "4", "mem": "8Gi", "pods": "3", "taints": [], "unschedulable": False, "zone": "a"}
    ns = [make_node(i, plain) for i in range(len(pods_per_node))]
    if taint:  # one node that is not plain: the fast path must not be taken
        ns[0]["spec"]["taints"] = [TAINTS[0]]
    d = {"cpu": "", "mem": "", "group": 1, "port": 0, "node": 0, "tolerations": [], "selector": False,
         "preferred": False, "app": "web"}
    pods = [make_pod(f"p{i}-{k}", d, f"n{i}") for i, n in enumerate(pods_per_node) for k in range(n)]
    infos = list(core.node_infos(ns, pods).values())
    pod = make_pod("new", d)
    fast = core.schedule_on(pod, infos, start=start, percentage=percentage, with_scores=False)
    slow = core.schedule_on(pod, infos, start=start, percentage=percentage)
    assert (fast.node, fast.checked, fast.message) == (slow.node, slow.checked, slow.message)
    # the shell's table, attached to the NodeInfos (it knows whether every node is plain)
    told = core.schedule_on(pod, NodeTable(infos, attach=True), start=start, percentage=percentage,
                            with_scores=False)
    assert (told.node, told.checked, told.message) == (slow.node, slow.checked, slow.message)
