"""Server-side printing: objects -> meta.k8s.io/v1 Table, as `kubectl get` shows them.

Rules: one column set per kind (COLUMNS, data), each column a (name, type,
priority, cell function); priority 1 columns appear only with `-o wide`. Rows
carry the object as PartialObjectMetadata (includeObject=Metadata, the default)
or the whole object (includeObject=Object), or nothing (None). Ages use
kubectl's human durations. Pure: `now` is passed in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """kubectl's duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    y = d // 365
    if y < 8:
        return f"{y}y{d % 365}d" if d % 365 else f"{y}y"
    return f"{y}y"


def age(obj: Obj, now: dt.datetime) -> str:
    t = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    return "<unknown>" if t is None else human_duration((now - t).total_seconds())


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    for p in path:
        if not isinstance(obj, dict):
            return default
        obj = obj.get(p)
    return default if obj is None else obj


def _selector_text(sel: Any) -> str:
    if not sel:
        return "<none>"
    if isinstance(sel, dict) and ("matchLabels" in sel or "matchExpressions" in sel):
        parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
        for e in sel.get("matchExpressions") or []:
            op = e.get("operator", "")
            vals = ",".join(e.get("values") or [])
            parts.append({"In": f"{e.get('key')} in ({vals})", "NotIn": f"{e.get('key')} notin ({vals})",
                          "Exists": str(e.get("key")), "DoesNotExist": f"!{e.get('key')}"}.get(op, ""))
        return ",".join(parts) or "<none>"
    if isinstance(sel, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(sel.items()))
    return str(sel)


def _containers(obj: Obj) -> list[Obj]:
    return list(_get(obj, "spec", "template", "spec", "containers", default=[]))


# -- per-kind cells


def _pod_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    statuses = status.get("containerStatuses") or []
    total = len(spec.get("containers") or [])
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
    reason = status.get("reason") or status.get("phase") or "Pending"
    for c in statuses:
        state = c.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            reason = state["terminated"].get("reason") or "Terminated"
    if _get(obj, "metadata", "deletionTimestamp"):
        reason = "Terminating"
    gates = spec.get("readinessGates") or []
    return [obj["metadata"]["name"], f"{ready}/{total}", reason, restarts, age(obj, now),
            status.get("podIP") or "<none>", spec.get("nodeName") or "<none>",
            status.get("nominatedNodeName") or "<none>",
            f"0/{len(gates)}" if gates else "<none>"]


