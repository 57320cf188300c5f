"""Pod networking across nodes: `gifee nodeipam` gives each Node a pod subnet, `gifee proxy
--routes` on each node routes the other nodes' subnets via their InternalIP, pods
on two nodes reach each other; a deleted node's route goes away."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from gifee.proxy import nodeipam, routes
from tests.proxy.netlab import Lab, api, curl, in_ns, wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]


def node(name: str, ip: str, cidr: str = "") -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"podCIDR": cidr} if cidr else {},
            "status": {"addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}]}}


def test_assign_and_plan() -> None:
    nodes = [node("b", "10.0.0.2"), node("a", "10.0.0.1", "10.244.0.0/24"), node("c", "10.0.0.3")]
    want, full = nodeipam.assign(nodes, "10.244.0.0/16", 24)
    assert want == {"b": "10.244.1.0/24", "c": "10.244.2.0/24"} and full == []
    want, full = nodeipam.assign(nodes, "10.244.0.0/23", 24)
    assert want == {"b": "10.244.1.0/24"} and full == ["c"]
    nodes = [node("a", "10.0.0.1", "10.244.0.0/24"), node("b", "10.0.0.2", "10.244.1.0/24"),
             node("c", "", "10.244.2.0/24"), node("d", "10.0.0.4", "10.244.1.0/24")]
    assert routes.plan(nodes, "a") == {"10.244.1.0/24": "10.0.0.2"}
    assert routes.plan(nodes, "b") == {"10.244.0.0/24": "10.0.0.1"}


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab()
    try:
        lab.start_control_plane()
        yield lab
    finally:
        lab.close()


def test_pods_on_two_nodes_reach_each_other(lab: Lab) -> None:
    for i in (1, 2):
        code, out = api(lab.api_url, "POST", "/api/v1/nodes", node(f"node{i}", f"10.31.200.{10 + i}"))
        assert code == 201, out
        if not (out.get("status") or {}).get("addresses"):
            api(lab.api_url, "PATCH", f"/api/v1/nodes/node{i}/status", {"status": node("", f"10.31.200.{10 + i}")
                                                                        ["status"]},
                content_type="application/merge-patch+json")
    lab.start(None, "nodeipam", sys.executable, "-m", "gifee", "nodeipam", "--server", lab.api_url,
              "--cluster-cidr", "10.244.0.0/16", "--node-cidr-mask-size", "24")
    cidrs: dict[str, str] = {}

    def assigned() -> bool:
        for i in (1, 2):
            spec = api(lab.api_url, "GET", f"/api/v1/nodes/node{i}")[1].get("spec") or {}
            if not spec.get("podCIDR"):
                return False
            cidrs[f"node{i}"] = spec["podCIDR"]
        return True

    wait_until(assigned, 10)
    assert cidrs == {"node1": "10.244.0.0/24", "node2": "10.244.1.0/24"}
    nodes, pods = {}, {}
    for i in (1, 2):
        prefix = cidrs[f"node{i}"].rsplit(".", 1)[0]
        nodes[i] = lab.node(i, f"{prefix}.1/24")
        pods[i] = lab.pod(nodes[i], f"pod{i}", f"{prefix}.10/24", f"{prefix}.1", serve_port=8000)
    # without routes, pod1 cannot reach pod2
    assert curl(pods[1], "http://10.244.1.10:8000/", 1).startswith("<curl")
    for i in (1, 2):
        lab.start(nodes[i], f"proxy{i}", sys.executable, "-m", "gifee", "proxy", "--server", lab.api_url,
                  "--node-name", f"node{i}", "--routes", "--sync-period", "1s")
    try:
        wait_until(lambda: curl(pods[1], "http://10.244.1.10:8000/", 1) == "pod2", 15)
    except AssertionError:
        raise AssertionError("\n".join([in_ns(nodes[i], "ip", "route").stdout for i in (1, 2)]
                                        + [p.log() for p in lab.procs if p.name.startswith("proxy")])) from None
    assert curl(pods[2], "http://10.244.0.10:8000/", 1) == "pod1"
    route = in_ns(nodes[1], "ip", "route", "show", "10.244.1.0/24").stdout
    assert "via 10.31.200.12" in route and "proto 190" in route, route
    # node2 leaves: node1's route to its subnet is removed
    api(lab.api_url, "DELETE", "/api/v1/nodes/node2")
    wait_until(lambda: in_ns(nodes[1], "ip", "route", "show", "10.244.1.0/24").stdout.strip() == "", 5)
