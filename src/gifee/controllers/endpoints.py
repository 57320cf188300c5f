"""Endpoints reconcile core: a service's selector + the pods -> its Endpoints object.

Rules (Kubernetes' endpoints controller):
- Only services with a non-empty selector get managed endpoints; a service without
  one keeps whatever Endpoints the user wrote. A deleted service's Endpoints go too.
- A pod counts if it is in the service's namespace, matches the selector, has a
  podIP and is neither terminal nor being deleted. Ready pods go to `addresses`,
  others to `notReadyAddresses` (all to `addresses` with publishNotReadyAddresses).
  Each address carries ip, nodeName and a targetRef to the pod.
- Ports: each service port maps to its targetPort: a number, or a container port
  name looked up in each pod (pods without that name are left out of that port).
  Pods with the same resolved port set share a subset. Addresses and subsets are
  sorted, so equal inputs give byte-equal objects and no useless writes.
- The Endpoints object carries the service's labels.

Theory of operation: `reconcile(namespace, name, service, endpoints, pods)` returns
create/update/delete of the Endpoints object, or nothing when it is already right.
"""

from __future__ import annotations

from typing import Any

from gifee.controllers.objects import (
    Action,
    Obj,
    deepcopy,
    is_deleting,
    labels_of,
    map_selector_matches,
    name_of,
    namespace_of,
    pod_is_ready,
    pod_phase,
    uid_of,
)


def _resolve(port: Obj, pod: Obj) -> int | None:
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target and (p.get("protocol") or "TCP") == (port.get("protocol") or "TCP"):
                return int(p["containerPort"])
    return None


def desired_subsets(service: Obj, pods: list[Obj]) -> list[Obj]:
    spec = service.get("spec") or {}
    selector = spec.get("selector")
    publish = bool(spec.get("publishNotReadyAddresses"))
    ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)]
    groups: dict[tuple[Any, ...], dict[str, list[Obj]]] = {}
    for pod in pods:
        if namespace_of(pod) != namespace_of(service) or not map_selector_matches(selector, labels_of(pod)):
            continue
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or is_deleting(pod) or pod_phase(pod) in ("Succeeded", "Failed"):
            continue
        resolved = []
        for p in ports:
            num = _resolve(p, pod)
            if num is not None:
                entry: Obj = {"port": num, "protocol": p.get("protocol") or "TCP"}
                if p.get("name"):
                    entry["name"] = p["name"]
                if p.get("appProtocol"):
                    entry["appProtocol"] = p["appProtocol"]
                resolved.append(entry)
        if ports and not resolved:
            continue
        key = tuple(sorted((e.get("name", ""), e["port"], e["protocol"]) for e in resolved))
        g = groups.setdefault(key, {"ports": resolved, "addresses": [], "notReadyAddresses": []})
        addr: Obj = {"ip": ip, "targetRef": {"kind": "Pod", "namespace": namespace_of(pod),
                                             "name": name_of(pod), "uid": uid_of(pod)}}
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            addr["nodeName"] = node
        (g["addresses"] if publish or pod_is_ready(pod) else g["notReadyAddresses"]).append(addr)
    subsets = []
    for key in sorted(groups):
        g = groups[key]
        subset: Obj = {}
        for k in ("addresses", "notReadyAddresses"):
            if g[k]:
                subset[k] = sorted(g[k], key=lambda a: (tuple(int(x) if x.isdigit() else 0
                                                              for x in str(a["ip"]).split(".")), a["ip"]))
        if g["ports"]:
            subset["ports"] = sorted(g["ports"], key=lambda e: (e.get("name", ""), e["port"]))
        subsets.append(subset)
    return subsets


def reconcile(namespace: str, name: str, service: Obj | None, endpoints: Obj | None,
              pods: list[Obj]) -> list[Action]:
    if service is None or is_deleting(service):
        if endpoints is not None and service is None:
            return [Action("delete", "endpoints", namespace, name, None,
                           {"preconditions": {"uid": uid_of(endpoints)}})]
        return []
    if not (service.get("spec") or {}).get("selector"):
        return []
    subsets = desired_subsets(service, pods)
    labels = labels_of(service)
    if endpoints is None:
        body: Obj = {"apiVersion": "v1", "kind": "Endpoints",
                     "metadata": {"name": name, "namespace": namespace}, "subsets": subsets}
        if labels:
            body["metadata"]["labels"] = labels
        return [Action("create", "endpoints", namespace, name, body)]
    if (endpoints.get("subsets") or []) == subsets and labels_of(endpoints) == labels:
        return []
    body = deepcopy(endpoints)
    body["subsets"] = subsets
    body["metadata"]["labels"] = labels
    if not labels:
        body["metadata"].pop("labels")
    return [Action("update", "endpoints", namespace, name, body)]
