"""A tiny in-memory cluster that applies core actions, for simulated control loops."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
from typing import Any

from gifee.controllers.objects import Action, Obj, timestamp

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
KINDS = {"pods": "Pod", "replicasets": "ReplicaSet", "replicationcontrollers": "ReplicationController",
         "deployments": "Deployment", "endpoints": "Endpoints", "services": "Service", "nodes": "Node",
         "namespaces": "Namespace", "leases": "Lease", "configmaps": "ConfigMap"}


def merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge(out.get(k), v)
    return out


class Cluster:
    def __init__(self, now: dt.datetime = T0) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.now = now
        self.counter = itertools.count(1)
        self.log: list[Action] = []

    def add(self, resource: str, obj: Obj) -> Obj:
        obj = copy.deepcopy(obj)
        m = obj.setdefault("metadata", {})
        if not m.get("name"):
            m["name"] = f"{m.get('generateName', 'x-')}{next(self.counter):05d}"
        m.setdefault("uid", f"uid-{next(self.counter)}")
        m.setdefault("creationTimestamp", timestamp(self.now))
        m.setdefault("generation", 1)
        m["resourceVersion"] = str(next(self.counter))
        obj.setdefault("kind", KINDS[resource])
        self.objects[(resource, m.get("namespace", ""), m["name"])] = obj
        return obj

    def list(self, resource: str) -> list[Obj]:
        return [copy.deepcopy(o) for (r, _, _), o in sorted(self.objects.items()) if r == resource]

    def get(self, resource: str, ns: str, name: str) -> Obj | None:
        o = self.objects.get((resource, ns, name))
        return copy.deepcopy(o) if o else None

    def apply(self, actions: list[Action]) -> None:
        for a in actions:
            self.log.append(a)
            key = (a.resource, a.namespace, a.name)
            cur = self.objects.get(key)
            if a.verb == "create":
                assert a.body is not None
                body = copy.deepcopy(a.body)
                body.setdefault("metadata", {})["namespace"] = a.namespace
                if a.resource == "pods":
                    body["status"] = {"phase": "Pending"}
                self.add(a.resource, body)
            elif a.verb in ("update", "update_status"):
                assert a.body is not None and cur is not None, a.describe()
                assert a.body["metadata"].get("resourceVersion") == cur["metadata"]["resourceVersion"], "conflict"
                body = copy.deepcopy(a.body)
                if a.verb == "update" and a.resource != "pods":
                    body["status"] = cur.get("status", {})
                    if body.get("spec") != cur.get("spec"):
                        body["metadata"]["generation"] = cur["metadata"].get("generation", 1) + 1
                if a.verb == "update_status":
                    body = dict(copy.deepcopy(cur), status=body.get("status"))
                body["metadata"]["resourceVersion"] = str(next(self.counter))
                self.objects[key] = body
            elif a.verb == "patch":
                assert a.body is not None
                if cur is None:
                    continue
                self.objects[key] = merge(cur, a.body)
                self.objects[key]["metadata"]["resourceVersion"] = str(next(self.counter))
            elif a.verb == "delete":
                if cur is None:
                    continue
                pre = (a.options.get("preconditions") or {}).get("uid")
                if pre and pre != cur["metadata"]["uid"]:
                    continue
                del self.objects[key]
            else:
                raise AssertionError(a.verb)

    def kubelet(self, ready: bool = True) -> None:
        """Make every pod Running and Ready (with an IP) at once."""
        for (r, _, _), o in self.objects.items():
            if r == "pods" and o.get("status", {}).get("phase") not in ("Failed", "Succeeded") and not any(
                    c.get("type") == "Ready" and c.get("status") == str(ready)
                    for c in o.get("status", {}).get("conditions") or []):
                o["status"] = {"phase": "Running", "podIP": f"10.0.0.{next(self.counter) % 250}",
                               "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                               "lastTransitionTime": timestamp(self.now)}]}
                o["metadata"]["resourceVersion"] = str(next(self.counter))