def _node_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    conds = {c.get("type"): c.get("status") for c in _get(obj, "status", "conditions", default=[])}
    state = {"True": "Ready", "False": "NotReady"}.get(str(conds.get("Ready")), "Unknown")
    if _get(obj, "spec", "unschedulable"):
        state += ",SchedulingDisabled"
    labels = _get(obj, "metadata", "labels", default={})
    roles = sorted(k.rpartition("/")[2] for k in labels if k.startswith("node-role.kubernetes.io/"))
    addrs = {a.get("type"): a.get("address") for a in _get(obj, "status", "addresses", default=[])}
    info = _get(obj, "status", "nodeInfo", default={})
    return [obj["metadata"]["name"], state, ",".join(roles) or "<none>", age(obj, now),
            info.get("kubeletVersion", ""), addrs.get("InternalIP") or "<none>", addrs.get("ExternalIP") or "<none>",
            info.get("osImage") or "<unknown>", info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>"]


def _service_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    spec = obj.get("spec") or {}
    ports = []
    for p in spec.get("ports") or []:
        text = f"{p.get('port')}"
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        ports.append(f"{text}/{p.get('protocol', 'TCP')}")
    ingress = _get(obj, "status", "loadBalancer", "ingress", default=[])
    external = ",".join(i.get("ip") or i.get("hostname", "") for i in ingress) or (
        ",".join(spec.get("externalIPs") or []) or
        (spec.get("externalName") if spec.get("type") == "ExternalName" else
         "<pending>" if spec.get("type") == "LoadBalancer" else "<none>"))
    return [obj["metadata"]["name"], spec.get("type", "ClusterIP"), spec.get("clusterIP") or "<none>", external,
            ",".join(ports) or "<none>", age(obj, now), _selector_text(spec.get("selector"))]


def _endpoints_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    eps = []
    for subset in obj.get("subsets") or []:
        for a in subset.get("addresses") or []:
            for p in subset.get("ports") or [{}]:
                eps.append(f"{a.get('ip')}:{p.get('port')}" if p.get("port") else str(a.get("ip")))
    text = ",".join(eps[:3]) + (f" + {len(eps) - 3} more..." if len(eps) > 3 else "")
    return [obj["metadata"]["name"], text or "<none>", age(obj, now)]


def _replicas_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    cs = _containers(obj)
    return [obj["metadata"]["name"], spec.get("replicas", 0), status.get("replicas", 0),
            status.get("readyReplicas", 0), age(obj, now), ",".join(c.get("name", "") for c in cs),
            ",".join(c.get("image", "") for c in cs), _selector_text(spec.get("selector"))]


def _deployment_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    cs = _containers(obj)
    return [obj["metadata"]["name"], f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            status.get("updatedReplicas", 0), status.get("availableReplicas", 0), age(obj, now),
            ",".join(c.get("name", "") for c in cs), ",".join(c.get("image", "") for c in cs),
            _selector_text(spec.get("selector"))]


def _event_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    last = parse_time(obj.get("lastTimestamp") or obj.get("eventTime") or
                      _get(obj, "metadata", "creationTimestamp"))
    io = obj.get("involvedObject") or {}
    return [human_duration((now - last).total_seconds()) if last else "<unknown>", obj.get("type", ""),
            obj.get("reason", ""), f"{str(io.get('kind', '')).lower()}/{io.get('name', '')}", obj.get("message", "")]


def _pdb_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    spec = obj.get("spec") or {}
    return [obj["metadata"]["name"], spec.get("minAvailable", "N/A"), spec.get("maxUnavailable", "N/A"),
            _get(obj, "status", "disruptionsAllowed", default=0), age(obj, now)]


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "string"
    priority: int = 0
    format: str = ""
    description: str = ""


_NAME = Column("Name", format="name", description="Name must be unique within a namespace.")
_AGE = Column("Age", description="CreationTimestamp is a timestamp representing the server time when this "
              "object was created.")
_WIDE = (Column("Containers", priority=1), Column("Images", priority=1), Column("Selector", priority=1))

COLUMNS: dict[str, tuple[tuple[Column, ...], Callable[[Obj, dt.datetime], list[Any]]]] = {
    "Pod": ((_NAME, Column("Ready"), Column("Status"), Column("Restarts", "string"), _AGE,
             Column("IP", priority=1), Column("Node", priority=1), Column("Nominated Node", priority=1),
             Column("Readiness Gates", priority=1)), _pod_cells),
    "Namespace": ((_NAME, Column("Status"), _AGE),
                  lambda o, now: [o["metadata"]["name"], _get(o, "status", "phase", default=""), age(o, now)]),
    "Node": ((_NAME, Column("Status"), Column("Roles"), _AGE, Column("Version"),
              Column("Internal-IP", priority=1), Column("External-IP", priority=1), Column("OS-Image", priority=1),
              Column("Kernel-Version", priority=1), Column("Container-Runtime", priority=1)), _node_cells),
    "Service": ((_NAME, Column("Type"), Column("Cluster-IP"), Column("External-IP"), Column("Port(s)"), _AGE,
                 Column("Selector", priority=1)), _service_cells),
    "Endpoints": ((_NAME, Column("Endpoints"), _AGE), _endpoints_cells),
    "ReplicationController": ((_NAME, Column("Desired", "integer"), Column("Current", "integer"),
                               Column("Ready", "integer"), _AGE) + _WIDE, _replicas_cells),
    "ReplicaSet": ((_NAME, Column("Desired", "integer"), Column("Current", "integer"), Column("Ready", "integer"),
                    _AGE) + _WIDE, _replicas_cells),
    "Deployment": ((_NAME, Column("Ready"), Column("Up-to-date", "integer"), Column("Available", "integer"),
                    _AGE) + _WIDE, _deployment_cells),
    "ConfigMap": ((_NAME, Column("Data", "integer"), _AGE),
                  lambda o, now: [o["metadata"]["name"], len(o.get("data") or {}) + len(o.get("binaryData") or {}),
                                  age(o, now)]),
    "Secret": ((_NAME, Column("Type"), Column("Data", "integer"), _AGE),
               lambda o, now: [o["metadata"]["name"], o.get("type", ""), len(o.get("data") or {}), age(o, now)]),
    "Event": ((Column("Last Seen"), Column("Type"), Column("Reason"), Column("Object"), Column("Message")),
              _event_cells),
    "PodDisruptionBudget": ((_NAME, Column("Min Available"), Column("Max Unavailable"),
                             Column("Allowed Disruptions", "integer"), _AGE), _pdb_cells),
    "Lease": ((_NAME, Column("Holder"), _AGE),
              lambda o, now: [o["metadata"]["name"], _get(o, "spec", "holderIdentity", default=""), age(o, now)]),
}
_DEFAULT: tuple[tuple[Column, ...], Callable[[Obj, dt.datetime], list[Any]]] = (
    (_NAME, _AGE), lambda o, now: [o["metadata"]["name"], age(o, now)])


def partial_metadata(obj: Obj) -> Obj:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata", {})}


def to_table(kind: str, objects: list[Obj], *, now: dt.datetime, include_object: str = "Metadata",
             list_meta: Obj | None = None, headers: bool = True) -> Obj:
    columns, cells = COLUMNS.get(kind, _DEFAULT)
    rows = []
    for obj in objects:
        row: Obj = {"cells": cells(obj, now)[:len(columns)]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = partial_metadata(obj)
        rows.append(row)
    defs = [{"name": c.name, "type": c.type, "format": c.format, "description": c.description,
             "priority": c.priority} for c in columns] if headers else []
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta or {},
            "columnDefinitions": defs, "rows": rows}
