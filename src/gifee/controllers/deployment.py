"""Deployment reconcile core: replica sets per pod template, rolling updates,
Recreate, revisions, history cleanup and status.

Rules (Kubernetes' deployment controller):
- A deployment owns the replica sets in its namespace whose controller reference
  is its uid; orphan replica sets matching its selector are adopted.
- The new replica set is the owned one whose template equals the deployment's
  (ignoring the pod-template-hash label). If none, one is created: name
  "<deployment>-<hash>", the hash as `pod-template-hash` in its labels, selector
  and template labels, the deployment's annotations (minus kubectl's
  last-applied-configuration) plus `deployment.kubernetes.io/revision` = highest
  old revision + 1, `desired-replicas` and `max-replicas`. An old replica set that
  becomes new again (a rollback: `kubectl rollout undo` writes an old template
  back) gets the next revision, its previous one kept in `revision-history`.
  A name taken by a different template bumps status.collisionCount instead.
- The deployment's own `deployment.kubernetes.io/revision` follows its new RS.
- RollingUpdate: maxSurge rounds up, maxUnavailable down (both 0 means 1 unavailable).
  Scale up the new RS while the sum of all spec.replicas < replicas + maxSurge.
  Scale down old RSs by at most
      allPods - (replicas - maxUnavailable) - (new.spec.replicas - new.available),
  unhealthy (unavailable) replicas first, then available ones only while more
  than replicas - maxUnavailable pods are available; oldest RS first.
- Recreate: scale every old RS to 0; the new RS is scaled up only once no old pod
  is active.
- A change of spec.replicas while several RSs are active is shared out in
  proportion to their sizes (the remainder to the new RS).
- Paused deployments are only scaled, never rolled.
- Old RSs with 0 replicas (spec and status) beyond revisionHistoryLimit are
  deleted, lowest revision first.
- Status: observedGeneration, replicas, updatedReplicas, readyReplicas,
  availableReplicas, unavailableReplicas, collisionCount, and the Available and
  Progressing conditions (reasons MinimumReplicasAvailable/MinimumReplicasUnavailable,
  ReplicaSetUpdated/NewReplicaSetAvailable, and ProgressDeadlineExceeded once
  progressDeadlineSeconds pass without any change in the replica counts).

Theory of operation: `reconcile(deployment, replica_sets, pods, now)` looks at the
deployment and the cached replica sets (whose status the replica set controller
keeps), and returns at most one step of the rollout: create/update/delete of
replica sets, then the deployment's annotation and status. The next event (an RS
status change as pods become available) triggers the next step. Every RS update
carries the observed resourceVersion, so a stale view fails with a conflict and
is retried instead of overwriting.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from gifee.controllers.objects import (
    Action,
    Obj,
    annotations_of,
    controller_ref,
    deepcopy,
    int_or_percent,
    is_deleting,
    labels_of,
    make_controller_ref,
    meta,
    name_of,
    namespace_of,
    parse_time,
    selector_matches,
    template_hash,
    templates_equal,
    timestamp,
    uid_of,
)

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
HASH_LABEL = "pod-template-hash"
SKIP_ANNOTATIONS = {"kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY,
                    DESIRED, MAX_REPLICAS}


def revision(rs: Obj) -> int:
    try:
        return int(annotations_of(rs).get(REVISION, "0"))
    except ValueError:
        return 0


def spec_replicas(obj: Obj) -> int:
    r = (obj.get("spec") or {}).get("replicas")
    return 1 if r is None else int(r)


def _available(rs: Obj) -> int:
    return int((rs.get("status") or {}).get("availableReplicas") or 0)


def surge_and_unavailable(d: Obj) -> tuple[int, int]:
    spec = d.get("spec") or {}
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0, spec_replicas(d)
    ru = strategy.get("rollingUpdate") or {}
    replicas = spec_replicas(d)
    surge = int_or_percent(ru.get("maxSurge", "25%"), replicas, True)
    unavailable = int_or_percent(ru.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


def _created(rs: Obj) -> tuple[float, str]:
    t = parse_time(meta(rs).get("creationTimestamp"))
    return (t.timestamp() if t else 0.0, name_of(rs))


def _scale(rs: Obj, replicas: int, d: Obj, surge: int, extra_ann: dict[str, str] | None = None) -> Action | None:
    ann = annotations_of(rs)
    want_ann = dict(ann)
    want_ann[DESIRED] = str(spec_replicas(d))
    want_ann[MAX_REPLICAS] = str(spec_replicas(d) + surge)
    want_ann.update(extra_ann or {})
    if spec_replicas(rs) == replicas and want_ann == ann:
        return None
    body = deepcopy(rs)
    body["spec"]["replicas"] = replicas
    body["metadata"]["annotations"] = want_ann
    return Action("update", "replicasets", namespace_of(rs), name_of(rs), body)


def new_rs_body(d: Obj, rev: int, collision: int, surge: int, replicas: int) -> Obj:
    spec = d.get("spec") or {}
    template = deepcopy(spec.get("template") or {})
    h = template_hash(template, collision or None)
    tmeta = template.setdefault("metadata", {})
    tmeta.setdefault("labels", {})[HASH_LABEL] = h
    selector = deepcopy(spec.get("selector") or {})
    selector.setdefault("matchLabels", {})[HASH_LABEL] = h
    ann = {k: v for k, v in annotations_of(d).items() if k not in SKIP_ANNOTATIONS}
    ann.update({REVISION: str(rev), DESIRED: str(spec_replicas(d)), MAX_REPLICAS: str(spec_replicas(d) + surge)})
    labels = dict(tmeta["labels"])
    rs_spec: Obj = {"replicas": replicas, "selector": selector, "template": template}
    if spec.get("minReadySeconds"):
        rs_spec["minReadySeconds"] = spec["minReadySeconds"]
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{name_of(d)}-{h}", "namespace": namespace_of(d), "labels": labels,
                         "annotations": ann, "ownerReferences": [make_controller_ref(d, "apps/v1", "Deployment")]},
            "spec": rs_spec}


def _status(d: Obj, rss: list[Obj], new: Obj | None, surge: int, unavail: int, now: dt.datetime,
            collision: int | None = None) -> Action | None:
    replicas = spec_replicas(d)
    st: dict[str, Any] = {
        "observedGeneration": int(meta(d).get("generation") or 0),
        "replicas": sum(int((r.get("status") or {}).get("replicas") or 0) for r in rss),
        "updatedReplicas": int(((new or {}).get("status") or {}).get("replicas") or 0),
        "readyReplicas": sum(int((r.get("status") or {}).get("readyReplicas") or 0) for r in rss),
        "availableReplicas": sum(_available(r) for r in rss),
    }
    st["unavailableReplicas"] = max(replicas - st["availableReplicas"], 0) if replicas else 0
    old = d.get("status") or {}
    if collision is not None:
        st["collisionCount"] = collision
    elif "collisionCount" in old:
        st["collisionCount"] = old["collisionCount"]
    conds = {c.get("type"): c for c in old.get("conditions") or [] if isinstance(c, dict)}
    ts = timestamp(now)

    def cond(ctype: str, status: str, reason: str, message: str, force: bool = False) -> None:
        prev = conds.get(ctype)
        if prev and prev.get("status") == status and prev.get("reason") == reason and not force:
            return
        transition = prev.get("lastTransitionTime", ts) if prev and prev.get("status") == status else ts
        conds[ctype] = {"type": ctype, "status": status, "lastUpdateTime": ts, "lastTransitionTime": transition,
                        "reason": reason, "message": message}

    if st["availableReplicas"] >= replicas - unavail:
        cond("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
    else:
        cond("Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
    if new is not None:
        rs_name = name_of(new)
        complete = (st["updatedReplicas"] == replicas and st["replicas"] == replicas
                    and st["availableReplicas"] == replicas and spec_replicas(new) == replicas)
        if complete:
            cond("Progressing", "True", "NewReplicaSetAvailable", f'ReplicaSet "{rs_name}" has successfully progressed.')
        else:
            msg = f'ReplicaSet "{rs_name}" is progressing.'
            prog = conds.get("Progressing") or {}
            progressed = any(old.get(k) != st[k] for k in ("replicas", "updatedReplicas", "readyReplicas",
                                                             "availableReplicas"))
            deadline = int((d.get("spec") or {}).get("progressDeadlineSeconds") or 600)
            since = parse_time(prog.get("lastUpdateTime"))
            if prog.get("reason") in (None, "NewReplicaSetAvailable") or progressed or (
                    prog.get("reason") == "ReplicaSetUpdated" and prog.get("message") != msg):
                cond("Progressing", "True", "ReplicaSetUpdated", msg, force=True)
            elif (prog.get("reason") == "ReplicaSetUpdated" and since is not None
                  and since + dt.timedelta(seconds=deadline) < now):
                cond("Progressing", "False", "ProgressDeadlineExceeded",
                     f'ReplicaSet "{rs_name}" has timed out progressing.')
    if conds:
        st["conditions"] = [conds[k] for k in ("Progressing", "Available") if k in conds] + [
            c for k, c in conds.items() if k not in ("Progressing", "Available")]
    if all(old.get(k) == v for k, v in st.items()):
        return None
    # a merge patch of the status: it must not conflict with the revision annotation patch before it
    return Action("patch", "deployments", namespace_of(d), name_of(d), {"status": st},
                  {"subresource": "status", "patchType": "application/merge-patch+json"})


def _proportional(d: Obj, active: list[Obj], new: Obj | None, surge: int) -> dict[str, int]:
    """New sizes for the active RSs when spec.replicas changed mid-rollout."""
    allowed = spec_replicas(d) + surge
    total = sum(spec_replicas(r) for r in active)
    delta = allowed - total
    sizes = {name_of(r): spec_replicas(r) for r in active}
    if delta == 0 or total == 0:
        return sizes
    order = sorted(active, key=lambda r: -spec_replicas(r)) if delta > 0 else sorted(
        active, key=lambda r: spec_replicas(r))
    added = 0
    for r in order:
        share = (spec_replicas(r) * delta) // total if delta > 0 else -((spec_replicas(r) * -delta) // total)
        sizes[name_of(r)] = max(spec_replicas(r) + share, 0)
        added += sizes[name_of(r)] - spec_replicas(r)
    rest = delta - added
    target = new if new is not None and new in active else order[0]
    sizes[name_of(target)] = max(sizes[name_of(target)] + rest, 0)
    return sizes


def reconcile(d: Obj, replica_sets: list[Obj], pods: list[Obj], now: dt.datetime) -> list[Action]:
    """One step of a deployment: returns the actions (replica sets first, then the deployment)."""
    if is_deleting(d):
        return []
    spec = d.get("spec") or {}
    selector = spec.get("selector")
    ns, uid = namespace_of(d), uid_of(d)
    actions: list[Action] = []
    owned: list[Obj] = []
    for rs in replica_sets:
        if namespace_of(rs) != ns:
            continue
        ref = controller_ref(rs)
        if ref is not None and ref.get("uid") == uid:
            owned.append(rs)
        elif ref is None and not is_deleting(rs) and isinstance(selector, dict) and selector_matches(
                selector, labels_of(rs)):
            refs = list(meta(rs).get("ownerReferences") or []) + [make_controller_ref(d, "apps/v1", "Deployment")]
            actions.append(Action("patch", "replicasets", ns, name_of(rs),
                                  {"metadata": {"ownerReferences": refs, "uid": uid_of(rs)}},
                                  {"patchType": "application/merge-patch+json"}))
            adopted = deepcopy(rs)
            adopted["metadata"]["ownerReferences"] = refs
            owned.append(adopted)
    surge, unavail = surge_and_unavailable(d)
    replicas = spec_replicas(d)
    template = spec.get("template") or {}
    new = next((rs for rs in sorted(owned, key=_created)
                if templates_equal((rs.get("spec") or {}).get("template"), template)), None)
    olds = [rs for rs in owned if rs is not new]
    max_old_rev = max((revision(rs) for rs in olds), default=0)
    collision = int((d.get("status") or {}).get("collisionCount") or 0)

    if new is None and not spec.get("paused"):
        body = new_rs_body(d, max_old_rev + 1, collision, surge, 0)
        taken = next((rs for rs in replica_sets if namespace_of(rs) == ns
                      and name_of(rs) == body["metadata"]["name"]), None)
        if taken is not None:  # same name, another template: try the next hash
            st = _status(d, owned, None, surge, unavail, now, collision + 1)
            return actions + ([st] if st else [])
        # Start at the size a rollout may reach right away.
        total = sum(spec_replicas(r) for r in olds)
        old_active = sum(int((r.get("status") or {}).get("replicas") or 0) for r in olds)
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            start = replicas if total == 0 and old_active == 0 else 0
        else:
            start = max(min(replicas, replicas + surge - total), 0)
        body["spec"]["replicas"] = start
        actions.append(Action("create", "replicasets", ns, body["metadata"]["name"], body))
        new = body
        new.setdefault("status", {})
        actions += _annotate_deployment(d, max_old_rev + 1)
        st = _status(d, olds, new, surge, unavail, now)
        if st is not None:
            actions.append(st)
        return actions

    if new is not None:
        rev = revision(new)
        extra: dict[str, str] = {}
        if rev <= max_old_rev:  # an old template came back: it is the newest revision now
            history = [h for h in annotations_of(new).get(REVISION_HISTORY, "").split(",") if h]
            if rev:
                history.append(str(rev))
            rev = max_old_rev + 1
            extra = {REVISION: str(rev)}
            if history:
                extra[REVISION_HISTORY] = ",".join(history)
            for k, v in annotations_of(d).items():  # change-cause and friends follow the deployment
                if k not in SKIP_ANNOTATIONS:
                    extra[k] = v
        actions += _annotate_deployment(d, rev)
        if extra:
            act = _scale(new, spec_replicas(new), d, surge, extra)
            if act is not None:
                actions.append(act)
                return actions

    active = [r for r in owned if spec_replicas(r) > 0]
    # scaling event: a rollout in flight and spec.replicas changed
    if len(active) > 1 and any(annotations_of(r).get(DESIRED) not in (None, str(replicas)) for r in active):
        sizes = _proportional(d, active, new, surge)
        for r in active:
            act = _scale(r, sizes[name_of(r)], d, surge)
            if act is not None:
                actions.append(act)
        st = _status(d, owned, new, surge, unavail, now)
        return actions + ([st] if st else [])

    if spec.get("paused") or new is None:
        if len(active) == 1:
            act = _scale(active[0], replicas, d, surge)
            if act is not None:
                actions.append(act)
        st = _status(d, owned, new, surge, unavail, now)
        return actions + ([st] if st else [])

    step: list[Action] = []
    if (spec.get("strategy") or {}).get("type") == "Recreate":
        for r in olds:
            if spec_replicas(r) > 0:
                act = _scale(r, 0, d, surge)
                if act is not None:
                    step.append(act)
        old_pods = sum(int((r.get("status") or {}).get("replicas") or 0) for r in olds)
        if not step and old_pods == 0:
            act = _scale(new, replicas, d, surge)
            if act is not None:
                step.append(act)
    else:
        step = _rolling(d, new, olds, surge, unavail)
    if not step:
        step = _cleanup(d, olds)
    actions += step
    st = _status(d, owned, new, surge, unavail, now)
    if st is not None:
        actions.append(st)
    return actions


def _annotate_deployment(d: Obj, rev: int) -> list[Action]:
    ann = annotations_of(d)
    if ann.get(REVISION) == str(rev):
        return []
    return [Action("patch", "deployments", namespace_of(d), name_of(d),
                   {"metadata": {"annotations": {REVISION: str(rev)}}},
                   {"patchType": "application/merge-patch+json"})]


def _rolling(d: Obj, new: Obj, olds: list[Obj], surge: int, unavail: int) -> list[Action]:
    replicas = spec_replicas(d)
    new_size = spec_replicas(new)
    all_rs = [new] + olds
    if new_size > replicas:
        act = _scale(new, replicas, d, surge)
        return [act] if act else []
    if new_size < replicas:
        total = sum(spec_replicas(r) for r in all_rs)
        up = min(replicas + surge - total, replicas - new_size)
        if up > 0:
            act = _scale(new, new_size + up, d, surge)
            return [act] if act else []
    old_total = sum(spec_replicas(r) for r in olds)
    if old_total == 0:
        act = _scale(new, new_size, d, surge)  # keep annotations current
        return [act] if act else []
    all_pods = sum(spec_replicas(r) for r in all_rs)
    min_available = replicas - unavail
    new_unavailable = max(new_size - _available(new), 0)
    budget = all_pods - min_available - new_unavailable
    if budget <= 0:
        return []
    sizes = {name_of(r): spec_replicas(r) for r in olds}
    oldest_first = sorted(olds, key=_created)
    cleaned = 0
    for r in oldest_first:  # unhealthy replicas first: they cost no availability
        if cleaned >= budget:
            break
        unhealthy = max(sizes[name_of(r)] - _available(r), 0)
        cut = min(budget - cleaned, unhealthy)
        sizes[name_of(r)] -= cut
        cleaned += cut
    available = sum(_available(r) for r in all_rs)
    room = min(available - min_available, budget - cleaned)
    for r in oldest_first:
        if room <= 0:
            break
        cut = min(sizes[name_of(r)], room)
        sizes[name_of(r)] -= cut
        room -= cut
    out = []
    for r in olds:
        if sizes[name_of(r)] != spec_replicas(r):
            act = _scale(r, sizes[name_of(r)], d, surge)
            if act is not None:
                out.append(act)
    return out


def _cleanup(d: Obj, olds: list[Obj]) -> list[Action]:
    limit = (d.get("spec") or {}).get("revisionHistoryLimit")
    if limit is None:
        limit = 10
    idle = [r for r in olds if spec_replicas(r) == 0 and not int((r.get("status") or {}).get("replicas") or 0)
            and not is_deleting(r)]
    extra = len(idle) - int(limit)
    if extra <= 0:
        return []
    victims = sorted(idle, key=lambda r: (revision(r), _created(r)))[:extra]
    return [Action("delete", "replicasets", namespace_of(r), name_of(r), None,
                   {"preconditions": {"uid": uid_of(r)}, "propagationPolicy": "Background"}) for r in victims]


def describe_step(actions: list[Action]) -> list[tuple[str, Any]]:
    """(verb name, replicas) per action: handy in tests and logs."""
    return [(a.describe(), ((a.body or {}).get("spec") or {}).get("replicas")) for a in actions]
