"""End to end on three "machines" (network namespaces): machine 1 runs `gifee up`, machines
2 and 3 `gifee node join`. kubectl applies a Deployment of a busybox httpd (5 replicas,
readiness probe, graceful SIGTERM handling within the grace period) behind a Service; its name resolves inside a pod
through the cluster DNS; requests to the cluster IP from a client namespace spread over
the replicas. Then, under continuous load (one request per connection, every failure
counted): a rolling update v1 -> v2, a scale from 5 to 8, and machine 3's death (links
cut, node process and pods SIGKILLed). Failures per phase are printed as JSON
(`E2E-RESULT ...`); none are allowed during the update, the scale-out and after, and
during the machine's death only requests that were in flight to it when it died."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.loadgen import summarize
from tests.e2e.machines import Machines

pytestmark = [pytest.mark.root, pytest.mark.slow]

GRACE = 5          # node-monitor-grace-period: seconds without a heartbeat before a node is Unknown
TOLERATION = 2     # default-toleration-seconds: then its pods are evicted
THREADS = 4        # load generator threads, one request in flight each
IN_FLIGHT = 2.0    # seconds before the kill whose requests count as in flight (one took 0.8 s on a loaded machine)

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: foo}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: foo}}}}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
  template:
    metadata: {{labels: {{app: foo, version: "{version}"}}}}
    spec:
      terminationGracePeriodSeconds: 6
      containers:
      - name: web
        image: example.com/web:{version}
        imagePullPolicy: IfNotPresent
        # graceful termination: on SIGTERM keep serving 3 s (the endpoints drop the pod meanwhile), then stop
        command: ["sh", "-c", "mkdir -p /w && echo $(hostname) v{version} > /w/index.html && httpd -f -p 8080 -h /w &
                   pid=$!; trap 'sleep 3; kill $pid; exit 0' TERM; wait"]
        ports: [{{containerPort: 8080, name: http}}]
        resources: {{requests: {{cpu: 10m, memory: 16Mi}}}}
        readinessProbe: {{httpGet: {{path: /index.html, port: http}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: foo}}
spec:
  selector: {{app: foo}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Machines]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    lab = Machines()
    try:
        lab.create()
        lab.start(["--node-monitor-grace-period", str(GRACE), "--default-toleration-seconds", str(TOLERATION)])
        lab.kubectl("apply", "-f", "-", input=APP.format(replicas=5, version=1))
        yield lab
    finally:
        lab.close()


def pods(lab: Machines) -> list[dict[str, Any]]:
    code, out = lab.http("GET", "/api/v1/namespaces/default/pods?labelSelector=app%3Dfoo")
    return list(out.get("items", [])) if code == 200 else []


def ready_endpoints(lab: Machines) -> list[str]:
    code, ep = lab.http("GET", "/api/v1/namespaces/default/endpoints/foo")
    return sorted(a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses") or []) if code == 200 else []


def settled(lab: Machines, count: int, version: str, exclude_node: str = "") -> bool:
    """`count` Ready pods of `version` (none other, none terminating), all in the endpoints."""
    ps = pods(lab)
    live = [p for p in ps if not p["metadata"].get("deletionTimestamp")]
    ok = [p for p in live if p["metadata"]["labels"].get("version") == version
          and p["spec"].get("nodeName") != exclude_node and any(
              c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])]
    return (len(ok) == count == len(live) and (exclude_node != "" or len(ps) == count)
            and ready_endpoints(lab) == sorted(p["status"]["podIP"] for p in ok))


def table(lab: Machines) -> str:
    rows = []
    for p in pods(lab):
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
        rows.append(f"{p['metadata']['name']} v{p['metadata']['labels'].get('version')} {p['spec'].get('nodeName')} "
                    f"{p['status'].get('phase')} ready={ready} ip={p['status'].get('podIP')} "
                    f"deleting={bool(p['metadata'].get('deletionTimestamp'))} "
                    f"{[(c['name'], c.get('state')) for c in p['status'].get('containerStatuses') or []]}")
    return "\n".join(rows) + f"\nendpoints: {ready_endpoints(lab)}"


def wait_settled(lab: Machines, what: str, count: int, version: str, timeout: float, exclude: str = "") -> None:
    try:
        lab.wait(what, lambda: settled(lab, count, version, exclude), timeout)
    except AssertionError as e:
        raise AssertionError(f"{table(lab)}\n{e}") from None


def cluster_ip(lab: Machines) -> str:
    return str(lab.http("GET", "/api/v1/namespaces/default/services/foo")[1]["spec"]["clusterIP"])


def test_dns_and_spread(cluster: Machines) -> None:
    lab = cluster
    lab.wait("5 ready v1 pods", lambda: settled(lab, 5, "1"), 120)
    placed = {p["spec"]["nodeName"] for p in pods(lab)}
    assert len(placed) >= 2, placed  # the scheduler spreads them over the machines
    pod = pods(lab)[0]["metadata"]["name"]
    # resolv.conf from the agent (ClusterFirst), the name answered by the cluster DNS
    resolv = lab.kubectl("exec", pod, "--", "cat", "/etc/resolv.conf").stdout
    assert "nameserver 10.96.0.10" in resolv and "search default.svc.cluster.local" in resolv, resolv
    ip = cluster_ip(lab)
    out = lab.kubectl("exec", pod, "--", "nslookup", "foo.default.svc.cluster.local").stdout
    assert ip in out, out
    out = lab.kubectl("exec", pod, "--", "nslookup", "-type=SRV", "_http._tcp.foo.default.svc.cluster.local",
                      check=False)
    assert "foo.default.svc.cluster.local" in out.stdout, out.stdout + out.stderr
    # through the service name (search path) from inside a pod on every machine
    for node in sorted(placed):
        p = next(p for p in pods(lab) if p["spec"]["nodeName"] == node)["metadata"]["name"]
        body = lab.kubectl("exec", p, "--", "wget", "-qO-", "http://foo/index.html").stdout
        assert body.strip().endswith("v1"), body
    # from the client namespace, through the cluster IP: spread over all five replicas
    seen: dict[str, int] = {}
    for _ in range(60):
        r = lab.in_client("curl", "-s", "-m", "3", f"http://{ip}/index.html", check=False)
        seen[r.stdout.strip()] = seen.get(r.stdout.strip(), 0) + 1
    names = {p["metadata"]["name"] for p in pods(lab)}
    assert {k.split()[0] for k in seen if k} == names, seen
    print("E2E-SPREAD", json.dumps(seen))


def test_load_through_update_scale_and_node_failure(cluster: Machines) -> None:
    lab = cluster
    wait_settled(lab, "5 ready v1 pods", 5, "1", 120)
    ip = cluster_ip(lab)
    out = lab.workdir / "load.jsonl"
    stopfile = lab.workdir / "load.stop"
    load = lab.in_client(sys.executable, "-c", "import sys; print(sys.version)")  # the client namespace works
    assert load.returncode == 0
    gen = __import__("subprocess").Popen(
        ["ip", "netns", "exec", lab.client_ns, sys.executable, str(Path(__file__).with_name("loadgen.py")),
         ip, "80", "/index.html", "240", str(THREADS), str(out), str(stopfile)])
    phases: dict[str, tuple[float, float]] = {}
    load_start = time.time()
    try:
        time.sleep(5)
        t0 = time.time()
        lab.kubectl("apply", "-f", "-", input=APP.format(replicas=5, version=2))
        wait_settled(lab, "rolled out to v2", 5, "2", 180)
        phases["rolling update v1->v2"] = (t0, time.time() + 1)
        time.sleep(3)
        t0 = time.time()
        lab.kubectl("scale", "deployment/foo", "--replicas=8")
        wait_settled(lab, "8 ready pods", 8, "2", 120)
        phases["scale 5->8"] = (t0, time.time() + 1)
        time.sleep(3)
        victim = lab.machines[2]
        on_victim = [p["metadata"]["name"] for p in pods(lab) if p["spec"].get("nodeName") == victim.name]
        t0 = time.time() - IN_FLIGHT  # requests begun just before the kill belong to it
        lab.kill(victim)
        wait_settled(lab, "pods back on other machines", 8, "2", 120, victim.name)
        phases[f"kill {victim.name} ({len(on_victim)} pods)"] = (t0, time.time() + 1)
        time.sleep(max(5.0, 60 - (time.time() - load_start)))  # the load runs for a minute at least
        phases["after"] = (phases[f"kill {victim.name} ({len(on_victim)} pods)"][1], time.time())
    finally:
        stopfile.touch()
        gen.wait(60)
    results = [json.loads(line) for line in out.read_text().splitlines()]
    summary = summarize(results, phases)
    print("E2E-PHASES", json.dumps({k: [time.strftime("%H:%M:%S", time.localtime(a)) + f"{a % 1:.3f}"[1:], round(b - a, 2)]
                                    for k, (a, b) in phases.items()}))
    print("E2E-RESULT", json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "backends"} | {
        "backends": len(v["backends"])} for k, v in summary.items()}, indent=1))
    assert summary["rolling update v1->v2"]["failed"] == 0, summary["rolling update v1->v2"]
    assert summary["scale 5->8"]["failed"] == 0, summary["scale 5->8"]
    assert summary["after"]["failed"] == 0 and summary["after"]["requests"] > 0, summary["after"]
    assert summary["between"]["failed"] == 0, summary["between"]
    # the node failure costs only the requests in flight to the dead machine when it died (at most one per
    # client thread): a connection still being opened to its pods is retried by TCP and, once the dead pods
    # leave the endpoints and the proxy forgets their unanswered flows, balanced to a live one
    kill = next(v for k, v in summary.items() if k.startswith("kill "))
    assert kill["failed"] <= THREADS and all(t < IN_FLIGHT + 0.1 for t in kill["failed_at"]), kill
    # the v1 -> v2 switch is visible to the client, and all 8 replicas served after the scale
    assert any(b.endswith("v2") for b in summary["scale 5->8"]["backends"])
    assert len(summary["after"]["backends"]) == 8, summary["after"]["backends"]
