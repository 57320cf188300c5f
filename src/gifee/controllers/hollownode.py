"""Hollow node core: what a simulated kubelet writes, as pure functions.

Rules (what a kubelet does, minus running anything):
- Registration: a Node named after the hollow node with the usual labels
  (kubernetes.io/hostname, kubernetes.io/os=linux, kubernetes.io/arch), capacity
  and allocatable as given, a podCIDR 10.244.<index>.0/24, an InternalIP
  127.0.<index//250>.<index%250+2> address, nodeInfo with kubeletVersion, and the
  Ready condition True (reason KubeletReady) plus the pressure conditions False.
- Heartbeat: a coordination.k8s.io Lease in kube-node-lease, holderIdentity the
  node, leaseDurationSeconds 40, renewTime now (microseconds), renewed every 10 s.
- A pod bound to the node and not yet Running gets status phase Running, a pod IP
  from the node's podCIDR (the lowest free .2-.254), hostIP, startTime, the
  PodScheduled/Initialized/ContainersReady/Ready conditions True and a running,
  ready container status per container.
- A Running pod whose Ready condition went False (the node lifecycle controller
  marks pods of unreachable nodes) is made Ready again once the node is back.
- A pod on the node with a deletionTimestamp is "stopped" and deleted with
  gracePeriodSeconds 0 (the kubelet's final delete), uid as precondition.

Theory of operation: `pod_actions(node_name, index, pods, now)` is the whole
kubelet sync for one node; the shell calls it on the events of its nodes' pods
that `needs_sync` (a pod whose own part of the sync would do something: the
others, e.g. the write-through of a status just written, leave the node alone)
and renews the leases on a timer.
"""

from __future__ import annotations

import datetime as dt

from gifee.controllers.objects import (
    Action,
    Obj,
    condition,
    deepcopy,
    is_deleting,
    micro_timestamp,
    name_of,
    namespace_of,
    timestamp,
    uid_of,
)

LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
KUBELET_VERSION = "v1.32.0-gifee-hollow"


def node_ip(index: int) -> str:
    return f"127.0.{index // 250}.{index % 250 + 2}"


def node_body(name: str, index: int, capacity: dict[str, str], now: dt.datetime,
              labels: dict[str, str] | None = None, taints: list[Obj] | None = None) -> Obj:
    ts = timestamp(now)
    conds = [{"type": t, "status": "False", "reason": f"KubeletHas{r}", "message": m,
              "lastHeartbeatTime": ts, "lastTransitionTime": ts}
             for t, r, m in (("MemoryPressure", "SufficientMemory", "kubelet has sufficient memory available"),
                             ("DiskPressure", "NoDiskPressure", "kubelet has no disk pressure"),
                             ("PIDPressure", "SufficientPID", "kubelet has sufficient PID available"))]
    conds.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                  "message": "kubelet is posting ready status", "lastHeartbeatTime": ts, "lastTransitionTime": ts})
    all_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"}
    all_labels.update(labels or {})
    spec: Obj = {"podCIDR": f"10.244.{index}.0/24", "podCIDRs": [f"10.244.{index}.0/24"]}
    if taints:
        spec["taints"] = taints
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": all_labels},
        "spec": spec,
        "status": {
            "capacity": dict(capacity), "allocatable": dict(capacity), "conditions": conds,
            "addresses": [{"type": "InternalIP", "address": node_ip(index)}, {"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": KUBELET_VERSION,
                         "operatingSystem": "linux", "architecture": "amd64", "containerRuntimeVersion": "gifee://0.1",
                         "osImage": "gifee hollow node", "kernelVersion": "", "machineID": "", "systemUUID": "",
                         "bootID": ""},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        },
    }


