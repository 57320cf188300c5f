"""Node lifecycle core: leases and heartbeats -> Ready=Unknown, taints, pod eviction.

Rules (Kubernetes' node lifecycle controller with taint-based eviction):
- A node's last heartbeat is the later of its Lease's renewTime (namespace
  kube-node-lease, same name) and its Ready condition's lastHeartbeatTime.
  After `grace` seconds (node-monitor-grace-period, 40 s) without one, the node's
  Ready, MemoryPressure, DiskPressure and PIDPressure conditions become Unknown
  (reason NodeStatusUnknown, "Kubelet stopped posting node status."), and its
  Ready pods are marked Ready=False.
- Taints follow the Ready condition: Unknown -> node.kubernetes.io/unreachable,
  False -> node.kubernetes.io/not-ready, each with NoSchedule and NoExecute
  (timeAdded on NoExecute); True -> neither.
- Pods on a node with NoExecute taints are deleted when a taint is not tolerated:
  at once if no toleration matches (after `default_toleration_seconds`, 300 s,
  for the not-ready/unreachable taints, standing in for the
  DefaultTolerationSeconds admission plugin), after tolerationSeconds from the
  taint's timeAdded if one matches with a limit, never if one matches without.
- `next_check` says when to look again (heartbeat deadline or next eviction).

Theory of operation: `reconcile(node, lease, pods, now, ...)` is called per node
key on node/lease/pod events and at `next_check`; it compares the newest
heartbeat against `now`, so it needs no memory of its own between calls.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from gifee.controllers.objects import (
    Action,
    Obj,
    condition,
    deepcopy,
    is_deleting,
    name_of,
    namespace_of,
    parse_time,
    pod_is_ready,
    timestamp,
    uid_of,
)
from gifee.scheduler.core import tolerates

GRACE = 40
DEFAULT_TOLERATION_SECONDS = 300
UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"
CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")


@dataclass
class Outcome:
    actions: list[Action] = field(default_factory=list)
    next_check: dt.datetime | None = None


def last_heartbeat(node: Obj, lease: Obj | None) -> dt.datetime | None:
    times = [parse_time((lease or {}).get("spec", {}).get("renewTime")),
             parse_time((condition(node, "Ready") or {}).get("lastHeartbeatTime"))]
    known = [t for t in times if t is not None]
    return max(known) if known else parse_time((node.get("metadata") or {}).get("creationTimestamp"))


def pod_events_matter(node: Obj | None, lease: Obj | None, now: dt.datetime, grace: int = GRACE) -> bool:
    """Whether a pod's event can change what `reconcile` does for its node: only on a node that is
    not Ready or whose heartbeat is late (its pods are marked not ready) or that has NoExecute taints
    (evictions). A Ready node without them is looked at on its own node, lease and timer events
    only; reconciling it on every pod event walked all its pods for nothing."""
    if node is None:
        return True
    if (condition(node, "Ready") or {}).get("status", "Unknown") != "True":
        return True
    beat = last_heartbeat(node, lease)
    if beat is not None and now - beat > dt.timedelta(seconds=grace):
        return True
    return any(isinstance(t, dict) and t.get("effect") == "NoExecute"
               for t in (node.get("spec") or {}).get("taints") or [])


def _sooner(a: dt.datetime | None, b: dt.datetime) -> dt.datetime:
    return b if a is None or b < a else a


def reconcile(node: Obj, lease: Obj | None, pods: list[Obj], now: dt.datetime, grace: int = GRACE,
              default_toleration_seconds: int = DEFAULT_TOLERATION_SECONDS) -> Outcome:
    out = Outcome()
    name = name_of(node)
    beat = last_heartbeat(node, lease)
    ready = condition(node, "Ready")
    ready_status = (ready or {}).get("status", "Unknown")
    status_body: Obj | None = None
    if beat is not None and now - beat > dt.timedelta(seconds=grace):
        if ready_status != "Unknown":
            status_body = deepcopy(node)
            conds = status_body.setdefault("status", {}).setdefault("conditions", [])
            ts = timestamp(now)
            for ctype in CONDITIONS:
                c = next((c for c in conds if c.get("type") == ctype), None)
                if c is None:
                    if ctype != "Ready":
                        continue
                    c = {"type": ctype}
                    conds.append(c)
                c.update({"status": "Unknown", "reason": "NodeStatusUnknown",
                          "message": "Kubelet stopped posting node status.", "lastTransitionTime": ts})
            out.actions.append(Action("update_status", "nodes", "", name, status_body))
            ready_status = "Unknown"
    elif beat is not None:
        out.next_check = beat + dt.timedelta(seconds=grace + 1)
    # taints
    taints = [dict(t) for t in (node.get("spec") or {}).get("taints") or []]
    want_key = {"Unknown": UNREACHABLE, "False": NOT_READY}.get(str(ready_status))
    kept = [t for t in taints if t.get("key") not in (UNREACHABLE, NOT_READY) or t.get("key") == want_key]
    if want_key is not None:
        for effect in ("NoSchedule", "NoExecute"):
            if not any(t.get("key") == want_key and t.get("effect") == effect for t in kept):
                t = {"key": want_key, "effect": effect}
                if effect == "NoExecute":
                    t["timeAdded"] = timestamp(now)
                kept.append(t)
    if kept != taints:
        out.actions.append(Action("patch", "nodes", "", name, {"spec": {"taints": kept or None}},
                                  {"patchType": "application/merge-patch+json"}))
    no_execute = [t for t in kept if t.get("effect") == "NoExecute"]
    if ready_status != "Unknown" and not no_execute:
        return out  # nothing to do for the pods (a healthy node: every lease renewal comes here)
    # pods
    mine = [p for p in pods if (p.get("spec") or {}).get("nodeName") == name and not is_deleting(p)]
    if ready_status == "Unknown":
        for p in mine:
            if pod_is_ready(p):
                pb = deepcopy(p)
                for c in pb.get("status", {}).get("conditions") or []:
                    if c.get("type") == "Ready":
                        c.update({"status": "False", "lastTransitionTime": timestamp(now)})
                out.actions.append(Action("update_status", "pods", namespace_of(p), name_of(p), pb))
    for p in mine:
        deadline = eviction_time(p, no_execute, now, default_toleration_seconds)
        if deadline is None:
            continue
        if deadline <= now:
            out.actions.append(Action("delete", "pods", namespace_of(p), name_of(p), None,
                                      {"preconditions": {"uid": uid_of(p)}}))
        else:
            out.next_check = _sooner(out.next_check, deadline)
    return out


def eviction_time(pod: Obj, no_execute: list[Obj], now: dt.datetime,
                  default_toleration_seconds: int = DEFAULT_TOLERATION_SECONDS) -> dt.datetime | None:
    """When the NoExecute taints evict this pod (None: never)."""
    tols = [t for t in (pod.get("spec") or {}).get("tolerations") or [] if isinstance(t, dict)]
    deadline: dt.datetime | None = None
    for taint in no_execute:
        added = parse_time(taint.get("timeAdded")) or now
        matching = [t for t in tols if tolerates(t, taint)]
        if not matching:
            if taint.get("key") in (UNREACHABLE, NOT_READY):
                seconds: int | None = default_toleration_seconds
            else:
                seconds = 0
        elif any(t.get("tolerationSeconds") is None for t in matching):
            seconds = None
        else:
            seconds = min(max(int(t["tolerationSeconds"]), 0) for t in matching)
        if seconds is None:
            continue
        deadline = _sooner(deadline, added + dt.timedelta(seconds=seconds))
    return deadline
