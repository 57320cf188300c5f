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
- Ties break on a hash (CRC-32) of (pod uid, node name): deterministic, yet
  different pods of one ReplicaSet do not all prefer the same node.
- Large clusters: as Kubernetes' percentageOfNodesToScore, the filters stop once
  enough feasible nodes are found (adaptive: 50% minus 1% per 125 nodes, at least
  5% and at least 100 nodes; all nodes below 100), starting where the previous
  decision stopped so every node gets its turn; only those are scored.
- Failure yields Kubernetes' message "0/N nodes are available: ..." with counted
  reasons, for the pod's PodScheduled=False condition.

Theory of operation: `schedule(pod, nodes, pods, services)` runs every filter on
every node, scores the survivors and returns the best; `bind_action` and
`unschedulable_action` turn the result into the API calls. The shell calls
`schedule_on` once per pending pod over a NodeTable (nodetable.py: the live
nodes' columns, numpy arrays each NodeInfo keeps current), then treats the pod
as placed (assumed) until the API server's watch confirms the binding, so the
next decision sees it. The score pass and the tie-break run over those columns
in numpy, elementwise in the same order of operations as the plain rules per
node, so every score is the same float (tests/scheduler/test_core_equivalence.py
and test_nodetable.py compare with a plain loop).
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from gifee.controllers.objects import (
    Action,
    Obj,
    controller_ref,
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
from gifee.scheduler.nodetable import EXACT, Floats, NodeTable, Rows

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
    checked: int = 0  # nodes the filters looked at (the next decision starts after them)


MIN_FEASIBLE_NODES = 100
MIN_PERCENTAGE = 5


def nodes_to_find(total: int, percentage: int = 0) -> int:
    """How many feasible nodes are enough to score (Kubernetes' numFeasibleNodesToFind);
    percentage 0 is adaptive, 100 scores every feasible node."""
    if total < MIN_FEASIBLE_NODES or percentage >= 100:
        return total
    if percentage <= 0:
        percentage = max(MIN_PERCENTAGE, 50 - total // 125)
    return max(MIN_FEASIBLE_NODES, total * percentage // 100)


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
    # a plain dict, not a Counter: this runs on every pod event the scheduler sees, and building a
    # Counter was most of its cost for pods without requests
    total: dict[str, int] = {}
    spec = _spec(pod)
    for c in spec.get("containers") or []:
        for k, v in ((c.get("resources") or {}).get("requests") or {}).items():
            total[k] = total.get(k, 0) + milli(v)
    for c in spec.get("initContainers") or []:
        for k, v in ((c.get("resources") or {}).get("requests") or {}).items():
            total[k] = max(total.get(k, 0), milli(v))
    for k, v in (spec.get("overhead") or {}).items():
        total[k] = total.get(k, 0) + milli(v)
    return total


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


# --- what the decisions need of placed pods and of nodes, computed once per object -------------------

@dataclass
class PodFacts:
    """A placed pod as the filters and scores see it."""
    pod: Obj
    namespace: str
    requests: dict[str, int]
    nonzero: tuple[int, int]
    ports: list[tuple[str, str, int]]
    group: str  # "<namespace>/<controller uid>", or "" without a controller


def pod_facts(pod: Obj) -> PodFacts:
    req = pod_requests(pod)
    ref = controller_ref(pod)
    ns = namespace_of(pod)
    group = f"{ns}/{ref.get('uid')}" if ref is not None and ref.get("uid") else ""
    return PodFacts(pod, ns, req, _nonzero(req), _host_ports(pod), group)


class NodeInfo:
    """A node and the sums over its placed pods (requests, non-zero cpu/memory, host ports,
    pods per controller), kept up to date pod by pod so a decision never walks every pod."""

    # slots: a decision reads a few attributes of hundreds of NodeInfos through attrgetter and in
    # loops; a slot is read by its descriptor, without a lookup in an instance dict
    __slots__ = ("pods", "requested", "cpu", "mem", "ports", "groups", "table", "row", "node", "name",
                 "name_bytes", "alloc", "hard_taints", "soft_taints", "unschedulable", "plain", "alloc_cpu",
                 "alloc_mem", "max_pods", "open")

    def __init__(self, node: Obj | None = None) -> None:
        self.pods: dict[str, PodFacts] = {}
        self.requested: Counter[str] = Counter()
        self.cpu = 0
        self.mem = 0
        self.ports: Counter[tuple[str, str, int]] = Counter()
        self.groups: Counter[str] = Counter()
        self.table: NodeTable | None = None  # the attached table told of every change, and this node's row
        self.row = -1
        self.set_node(node)

    def set_node(self, node: Obj | None) -> None:
        self.node = node
        self.name = name_of(node) if node is not None else ""
        self.name_bytes = self.name.encode()
        self.alloc = allocatable(node) if node is not None else {}
        taints = [t for t in _spec(node).get("taints") or [] if isinstance(t, dict)] if node is not None else []
        self.hard_taints = [t for t in taints if t.get("effect") in ("NoSchedule", "NoExecute")]
        self.soft_taints = [t for t in taints if t.get("effect") == "PreferNoSchedule"]
        self.unschedulable = bool(_spec(node).get("unschedulable")) if node is not None else False
        # nodes that only the resource filter can turn down (the common case: the filter loop's fast path)
        self.plain = node is not None and not self.unschedulable and not self.hard_taints
        self.alloc_cpu = self.alloc.get("cpu") or 0  # _fractions' divisors (0: none)
        self.alloc_mem = self.alloc.get("memory") or 0
        self.max_pods: int | None = self.alloc["pods"] // 1000 if "pods" in self.alloc else None
        self._update_open()
        if self.table is not None:
            self.table.write_node(self.row, self)

    def _update_open(self) -> None:
        # a plain node with room for one more pod: what a plain pod without requests needs
        self.open = self.plain and (self.max_pods is None or len(self.pods) < self.max_pods)

    def add(self, key: str, facts: PodFacts) -> None:
        had = self.pods.get(key)
        if had is not None and had.nonzero == facts.nonzero and had.requests == facts.requests \
                and had.ports == facts.ports and had.group == facts.group:
            # the same pod again with nothing the sums count changed (its binding seen, a status update):
            # only the object is replaced; the sums and the table's row stay valid
            self.pods[key] = facts
            return
        self.remove(key)
        self.pods[key] = facts
        self._update_open()
        self.requested.update(facts.requests)
        self.cpu += facts.nonzero[0]
        self.mem += facts.nonzero[1]
        self.ports.update(facts.ports)
        if facts.group:
            self.groups[facts.group] += 1
        table = self.table
        if table is not None:
            table.write_load(self.row, self)
            if facts.group:
                table.count_group(self.row, facts.group, 1)

    def remove(self, key: str) -> None:
        facts = self.pods.pop(key, None)
        if facts is None:
            return
        self._update_open()
        self.requested.subtract(facts.requests)
        self.cpu -= facts.nonzero[0]
        self.mem -= facts.nonzero[1]
        self.ports.subtract(facts.ports)
        self.ports = +self.ports if facts.ports else self.ports
        if facts.group:
            self.groups[facts.group] -= 1
            if self.groups[facts.group] <= 0:
                del self.groups[facts.group]
        table = self.table
        if table is not None:
            table.write_load(self.row, self)
            if facts.group:
                table.count_group(self.row, facts.group, -1)


def node_infos(nodes: Iterable[Obj], pods: Iterable[Obj]) -> dict[str, NodeInfo]:
    infos = {name_of(n): NodeInfo(n) for n in nodes}
    for i, p in enumerate(pods):
        node = _spec(p).get("nodeName")
        if node and _counts_on_node(p) and str(node) in infos:
            infos[str(node)].add(f"{namespace_of(p)}/{name_of(p)}#{i}", pod_facts(p))
    return infos


def ports_conflict(wanted: list[tuple[str, str, int]], used: Iterable[tuple[str, str, int]]) -> bool:
    if not wanted:
        return False
    for proto, ip, port in wanted:
        for uproto, uip, uport in used:
            if proto == uproto and port == uport and (ip == uip or "0.0.0.0" in (ip, uip)):
                return True
    return False


@dataclass
class _Wanted:
    """The pending pod, looked at once per decision."""
    pod: Obj
    spec: Obj
    node_name: str
    tolerations: list[Obj]
    tolerates_unschedulable: bool
    needs_affinity: bool
    requests: list[tuple[str, int]]
    cpu: int
    mem: int
    ports: list[tuple[str, str, int]]
    group: str
    services: list[Obj]  # the services selecting the pod
    preferred: list[Obj]


def _wanted(pod: Obj, services: list[Obj]) -> _Wanted:
    spec = _spec(pod)
    tols = [t for t in spec.get("tolerations") or [] if isinstance(t, dict)]
    req = pod_requests(pod)
    cpu, mem = _nonzero(req)
    ns, labels = namespace_of(pod), labels_of(pod)
    ref = controller_ref(pod)
    affinity = (spec.get("affinity") or {}).get("nodeAffinity") or {}
    return _Wanted(
        pod, spec, str(spec.get("nodeName") or ""), tols,
        any(tolerates(t, {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"})
            for t in spec.get("tolerations") or []),
        bool(spec.get("nodeSelector")) or affinity.get("requiredDuringSchedulingIgnoredDuringExecution") is not None,
        [(k, v) for k, v in sorted(req.items()) if v > 0], cpu, mem, _host_ports(pod),
        f"{ns}/{ref.get('uid')}" if ref is not None and ref.get("uid") else "",
        [s for s in services if namespace_of(s) == ns and map_selector_matches(_spec(s).get("selector"), labels)],
        affinity.get("preferredDuringSchedulingIgnoredDuringExecution") or [])


def _fit(w: _Wanted, info: NodeInfo) -> list[str]:
    """Why the pod cannot run on the node, in the scheduler's words; empty if it fits."""
    node = info.node
    assert node is not None
    if w.node_name and w.node_name != info.name:
        return ["node(s) didn't match the requested node name"]
    if info.unschedulable and not w.tolerates_unschedulable:
        return ["node(s) were unschedulable"]
    if w.needs_affinity and not affinity_ok(w.pod, node):
        return ["node(s) didn't match Pod's node affinity/selector"]
    if info.hard_taints:
        bad = [t for t in info.hard_taints if not any(tolerates(x, t) for x in w.tolerations)]
        if bad:
            t = bad[0]
            text = f"{t.get('key')}: {t.get('value')}" if t.get("value") else str(t.get("key"))
            return [f"node(s) had untolerated taint {{{text}}}"]
    reasons: list[str] = []
    if w.ports and ports_conflict(w.ports, info.ports):
        reasons.append("node(s) didn't have free ports for the requested pod ports")
    alloc = info.alloc
    if "pods" in alloc and len(info.pods) + 1 > alloc["pods"] // 1000:
        reasons.append("Too many pods")
    for res, amount in w.requests:
        if info.requested[res] + amount > alloc.get(res, 0):
            reasons.append(f"Insufficient {res}")
    return reasons


def fit_reasons(pod: Obj, node: Obj, node_pods: list[Obj]) -> list[str]:
    """Why `pod` cannot run on `node` (with `node_pods` on it), in the scheduler's words; empty if it fits."""
    info = NodeInfo(node)
    for i, p in enumerate(node_pods):
        info.add(str(i), pod_facts(p))
    return _fit(_wanted(pod, []), info)


# --- scores ------------------------------------------------------------------------------------------

def _nonzero(req: dict[str, int]) -> tuple[int, int]:
    return (req.get("cpu") or DEFAULT_MILLI_CPU, req.get("memory") or DEFAULT_MEMORY_MILLI)


def _fractions(w: _Wanted, info: NodeInfo) -> tuple[float, float]:
    cpu, mem = w.cpu + info.cpu, w.mem + info.mem
    alloc = info.alloc
    fc = cpu / alloc["cpu"] if alloc.get("cpu") else 1.0
    fm = mem / alloc["memory"] if alloc.get("memory") else 1.0
    return min(fc, 1.0), min(fm, 1.0)


def _same_group_count(w: _Wanted, info: NodeInfo) -> int:
    """Pods on the node of the pod's controller or of a service selecting it (each counted once)."""
    if not w.services:
        return info.groups.get(w.group, 0) if w.group else 0
    n = 0
    for facts in info.pods.values():
        if facts.namespace != namespace_of(w.pod):
            continue
        if w.group and facts.group == w.group:
            n += 1
            continue
        olabels = labels_of(facts.pod)
        if any(map_selector_matches(_spec(s).get("selector"), olabels) for s in w.services):
            n += 1
    return n


def preferred_affinity(pod: Obj, node: Obj) -> int:
    prefs = (((_spec(pod).get("affinity") or {}).get("nodeAffinity") or {})
             .get("preferredDuringSchedulingIgnoredDuringExecution") or [])
    return sum(int(p.get("weight", 0)) for p in prefs if term_matches(p.get("preference") or {}, node))


def _normalized(raw: list[float], reverse: bool) -> list[float]:
    top = max(raw, default=0)
    if top <= 0:
        return [100.0 if reverse else 0.0] * len(raw)
    return [(100 - v * 100 / top) if reverse else v * 100 / top for v in raw]


def _normalized_array(raw: Floats, reverse: bool) -> Floats | float:
    """_normalized over an array: the same quotients (a constant when every raw value is <= 0)."""
    top = float(raw.max()) if len(raw) else 0.0
    if top <= 0:
        return 100.0 if reverse else 0.0
    return 100 - raw * 100 / top if reverse else raw * 100 / top


def _score_array(w: _Wanted, table: NodeTable, rows: Rows, weights: dict[str, int]) -> Floats:
    """The score of each of `rows` (feasible), in order: the same floats as the plain rules' sum
    per node, LeastAllocated + BalancedAllocation + Spread + TaintToleration + NodeAffinity, each
    term an array over the rows or, when it is the same on every node, a constant (numpy does each
    operation elementwise in IEEE double, as Python does per node, so keeping the order of the
    operations keeps every float)."""
    infos = table.infos
    feasible = [infos[r] for r in rows.tolist()] if w.services or w.preferred else []
    spread: Floats | float = 100.0
    if w.services:
        spread = _normalized_array(np.array([float(_same_group_count(w, i)) for i in feasible]), True)
    elif w.group:
        counts = table.group_counts(w.group, rows)
        if counts is not None:
            spread = _normalized_array(counts, True)
    taints: Floats | float = 100.0
    if table.soft[rows].any():
        taints = _normalized_array(np.array(
            [float(sum(1 for t in i.soft_taints if not any(tolerates(x, t) for x in w.tolerations)))
             if i.soft_taints else 0.0 for i in (infos[r] for r in rows.tolist())]), True)
    aff: Floats | float = 0.0
    if w.preferred:
        aff = _normalized_array(np.array([float(preferred_affinity(w.pod, i.node) if i.node else 0)
                                          for i in feasible]), False)
    wl, wb, ws = weights["LeastAllocated"], weights["BalancedAllocation"], weights["Spread"]
    wt, wa = weights["TaintToleration"], weights["NodeAffinity"]
    base = _base_array(w, table, rows, wl, wb)
    return base + ws * spread + wt * taints + wa * aff


def _base_array(w: _Wanted, table: NodeTable, rows: Rows, wl: int, wb: int) -> Floats:
    """LeastAllocated and BalancedAllocation, weighted and summed, for each of `rows`: kept in the
    table's `base` column until the row's node or pods change (a node is scored hundreds of times
    between two of its own changes), recomputed here for the rows that did."""
    wcpu, wmem = w.cpu, w.mem
    key = (wcpu, wmem, wl, wb)
    if table.base_key != key:
        table.base_key = key
        table.stale[:] = True
    stale = rows[table.stale[rows]]
    if len(stale):
        exact = not table.inexact and -EXACT < wcpu < EXACT and -EXACT < wmem < EXACT
        if len(stale) > 16 and exact:
            table.base[stale] = _base_columns(table, stale, wcpu, wmem, wl, wb)
        else:
            # a few rows (one per decision, typically: the last pod placed), or numbers float64 cannot
            # hold exactly: Python's int / int is correctly rounded, so compute there
            infos, base = table.infos, table.base
            for r in stale.tolist():
                base[r] = _node_base(infos[r], wcpu, wmem, wl, wb)
        table.stale[stale] = False
    return table.base[rows]


def _base_columns(table: NodeTable, rows: Rows, wcpu: int, wmem: int, wl: int, wb: int) -> Floats:
    """_node_base over the rows, in numpy (every number below EXACT)."""
    a = table.alloc_cpu[rows]
    fc = np.divide(wcpu + table.cpu[rows], a, out=np.ones(len(rows)), where=a != 0)
    np.minimum(fc, 1.0, out=fc)
    a = table.alloc_mem[rows]
    fm = np.divide(wmem + table.mem[rows], a, out=np.ones(len(rows)), where=a != 0)
    np.minimum(fm, 1.0, out=fm)
    return wl * ((1 - fc) + (1 - fm)) / 2 * 100 + wb * (1 - np.abs(fc - fm) / 2) * 100  # type: ignore[no-any-return]


def _node_base(i: NodeInfo, wcpu: int, wmem: int, wl: int, wb: int) -> float:
    """LeastAllocated and BalancedAllocation, weighted and summed (_fractions, inline), in Python ints."""
    a = i.alloc_cpu
    fc = (wcpu + i.cpu) / a if a else 1.0
    if fc > 1.0:
        fc = 1.0
    a = i.alloc_mem
    fm = (wmem + i.mem) / a if a else 1.0
    if fm > 1.0:
        fm = 1.0
    return wl * ((1 - fc) + (1 - fm)) / 2 * 100 + wb * (1 - abs(fc - fm) / 2) * 100


# --- the decision ------------------------------------------------------------------------------------

def failure_message(total: int, reasons: dict[str, list[str]]) -> str:
    counts = Counter(r for rs in reasons.values() for r in rs)
    if not counts:
        return f"0/{total} nodes are available."
    parts = [f"{n} {r}" for r, n in sorted(counts.items(), key=lambda kv: kv[0])]
    return f"0/{total} nodes are available: " + ", ".join(parts) + "."


def schedule(pod: Obj, nodes: list[Obj], pods: Iterable[Obj], services: Iterable[Obj] = (),
             weights: dict[str, int] | None = None) -> Result:
    return schedule_on(pod, list(node_infos(nodes, pods).values()), services, weights)


def schedule_on(pod: Obj, infos: Iterable[NodeInfo] | NodeTable, services: Iterable[Obj] = (),
                weights: dict[str, int] | None = None, *, start: int = 0, percentage: int = 100,
                with_scores: bool = True) -> Result:
    """`schedule` over NodeInfos a caller keeps current (the shell: a NodeTable attached to them),
    without walking the placed pods. The filters run from the `start`-th node on (wrapping) and stop
    once `nodes_to_find` feasible nodes are found; `Result.checked` says how many nodes they looked
    at. `with_scores` False leaves Result.scores empty, and Result.reasons too unless no node fits
    (the shell needs only the node)."""
    w = _wanted(pod, list(services))
    table = infos if isinstance(infos, NodeTable) else NodeTable([i for i in infos if i.node is not None])
    nodes = table.infos
    total = len(nodes)
    enough = nodes_to_find(total, percentage)
    start = start % total if total else 0
    reasons: dict[str, list[str]] = {}
    rows: Rows | None = None
    checked = 0
    # the fast path: a pod without a node name, affinity or host ports on a node without hard taints
    # that is schedulable can only be turned down by the resource filter (_fit's last checks, inline)
    plain = not w.node_name and not w.needs_affinity and not w.ports
    requests = w.requests
    if plain and not requests and not with_scores and not table.nonplain:
        # every node plain and a plain pod without requests: the feasible nodes are exactly the open
        # ones (room for a pod), found in numpy; the reasons of the others are only needed if none is
        # feasible (then the loop below runs for the message). Same nodes and `checked` as the loop.
        picked = table.open_rows(start, enough)
        if len(picked):
            rows = picked
            checked = (int(picked[-1]) - start) % total + 1 if len(picked) >= enough else total
    if rows is None:
        feasible: list[int] = []
        for r in chain(range(start, total), range(start)):
            info = nodes[r]
            checked += 1
            if plain and info.plain and (info.max_pods is None or len(info.pods) < info.max_pods):
                requested, alloc = info.requested, info.alloc
                for res, amount in requests:
                    if requested[res] + amount > alloc.get(res, 0):
                        break
                else:
                    feasible.append(r)
                    if len(feasible) >= enough:
                        break
                    continue
            why = _fit(w, info)
            if why:
                reasons[info.name] = why
            else:
                feasible.append(r)
                if len(feasible) >= enough:
                    break
        if not feasible:
            return Result(None, {}, reasons, failure_message(total, reasons), checked)
        rows = np.array(feasible, np.intp)
    values = _score_array(w, table, rows, weights or WEIGHTS)
    # the best score rounded to 6 places; ties go to the highest CRC-32 of (pod, node) (the first such
    # node on equal hashes). Rounding is monotonic, so only scores within a rounding step of the
    # highest can round to the top; a score equal to the highest needs no (slow, Python) round.
    vmax = float(values.max())
    top = round(vmax, 6)
    candidates = np.flatnonzero(values >= top - 2e-6)
    near = np.flatnonzero(values[candidates] != vmax)
    if len(near):
        off = [k for k, v in zip(near.tolist(), values[candidates[near]].tolist(), strict=True) if round(v, 6) != top]
        candidates = np.delete(candidates, off)
    salt = zlib.crc32(f"{uid_of(pod) or f'{namespace_of(pod)}/{name_of(pod)}'}/".encode())
    cand_rows = rows[candidates]
    best = nodes[int(cand_rows[int(np.argmax(table.hashes(cand_rows, salt)))])].name
    scores = dict(zip([nodes[r].name for r in rows.tolist()], values.tolist(), strict=True)) if with_scores else {}
    return Result(best, scores, reasons, "", checked)


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
