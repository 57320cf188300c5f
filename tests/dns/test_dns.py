"""Cluster DNS: the answer core on its own, then `gifee dns` in a node namespace,
queried with dnspython (UDP and TCP) and with getent from a pod whose
resolv.conf is gifee.dns.resolvconf's."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from gifee.dns import answer, resolvconf
from tests.proxy.netlab import Lab, api, in_ns, wait_until

Obj = dict[str, Any]


def service(name: str, ns: str = "default", **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": name}, **spec}}


def endpoints(name: str, ready: list[Obj], not_ready: list[Obj], ports: list[Obj], ns: str = "default") -> Obj:
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns},
            "subsets": [{"addresses": ready, "notReadyAddresses": not_ready, "ports": ports}]}


SERVICES = [
    service("web", clusterIP="10.96.0.10", ports=[{"name": "http", "port": 80, "protocol": "TCP"},
                                                 {"name": "dns", "port": 53, "protocol": "UDP"}]),
    service("db", clusterIP="None", ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]),
    service("ext", type="ExternalName", externalName="example.org"),
    service("solo", ns="other", clusterIP="10.96.0.11", ports=[{"port": 8080, "protocol": "TCP"}]),
]
ENDPOINTS = [endpoints("db", [{"ip": "10.31.0.22", "hostname": "db-1"}, {"ip": "10.31.0.21"}],
                       [{"ip": "10.31.0.29"}], [{"name": "pg", "port": 5432, "protocol": "TCP"}])]


def ask(index: answer.Index, name: str, rdtype: str) -> dns.message.Message:
    return answer.answer(dns.message.make_query(name, rdtype), index)


def values(msg: dns.message.Message, section: str = "answer") -> list[str]:
    return sorted(rd.to_text() for rrset in getattr(msg, section) for rd in rrset)


def test_answers() -> None:
    idx = answer.build(SERVICES, ENDPOINTS)
    r = ask(idx, "web.default.svc.cluster.local.", "A")
    assert r.rcode() == dns.rcode.NOERROR and values(r) == ["10.96.0.10"] and r.flags & dns.flags.AA
    assert values(ask(idx, "WEB.Default.SVC.cluster.local.", "A")) == ["10.96.0.10"]
    r = ask(idx, "_http._tcp.web.default.svc.cluster.local.", "SRV")
    assert values(r) == ["0 100 80 web.default.svc.cluster.local."]
    assert values(r, "additional") == ["10.96.0.10"]
    assert values(ask(idx, "_dns._udp.web.default.svc.cluster.local.", "SRV")) == [
        "0 100 53 web.default.svc.cluster.local."]
    # headless: ready pod IPs only, per-pod names, SRV per endpoint
    assert values(ask(idx, "db.default.svc.cluster.local.", "A")) == ["10.31.0.21", "10.31.0.22"]
    assert values(ask(idx, "db-1.db.default.svc.cluster.local.", "A")) == ["10.31.0.22"]
    assert values(ask(idx, "10-31-0-21.db.default.svc.cluster.local.", "A")) == ["10.31.0.21"]
    r = ask(idx, "_pg._tcp.db.default.svc.cluster.local.", "SRV")
    assert values(r) == ["0 100 5432 10-31-0-21.db.default.svc.cluster.local.",
                         "0 100 5432 db-1.db.default.svc.cluster.local."]
    assert values(r, "additional") == ["10.31.0.21", "10.31.0.22"]
    # ExternalName, pods, PTR
    assert values(ask(idx, "ext.default.svc.cluster.local.", "A")) == ["example.org."]
    assert values(ask(idx, "10-31-0-5.default.pod.cluster.local.", "A")) == ["10.31.0.5"]
    assert values(ask(idx, "10.0.96.10.in-addr.arpa.", "PTR")) == ["web.default.svc.cluster.local."]
    # NODATA (name exists, other type; empty non-terminals) vs NXDOMAIN, both with the SOA
    for name, rdtype in (("web.default.svc.cluster.local.", "AAAA"), ("default.svc.cluster.local.", "A"),
                         ("svc.cluster.local.", "A"), ("_tcp.web.default.svc.cluster.local.", "A")):
        r = ask(idx, name, rdtype)
        assert r.rcode() == dns.rcode.NOERROR and not r.answer and r.authority, (name, r)
    for name in ("nope.default.svc.cluster.local.", "web.other.svc.cluster.local.",
                 "_http._udp.web.default.svc.cluster.local.", "_x._tcp.solo.other.svc.cluster.local.",
                 "10-31-0-29.db.default.svc.cluster.local."):
        r = ask(idx, name, "A")
        assert r.rcode() == dns.rcode.NXDOMAIN and r.authority, name
    assert ask(idx, "example.org.", "A").rcode() == dns.rcode.REFUSED
    assert resolvconf("shop", "10.96.0.10") == ("search shop.svc.cluster.local svc.cluster.local cluster.local\n"
                                                "nameserver 10.96.0.10\noptions ndots:5\n")


def test_answer_speed() -> None:
    services = [service(f"s{i}", clusterIP=f"10.96.{i // 250}.{i % 250 + 2}",
                        ports=[{"name": "http", "port": 80}]) for i in range(2000)]
    idx = answer.build(services, [])
    q = dns.message.make_query("s1234.default.svc.cluster.local.", "A")
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        answer.answer(q, idx)
    per = (time.perf_counter() - t0) / n
    assert per < 0.001, per




@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    lab = Lab()
    etc = []
    try:
        lab.start_control_plane()
        node = lab.node(1, "10.31.0.1/24")
        pod = lab.pod(node, "client", "10.31.0.50/24", "10.31.0.1")
        etc_dir = Path("/etc/netns") / pod
        etc_dir.mkdir(parents=True, exist_ok=True)
        etc.append(etc_dir)
        (etc_dir / "resolv.conf").write_text(resolvconf("default", "10.31.200.11"))
        (etc_dir / "hosts").write_text("127.0.0.1 localhost\n")
        for obj in SERVICES:
            code, out = api(lab.api_url, "POST", f"/api/v1/namespaces/{obj['metadata']['namespace']}/services", obj)
            if code == 404:
                api(lab.api_url, "POST", "/api/v1/namespaces", {"metadata": {"name": obj["metadata"]["namespace"]}})
                code, out = api(lab.api_url, "POST", f"/api/v1/namespaces/{obj['metadata']['namespace']}/services",
                                obj)
            assert code == 201, out
        for obj in ENDPOINTS:
            assert api(lab.api_url, "POST", "/api/v1/namespaces/default/endpoints", obj)[0] == 201
        lab.start(node, "dns", sys.executable, "-m", "gifee", "dns", "--server", lab.api_url,
                  "--listen", "10.31.200.11:53")
        wait_until(lambda: _udp("web.default.svc.cluster.local.", "A") is not None, 20, 0.2)
        yield lab
    finally:
        lab.close()
        for d in etc:
            shutil.rmtree(d, ignore_errors=True)


def _udp(name: str, rdtype: str) -> dns.message.Message | None:
    try:
        return dns.query.udp(dns.message.make_query(name, rdtype), "10.31.200.11", timeout=1)
    except (dns.exception.Timeout, OSError):
        return None


@pytest.mark.root
def test_server_udp_tcp_getent_and_changes(lab: Lab) -> None:
    r = _udp("web.default.svc.cluster.local.", "A")
    assert r is not None and values(r) == ["10.96.0.10"]
    r = dns.query.tcp(dns.message.make_query("_pg._tcp.db.default.svc.cluster.local.", "SRV"), "10.31.200.11",
                      timeout=2)
    assert len(r.answer[0]) == 2
    r = _udp("nope.default.svc.cluster.local.", "A")
    assert r is not None and r.rcode() == dns.rcode.NXDOMAIN
    # latency from the cache: median of 200 queries over UDP (includes the client's own work)
    times = []
    q = dns.message.make_query("web.default.svc.cluster.local.", "A")
    for _ in range(200):
        t0 = time.perf_counter()
        dns.query.udp(q, "10.31.200.11", timeout=1)
        times.append(time.perf_counter() - t0)
    times.sort()
    assert times[100] < 0.002, times[100]
    # the pod's resolver: search path + ndots:5 turn "web" into web.default.svc.cluster.local
    pod = f"gf{lab.tag}-client"
    out = in_ns(pod, "getent", "hosts", "web").stdout.split()
    assert out[:2] == ["10.96.0.10", "web.default.svc.cluster.local"], out
    assert in_ns(pod, "getent", "hosts", "solo.other").stdout.split()[0] == "10.96.0.11"
    assert in_ns(pod, "getent", "hosts", "nothere", check=False).returncode != 0
    # a new service and an endpoint change show up at once (watch → rebuild)
    code, svc = api(lab.api_url, "POST", "/api/v1/namespaces/default/services",
                    service("late", ports=[{"name": "http", "port": 80}]))
    assert code == 201
    took = wait_until(lambda: values(_udp("late.default.svc.cluster.local.", "A") or dns.message.Message())
                      == [svc["spec"]["clusterIP"]], 3, 0.02)
    assert took < 1.0, took
    api(lab.api_url, "PUT", "/api/v1/namespaces/default/endpoints/db",
        endpoints("db", [{"ip": "10.31.0.29"}], [], [{"name": "pg", "port": 5432, "protocol": "TCP"}]))
    wait_until(lambda: values(_udp("db.default.svc.cluster.local.", "A") or dns.message.Message())
               == ["10.31.0.29"], 3, 0.02)
    api(lab.api_url, "DELETE", "/api/v1/namespaces/default/services/late")
    wait_until(lambda: (_udp("late.default.svc.cluster.local.", "A") or dns.message.Message()).rcode()
               == dns.rcode.NXDOMAIN, 3, 0.02)
