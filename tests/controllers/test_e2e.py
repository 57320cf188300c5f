"""End to end: gifee store + gifee apiserver + scheduler + controller-manager + hollow nodes on
loopback, driven with kubectl. Slow: `python3 -m pytest -m slow tests/controllers/test_e2e.py`."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gifee.api.kubeconfig import write_kubeconfig
from tests.api.harness import KUBECTL_120, KUBECTL_132, Cluster, Proc, start_apiserver, start_store

pytestmark = pytest.mark.slow
CMD = [sys.executable, "-m", "gifee.controllers.commands"]


@pytest.fixture(scope="module")
def cp() -> Iterator[tuple[Cluster, dict[str, Proc]]]:
    workdir = Path(tempfile.mkdtemp(prefix="gifee-cp-"))
    procs: dict[str, Proc] = {}
    store, endpoint = start_store("gifee", workdir / "store")
    try:
        api, url = start_apiserver(endpoint, workdir / "api")
        procs["apiserver"] = api
        kc = workdir / "kubeconfig"
        write_kubeconfig(str(kc), url)
        cluster = Cluster("gifee", endpoint, url, kc, workdir)
        for name, argv in {
            "hollow": [*CMD, "hollow-node", "--master", url, "--count", "3", "--lease-interval", "1",
                       "--capacity", "cpu=4,memory=8Gi,pods=20"],
            "lonely": [*CMD, "hollow-node", "--master", url, "--count", "1", "--name-prefix", "lonely-",
                       "--start-index", "9", "--lease-interval", "1", "--node-labels", "lonely=yes"],
            "scheduler": [*CMD, "scheduler", "--master", url, "--identity", "sched-1"],
            "cm1": [*CMD, "controller-manager", "--master", url, "--identity", "cm-1",
                    "--node-monitor-grace-period", "5s", "--default-not-ready-toleration-seconds", "2",
                    "--leader-elect-lease-duration", "4s", "--leader-elect-renew-deadline", "3s",
                    "--leader-elect-retry-period", "1s", "--min-resync-period", "5s"],
        }.items():
            procs[name] = Proc(argv, workdir / name, name)
            procs[name].start()
        yield cluster, procs
    finally:
        for p in procs.values():
            p.stop()
        store.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def wait(what: str, fn: Callable[[], Any], timeout: float = 60, procs: dict[str, Proc] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (AssertionError, KeyError, IndexError, TypeError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(0.3)
    logs = "\n".join(f"--- {n}\n{p.log()[-2500:]}" for n, p in (procs or {}).items() if n != "apiserver")
    raise AssertionError(f"timed out waiting for {what}: {last!r}\n{logs}")


def get(c: Cluster, path: str) -> Any:
    code, body = c.http("GET", path)
    assert code == 200, (code, body)
    return body


def pods(c: Cluster, ns: str = "default", selector: str = "") -> list[dict[str, Any]]:
    q = f"?labelSelector={selector}" if selector else ""
    return list(get(c, f"/api/v1/namespaces/{ns}/pods{q}")["items"])


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, annotations: {kubernetes.io/change-cause: first}}
spec:
  replicas: 5
  selector: {matchLabels: {app: web, env: prod}}
  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}
  template:
    metadata: {labels: {app: web, env: prod}}
    spec:
      containers:
      - {name: web, image: "nginx:1.10", ports: [{name: http, containerPort: 80}],
         resources: {requests: {cpu: 100m, memory: 64Mi}}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web, env: prod}
  ports: [{port: 80, targetPort: http}]
"""


def _running(c: Cluster, selector: str, n: int, image: str | None = None) -> bool:
    ps = [p for p in pods(c, selector=selector) if not p["metadata"].get("deletionTimestamp")]
    ok = [p for p in ps if p["status"].get("phase") == "Running" and p["spec"].get("nodeName")
          and p["status"].get("podIP")
          and (image is None or p["spec"]["containers"][0]["image"] == image)]
    return len(ps) == n and len(ok) == n


