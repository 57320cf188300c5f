"""Object lifecycle rules: what the server sets on create, keeps on update, and
does on delete.

Rules:
- create: uid (random), creationTimestamp (now, seconds), generation 1 for
  resources that track it, status cleared where status is a subresource (pods
  start Pending), resourceVersion/deletionTimestamp dropped, generateName
  expanded by the caller.
- update through the main resource: uid, creationTimestamp, deletionTimestamp,
  generation are the server's; status is kept from the stored object when
  status is a subresource; generation + 1 when spec changed. Through /status:
  only status (and labels/annotations? no: only status) changes.
- delete: with finalizers -> set deletionTimestamp (once) and keep the object;
  pods with a node and grace > 0 -> deletionTimestamp = now + grace; else
  remove. propagationPolicy Foreground/Orphan add the GC's finalizers.
  An update that empties finalizers of an object being deleted removes it.
Pure: objects and times in, decisions out.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from gifee.api import jsoncodec
from gifee.api.resources import Resource

Obj = dict[str, Any]

SERVER_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation",
               "selfLink")


def timestamp(now: dt.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def prepare_create(res: Resource, obj: Obj, now: dt.datetime) -> Obj:
    meta = obj.setdefault("metadata", {})
    for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
        meta.pop(k, None)
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = timestamp(now)
    if res.has_generation:
        meta["generation"] = 1
    else:
        meta.pop("generation", None)
    if res.clears_status_on_create:
        obj["status"] = {"phase": "Pending"} if res.kind == "Pod" else {}
    return obj


def prepare_update(res: Resource, old: Obj, new: Obj, *, subresource: str = "", owned: bool = False) -> Obj:
    """owned: `new` is the caller's to change (else it is copied first)."""
    new = new if owned else jsoncodec.clone(new)
    meta = new.setdefault("metadata", {})
    old_meta = old.get("metadata", {})
    for k in SERVER_META:
        if k in old_meta:
            meta[k] = old_meta[k]
        else:
            meta.pop(k, None)
    meta.pop("resourceVersion", None)
    if subresource == "status":
        out = jsoncodec.clone(old)
        out["status"] = new.get("status", {})
        out["metadata"].pop("resourceVersion", None)
        return out
    if res.subresource("status") is not None:
        if "status" in old:
            new["status"] = jsoncodec.clone(old["status"])
        else:
            new.pop("status", None)
    if res.has_generation and old.get("spec") != new.get("spec"):
        meta["generation"] = int(old_meta.get("generation", 1)) + 1
    return new


@dataclass(frozen=True)
class DeleteDecision:
    remove: bool  # delete the key now
    updated: Obj | None  # else the object to write (deletionTimestamp, finalizers)


def plan_delete(res: Resource, obj: Obj, options: Obj, now: dt.datetime) -> DeleteDecision:
    meta = obj.get("metadata", {})
    finalizers = list(meta.get("finalizers") or [])
    policy = options.get("propagationPolicy")
    if policy is None and options.get("orphanDependents") is True:
        policy = "Orphan"
    extra = {"Foreground": "foregroundDeletion", "Orphan": "orphan"}.get(str(policy))
    if extra and extra not in finalizers and not meta.get("deletionTimestamp"):
        finalizers.append(extra)
    grace = options.get("gracePeriodSeconds")
    if res.kind == "Pod":
        if grace is None:
            grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        phase = (obj.get("status") or {}).get("phase")
        if not (obj.get("spec") or {}).get("nodeName") or phase in ("Succeeded", "Failed"):
            grace = 0
    else:
        grace = 0
    if not finalizers and int(grace or 0) <= 0:
        return DeleteDecision(True, None)
    out = jsoncodec.clone(obj)
    m = out["metadata"]
    m.pop("resourceVersion", None)
    m["finalizers"] = finalizers
    if not finalizers:
        m.pop("finalizers")
    deadline = timestamp(now + dt.timedelta(seconds=int(grace or 0)))
    if not m.get("deletionTimestamp") or (grace and deadline < m["deletionTimestamp"]):
        m["deletionTimestamp"] = deadline
        m["deletionGracePeriodSeconds"] = int(grace or 0)
    if res.kind == "Pod" and int(grace or 0) <= 0 and not finalizers:
        return DeleteDecision(True, None)
    return DeleteDecision(False, out)


def should_remove_after_update(obj: Obj) -> bool:
    """An object being deleted whose last finalizer went away is removed."""
    meta = obj.get("metadata", {})
    return bool(meta.get("deletionTimestamp")) and not meta.get("finalizers") and not (
        obj.get("kind") == "Pod" and int(meta.get("deletionGracePeriodSeconds") or 0) > 0)
