"""`gifee proxy` end to end: a node namespace running the proxy, three pod namespaces
serving HTTP behind one service, an outside namespace for NodePort.

Services and Endpoints are created directly through the API (no endpoints
controller); the data path is the kernel's: the proxy is killed at the end and
traffic still flows.
"""

from __future__ import annotations

import collections
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gifee.proxy import rules
from tests.proxy.netlab import Lab, api, curl, in_ns, wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]

PODS = {"pod-a": "10.31.0.11", "pod-b": "10.31.0.12", "pod-c": "10.31.0.13"}


def endpoints(ready: list[str], not_ready: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    subset: dict[str, Any] = {"addresses": [{"ip": ip} for ip in ready],
                              "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}]}
    if not_ready:
        subset["notReadyAddresses"] = [{"ip": ip} for ip in not_ready]
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web", "namespace": "default"},
            "subsets": [subset] if ready or not_ready else []}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    lab = Lab()
    try:
        lab.start_control_plane()
        node = lab.node(1, "10.31.0.1/24")
        for name, ip in PODS.items():
            lab.pod(node, name, f"{ip}/24", "10.31.0.1", serve_port=8000)
        outside = lab.netns("outside")
        lab.veth(outside, "eth0", node, "ext0")
        in_ns(node, "ip", "addr", "add", "10.31.1.1/24", "dev", "ext0")
        in_ns(node, "ip", "link", "set", "ext0", "up")
        in_ns(outside, "ip", "addr", "add", "10.31.1.2/24", "dev", "eth0")
        in_ns(outside, "ip", "link", "set", "eth0", "up")
        yield lab
    finally:
        lab.close()


def node_ns(lab: Lab) -> str:
    return lab.namespaces[0]


def spread(ns: str, url: str, n: int) -> collections.Counter[str]:
    return collections.Counter(curl(ns, url) for _ in range(n))


def test_service_rules_sync_spread_and_survive_the_proxy(lab: Lab) -> None:
    node = node_ns(lab)
    outside = f"gf{lab.tag}-outside"
    code, svc = api(lab.api_url, "POST", "/api/v1/namespaces/default/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8000}]}})
    assert code == 201, svc
    vip, node_port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["nodePort"]
    code, out = api(lab.api_url, "POST", "/api/v1/namespaces/default/endpoints", endpoints(list(PODS.values())))
    assert code == 201, out
    proxy = lab.start(node, "proxy", sys.executable, "-m", "gifee", "proxy", "--server", lab.api_url,
                      "--node-name", "node1", "--sync-period", "1s")
    url = f"http://{vip}/"
    wait_until(lambda: curl(node, url, 1) in PODS, 15)

    # the node itself reaches the cluster IP; requests spread over the three endpoints
    counts = spread(node, url, 60)
    assert set(counts) == set(PODS), counts
    assert min(counts.values()) >= 8, counts
    # a pod reaches it too (prerouting), including itself through the service (hairpin)
    pod_a = f"gf{lab.tag}-pod-a"
    assert set(spread(pod_a, url, 30)) == set(PODS)

    # NodePort from outside the node namespace
    np_counts = spread(outside, f"http://10.31.1.1:{node_port}/", 30)
    assert set(np_counts) <= set(PODS) and sum(np_counts.values()) == 30, np_counts

    # scale to two ready endpoints, one not ready: the proxy resyncs within ~1 s
    t0 = time.monotonic()
    api(lab.api_url, "PUT", "/api/v1/namespaces/default/endpoints/web",
        endpoints([PODS["pod-a"], PODS["pod-b"]], [PODS["pod-c"]]))
    wait_until(lambda: f"{PODS['pod-c']}:8000" not in in_ns(node, "nft", "list", "table", "ip", "gifee").stdout, 3)
    resync = time.monotonic() - t0
    assert resync < 1.5, resync
    counts = spread(node, url, 40)
    assert set(counts) == {"pod-a", "pod-b"}, counts

    # no ready endpoints: connections are refused at once (reject), not black-holed
    api(lab.api_url, "PUT", "/api/v1/namespaces/default/endpoints/web", endpoints([], list(PODS.values())))
    wait_until(lambda: "noendpoints" in in_ns(node, "nft", "list", "set", "ip", "gifee", "noendpoints").stdout
               and vip in in_ns(node, "nft", "list", "set", "ip", "gifee", "noendpoints").stdout, 3)
    t0 = time.monotonic()
    assert curl(node, url, 3).startswith("<curl rc=7")  # connection refused
    assert time.monotonic() - t0 < 1.0
    api(lab.api_url, "PUT", "/api/v1/namespaces/default/endpoints/web", endpoints(list(PODS.values())))
    wait_until(lambda: curl(node, url, 1) in PODS, 5)

    # the kubernetes service reaches the API server through its cluster IP
    assert '"gitVersion"' in curl(node, "http://10.96.0.1:443/version")

    # kill -9 the proxy: the kernel keeps forwarding (no Python process in the data path)
    assert proxy.proc is not None
    proxy.proc.send_signal(signal.SIGKILL)
    proxy.proc.wait(5)
    counts = spread(node, url, 30)
    assert set(counts) == set(PODS), counts
    assert set(spread(outside, f"http://10.31.1.1:{node_port}/", 10)) <= set(PODS)

    # a fresh proxy adopts the table; a clean stop (SIGTERM) removes it, --cleanup is idempotent
    proxy2 = lab.start(node, "proxy2", sys.executable, "-m", "gifee", "proxy", "--server", lab.api_url,
                       "--node-name", "node1")
    wait_until(lambda: "proxy2" in proxy2.log() or curl(node, url, 1) in PODS, 10)
    time.sleep(1.5)
    proxy2.stop()
    assert in_ns(node, "nft", "list", "table", "ip", "gifee", check=False).returncode != 0
    assert curl(node, url, 1).startswith("<curl")
    in_ns(node, sys.executable, "-m", "gifee", "proxy", "--cleanup")
    in_ns(node, sys.executable, "-m", "gifee", "proxy", "--cleanup")


def test_render_is_deterministic_and_skips_not_ready() -> None:
    svc = {"metadata": {"namespace": "ns", "name": "s"},
           "spec": {"clusterIP": "10.96.0.9", "type": "ClusterIP",
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                              {"name": "dns", "port": 53, "protocol": "UDP"}]}}
    eps = {"metadata": {"namespace": "ns", "name": "s"},
           "subsets": [{"addresses": [{"ip": "10.1.0.3"}, {"ip": "10.1.0.2"}],
                        "notReadyAddresses": [{"ip": "10.1.0.9"}],
                        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                                  {"name": "dns", "port": 5353, "protocol": "UDP"}]}]}
    headless = {"metadata": {"namespace": "ns", "name": "h"}, "spec": {"clusterIP": "None", "ports": []}}
    a = rules.render([svc, headless], [eps])
    b = rules.render([headless, svc], [eps])
    assert a == b
    assert "10.1.0.9" not in a
    assert "dnat to 10.1.0.2:8080" in a and "dnat to 10.1.0.3:8080" in a and "dnat to 10.1.0.2:5353" in a
    assert "numgen random mod 2" in a
    assert "10.96.0.9 . tcp . 80 : goto svc/ns/s/http/tcp" in a
    empty = rules.render([svc], [])
    assert "elements = { 10.96.0.9 . udp . 53, 10.96.0.9 . tcp . 80 }" in empty
    assert "dnat" not in empty