def _deployment_done(c: Cluster, n: int) -> dict[str, Any] | None:
    d = get(c, "/apis/apps/v1/namespaces/default/deployments/web")
    st = d.get("status", {})
    if (st.get("observedGeneration") == d["metadata"]["generation"] and st.get("updatedReplicas") == n
            and st.get("availableReplicas") == n and st.get("replicas") == n):
        return dict(d)
    return None


def test_deployment_lifecycle(cp: tuple[Cluster, dict[str, Proc]]) -> None:
    c, procs = cp
    wait("4 ready nodes", lambda: len([n for n in get(c, "/api/v1/nodes")["items"]
                                       if any(x["type"] == "Ready" and x["status"] == "True"
                                              for x in n["status"]["conditions"])]) == 4, procs=procs)
    c.kubectl(KUBECTL_132, "apply", "-f", "-", input=DEPLOYMENT)
    wait("5 running pods", lambda: _running(c, "app=web,env=prod", 5), procs=procs)
    d = wait("deployment available", lambda: _deployment_done(c, 5), procs=procs)
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    ps = pods(c, selector="app=web")
    nodes = {p["spec"]["nodeName"] for p in ps}
    assert len(nodes) >= 3  # spread over the nodes
    # services find scheduled pods by label
    ep = wait("endpoints", lambda: (e := get(c, "/api/v1/namespaces/default/endpoints/web"))
              and len(e.get("subsets", [{}])[0].get("addresses", [])) == 5 and e, procs=procs)
    assert sorted(a["ip"] for a in ep["subsets"][0]["addresses"]) == sorted(p["status"]["podIP"] for p in ps)
    assert ep["subsets"][0]["ports"] == [{"port": 80, "protocol": "TCP"}]
    # kubectl rollout status agrees
    c.kubectl(KUBECTL_132, "rollout", "status", "deployment/web", "--timeout=30s")

    # scale
    c.kubectl(KUBECTL_132, "scale", "deployment/web", "--replicas=8")
    wait("8 pods", lambda: _running(c, "app=web", 8), procs=procs)
    wait("deployment at 8", lambda: _deployment_done(c, 8), procs=procs)

    # roll out a new image
    c.kubectl(KUBECTL_132, "patch", "deployment/web", "--type=merge", "-p",
              json.dumps({"metadata": {"annotations": {"kubernetes.io/change-cause": "second"}},
                          "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.11",
                                                "ports": [{"name": "http", "containerPort": 80}]}]}}}}))
    wait("8 pods on nginx:1.11", lambda: _running(c, "app=web", 8, "nginx:1.11"), timeout=90, procs=procs)
    d = wait("rollout done", lambda: _deployment_done(c, 8), procs=procs)
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    rss = get(c, "/apis/apps/v1/namespaces/default/replicasets")["items"]
    assert sorted((r["metadata"]["annotations"]["deployment.kubernetes.io/revision"], r["spec"]["replicas"])
                  for r in rss) == [("1", 0), ("2", 8)]
    hist = c.kubectl(KUBECTL_132, "rollout", "history", "deployment/web").stdout
    assert "first" in hist and "second" in hist, hist

    # undo with both kubectls' rollout undo (client-side: writes revision 1's template back)
    c.kubectl(KUBECTL_132, "rollout", "undo", "deployment/web")
    wait("back on nginx:1.10", lambda: _running(c, "app=web", 8, "nginx:1.10"), timeout=90, procs=procs)
    d = wait("undo done", lambda: _deployment_done(c, 8), procs=procs)
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.10"
    c.kubectl(KUBECTL_120, "rollout", "undo", "deployment/web")
    wait("undo (1.20) to nginx:1.11", lambda: _running(c, "app=web", 8, "nginx:1.11"), timeout=90, procs=procs)
    d = wait("second undo done", lambda: _deployment_done(c, 8), procs=procs)
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "4"

    # delete with cascade (background): RSs and pods go, the service's endpoints empty
    c.kubectl(KUBECTL_132, "delete", "deployment/web")
    wait("no replica sets", lambda: get(c, "/apis/apps/v1/namespaces/default/replicasets")["items"] == [],
         procs=procs)
    wait("no pods", lambda: pods(c, selector="app=web") == [], procs=procs)
    wait("empty endpoints", lambda: not get(c, "/api/v1/namespaces/default/endpoints/web").get("subsets"),
         procs=procs)