def ready_status_body(node: Obj, now: dt.datetime) -> Obj:
    """The node with its conditions refreshed (a heartbeat through the status)."""
    body = deepcopy(node)
    ts = timestamp(now)
    for c in body.setdefault("status", {}).setdefault("conditions", []):
        c["lastHeartbeatTime"] = ts
        want = "True" if c.get("type") == "Ready" else "False"
        if c.get("status") != want:
            c["status"] = want
            c["lastTransitionTime"] = ts
            c["reason"] = "KubeletReady" if want == "True" else "KubeletHasNoPressure"
            c["message"] = "kubelet is posting ready status" if want == "True" else ""
    return body


def lease_body(name: str, now: dt.datetime, existing: Obj | None = None) -> Obj:
    body: Obj = deepcopy(existing) if existing else {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": LEASE_NAMESPACE}, "spec": {}}
    body["spec"].update({"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS,
                         "renewTime": micro_timestamp(now)})
    return body


def free_ip(index: int, used: set[str]) -> str | None:
    for last in range(2, 255):
        ip = f"10.244.{index}.{last}"
        if ip not in used:
            return ip
    return None


def running_status(pod: Obj, ip: str, host_ip: str, now: dt.datetime) -> Obj:
    ts = timestamp(now)
    statuses = []
    for c in (pod.get("spec") or {}).get("containers") or []:
        image = str(c.get("image", ""))
        statuses.append({"name": c.get("name"), "ready": True, "started": True, "restartCount": 0,
                         "image": image, "imageID": f"hollow://{image}",
                         "containerID": f"hollow://{uid_of(pod)}/{c.get('name')}",
                         "state": {"running": {"startedAt": ts}}, "lastState": {}})
    return {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "startTime": ts, "qosClass": "BestEffort",
        "conditions": [{"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": ts}
                       for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
        "containerStatuses": statuses,
    }


def needs_sync(pod: Obj) -> bool:
    """Whether `pod_actions` would act on this pod (given a free IP): not Running and not terminal,
    being deleted, or Running but not Ready."""
    if is_deleting(pod):
        return True
    status = pod.get("status") or {}
    phase = status.get("phase")
    if phase in ("Succeeded", "Failed"):
        return False
    if phase == "Running" and status.get("podIP"):
        ready = condition(pod, "Ready")
        return ready is not None and ready.get("status") != "True"
    return True


def pod_actions(node_name: str, index: int, pods: list[Obj], now: dt.datetime) -> list[Action]:
    # one pass for the IPs in use and the pods to act on; only those are sorted (a node syncs on each of
    # its pods' events, and sorting all of its pods every time made a node's syncs quadratic in its pods)
    used: set[str] = set()
    todo: list[Obj] = []
    for p in pods:
        if (p.get("spec") or {}).get("nodeName") != node_name:
            continue
        ip = (p.get("status") or {}).get("podIP")
        if ip:
            used.add(str(ip))
        if needs_sync(p):
            todo.append(p)
    actions: list[Action] = []
    for pod in sorted(todo, key=lambda p: (namespace_of(p), name_of(p))):
        status = pod.get("status") or {}
        if is_deleting(pod):
            actions.append(Action("delete", "pods", namespace_of(pod), name_of(pod), None,
                                  {"gracePeriodSeconds": 0, "preconditions": {"uid": uid_of(pod)}}))
            continue
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        if status.get("phase") == "Running" and status.get("podIP"):
            if condition(pod, "Ready") is not None and (condition(pod, "Ready") or {}).get("status") != "True":
                body = deepcopy(pod)  # marked NotReady while the node was unreachable: ready again
                for c in body["status"].get("conditions") or []:
                    if c.get("type") in ("Ready", "ContainersReady"):
                        c.update({"status": "True", "lastTransitionTime": timestamp(now)})
                actions.append(Action("update_status", "pods", namespace_of(pod), name_of(pod), body))
            continue
        ip = free_ip(index, used)
        if ip is None:
            continue
        used.add(ip)
        # the pod with its new status; the rest is shared with the observed pod, which nothing changes
        body = {**pod, "status": running_status(pod, ip, node_ip(index), now)}
        actions.append(Action("update_status", "pods", namespace_of(pod), name_of(pod), body))
    return actions
