"""The agent in a control plane: store + API server + scheduler + controller-manager +
`gifee agent`. A Deployment's pods are scheduled onto the agent's node, run for real,
become Ready (readiness probe), show up in the Service's Endpoints, and go away when
the Deployment scales to zero."""

from __future__ import annotations

import ipaddress
import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent.harness import IMAGE, NODE, Node, make_node
from tests.api.harness import KUBECTL_132, Proc

pytestmark = [pytest.mark.root, pytest.mark.slow]

DEPLOYMENT = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: {IMAGE}
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "mkdir -p /w && hostname > /w/index.html && exec httpd -f -p 8080 -h /w"]
        ports: [{{containerPort: 8080, name: http}}]
        resources: {{requests: {{cpu: 100m, memory: 32Mi}}}}
        readinessProbe: {{httpGet: {{path: /index.html, port: http}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"""


@pytest.fixture(scope="module")
def plane() -> Iterator[Node]:
    procs: list[Proc] = []
    gen = make_node("--backoff-base", "1")
    node = next(gen)
    try:
        url = node.cluster.url
        for name, argv in (("scheduler", ["scheduler", "--master", url, "--leader-elect", "false"]),
                           ("cm", ["controller-manager", "--master", url, "--leader-elect", "false",
                                   "--min-resync-period", "5s"])):
            proc = Proc([sys.executable, "-m", "gifee", *argv], node.workdir / name, name)
            proc.start()
            procs.append(proc)
        yield node
    finally:
        for p in procs:
            p.stop()
        for _ in gen:
            pass


def web_pods(node: Node) -> list[dict[str, Any]]:
    return list(node.api("GET", "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")["items"])


def test_deployment_runs_on_the_node(plane: Node) -> None:
    node = plane
    # the node's podCIDR (node IPAM's, or set here) becomes the subnet of its pods
    cidr = node.api("GET", f"/api/v1/nodes/{NODE}")["spec"].get("podCIDR")
    if not cidr:
        cidr = "10.25.7.0/24"
        node.api("PATCH", f"/api/v1/nodes/{NODE}", {"spec": {"podCIDR": cidr}}, "application/merge-patch+json")
    conf = node.data_dir / "net.d" / "default.conf"
    node.wait("podCIDR applied", lambda: json.loads(conf.read_text()).get("subnet") == cidr, timeout=15)
    node.kubectl(KUBECTL_132, "apply", "-f", "-", input=DEPLOYMENT)

    def ready() -> list[dict[str, Any]]:
        pods = web_pods(node)
        ok = [p for p in pods if p["spec"].get("nodeName") == NODE and any(
            c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])]
        return ok if len(ok) == 2 else []

    pods = node.wait("2 ready pods", ready, timeout=60)
    ips = sorted(p["status"]["podIP"] for p in pods)
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(cidr) for ip in ips), (ips, cidr)

    def endpoints() -> list[str]:
        ep = node.api("GET", "/api/v1/namespaces/default/endpoints/web")
        return sorted(a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses") or [])

    node.wait("endpoints", lambda: endpoints() == ips, timeout=30)
    # each pod answers on its own address, with its own host name (the pod's name)
    name = pods[0]["metadata"]["name"]
    out = node.kubectl(KUBECTL_132, "exec", pods[1]["metadata"]["name"], "--", "wget", "-qO-",
                       f"http://{pods[0]['status']['podIP']}:8080/index.html")
    assert out.stdout.strip() == name
    node.kubectl(KUBECTL_132, "scale", "deployment/web", "--replicas=0")
    node.wait("pods gone", lambda: not web_pods(node), timeout=60)
    node.wait("runtime pods stopped", lambda: not [p for p in node.runtime_pods() if p["state"] == "running"],
              timeout=30)