RC = """
apiVersion: v1
kind: ReplicationController
metadata: {name: front}
spec:
  replicas: 5
  selector: {env: prod, app: front}
  template:
    metadata: {labels: {env: prod, app: front}}
    spec: {containers: [{name: c, image: "busybox:1"}]}
"""


def test_replication_controller_and_orphan_delete(cp: tuple[Cluster, dict[str, Proc]]) -> None:
    c, procs = cp
    c.kubectl(KUBECTL_120, "apply", "-f", "-", input=RC)
    wait("5 rc pods", lambda: _running(c, "app=front,env=prod", 5), procs=procs)
    victim = pods(c, selector="app=front")[0]["metadata"]["name"]
    c.kubectl(KUBECTL_132, "delete", "pod", victim, "--wait=false")
    wait("replaced", lambda: _running(c, "app=front", 5)
         and victim not in {p["metadata"]["name"] for p in pods(c, selector="app=front")}, procs=procs)
    c.kubectl(KUBECTL_132, "scale", "rc/front", "--replicas=2")
    wait("2 rc pods", lambda: _running(c, "app=front", 2), procs=procs)
    c.kubectl(KUBECTL_132, "delete", "rc/front", "--cascade=orphan")
    wait("rc gone", lambda: c.http("GET", "/api/v1/namespaces/default/replicationcontrollers/front")[0] == 404,
         procs=procs)
    time.sleep(2)
    left = pods(c, selector="app=front")
    assert len(left) == 2 and all(not p["metadata"].get("ownerReferences") for p in left)
    c.kubectl(KUBECTL_132, "delete", "pods", "-l", "app=front", "--wait=false")


def test_node_lost_pods_evicted_and_rescheduled(cp: tuple[Cluster, dict[str, Proc]]) -> None:
    c, procs = cp
    rs = """
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: pinned}
spec:
  replicas: 1
  selector: {matchLabels: {app: pinned}}
  template:
    metadata: {labels: {app: pinned}}
    spec:
      containers: [{name: c, image: "busybox:1"}]
      affinity: {nodeAffinity: {preferredDuringSchedulingIgnoredDuringExecution:
                 [{weight: 100, preference: {matchExpressions: [{key: lonely, operator: In, values: ["yes"]}]}}]}}
"""
    # (run on its own, the pod could be scheduled before lonely-0 registered: the preference is no filter)
    wait("lonely-0 ready", lambda: any(x["type"] == "Ready" and x["status"] == "True"
                                       for x in get(c, "/api/v1/nodes/lonely-0")["status"]["conditions"]),
         procs=procs)
    c.kubectl(KUBECTL_132, "apply", "-f", "-", input=rs)
    wait("pinned pod on lonely-0", lambda: _running(c, "app=pinned", 1)
         and pods(c, selector="app=pinned")[0]["spec"]["nodeName"] == "lonely-0", procs=procs)
    procs["lonely"].stop()
    node = wait("lonely-0 unknown", lambda: (n := get(c, "/api/v1/nodes/lonely-0"))
                and any(x["type"] == "Ready" and x["status"] == "Unknown" for x in n["status"]["conditions"]) and n,
                timeout=30, procs=procs)
    keys = {(t["key"], t["effect"]) for t in node["spec"].get("taints", [])}
    wait("unreachable taints", lambda: {("node.kubernetes.io/unreachable", "NoExecute"),
                                        ("node.kubernetes.io/unreachable", "NoSchedule")}
         <= {(t["key"], t["effect"]) for t in get(c, "/api/v1/nodes/lonely-0")["spec"].get("taints", [])},
         procs=procs)
    del keys
    # evicted: the old pod is Terminating (its kubelet is gone), the replica set made a new one elsewhere
    # (a replacement bound to another node: not merely none yet, which a wait for "not on lonely-0"
    # accepted while the replacement was still to be created, and the next listing found it unbound)
    wait("pod rescheduled elsewhere", lambda: _running(c, "app=pinned", 1)
         and (names := [p["spec"].get("nodeName") for p in pods(c, selector="app=pinned")
                        if not p["metadata"].get("deletionTimestamp")]) != []
         and all(n and n != "lonely-0" for n in names), timeout=40, procs=procs)
    old = [p for p in pods(c, selector="app=pinned") if p["spec"].get("nodeName") == "lonely-0"]
    assert all(p["metadata"].get("deletionTimestamp") for p in old)
    assert all(x["status"] == "False" for p in old for x in p["status"]["conditions"] if x["type"] == "Ready")
    # the node is removed for good: pod GC force-deletes what was left on it
    c.kubectl(KUBECTL_132, "delete", "node", "lonely-0")
    wait("orphaned pod removed", lambda: [p["spec"]["nodeName"] for p in pods(c, selector="app=pinned")]
         not in ([], ["lonely-0"]) and all(p["spec"]["nodeName"] != "lonely-0"
                                          for p in pods(c, selector="app=pinned")), procs=procs)
    c.kubectl(KUBECTL_132, "delete", "rs/pinned")


