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


def test_a_reused_client_port_is_balanced_anew_after_its_backend_is_gone(lab: Lab) -> None:
    """A SYN to a dead backend leaves a conntrack entry (SYN_SENT, two minutes); a new connection from the
    same client port would follow it to the dead backend unless the proxy forgets it when the backend goes."""
    node = node_ns(lab)
    code, svc = api(lab.api_url, "POST", "/api/v1/namespaces/default/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "stale"},
        "spec": {"selector": {"app": "stale"}, "ports": [{"name": "http", "port": 80, "targetPort": 8000}]}})
    assert code == 201, svc
    url = f"http://{svc['spec']['clusterIP']}/"
    dead = "10.31.0.99"  # on the pod bridge, nobody there: SYNs go unanswered
    eps = endpoints([dead]) | {"metadata": {"name": "stale", "namespace": "default"}}
    assert api(lab.api_url, "POST", "/api/v1/namespaces/default/endpoints", eps)[0] == 201
    proxy = lab.start(node, "proxy-stale", sys.executable, "-m", "gifee", "proxy", "--server", lab.api_url,
                      "--node-name", "node1", "--sync-period", "1s")
    try:
        wait_until(lambda: f"{dead}:8000" in in_ns(node, "nft", "list", "table", "ip", "gifee", check=False).stdout, 10)
        port = "40123"
        first = in_ns(node, "curl", "-s", "-m", "1", "--local-port", port, url, check=False)
        assert first.returncode == 28, first  # timed out: the SYN went to the dead backend
        flows = in_ns(node, sys.executable, "-c", CONNTRACK_DUMP, dead, check=False).stdout
        assert f"sport={port}" in flows, flows
        eps = endpoints([PODS["pod-a"]]) | {"metadata": {"name": "stale", "namespace": "default"}}
        assert api(lab.api_url, "PUT", "/api/v1/namespaces/default/endpoints/stale", eps)[0] == 200
        wait_until(lambda: dead not in in_ns(node, "nft", "list", "table", "ip", "gifee").stdout, 5)
        wait_until(lambda: "unanswered flows forgotten" in proxy.log(), 5)
        again = in_ns(node, "curl", "-s", "-m", "2", "--local-port", port, url, check=False)
        assert (again.returncode, again.stdout.strip()) == (0, "pod-a"), again
        assert f"sport={port}" not in in_ns(node, sys.executable, "-c", CONNTRACK_DUMP, dead).stdout
    finally:
        proxy.stop()
        api(lab.api_url, "DELETE", "/api/v1/namespaces/default/services/stale")
        api(lab.api_url, "DELETE", "/api/v1/namespaces/default/endpoints/stale")


def test_finished_flows_to_a_gone_backend_are_forgotten_and_no_others(lab: Lab) -> None:
    """A flow in LAST_ACK or CLOSE is not reopened by a new SYN on its ports: the SYN would follow it to the
    gone pod. The proxy forgets those of a backend once it goes, and leaves TIME_WAIT (the kernel reopens it),
    established flows (a pod leaving gracefully finishes them) and the flows of backends still in use."""
    node = node_ns(lab)
    code, svc = api(lab.api_url, "POST", "/api/v1/namespaces/default/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "finished"},
        "spec": {"selector": {"app": "finished"}, "ports": [{"name": "http", "port": 80, "targetPort": 8000}]}})
    assert code == 201, svc
    cluster_ip, gone, live = svc["spec"]["clusterIP"], "10.31.0.98", PODS["pod-c"]  # no other service uses .98
    eps = endpoints([gone, live]) | {"metadata": {"name": "finished", "namespace": "default"}}
    assert api(lab.api_url, "POST", "/api/v1/namespaces/default/endpoints", eps)[0] == 201
    flows = {41001: (gone, "LAST_ACK"), 41002: (gone, "CLOSE"), 41003: (gone, "TIME_WAIT"),
             41004: (gone, "ESTABLISHED"), 41005: (live, "LAST_ACK")}
    for port, (backend, state) in flows.items():  # as the kernel would have them after DNAT and masquerade
        in_ns(node, "conntrack", "-I", "-p", "tcp", "-s", "10.31.1.2", "-d", cluster_ip, "--sport", str(port),
              "--dport", "80", "-r", backend, "-q", "10.31.0.1", "--reply-port-src", "8000",
              "--reply-port-dst", str(port), "--state", state, "--timeout", "120", "-u", "SEEN_REPLY,ASSURED")
    proxy = lab.start(node, "proxy-finished", sys.executable, "-m", "gifee", "proxy", "--server", lab.api_url,
                      "--node-name", "node1", "--sync-period", "1s")
    try:
        wait_until(lambda: f"{gone}:8000" in in_ns(node, "nft", "list", "table", "ip", "gifee", check=False).stdout, 10)
        eps = endpoints([live]) | {"metadata": {"name": "finished", "namespace": "default"}}
        assert api(lab.api_url, "PUT", "/api/v1/namespaces/default/endpoints/finished", eps)[0] == 200
        try:
            wait_until(lambda: "2 finished flows to 1 gone backends forgotten" in proxy.log(), 15)
        except AssertionError:
            raise AssertionError(proxy.log() + in_ns(node, "conntrack", "-L", "-p", "tcp").stdout) from None
        left = in_ns(node, "conntrack", "-L", "-p", "tcp", "-d", cluster_ip).stdout
        ports = {int(w.split("=")[1]) for w in left.split() if w.startswith("sport=")} & set(flows)
        assert ports == {41003, 41004, 41005}, left
    finally:
        proxy.stop()
        in_ns(node, "conntrack", "-D", "-p", "tcp", "-d", cluster_ip, check=False)
        api(lab.api_url, "DELETE", "/api/v1/namespaces/default/services/finished")
        api(lab.api_url, "DELETE", "/api/v1/namespaces/default/endpoints/finished")


# the conntrack entries whose replies come from argv[1] (the backend), one per line
CONNTRACK_DUMP = """
import sys
from pyroute2 import Conntrack
from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple
with Conntrack() as ct:
    for e in ct.dump_entries(tuple_reply=NFCTAttrTuple(saddr=sys.argv[1])):
        print(f"sport={e.tuple_orig.sport} {e}")
"""


def test_removed_backends_are_those_no_service_port_uses_any_more() -> None:
    svc = {"metadata": {"namespace": "ns", "name": "s"},
           "spec": {"clusterIP": "10.96.0.9", "ports": [{"name": "http", "port": 80}]}}
    other = {"metadata": {"namespace": "ns", "name": "o"},
             "spec": {"clusterIP": "10.96.0.8", "ports": [{"name": "http", "port": 80}]}}

    def eps(name: str, *ips: str) -> dict[str, Any]:
        return {"metadata": {"namespace": "ns", "name": name},
                "subsets": [{"addresses": [{"ip": ip} for ip in ips], "ports": [{"name": "http", "port": 8080}]}]}

    before = rules.service_ports([svc, other], [eps("s", "10.1.0.2", "10.1.0.3"), eps("o", "10.1.0.3")])
    after = rules.service_ports([svc, other], [eps("s", "10.1.0.2"), eps("o", "10.1.0.3")])
    assert rules.removed_backends(before, after) == set()  # 10.1.0.3:8080 still serves o
    after = rules.service_ports([svc, other], [eps("s", "10.1.0.2"), eps("o")])
    assert rules.removed_backends(before, after) == {("tcp", "10.1.0.3", 8080)}
    assert rules.removed_backends(after, before) == set()


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
