"""Garbage collector core: owner references -> deletions, orphaning and foreground waits.

Rules (Kubernetes' garbage collector):
- An owner reference points at an object by uid (and apiVersion/kind/name). An
  owner is present if an object with that uid is observed.
- A dependent none of whose owners is present is deleted (Background). A
  dependent with some owners present loses only the dangling references.
  Because the cache may lag behind a fresh owner, each such action names the
  owners it believes absent under options["confirmAbsent"]; the shell checks them
  with a live GET before acting, as the real collector does.
- An owner being deleted with the `orphan` finalizer: each dependent loses its
  references to the owner; once none refers to it, the finalizer is removed.
- An owner being deleted with the `foregroundDeletion` finalizer: its dependents
  are deleted (Foreground, so the deletion cascades down); once no dependent with
  blockOwnerDeletion=true remains, the finalizer is removed and the API server
  removes the owner. Dependents already being deleted are waited for.
- Objects without a uid, and owners' own finalizers of other kinds, are left alone.

Theory of operation: `reconcile(objects)` looks at a snapshot of every watched
object (all kinds at once) and returns the actions of one pass; the shell runs it
whenever an object with owner references or a GC finalizer changes (debounced),
and on resync. Applying a pass twice is harmless: deletes carry uid preconditions.
"""

from __future__ import annotations

from gifee.controllers.objects import (
    KIND_PLURALS,
    Action,
    Obj,
    is_deleting,
    meta,
    name_of,
    namespace_of,
    owner_refs,
    uid_of,
)

ORPHAN = "orphan"
FOREGROUND = "foregroundDeletion"


def _plural(obj: Obj) -> str | None:
    return KIND_PLURALS.get(str(obj.get("kind", "")))


def _delete(obj: Obj, policy: str, confirm: list[Obj] | None = None) -> Action | None:
    plural = _plural(obj)
    if plural is None:
        return None
    opts: Obj = {"preconditions": {"uid": uid_of(obj)}, "propagationPolicy": policy}
    if confirm:
        opts["confirmAbsent"] = [{"apiVersion": r.get("apiVersion"), "kind": r.get("kind"), "name": r.get("name"),
                                  "namespace": namespace_of(obj), "uid": r.get("uid")} for r in confirm]
    return Action("delete", plural, namespace_of(obj), name_of(obj), None, opts)


def _set_refs(obj: Obj, refs: list[Obj], confirm: list[Obj] | None = None) -> Action | None:
    plural = _plural(obj)
    if plural is None:
        return None
    opts: Obj = {"patchType": "application/merge-patch+json"}
    if confirm:
        opts["confirmAbsent"] = [{"apiVersion": r.get("apiVersion"), "kind": r.get("kind"), "name": r.get("name"),
                                  "namespace": namespace_of(obj), "uid": r.get("uid")} for r in confirm]
    return Action("patch", plural, namespace_of(obj), name_of(obj),
                  {"metadata": {"ownerReferences": refs or None, "uid": uid_of(obj)}}, opts)


def _drop_finalizer(owner: Obj, finalizer: str) -> Action | None:
    plural = _plural(owner)
    if plural is None:
        return None
    fins = [f for f in meta(owner).get("finalizers") or [] if f != finalizer]
    return Action("patch", plural, namespace_of(owner), name_of(owner),
                  {"metadata": {"finalizers": fins or None, "uid": uid_of(owner),
                                "resourceVersion": meta(owner).get("resourceVersion")}},
                  {"patchType": "application/merge-patch+json"})


def reconcile(objects: list[Obj]) -> list[Action]:
    by_uid = {uid_of(o): o for o in objects if uid_of(o)}
    dependents: dict[str, list[Obj]] = {}
    for o in objects:
        for r in owner_refs(o):
            dependents.setdefault(str(r.get("uid")), []).append(o)
    actions: list[Action] = []
    handled: set[str] = set()
    # owners being deleted with a GC finalizer
    for owner in objects:
        if not is_deleting(owner):
            continue
        fins = meta(owner).get("finalizers") or []
        uid = uid_of(owner)
        deps = dependents.get(uid, [])
        if ORPHAN in fins:
            for dep in deps:
                refs = [r for r in owner_refs(dep) if r.get("uid") != uid]
                act = _set_refs(dep, refs)
                if act is not None:
                    actions.append(act)
                    handled.add(uid_of(dep))
            if not deps:
                act = _drop_finalizer(owner, ORPHAN)
                if act is not None:
                    actions.append(act)
        elif FOREGROUND in fins:
            blocking = [d for d in deps if any(r.get("uid") == uid and r.get("blockOwnerDeletion") is True
                                               for r in owner_refs(d))]
            for dep in deps:
                if not is_deleting(dep):
                    # delete only when the foreground owner is the last one standing
                    others = [r for r in owner_refs(dep) if r.get("uid") != uid
                              and r.get("uid") in by_uid and not is_deleting(by_uid[str(r.get("uid"))])]
                    act = (_set_refs(dep, [r for r in owner_refs(dep) if r.get("uid") != uid]) if others
                           else _delete(dep, "Foreground"))
                    if act is not None:
                        actions.append(act)
                        handled.add(uid_of(dep))
            if not blocking:
                act = _drop_finalizer(owner, FOREGROUND)
                if act is not None:
                    actions.append(act)
    # dependents with dangling owners
    for dep in objects:
        refs = owner_refs(dep)
        if not refs or uid_of(dep) in handled or not uid_of(dep):
            continue
        absent = [r for r in refs if str(r.get("uid")) not in by_uid]
        if not absent:
            continue
        if len(absent) == len(refs):
            if not is_deleting(dep):
                act = _delete(dep, "Background", absent)
                if act is not None:
                    actions.append(act)
        else:
            act = _set_refs(dep, [r for r in refs if r not in absent], absent)
            if act is not None:
                actions.append(act)
    return actions