def test_namespace_delete_and_leader_election(cp: tuple[Cluster, dict[str, Proc]]) -> None:
    c, procs = cp
    c.kubectl(KUBECTL_132, "apply", "-f", "-", input="apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n")
    c.kubectl(KUBECTL_132, "apply", "-n", "team", "-f", "-", input=DEPLOYMENT.replace("replicas: 5", "replicas: 2"))
    wait("team pods", lambda: len(pods(c, "team")) == 2, procs=procs)
    c.kubectl(KUBECTL_132, "delete", "namespace", "team", "--wait=false")
    wait("namespace gone", lambda: c.http("GET", "/api/v1/namespaces/team")[0] == 404, timeout=60, procs=procs)
    # foreground cascade: the deployment stays (with its finalizer) until its replica set and pods are gone
    c.kubectl(KUBECTL_132, "apply", "-f", "-", input=DEPLOYMENT.replace("metadata: {name: web,", "metadata: {name: fg,", 1)
              .replace("app: web", "app: fg").replace("replicas: 5", "replicas: 3"))
    wait("fg pods", lambda: _running(c, "app=fg", 3), procs=procs)
    c.kubectl(KUBECTL_132, "delete", "deployment/fg", "--cascade=foreground", "--wait=false")
    wait("fg gone", lambda: c.http("GET", "/apis/apps/v1/namespaces/default/deployments/fg")[0] == 404
         and not [r for r in get(c, "/apis/apps/v1/namespaces/default/replicasets")["items"]
                  if r["metadata"]["name"].startswith("fg-")], procs=procs)
    wait("fg pods gone", lambda: pods(c, selector="app=fg") == [], procs=procs)
    # leader election: cm-1 holds the lease; a second manager waits, then takes over when cm-1 dies
    lease = get(c, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager")
    assert lease["spec"]["holderIdentity"] == "cm-1"
    argv = list(procs["cm1"].argv)
    argv[argv.index("cm-1")] = "cm-2"
    procs["cm2"] = Proc(argv, c.workdir / "cm2", "cm2")
    procs["cm2"].start()
    time.sleep(3)
    lease = get(c, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager")
    assert lease["spec"]["holderIdentity"] == "cm-1"
    procs["cm1"].stop()
    wait("cm-2 leads", lambda: get(c, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/"
                                   "kube-controller-manager")["spec"]["holderIdentity"] == "cm-2", procs=procs)
    c.kubectl(KUBECTL_132, "apply", "-f", "-", input=RC.replace("replicas: 5", "replicas: 3"))
    wait("cm-2 runs the rc", lambda: _running(c, "app=front", 3), procs=procs)
