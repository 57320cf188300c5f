"""Namespace reconcile core: deleting a namespace deletes everything in it.

Rules (Kubernetes' namespace controller):
- A namespace without deletionTimestamp needs nothing.
- A namespace being deleted is marked status.phase=Terminating, then every object
  of every namespaced resource in it is deleted (Background propagation; the
  pods' own grace periods apply). Objects already being deleted are waited for.
- Once nothing is left, the `kubernetes` entry is removed from spec.finalizers
  through the namespace's finalize subresource; the API server then removes the
  namespace (with no metadata finalizers left).

Theory of operation: `reconcile(namespace, contents)` takes the namespace and the
cached objects in it (any kinds) and returns the step's actions; the shell
requeues terminating namespaces after a short delay until they are gone.
"""

from __future__ import annotations

from gifee.controllers.objects import (
    KIND_PLURALS,
    Action,
    Obj,
    deepcopy,
    is_deleting,
    name_of,
    uid_of,
)

FINALIZER = "kubernetes"


def reconcile(namespace: Obj, contents: list[Obj]) -> list[Action]:
    if not is_deleting(namespace):
        return []
    name = name_of(namespace)
    actions: list[Action] = []
    if (namespace.get("status") or {}).get("phase") != "Terminating":
        body = deepcopy(namespace)
        body.setdefault("status", {})["phase"] = "Terminating"
        actions.append(Action("update_status", "namespaces", "", name, body))
    remaining = 0
    for obj in contents:
        plural = KIND_PLURALS.get(str(obj.get("kind", "")))
        if plural is None or plural in ("namespaces", "nodes"):
            continue
        remaining += 1
        if not is_deleting(obj):
            actions.append(Action("delete", plural, name, name_of(obj), None,
                                  {"preconditions": {"uid": uid_of(obj)}, "propagationPolicy": "Background"}))
    finalizers = list((namespace.get("spec") or {}).get("finalizers") or [])
    if remaining == 0 and FINALIZER in finalizers:
        body = deepcopy(namespace)
        body.setdefault("spec", {})["finalizers"] = [f for f in finalizers if f != FINALIZER]
        actions.append(Action("update", "namespaces", "", name, body, {"subresource": "finalize"}))
    return actions
