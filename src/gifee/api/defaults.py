"""Server-side defaulting of the objects served, by kind.

Rules: the defaults kube-apiserver applies to the v1 types (a subset: the fields
kubectl shows and controllers read), applied on create and update before
validation. Defaulting only fills missing fields; it never overwrites what the
client sent. Pure: takes and returns a dict (mutated in place for speed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]


def _container(c: Obj) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    if "imagePullPolicy" not in c:
        image = str(c.get("image", ""))
        tag = image.rpartition("/")[2].partition("@")[0]
        latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
        c["imagePullPolicy"] = "Always" if latest else "IfNotPresent"
    for p in c.get("ports") or []:
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")
    c.setdefault("resources", {})


def pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                _container(c)


def _template(obj: Obj) -> None:
    template = obj.setdefault("spec", {}).setdefault("template", {})
    if isinstance(template, dict):
        template.setdefault("metadata", {})
        spec = template.setdefault("spec", {})
        if isinstance(spec, dict):
            pod_spec(spec)


def pod(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        pod_spec(spec)


def namespace(obj: Obj) -> None:
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")
    labels = obj.setdefault("metadata", {}).setdefault("labels", {})
    if isinstance(labels, dict) and obj["metadata"].get("name"):
        labels.setdefault("kubernetes.io/metadata.name", obj["metadata"]["name"])


def service(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    for p in spec.get("ports") or []:
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")
            if "port" in p:
                p.setdefault("targetPort", p["port"])
    obj.setdefault("status", {}).setdefault("loadBalancer", {})


def deployment(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {})
    if isinstance(strategy, dict):
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            ru = strategy.setdefault("rollingUpdate", {})
            if isinstance(ru, dict):
                ru.setdefault("maxUnavailable", "25%")
                ru.setdefault("maxSurge", "25%")
    _template(obj)


def replica_set(obj: Obj) -> None:
    obj.setdefault("spec", {}).setdefault("replicas", 1)
    _template(obj)


def replication_controller(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("replicas", 1)
    _template(obj)
    template_labels = (spec.get("template") or {}).get("metadata", {}).get("labels") or {}
    if template_labels:
        spec.setdefault("selector", dict(template_labels))
        meta = obj.setdefault("metadata", {})
        if not meta.get("labels"):
            meta["labels"] = dict(template_labels)


def secret(obj: Obj) -> None:
    obj.setdefault("type", "Opaque")


def node(obj: Obj) -> None:
    obj.setdefault("spec", {})
    obj.setdefault("status", {})


def event(obj: Obj) -> None:
    obj.setdefault("type", "Normal")
    obj.setdefault("count", 1)


DEFAULTERS: dict[str, Callable[[Obj], None]] = {
    "Pod": pod, "Namespace": namespace, "Service": service, "Deployment": deployment,
    "ReplicaSet": replica_set, "ReplicationController": replication_controller, "Secret": secret,
    "Node": node, "Event": event,
}


def apply_defaults(kind: str, obj: Obj) -> Obj:
    fn = DEFAULTERS.get(kind)
    if fn is not None:
        fn(obj)
    return obj
