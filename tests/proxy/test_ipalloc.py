"""Service cluster IPs and node ports: the pure choices, and the API servers' allocation
through the store (two servers on one store never hand out one IP twice)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from gifee.api import ipalloc
from tests.api.harness import Cluster, start_apiserver, start_store


def test_choose_ip_skips_reserved_and_used() -> None:
    cidr = "10.0.0.0/29"  # hosts .1-.6; .1 is the kubernetes service's
    got = set()
    for seed in range(100):
        ip = ipalloc.choose_ip(cidr, got, seed)
        if ip is None:
            break
        assert ip not in got
        got.add(ip)
    assert got == {f"10.0.0.{i}" for i in range(2, 7)}
    assert ipalloc.choose_ip(cidr, got, 1) is None
    assert ipalloc.kubernetes_ip("10.96.0.0/12") == "10.96.0.1"
    assert not ipalloc.ip_usable("10.96.0.0/12", "10.112.0.1")
    assert not ipalloc.ip_usable("10.96.0.0/12", "10.96.0.0")
    assert ipalloc.ip_usable("10.96.0.0/12", "10.96.0.10")


def test_choose_port_and_carry_over() -> None:
    assert ipalloc.choose_port((30000, 30002), [30000, 30001], 7) == 30002
    assert ipalloc.choose_port((30000, 30001), [30000, 30001], 7) is None
    old = {"spec": {"type": "NodePort", "clusterIP": "10.96.0.5",
                    "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}}
    new: dict[str, Any] = {"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}}
    ipalloc.carry_over(old, new)
    assert new["spec"]["clusterIP"] == "10.96.0.5" and new["spec"]["ports"][0]["nodePort"] == 30080
    with pytest.raises(ipalloc.AllocationError):
        ipalloc.carry_over(old, {"spec": {"clusterIP": "10.96.0.6", "ports": [{"port": 80}]}})


@pytest.fixture(scope="module")
def two_servers() -> Iterator[tuple[Cluster, Cluster]]:
    workdir = Path(tempfile.mkdtemp(prefix="gifee-ipalloc-"))
    store, endpoint = start_store("gifee", workdir / "store")
    procs = []
    try:
        a, url_a = start_apiserver(endpoint, workdir / "a", "--service-cluster-ip-range", "10.96.0.0/26",
                                   "--service-node-port-range", "30000-30039")
        procs.append(a)
        b, url_b = start_apiserver(endpoint, workdir / "b", "--service-cluster-ip-range", "10.96.0.0/26",
                                   "--service-node-port-range", "30000-30039")
        procs.append(b)
        yield (Cluster("gifee", endpoint, url_a, workdir / "kc", workdir),
               Cluster("gifee", endpoint, url_b, workdir / "kc", workdir))
    finally:
        for p in procs:
            p.stop()
        store.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def svc(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}], **spec}}


SVCS = "/api/v1/namespaces/default/services"


def test_kubernetes_service_exists(two_servers: tuple[Cluster, Cluster]) -> None:
    a, _ = two_servers
    code, obj = a.http("GET", SVCS + "/kubernetes")
    assert code == 200, obj
    assert obj["spec"]["clusterIP"] == "10.96.0.1" and obj["spec"]["ports"][0]["port"] == 443
    code, eps = a.http("GET", "/api/v1/namespaces/default/endpoints/kubernetes")
    assert code == 200 and eps["subsets"][0]["addresses"][0]["ip"] == "127.0.0.1"


def test_two_servers_never_share_an_ip(two_servers: tuple[Cluster, Cluster]) -> None:
    a, b = two_servers

    def make(i: int) -> tuple[int, Any]:
        return (a if i % 2 else b).http("POST", SVCS, svc(f"race-{i}"))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(make, range(40)))
    ips = [obj["spec"]["clusterIP"] for code, obj in results if code == 201]
    assert len(ips) == len(set(ips)) == 40, results[:3]
    assert all(ipalloc.ip_usable("10.96.0.0/26", ip) and ip != "10.96.0.1" for ip in ips)
    # the /26 has 61 usable after the kubernetes one; fill it up, then it is full
    codes = [a.http("POST", SVCS, svc(f"fill-{i}"))[0] for i in range(22)]
    assert codes.count(201) == 21 and codes[-1] == 422
    # deleting releases: the next create gets the freed address
    code, gone = a.http("DELETE", SVCS + "/race-3")
    assert code == 200
    code, obj = b.http("POST", SVCS, svc("again"))
    assert code == 201 and obj["spec"]["clusterIP"] == gone["spec"]["clusterIP"]
    # every address goes back (the next test needs the range): a delete that failed would leak one
    gone_codes = [a.http("DELETE", SVCS + f"/race-{i}")[0] for i in range(40) if i != 3]
    gone_codes += [a.http("DELETE", SVCS + f"/fill-{i}")[0] for i in range(21)]
    gone_codes.append(a.http("DELETE", SVCS + "/again")[0])
    assert gone_codes == [200] * 61, gone_codes


def test_given_headless_nodeport_and_immutable(two_servers: tuple[Cluster, Cluster]) -> None:
    a, b = two_servers
    code, obj = a.http("POST", SVCS, svc("given", clusterIP="10.96.0.20"))
    assert code == 201 and obj["spec"]["clusterIP"] == "10.96.0.20" and obj["spec"]["clusterIPs"] == ["10.96.0.20"]
    code, obj = b.http("POST", SVCS, svc("given2", clusterIP="10.96.0.20"))
    assert code == 422 and "already allocated" in obj["message"]
    code, obj = b.http("POST", SVCS, svc("outside", clusterIP="10.1.2.3"))
    assert code == 422 and "range" in obj["message"]
    code, obj = a.http("POST", SVCS, svc("headless", clusterIP="None"))
    assert code == 201 and obj["spec"]["clusterIP"] == "None"
    code, obj = a.http("POST", SVCS, svc("np", type="NodePort", ports=[{"name": "a", "port": 80},
                                                                       {"name": "b", "port": 81, "nodePort": 30005}]))
    assert code == 201, obj.get("message") if isinstance(obj, dict) else obj
    ports = {p["name"]: p["nodePort"] for p in obj["spec"]["ports"]}
    assert ports["b"] == 30005 and 30000 <= ports["a"] <= 30039 and ports["a"] != 30005
    code, obj2 = b.http("POST", SVCS, svc("np2", type="NodePort", ports=[{"port": 80, "nodePort": 30005}]))
    assert code == 422
    # update: clusterIP immutable, nodePorts kept when left out
    code, cur = a.http("GET", SVCS + "/np")
    cur["spec"]["ports"] = [{"name": "a", "port": 80}, {"name": "b", "port": 81}]
    code, upd = a.http("PUT", SVCS + "/np", cur)
    assert code == 200, upd
    assert {p["name"]: p["nodePort"] for p in upd["spec"]["ports"]} == ports
    # another address than its own (chosen at random from 64, it may be .30 itself: then no change at all)
    other = "10.96.0.31" if upd["spec"]["clusterIP"] == "10.96.0.30" else "10.96.0.30"
    upd["spec"]["clusterIP"] = other
    upd["spec"]["clusterIPs"] = [other]
    code, err = a.http("PUT", SVCS + "/np", upd)
    assert code == 422 and "immutable" in err["message"]
    # turning it into ClusterIP releases the node ports; a new service can take 30005
    code, done = a.http("PATCH", SVCS + "/np", {"spec": {"type": "ClusterIP"}},
                        content_type="application/merge-patch+json")
    assert code == 200, done
    assert all("nodePort" not in p for p in done["spec"]["ports"])
    code, obj2 = b.http("POST", SVCS, svc("np2", type="NodePort", ports=[{"port": 80, "nodePort": 30005}]))
    assert code == 201, obj2
    # a patch making a ClusterIP service NodePort allocates
    code, p3 = a.http("PATCH", SVCS + "/given", {"spec": {"type": "NodePort"}},
                      content_type="application/merge-patch+json")
    assert code == 200 and 30000 <= p3["spec"]["ports"][0]["nodePort"] <= 30039, p3
