"""Pod garbage collection core: pods bound to nodes that no longer exist are removed.

Rules (Kubernetes' pod GC controller, the orphaned-pod part):
- A pod whose spec.nodeName names no observed Node is force-deleted
  (gracePeriodSeconds 0: no kubelet is left to finish it), with the node named
  under options["confirmAbsent"] so the shell checks with a live GET first.
- Pods not yet bound, and pods on existing nodes, are left alone (their kubelet,
  or the node lifecycle controller, deals with them).

Theory of operation: `reconcile(pods, nodes)` is a pure pass over the caches; the
shell runs it on node deletions and on resync.
"""

from __future__ import annotations

from gifee.controllers.objects import Action, Obj, name_of, namespace_of, uid_of


def reconcile(pods: list[Obj], nodes: list[Obj]) -> list[Action]:
    names = {name_of(n) for n in nodes}
    actions = []
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or node in names:
            continue
        actions.append(Action("delete", "pods", namespace_of(pod), name_of(pod), None,
                              {"gracePeriodSeconds": 0, "preconditions": {"uid": uid_of(pod)},
                               "confirmAbsent": [{"apiVersion": "v1", "kind": "Node", "name": node}]}))
    return actions
