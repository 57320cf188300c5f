"""Validation of the objects served: the checks kube-apiserver makes that matter
to clients and controllers, returned as Status causes.

Rules: metadata (name: DNS-1123 subdomain, or label for namespaces, services;
labels and annotations keys/values), then per kind: pods need containers with
names and images and unique names; services need ports in 1..65535 unless
headless; deployments/replica sets need a selector that matches the template's
labels; replicas >= 0; config map and secret keys are [-._a-zA-Z0-9]+. Update
checks immutable fields (selectors of apps/v1 workloads, pod spec except
images, activeDeadlineSeconds, tolerations). Pure: obj -> list of causes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from gifee.api.errors import cause
from gifee.api.selectors import (
    SelectorError,
    _check_key,
    _check_value,
    from_label_selector_object,
    labels_match,
)

Obj = dict[str, Any]
Causes = list[dict[str, str]]

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
LABEL_NAME_KINDS = frozenset({"Namespace", "Service"})


def name_causes(kind: str, name: str, field: str = "metadata.name") -> Causes:
    if kind in LABEL_NAME_KINDS:
        if len(name) > 63 or not DNS1123_LABEL.match(name):
            return [cause(field, f'Invalid value: "{name}": a lowercase RFC 1123 label must consist of lower case '
                          "alphanumeric characters or '-', and must start and end with an alphanumeric character")]
        return []
    if len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        return [cause(field, f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case '
                      "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")]
    return []


def metadata_causes(kind: str, meta: Any) -> Causes:
    if not isinstance(meta, dict):
        return [cause("metadata", "Invalid value: metadata must be an object")]
    out: Causes = []
    name = meta.get("name")
    if not name:
        out.append(cause("metadata.name", "Required value: name or generateName is required", "FieldValueRequired"))
    elif not isinstance(name, str):
        out.append(cause("metadata.name", "Invalid value: must be a string"))
    else:
        out += name_causes(kind, name)
    for field in ("labels", "annotations"):
        value = meta.get(field)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            out.append(cause(f"metadata.{field}", "Invalid value: must be a map of strings"))
            continue
        for k, v in value.items():
            try:
                _check_key(k)
                if field == "labels":
                    _check_value(v)
            except SelectorError as e:
                out.append(cause(f"metadata.{field}", f"Invalid value: {e}"))
    for field in ("finalizers",):
        value = meta.get(field)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            out.append(cause(f"metadata.{field}", "Invalid value: must be a list of strings"))
    return out


def _containers(spec: Obj, path: str) -> Causes:
    out: Causes = []
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [cause(f"{path}.containers", "Required value", "FieldValueRequired")]
    seen: set[str] = set()
    for i, c in enumerate(containers):
        p = f"{path}.containers[{i}]"
        if not isinstance(c, dict):
            out.append(cause(p, "Invalid value: must be an object"))
            continue
        name = c.get("name")
        if not name:
            out.append(cause(f"{p}.name", "Required value", "FieldValueRequired"))
        elif not isinstance(name, str) or not DNS1123_LABEL.match(name):
            out.append(cause(f"{p}.name", f'Invalid value: "{name}": must be a DNS-1123 label'))
        elif name in seen:
            out.append(cause(f"{p}.name", f'Duplicate value: "{name}"', "FieldValueDuplicate"))
        else:
            seen.add(name)
        if not c.get("image"):
            out.append(cause(f"{p}.image", "Required value", "FieldValueRequired"))
        for j, port in enumerate(c.get("ports") or []):
            cp = port.get("containerPort") if isinstance(port, dict) else None
            if not isinstance(cp, int) or not 0 < cp < 65536:
                out.append(cause(f"{p}.ports[{j}].containerPort",
                                 f"Invalid value: {cp}: must be between 1 and 65535, inclusive"))
    policy = spec.get("restartPolicy")
    if policy not in (None, "Always", "OnFailure", "Never"):
        out.append(cause(f"{path}.restartPolicy", f'Unsupported value: "{policy}"', "FieldValueNotSupported"))
    return out


def pod(obj: Obj) -> Causes:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [cause("spec", "Required value", "FieldValueRequired")]
    return _containers(spec, "spec")


def _replicas(spec: Obj) -> Causes:
    r = spec.get("replicas")
    if r is not None and (not isinstance(r, int) or isinstance(r, bool) or r < 0):
        return [cause("spec.replicas", f"Invalid value: {r}: must be greater than or equal to 0")]
    return []


def _workload(obj: Obj, selector_required: bool) -> Causes:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [cause("spec", "Required value", "FieldValueRequired")]
    out = _replicas(spec)
    template = spec.get("template")
    if not isinstance(template, dict):
        return out + [cause("spec.template", "Required value", "FieldValueRequired")]
    tlabels = (template.get("metadata") or {}).get("labels") or {}
    raw = spec.get("selector")
    if selector_required:
        if not raw:
            out.append(cause("spec.selector", "Required value", "FieldValueRequired"))
        else:
            try:
                sel = from_label_selector_object(raw)
            except SelectorError as e:
                out.append(cause("spec.selector", f"Invalid value: {e}"))
            else:
                if not sel:
                    out.append(cause("spec.selector", "Invalid value: empty selector is invalid for deployment"))
                elif not labels_match(sel, tlabels):
                    out.append(cause("spec.template.metadata.labels",
                                     f"Invalid value: {tlabels!r}: `selector` does not match template `labels`"))
    elif raw is not None:
        if not isinstance(raw, dict) or not raw:
            out.append(cause("spec.selector", "Required value", "FieldValueRequired"))
        elif any(tlabels.get(k) != v for k, v in raw.items()):
            out.append(cause("spec.template.metadata.labels",
                             f"Invalid value: {tlabels!r}: `selector` does not match template `labels`"))
    tspec = template.get("spec")
    if not isinstance(tspec, dict):
        return out + [cause("spec.template.spec", "Required value", "FieldValueRequired")]
    return out + _containers(tspec, "spec.template.spec")


def deployment(obj: Obj) -> Causes:
    return _workload(obj, True)


def replication_controller(obj: Obj) -> Causes:
    return _workload(obj, False)


def service(obj: Obj) -> Causes:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [cause("spec", "Required value", "FieldValueRequired")]
    out: Causes = []
    stype = spec.get("type", "ClusterIP")
    if stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        out.append(cause("spec.type", f'Unsupported value: "{stype}"', "FieldValueNotSupported"))
    ports = spec.get("ports") or []
    if not ports and stype != "ExternalName" and spec.get("clusterIP") != "None":
        out.append(cause("spec.ports", "Required value", "FieldValueRequired"))
    names: set[str] = set()
    for i, p in enumerate(ports):
        if not isinstance(p, dict):
            out.append(cause(f"spec.ports[{i}]", "Invalid value: must be an object"))
            continue
        port = p.get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            out.append(cause(f"spec.ports[{i}].port", f"Invalid value: {port}: must be between 1 and 65535, inclusive"))
        name = p.get("name", "")
        if len(ports) > 1 and not name:
            out.append(cause(f"spec.ports[{i}].name", "Required value", "FieldValueRequired"))
        if name in names:
            out.append(cause(f"spec.ports[{i}].name", f'Duplicate value: "{name}"', "FieldValueDuplicate"))
        names.add(name)
    return out


def _data_keys(obj: Obj) -> Causes:
    out: Causes = []
    for field in ("data", "binaryData", "stringData"):
        value = obj.get(field)
        if value is None:
            continue
        if not isinstance(value, dict):
            out.append(cause(field, "Invalid value: must be a map"))
            continue
        for k, v in value.items():
            if not CONFIG_KEY.match(k) or len(k) > 253:
                out.append(cause(f"{field}[{k}]", f'Invalid value: "{k}": a valid config key must consist of '
                                 "alphanumeric characters, '-', '_' or '.'"))
            if not isinstance(v, str):
                out.append(cause(f"{field}[{k}]", "Invalid value: must be a string"))
    return out


def pod_disruption_budget(obj: Obj) -> Causes:
    spec = obj.get("spec") or {}
    if "minAvailable" in spec and "maxUnavailable" in spec:
        return [cause("spec", "Invalid value: minAvailable and maxUnavailable cannot be both set")]
    return []


VALIDATORS: dict[str, Callable[[Obj], Causes]] = {
    "Pod": pod, "Deployment": deployment, "ReplicaSet": deployment,
    "ReplicationController": replication_controller, "Service": service,
    "ConfigMap": _data_keys, "Secret": _data_keys, "PodDisruptionBudget": pod_disruption_budget,
}


def validate(kind: str, obj: Obj) -> Causes:
    causes = metadata_causes(kind, obj.get("metadata"))
    fn = VALIDATORS.get(kind)
    if fn is not None:
        causes += fn(obj)
    return causes


def _pod_spec_without_mutables(spec: Any) -> Any:
    if not isinstance(spec, dict):
        return spec
    out = dict(spec)
    for k in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
        out.pop(k, None)
    for key in ("containers", "initContainers"):
        if isinstance(out.get(key), list):
            out[key] = [{k: v for k, v in c.items() if k != "image"} if isinstance(c, dict) else c
                        for c in out[key]]
    if not spec.get("nodeName"):
        out.pop("nodeName", None)
    return out


def validate_update(kind: str, old: Obj, new: Obj) -> Causes:
    out = validate(kind, new)
    if kind in ("Deployment", "ReplicaSet") and (old.get("spec") or {}).get("selector") != (
            new.get("spec") or {}).get("selector"):
        out.append(cause("spec.selector", "Invalid value: field is immutable"))
    if kind == "Pod":
        old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
        if old_spec.get("nodeName") and old_spec.get("nodeName") != new_spec.get("nodeName"):
            out.append(cause("spec.nodeName", "Invalid value: field is immutable"))
        elif _pod_spec_without_mutables(old_spec) != _pod_spec_without_mutables(new_spec):
            out.append(cause("spec", "Forbidden: pod updates may not change fields other than "
                             "`spec.containers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` "
                             "(only additions to existing tolerations) or "
                             "`spec.terminationGracePeriodSeconds`", "FieldValueForbidden"))
    return out
