"""ReplicaSet and ReplicationController reconcile core.

Rules (Kubernetes' replica set controller):
- The controller's pods are the active pods (not Succeeded/Failed, not being
  deleted) in its namespace whose controller reference is its uid. Orphans whose
  labels match the selector are adopted (ownerReferences patched, with the uid as
  a precondition); owned pods whose labels no longer match are released.
  A controller being deleted neither adopts nor creates.
- diff = active - spec.replicas. Too few: create the missing pods from the
  template (generateName "<owner>-", template labels and annotations, a controller
  ownerReference with blockOwnerDeletion), at most `burst` per pass. Too many:
  delete the surplus, cheapest first: unscheduled before scheduled, Pending before
  Unknown before Running, not ready before ready, ready for less time first, more
  restarts first, newer before older.
- Status: replicas (active owned pods), fullyLabeledReplicas (those carrying every
  template label), readyReplicas, availableReplicas (ready for minReadySeconds),
  observedGeneration; merge-patched through the status subresource only when changed.
- ReplicationControllers use a plain map selector (defaulted from the template's
  labels by the API server), ReplicaSets a LabelSelector; otherwise the same.

Theory of operation: `reconcile(owner, kind, pods, now)` returns the actions and
`next_check` (when a pod will pass minReadySeconds, so availability is recounted
without a watch event). Counting only pods visible in the cache is safe because
the shell writes its own creations and deletions through to the cache before the
next reconcile of the same key.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from gifee.controllers.objects import (
    Action,
    Obj,
    condition,
    controller_ref,
    deepcopy,
    is_deleting,
    labels_of,
    make_controller_ref,
    map_selector_matches,
    meta,
    name_of,
    namespace_of,
    parse_time,
    pod_is_active,
    pod_is_available,
    pod_is_ready,
    pod_phase,
    selector_matches,
    uid_of,
)

BURST = 500
KINDS = {"ReplicaSet": ("replicasets", "apps/v1"), "ReplicationController": ("replicationcontrollers", "v1")}


@dataclass
class Outcome:
    actions: list[Action] = field(default_factory=list)
    next_check: dt.datetime | None = None


def owner_selects(owner: Obj, kind: str, labels: dict[str, str]) -> bool:
    sel = (owner.get("spec") or {}).get("selector")
    if kind == "ReplicationController":
        return map_selector_matches(sel if isinstance(sel, dict) else None, labels)
    return selector_matches(sel if isinstance(sel, dict) else None, labels)


def desired_replicas(owner: Obj) -> int:
    r = (owner.get("spec") or {}).get("replicas")
    return 1 if r is None else int(r)


def pod_from_template(owner: Obj, kind: str) -> Obj:
    template = deepcopy((owner.get("spec") or {}).get("template") or {})
    tmeta = template.get("metadata") or {}
    api_version = KINDS[kind][1]
    pmeta: Obj = {"generateName": f"{name_of(owner)}-", "namespace": namespace_of(owner),
                  "ownerReferences": [make_controller_ref(owner, api_version, kind)]}
    for k in ("labels", "annotations", "finalizers"):
        if tmeta.get(k):
            pmeta[k] = deepcopy(tmeta[k]) if isinstance(tmeta[k], dict) else list(tmeta[k])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pmeta, "spec": template.get("spec") or {}}


def _restarts(pod: Obj) -> int:
    return sum(int(c.get("restartCount") or 0) for c in (pod.get("status") or {}).get("containerStatuses") or [])


def deletion_rank(pod: Obj) -> tuple[Any, ...]:
    """Sort key: pods that sort first are deleted first."""
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(pod_phase(pod), 0)
    ready = pod_is_ready(pod)
    ready_since = parse_time((condition(pod, "Ready") or {}).get("lastTransitionTime"))
    created = parse_time(meta(pod).get("creationTimestamp"))
    return (
        1 if (pod.get("spec") or {}).get("nodeName") else 0,
        phase_rank,
        1 if ready else 0,
        -(ready_since.timestamp() if ready and ready_since else 0.0),  # ready for less time first
        -_restarts(pod),
        -(created.timestamp() if created else 0.0),  # newer first
        name_of(pod),
    )


def _status_action(owner: Obj, kind: str, status: Obj) -> Action | None:
    old = owner.get("status") or {}
    keys = ("replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas", "observedGeneration")
    if all(old.get(k, 0) == status.get(k, 0) for k in keys):
        return None
    # a merge patch of the status subresource: the deployment controller's spec updates
    # of the same object do not make it conflict
    return Action("patch", KINDS[kind][0], namespace_of(owner), name_of(owner), {"status": status},
                  {"subresource": "status", "patchType": "application/merge-patch+json"})


def claim(owner: Obj, kind: str, pods: list[Obj]) -> tuple[list[Obj], list[Action]]:
    """The pods this owner controls after adoption and release, and the patches that say so."""
    uid = uid_of(owner)
    owned: list[Obj] = []
    actions: list[Action] = []
    api_version = KINDS[kind][1]
    deleting = is_deleting(owner)
    for pod in pods:
        if namespace_of(pod) != namespace_of(owner):
            continue
        ref = controller_ref(pod)
        matches = owner_selects(owner, kind, labels_of(pod))
        if ref is not None and ref.get("uid") == uid:
            if matches or deleting:
                owned.append(pod)
            elif not is_deleting(pod):  # release
                refs = [r for r in meta(pod).get("ownerReferences") or [] if r.get("uid") != uid]
                actions.append(Action("patch", "pods", namespace_of(pod), name_of(pod),
                                      {"metadata": {"ownerReferences": refs, "uid": uid_of(pod)}},
                                      {"patchType": "application/merge-patch+json"}))
        elif ref is None and matches and not deleting and not is_deleting(pod) and pod_is_active(pod):
            refs = list(meta(pod).get("ownerReferences") or []) + [make_controller_ref(owner, api_version, kind)]
            actions.append(Action("patch", "pods", namespace_of(pod), name_of(pod),
                                  {"metadata": {"ownerReferences": refs, "uid": uid_of(pod)}},
                                  {"patchType": "application/merge-patch+json"}))
            adopted = deepcopy(pod)
            adopted["metadata"]["ownerReferences"] = refs
            owned.append(adopted)
    return owned, actions


def reconcile(owner: Obj, kind: str, pods: list[Obj], now: dt.datetime, burst: int = BURST) -> Outcome:
    out = Outcome()
    owned, out.actions = claim(owner, kind, pods)
    active = [p for p in owned if pod_is_active(p)]
    want = desired_replicas(owner)
    if not is_deleting(owner):
        diff = len(active) - want
        if diff < 0:
            for _ in range(min(-diff, burst)):
                out.actions.append(Action("create", "pods", namespace_of(owner), "", pod_from_template(owner, kind)))
        elif diff > 0:
            for pod in sorted(active, key=deletion_rank)[:diff]:
                out.actions.append(Action("delete", "pods", namespace_of(pod), name_of(pod), None,
                                          {"preconditions": {"uid": uid_of(pod)}}))
    spec = owner.get("spec") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    tlabels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    ready = [p for p in active if pod_is_ready(p)]
    available = 0
    # one pass (not `p not in available` over a list: that compared pod dicts pairwise, 4 ms for 100 pods)
    for p in ready:
        if pod_is_available(p, min_ready, now):
            available += 1
            continue
        since = parse_time((condition(p, "Ready") or {}).get("lastTransitionTime"))
        if since is not None:
            t = since + dt.timedelta(seconds=min_ready)
            out.next_check = t if out.next_check is None else min(out.next_check, t)
    status = {
        "replicas": len(active),
        "fullyLabeledReplicas": sum(1 for p in active
                                    if all(labels_of(p).get(k) == v for k, v in tlabels.items())),
        "readyReplicas": len(ready),
        "availableReplicas": available,
        "observedGeneration": int(meta(owner).get("generation") or 0),
    }
    act = _status_action(owner, kind, status)
    if act is not None:
        out.actions.append(act)
    return out
