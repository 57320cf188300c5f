"""The scheduler's core: one pending pod, the nodes and the pods already placed ->
the node to bind it to (or why none fits).

Rules (the default Kubernetes scheduler's plugins, minus the ones gifee has no
objects for):
- Filters, each node must pass all:
  NodeName       pod.spec.nodeName, if set, names the node;
  NodeUnschedulable  spec.unschedulable nodes only take pods tolerating
                 node.kubernetes.io/unschedulable:NoSchedule;
  NodeAffinity   spec.nodeSelector (all pairs) and the required node affinity terms
                 (terms ORed, expressions ANDed; In/NotIn/Exists/DoesNotExist/Gt/Lt,
                 matchFields on metadata.name);
  TaintToleration  every NoSchedule and NoExecute taint is tolerated;
  NodePorts      no hostPort (protocol, port, overlapping hostIP) already used;
  NodeResourcesFit  requests (sum of containers, at least the largest init
                 container) plus what the node's pods request stay within
                 status.allocatable (cpu, memory, ephemeral-storage, extended
                 resources), and the pod count within allocatable pods.
- Scores, 0..100 each, summed with weights (default 1 each, spread 2):
  LeastAllocated (free share after placement, cpu and memory averaged, pods
  without requests counted as 100m / 200Mi), BalancedAllocation (1 - spread of
  the cpu and memory fractions), Spread (fewer pods of the same controller or of
  services selecting the pod on the node is better), TaintToleration (fewer
  untolerated PreferNoSchedule taints), NodeAffinity (preferred terms' weights).
- Ties break on a hash of (pod uid, node name): deterministic, yet different pods
  of one ReplicaSet do not all prefer the same node.
- Failure yields Kubernetes' message "0/N nodes are available: ..." with counted
  reasons, for the pod's PodScheduled=False condition.

Theory of operation: `schedule(pod, nodes, pods, services)` runs every filter on
every node, scores the survivors and returns the best; `bind_action` and
`unschedulable_action` turn the result into the API calls. The shell calls this
once per pending pod, then treats the pod as placed (assumed) until the API
server's watch confirms the binding, so the next decision sees it.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gifee.controllers.objects import (
    Action,
    Obj,
    controller_ref,
    fnv32a,
    labels_of,
    map_selector_matches,
    meta,
    milli,
    name_of,
    namespace_of,
    parse_quantity,
    timestamp,
    uid_of,
)

DEFAULT_SCHEDULER = "default-scheduler"
DEFAULT_MILLI_CPU = 100
DEFAULT_MEMORY_MILLI = 200 * 1024 * 1024 * 1000
WEIGHTS = {"LeastAllocated": 1, "BalancedAllocation": 1, "Spread": 2, "TaintToleration": 1, "NodeAffinity": 1}


@dataclass
class Result:
    node: str | None
    scores: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, list[str]] = field(default_factory=dict)  # node -> why it was filtered out
    message: str = ""


def _spec(obj: Obj) -> Obj:
    s = obj.get("spec")
    return s if isinstance(s, dict) else {}


def wants_scheduling(pod: Obj, scheduler_name: str = DEFAULT_SCHEDULER) -> bool:
    spec = _spec(pod)
    return (not spec.get("nodeName") and not meta(pod).get("deletionTimestamp")
            and (spec.get("schedulerName") or DEFAULT_SCHEDULER) == scheduler_name
            and (pod.get("status") or {}).get("phase", "Pending") not in ("Succeeded", "Failed"))


# --- requests ----------------------------------------------------------------------------------------

def pod_requests(pod: Obj) -> dict[str, int]:
    """Requests in thousandths: sum over containers, then max with each init container,
    plus the pod overhead."""
    total: Counter[str] = Counter()
    spec = _spec(pod)
    for c in spec.get("containers") or []:
        for k, v in ((c.get("resources") or {}).get("requests") or {}).items():
            total[k] += milli(v)
    for c in spec.get("initContainers") or []:
        for k, v in ((c.get("resources") or {}).get("requests") or {}).items():
            total[k] = max(total[k], milli(v))
    for k, v in (spec.get("overhead") or {}).items():
        total[k] += milli(v)
    return dict(total)


def allocatable(node: Obj) -> dict[str, int]:
    status = node.get("status") or {}
    alloc = status.get("allocatable") or status.get("capacity") or {}
    return {k: milli(v) for k, v in alloc.items()}


def _counts_on_node(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


# --- filters -----------------------------------------------------------------------------------------

def tolerates(toleration: Obj, taint: Obj) -> bool:
    eff = toleration.get("effect") or ""
    if eff and eff != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    op = toleration.get("operator") or "Equal"
    if key and key != taint.get("key"):
        return False
    if op == "Exists":
        return True
    if not key:  # an empty key needs Exists
        return False
    return (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated(pod: Obj, node: Obj, effects: Iterable[str]) -> list[Obj]:
    tols = [t for t in _spec(pod).get("tolerations") or [] if isinstance(t, dict)]
    wanted = set(effects)
    return [t for t in _spec(node).get("taints") or []
            if isinstance(t, dict) and t.get("effect") in wanted and not any(tolerates(x, t) for x in tols)]


def _expr_matches(expr: Obj, labels: dict[str, str]) -> bool:
    key, op = expr.get("key", ""), expr.get("operator", "")
    values = [str(v) for v in expr.get("values") or []]
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and len(values) == 1:
        try:
            a, b = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


def term_matches(term: Obj, node: Obj) -> bool:
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False  # an empty term matches no objects
    labels = labels_of(node)
    if not all(_expr_matches(e, labels) for e in exprs):
        return False
    return all(_expr_matches(f, {"metadata.name": name_of(node)}) for f in fields)


def affinity_ok(pod: Obj, node: Obj) -> bool:
    spec = _spec(pod)
    labels = labels_of(node)
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if required is None:
        return True
    return any(term_matches(t, node) for t in required.get("nodeSelectorTerms") or [])


def _host_ports(pod: Obj) -> list[tuple[str, str, int]]:
    out = []
    for c in _spec(pod).get("containers") or []:
        for p in c.get("ports") or []:
            hp = p.get("hostPort")
            if hp:
                out.append((p.get("protocol") or "TCP", p.get("hostIP") or "0.0.0.0", int(hp)))
    return out


def ports_conflict(pod: Obj, node_pods: list[Obj]) -> bool:
    wanted = _host_ports(pod)
    if not wanted:
        return False
    used = [hp for p in node_pods for hp in _host_ports(p)]
    for proto, ip, port in wanted:
        for uproto, uip, uport in used:
            if proto == uproto and port == uport and (ip == uip or "0.0.0.0" in (ip, uip)):
                return True
    return False


def fit_reasons(pod: Obj, node: Obj, node_pods: list[Obj]) -> list[str]:
    """Why `pod` cannot run on `node`, in the scheduler's words; empty if it fits."""
    spec = _spec(pod)
    reasons: list[str] = []
    if spec.get("nodeName") and spec["nodeName"] != name_of(node):
        return ["node(s) didn't match the requested node name"]
    if _spec(node).get("unschedulable") and not any(
            tolerates(t, {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"})
            for t in spec.get("tolerations") or []):
        return ["node(s) were unschedulable"]
    if not affinity_ok(pod, node):
        return ["node(s) didn't match Pod's node affinity/selector"]
    bad = untolerated(pod, node, ("NoSchedule", "NoExecute"))
    if bad:
        t = bad[0]
        text = f"{t.get('key')}: {t.get('value')}" if t.get("value") else str(t.get("key"))
        return [f"node(s) had untolerated taint {{{text}}}"]
    if ports_conflict(pod, node_pods):
        reasons.append("node(s) didn't have free ports for the requested pod ports")
    alloc = allocatable(node)
    if "pods" in alloc and len(node_pods) + 1 > alloc["pods"] // 1000:
        reasons.append("Too many pods")
    used: Counter[str] = Counter()
    for p in node_pods:
        used.update(pod_requests(p))
    for res, amount in sorted(pod_requests(pod).items()):
        if amount <= 0:
            continue
        if used[res] + amount > alloc.get(res, 0):
            reasons.append(f"Insufficient {res}")
    return reasons


# --- scores ------------------------------------------------------------------------------------------

def _nonzero(req: dict[str, int]) -> tuple[int, int]:
    return (req.get("cpu") or DEFAULT_MILLI_CPU, req.get("memory") or DEFAULT_MEMORY_MILLI)


def _fractions(pod: Obj, node: Obj, node_pods: list[Obj]) -> tuple[float, float]:
    cpu, mem = _nonzero(pod_requests(pod))
    for p in node_pods:
        c, m = _nonzero(pod_requests(p))
        cpu += c
        mem += m
    alloc = allocatable(node)
    fc = cpu / alloc["cpu"] if alloc.get("cpu") else 1.0
    fm = mem / alloc["memory"] if alloc.get("memory") else 1.0
    return min(fc, 1.0), min(fm, 1.0)


def least_allocated(pod: Obj, node: Obj, node_pods: list[Obj]) -> float:
    fc, fm = _fractions(pod, node, node_pods)
    return ((1 - fc) + (1 - fm)) / 2 * 100


def balanced_allocation(pod: Obj, node: Obj, node_pods: list[Obj]) -> float:
    fc, fm = _fractions(pod, node, node_pods)
    return (1 - abs(fc - fm) / 2) * 100


def _same_group(pod: Obj, other: Obj, services: list[Obj]) -> bool:
    if namespace_of(other) != namespace_of(pod):
        return False
    ref = controller_ref(pod)
    oref = controller_ref(other)
    if ref is not None and oref is not None and ref.get("uid") == oref.get("uid"):
        return True
    labels, olabels = labels_of(pod), labels_of(other)
    for svc in services:
        sel = _spec(svc).get("selector")
        if namespace_of(svc) == namespace_of(pod) and map_selector_matches(sel, labels) \
                and map_selector_matches(sel, olabels):
            return True
    return False


def preferred_affinity(pod: Obj, node: Obj) -> int:
    prefs = (((_spec(pod).get("affinity") or {}).get("nodeAffinity") or {})
             .get("preferredDuringSchedulingIgnoredDuringExecution") or [])
    return sum(int(p.get("weight", 0)) for p in prefs if term_matches(p.get("preference") or {}, node))


def _normalize(raw: dict[str, float], reverse: bool) -> dict[str, float]:
    top = max(raw.values(), default=0)
    if top <= 0:
        return {n: (100.0 if reverse else 0.0) for n in raw}
    return {n: (100 - v * 100 / top) if reverse else v * 100 / top for n, v in raw.items()}


def score(pod: Obj, feasible: list[Obj], by_node: dict[str, list[Obj]], services: list[Obj],
          weights: dict[str, int] | None = None) -> dict[str, float]:
    w = weights or WEIGHTS
    spread_raw = {name_of(n): float(sum(1 for p in by_node.get(name_of(n), []) if _same_group(pod, p, services)))
                  for n in feasible}
    taint_raw = {name_of(n): float(len(untolerated(pod, n, ("PreferNoSchedule",)))) for n in feasible}
    aff_raw = {name_of(n): float(preferred_affinity(pod, n)) for n in feasible}
    spread, taints, aff = _normalize(spread_raw, True), _normalize(taint_raw, True), _normalize(aff_raw, False)
    out: dict[str, float] = {}
    for n in feasible:
        name = name_of(n)
        np_ = by_node.get(name, [])
        out[name] = (w["LeastAllocated"] * least_allocated(pod, n, np_)
                     + w["BalancedAllocation"] * balanced_allocation(pod, n, np_)
                     + w["Spread"] * spread[name] + w["TaintToleration"] * taints[name]
                     + w["NodeAffinity"] * aff[name])
    return out


# --- the decision ------------------------------------------------------------------------------------

def pods_by_node(pods: Iterable[Obj]) -> dict[str, list[Obj]]:
    out: dict[str, list[Obj]] = {}
    for p in pods:
        node = _spec(p).get("nodeName")
        if node and _counts_on_node(p):
            out.setdefault(str(node), []).append(p)
    return out


def failure_message(total: int, reasons: dict[str, list[str]]) -> str:
    counts = Counter(r for rs in reasons.values() for r in rs)
    if not counts:
        return f"0/{total} nodes are available."
    parts = [f"{n} {r}" for r, n in sorted(counts.items(), key=lambda kv: kv[0])]
    return f"0/{total} nodes are available: " + ", ".join(parts) + "."


def schedule(pod: Obj, nodes: list[Obj], pods: Iterable[Obj], services: Iterable[Obj] = (),
             weights: dict[str, int] | None = None) -> Result:
    by_node = pods_by_node(pods)
    svcs = list(services)
    feasible: list[Obj] = []
    reasons: dict[str, list[str]] = {}
    for node in sorted(nodes, key=name_of):
        why = fit_reasons(pod, node, by_node.get(name_of(node), []))
        if why:
            reasons[name_of(node)] = why
        else:
            feasible.append(node)
    if not feasible:
        return Result(None, {}, reasons, failure_message(len(nodes), reasons))
    scores = score(pod, feasible, by_node, svcs, weights)
    salt = uid_of(pod) or f"{namespace_of(pod)}/{name_of(pod)}"
    best = max(scores, key=lambda n: (round(scores[n], 6), fnv32a(f"{salt}/{n}".encode())))
    return Result(best, scores, reasons, "")


def bind_action(pod: Obj, node: str) -> Action:
    body = {"apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name_of(pod), "namespace": namespace_of(pod), "uid": uid_of(pod)},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
    return Action("bind", "pods", namespace_of(pod), name_of(pod), body)


def unschedulable_action(pod: Obj, message: str, now: dt.datetime) -> Action | None:
    """Set PodScheduled=False/Unschedulable with the message, unless it already says so."""
    status = dict(pod.get("status") or {})
    conds = [dict(c) for c in status.get("conditions") or [] if isinstance(c, dict)]
    for c in conds:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("message") == message:
            return None
    conds = [c for c in conds if c.get("type") != "PodScheduled"]
    conds.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                  "lastProbeTime": None, "lastTransitionTime": timestamp(now)})
    status["conditions"] = conds
    status.setdefault("phase", "Pending")
    body: dict[str, Any] = {"status": status}
    return Action("patch", "pods", namespace_of(pod), name_of(pod), body,
                  {"subresource": "status", "patchType": "application/merge-patch+json"})


def parse_resources(text: str) -> dict[str, str]:
    """"cpu=4,memory=8Gi,pods=110" -> a resource list (checked)."""
    out: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        k, _, v = part.partition("=")
        parse_quantity(v)
        out[k.strip()] = v.strip()
    return out
