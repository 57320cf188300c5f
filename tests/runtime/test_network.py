"""Pod networking (gifee.runtime.network): CNI plugins on a test-only bridge and subnet.

Root tests make their own namespaces (`ip netns add`), bridges (gifeet<n>...) and subnets
(10.23.<n>.0/24), and remove them, the iptables rules the plugins leave and the processes
they start, also when they fail; ip_forward is put back as it was.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from gifee.runtime.netns import NetnsError, is_netns
from gifee.runtime.network import (
    NetworkError,
    NetworkStatus,
    PodNetwork,
    PortMapping,
    allocations_of,
    build_conflist,
    parse_plugin_output,
    pin_netns,
    plugin_config,
    port_conflicts,
    portmap_scaffolding,
    stale_nat_rules,
    status_from_result,
    unpin_netns,
)

IS_ROOT = os.geteuid() == 0
HAVE_PLUGINS = all(os.access(f"/usr/lib/cni/{p}", os.X_OK) for p in ("bridge", "host-local", "portmap", "loopback"))


def root_test(f: Callable[..., None]) -> Callable[..., None]:
    f = pytest.mark.skipif(not IS_ROOT, reason="needs root")(f)
    f = pytest.mark.skipif(not HAVE_PLUGINS, reason="needs containernetworking-plugins")(f)
    return pytest.mark.root(f)


RUN = os.getpid() % 200  # keeps concurrent test runs (and real gifee networks) apart
_counter = itertools.count()

SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
print("ready", flush=True)
while True:
    c, a = s.accept(); c.sendall(("hello " + a[0]).encode()); c.close()
"""
CLIENT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
print(s.recv(100).decode())
"""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=check)


def nat_rules() -> str:
    return sh("iptables-save", "-t", "nat").stdout


def free_host_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def links_in(netns: str) -> dict[str, dict[str, Any]]:
    from pyroute2 import NetNS

    ns = NetNS(netns)
    try:
        out = {}
        for link in ns.get_links():
            name = link.get_attr("IFLA_IFNAME")
            addrs = [a.get_attr("IFA_ADDRESS") for a in ns.get_addr(index=link["index"], family=socket.AF_INET)]
            out[name] = {"up": bool(link["flags"] & 1), "mac": link.get_attr("IFLA_ADDRESS"), "addrs": addrs}
        return out
    finally:
        ns.close()


def bridge_ports(bridge: str) -> list[str]:
    out = sh("ip", "-o", "link", "show", "master", bridge, check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line.strip()]


class Lab:
    """Namespaces, networks and processes one test makes; all removed in `close`."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[str]] = []
        self.networks: list[PodNetwork] = []
        self.pods: list[tuple[PodNetwork, str]] = []

    def network(self, subnet_prefix: int = 24, third: int | None = None) -> PodNetwork:
        n = next(_counter)
        third = RUN if third is None else third
        net = PodNetwork(self.tmp / f"net{n}", bridge=f"gifeet{RUN}x{n}",
                         subnet=f"10.23.{third}.{(n % 64) * 4 if subnet_prefix == 30 else 0}/{subnet_prefix}")
        net.remove_bridge()  # a leftover from an interrupted run
        self.networks.append(net)
        return net

    def namespace(self) -> str:
        name = f"gifeet-{os.getpid()}-{next(_counter)}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        return name

    def attach(self, net: PodNetwork, pod: str, ns: str, ports: list[PortMapping] | None = None) -> NetworkStatus:
        self.pods.append((net, pod))
        return net.attach(pod, f"/run/netns/{ns}", ports or [])

    def serve(self, ns: str, port: int = 80) -> None:
        p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER, str(port)],
                             stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"

    def fetch(self, host: str, port: int, ns: str | None = None) -> str:
        cmd = [sys.executable, "-c", CLIENT, host, str(port)]
        if ns is not None:
            cmd = ["ip", "netns", "exec", ns, *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            raise ConnectionError(f"{host}:{port} from {ns or 'host'}: {r.stderr.strip().splitlines()[-1:]}")
        return r.stdout.strip()

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        errors = []
        for net, pod in self.pods:
            try:
                net.detach(pod)
            except NetworkError as e:
                errors.append(str(e))
        for ns in self.namespaces:
            sh("ip", "netns", "del", ns, check=False)
        for net in self.networks:
            try:
                net.remove_bridge()
            except NetworkError as e:
                errors.append(str(e))
        assert not errors, errors


@pytest.fixture(scope="module", autouse=True)
def restore_host_sysctls() -> Iterator[None]:
    """The bridge plugin turns on ip_forward; put it back as it was, unless pods of some other
    CNI network (a real gifee0, say) came up meanwhile and need it."""
    path = Path("/proc/sys/net/ipv4/ip_forward")
    before = path.read_text() if IS_ROOT else None
    yield
    if before is not None and 'name: \\"' not in nat_rules():
        path.write_text(before)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


# ---------------------------------------------------------------- core, no root


def test_conflist_and_plugin_config() -> None:
    conf = build_conflist("gifee-x", "x0", "10.23.0.0/24", "/s/ipam")
    assert [p["type"] for p in conf["plugins"]] == ["loopback", "bridge", "portmap"]
    bridge = conf["plugins"][1]
    assert bridge["isGateway"] and bridge["ipMasq"]
    assert bridge["ipam"] == {"type": "host-local", "ranges": [[{"subnet": "10.23.0.0/24", "gateway": "10.23.0.1"}]],
                              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/s/ipam"}
    rc = {"portMappings": [PortMapping(8080, 80).to_cni()], "other": 1}
    pm = plugin_config(conf, conf["plugins"][2], {"cniVersion": "1.0.0"}, rc)
    assert pm["runtimeConfig"] == {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    assert pm["prevResult"] == {"cniVersion": "1.0.0"} and pm["name"] == "gifee-x" and pm["cniVersion"] == "1.0.0"
    assert "runtimeConfig" not in plugin_config(conf, conf["plugins"][1], None, rc)


def test_bad_input_is_refused_readably(tmp_path: Path) -> None:
    for subnet, words in [("10.23.0.0/33", "invalid pod subnet"), ("10.23.0.1/24", "host bits"),
                          ("fd00::/64", "only IPv4"), ("10.23.0.0/31", "/30 or larger"), ("banana", "invalid")]:
        with pytest.raises(NetworkError, match=words):
            PodNetwork(tmp_path, bridge="gifeet0", subnet=subnet)
    with pytest.raises(NetworkError, match="invalid bridge name"):
        PodNetwork(tmp_path, bridge="a-very-long-bridge-name")
    with pytest.raises(NetworkError, match="1-65535"):
        PortMapping(0, 80)
    with pytest.raises(NetworkError, match="protocol"):
        PortMapping(80, 80, "icmp")
    with pytest.raises(NetworkError, match="not an IP"):
        PortMapping(80, 80, "tcp", "localhost")
    with pytest.raises(NetworkError, match="HOST:POD"):
        PortMapping.parse("80")
    assert PortMapping.parse("127.0.0.1:8080:80/udp") == PortMapping(8080, 80, "udp", "127.0.0.1")
    net = PodNetwork(tmp_path, bridge="gifeet0", subnet="10.23.0.0/24")
    with pytest.raises(NetworkError, match="invalid pod id"):
        net.attach("../etc", tmp_path)
    with pytest.raises(NetworkError, match="not a network namespace"):
        net.attach("pod", tmp_path / "nothing")
    with pytest.raises(NetworkError, match="not a network namespace"):
        net.attach_loopback_only(tmp_path)


def test_plugin_errors_become_network_errors() -> None:
    out = b'{"cniVersion": "1.0.0", "code": 11, "msg": "no IP addresses available", "details": "range 10.0.0.0/30"}'
    with pytest.raises(NetworkError, match=r"CNI plugin bridge ADD failed: no IP addresses available "
                                           r"\(range 10.0.0.0/30\) \[CNI error code 11\]"):
        parse_plugin_output("bridge", "ADD", 1, out, b"")
    with pytest.raises(NetworkError, match="portmap DEL failed: boom"):
        parse_plugin_output("portmap", "DEL", 1, b"", b"boom\n")
    with pytest.raises(NetworkError, match="no JSON"):
        parse_plugin_output("bridge", "ADD", 0, b"garbage", b"")
    assert parse_plugin_output("bridge", "DEL", 0, b"", b"") is None


RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "b0", "mac": "aa:aa:aa:aa:aa:aa"}, {"name": "veth1", "mac": "bb:bb:bb:bb:bb:bb"},
                   {"name": "eth0", "mac": "42:c6:a0:14:0b:9e", "sandbox": "/run/netns/x"}],
    "ips": [{"interface": 2, "address": "10.23.9.2/24", "gateway": "10.23.9.1"}],
}


def test_status_from_result_and_json_roundtrip() -> None:
    st = status_from_result(RESULT)
    assert st == NetworkStatus("10.23.9.2", 24, "10.23.9.1", "eth0", "42:c6:a0:14:0b:9e")
    assert NetworkStatus.from_dict(json.loads(json.dumps(st.to_dict()))) == st
    with pytest.raises(NetworkError, match="no IPv4 address"):
        status_from_result({"interfaces": [], "ips": []})


def test_port_conflicts() -> None:
    taken = {"a": [PortMapping(8080, 80)], "b": [PortMapping(53, 53, "udp", "127.0.0.1")]}
    assert port_conflicts([PortMapping(8080, 81)], taken, "c") == ["host port tcp/8080 is already forwarded to pod a"]
    assert port_conflicts([PortMapping(8080, 81, "udp")], taken, "c") == []
    assert port_conflicts([PortMapping(53, 53, "udp", "127.0.0.2")], taken, "c") == []
    assert port_conflicts([PortMapping(53, 53, "udp")], taken, "c") != []
    assert port_conflicts([PortMapping(8080, 80)], taken, "a") == []
    assert port_conflicts([PortMapping(1, 1), PortMapping(1, 2)], {}, "c") == ["host port tcp/1 is requested twice"]


SAVE = r"""*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-8174102084819ca5693812d9 - [0:0]
:CNI-DN-8174102084819ca569381 - [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-HOSTPORT-MASQ - [0:0]
:CNI-HOSTPORT-SETMARK - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A POSTROUTING -s 10.23.9.2/32 -m comment --comment "name: \"gifeex\" id: \"pod1\"" -j CNI-8174102084819ca5693812d9
-A CNI-8174102084819ca5693812d9 -d 10.23.9.0/24 -m comment --comment "name: \"gifeex\" id: \"pod1\"" -j ACCEPT
-A CNI-8174102084819ca5693812d9 ! -d 224.0.0.0/4 -m comment --comment "name: \"gifeex\" id: \"pod1\"" -j MASQUERADE
-A CNI-DN-8174102084819ca569381 -p tcp -m tcp --dport 18080 -j DNAT --to-destination 10.23.9.2:80
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"gifeex\" id: \"pod1\"" -m multiport --dports 18080 -j CNI-DN-8174102084819ca569381
-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
COMMIT
"""


def test_stale_nat_rules_and_scaffolding() -> None:
    deletes, chains = stale_nat_rules(SAVE, "gifeex", "pod1")
    assert deletes == [
        ["-D", "POSTROUTING", "-s", "10.23.9.2/32", "-m", "comment", "--comment", 'name: "gifeex" id: "pod1"',
         "-j", "CNI-8174102084819ca5693812d9"],
        ["-D", "CNI-HOSTPORT-DNAT", "-p", "tcp", "-m", "comment", "--comment", 'dnat name: "gifeex" id: "pod1"',
         "-m", "multiport", "--dports", "18080", "-j", "CNI-DN-8174102084819ca569381"],
    ]
    assert chains == ["CNI-8174102084819ca5693812d9", "CNI-DN-8174102084819ca569381"]
    assert stale_nat_rules(SAVE, "gifeex", "pod2") == ([], [])
    assert stale_nat_rules(SAVE, "other", None) == ([], [])
    assert stale_nat_rules(SAVE, "gifeex", None)[1] == chains
    assert portmap_scaffolding(SAVE) is None  # a pod still forwards a port
    empty = "\n".join(line for line in SAVE.splitlines() if "gifeex" not in line and "CNI-DN" not in line
                      and "CNI-81" not in line)
    jumps, shared = portmap_scaffolding(empty) or ([], [])
    assert [j[1] for j in jumps] == ["PREROUTING", "OUTPUT", "POSTROUTING"]
    assert shared == ["CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"]


class _Msg(dict[str, Any]):
    """A pyroute2 message as the subnet check reads it."""

    def __init__(self, attrs: dict[str, Any], **fields: Any) -> None:
        super().__init__(fields)
        self.attrs = attrs

    def get_attr(self, name: str) -> Any:
        return self.attrs.get(name)


def test_subnet_check_while_another_attach_creates_the_bridge(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    """Pods attached at once: the first one's bridge plugin may create our bridge and give it
    the gateway address while another attach is between reading the host's links and its
    addresses. Our own bridge must not then look like a foreign interface on the subnet (the
    cause of test_twenty_concurrent_attaches_get_distinct_addresses failing now and then)."""
    import pyroute2

    net = PodNetwork(tmp_path, bridge="gifeetrace0", subnet="10.23.199.0/24")
    lo = (_Msg({"IFLA_IFNAME": "lo"}, index=1), _Msg({"IFA_ADDRESS": "127.0.0.1"}, index=1, prefixlen=8))
    bridge = (_Msg({"IFLA_IFNAME": "gifeetrace0"}, index=7), _Msg({"IFA_ADDRESS": "10.23.199.1"}, index=7, prefixlen=24))

    class RacingIPRoute:
        """Each dump sees the host as it is then: the bridge appears after the first one."""

        def __init__(self) -> None:
            self.dumps = 0

        def __enter__(self) -> RacingIPRoute:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def _state(self) -> list[tuple[_Msg, _Msg]]:
            self.dumps += 1
            return [lo] if self.dumps == 1 else [lo, bridge]

        def get_links(self) -> list[_Msg]:
            return [link for link, _ in self._state()]

        def get_addr(self, family: int) -> list[_Msg]:
            return [addr for _, addr in self._state()]

    monkeypatch.setattr(pyroute2, "IPRoute", RacingIPRoute)
    net._check_subnet_is_ours()  # no NetworkError: the address is our own bridge's


def test_allocations_of() -> None:
    files = {"10.0.0.2": "pod1\r\neth0", "10.0.0.3": "pod2\r\neth0", "10.0.0.4": "pod1", "10.0.0.5": "pod1\r\neth1"}
    assert allocations_of(files, "pod1") == ["10.0.0.2", "10.0.0.4"]
    assert allocations_of(files, "pod9") == []


# ---------------------------------------------------------------- on the host, as root


@root_test
def test_two_pods_talk_over_tcp(lab: Lab) -> None:
    net = lab.network()
    a, b = lab.namespace(), lab.namespace()
    sa = lab.attach(net, "pod-a", a)
    sb = lab.attach(net, "pod-b", b)
    assert sa.ip != sb.ip and sa.prefix_len == 24 and sa.gateway == net.gateway and sa.interface == "eth0"
    links = links_in(f"/run/netns/{a}")
    assert links["eth0"]["up"] and links["eth0"]["mac"] == sa.mac and links["eth0"]["addrs"] == [sa.ip]
    assert links["lo"]["up"]
    lab.serve(a, 80)
    assert lab.fetch(sa.ip, 80, ns=b) == f"hello {sb.ip}"  # no NAT between pods
    net.check("pod-a", f"/run/netns/{a}")
    assert net.status("pod-a") == sa


@root_test
def test_port_forwarding_from_host_loopback_bridge_and_other_pod(lab: Lab) -> None:
    net = lab.network()
    a, b = lab.namespace(), lab.namespace()
    port = free_host_port()
    sa = lab.attach(net, "web", a, [PortMapping(port, 80)])
    lab.attach(net, "client", b)
    lab.serve(a, 80)
    assert lab.fetch("127.0.0.1", port).startswith("hello ")
    assert lab.fetch(net.gateway, port).startswith("hello ")
    assert lab.fetch(net.gateway, port, ns=b).startswith("hello ")
    assert lab.fetch(sa.ip, 80).startswith("hello ")  # the host reaches pods directly too


@root_test
def test_detach_frees_address_and_port_rules(lab: Lab) -> None:
    net = lab.network()
    a = lab.namespace()
    port = free_host_port()
    first = lab.attach(net, "pod1", a, [PortMapping(port, 80)])
    assert net.allocated() == {first.ip: "pod1"}
    assert f"--to-destination {first.ip}:80" in nat_rules()
    lab.serve(a, 80)
    assert lab.fetch("127.0.0.1", port).startswith("hello ")

    net.detach("pod1", f"/run/netns/{a}", [PortMapping(port, 80)])
    assert net.allocated() == {}
    assert not (net.allocator_dir / first.ip).exists()
    rules = nat_rules()
    assert first.ip not in rules and 'id: \\"pod1\\"' not in rules
    assert "eth0" not in links_in(f"/run/netns/{a}")
    assert bridge_ports(net.bridge) == []
    with pytest.raises(ConnectionError):
        lab.fetch("127.0.0.1", port)

    again = lab.attach(net, "pod1", a, [PortMapping(port, 80)])  # same id, port free again
    assert net.allocated() == {again.ip: "pod1"}
    assert lab.fetch("127.0.0.1", port).startswith("hello ")


@root_test
def test_detach_is_idempotent_and_works_without_the_namespace(lab: Lab) -> None:
    net = lab.network()
    a, b = lab.namespace(), lab.namespace()
    port = free_host_port()
    sa = lab.attach(net, "pa", a, [PortMapping(port, 80)])
    lab.attach(net, "pb", b)
    net.detach("pa", f"/run/netns/{a}")
    net.detach("pa", f"/run/netns/{a}")
    net.detach("never-attached", f"/run/netns/{a}")
    assert sa.ip not in net.allocated()
    # The namespace is gone before detach (its veth went with it): address and rules still freed.
    sh("ip", "netns", "del", b)
    net.detach("pb", f"/run/netns/{b}")
    net.detach("pb")
    assert net.allocated() == {}
    assert 'id: \\"pb\\"' not in nat_rules() and 'id: \\"pa\\"' not in nat_rules()
    assert bridge_ports(net.bridge) == []


@root_test
def test_pinned_namespace_outlives_its_process(lab: Lab) -> None:
    net = lab.network()
    pin = lab.tmp / "pod" / "netns"
    proc = subprocess.Popen(["unshare", "-n", "sleep", "60"])
    try:
        time.sleep(0.2)
        with pytest.raises(NetnsError, match="no process"):
            pin_netns(2**22 + 17, lab.tmp / "x")
        pin_netns(proc.pid, pin)
        assert is_netns(pin) and os.stat(pin).st_ino == os.stat(f"/proc/{proc.pid}/ns/net").st_ino
        with pytest.raises(NetnsError, match="already"):
            pin_netns(proc.pid, pin)
    finally:
        proc.kill()
        proc.wait()
    try:
        lab.pods.append((net, "pinned"))
        st = net.attach("pinned", pin, [])
        assert links_in(str(pin))["eth0"]["addrs"] == [st.ip]
        net.detach("pinned", pin)
        net.detach("pinned", pin)
        assert net.allocated() == {}
    finally:
        unpin_netns(pin)
    unpin_netns(pin)
    assert not pin.exists() and not is_netns(pin)


@root_test
def test_twenty_concurrent_attaches_get_distinct_addresses(lab: Lab) -> None:
    net = lab.network()
    namespaces = [lab.namespace() for _ in range(20)]
    base = free_host_port()
    ports = [[PortMapping(base + i, 80)] if i % 2 == 0 and base + i < 65536 else [] for i in range(20)]
    for i in range(20):
        lab.pods.append((net, f"c{i}"))
    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda i: net.attach(f"c{i}", f"/run/netns/{namespaces[i]}", ports[i]), range(20)))
    ips = [s.ip for s in statuses]
    assert len(set(ips)) == 20
    assert net.allocated() == {s.ip: f"c{i}" for i, s in enumerate(statuses)}
    assert len(bridge_ports(net.bridge)) == 20
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(lambda i: net.detach(f"c{i}", f"/run/netns/{namespaces[i]}"), range(20)))
    assert net.allocated() == {}
    assert bridge_ports(net.bridge) == []
    assert not any(f"--to-destination {ip}:" in nat_rules() for ip in ips)


@root_test
def test_failing_plugin_rolls_back(lab: Lab) -> None:
    net = lab.network(subnet_prefix=30)  # room for the gateway and exactly one pod
    a, b = lab.namespace(), lab.namespace()
    sa = lab.attach(net, "only", a)
    port = free_host_port()
    with pytest.raises(NetworkError, match=r"CNI plugin bridge ADD failed: .*no IP addresses available"):
        lab.attach(net, "extra", b, [PortMapping(port, 80)])
    # The bridge plugin had made the veth before IPAM failed: the rollback removed it.
    assert "eth0" not in links_in(f"/run/netns/{b}")
    assert len(bridge_ports(net.bridge)) == 1
    assert net.allocated() == {sa.ip: "only"}
    assert net.status("extra") is None
    assert 'id: \\"extra\\"' not in nat_rules()
    # Its port reservation went with it.
    net.detach("only", f"/run/netns/{a}")
    assert lab.attach(net, "extra", b, [PortMapping(port, 80)]).ip == sa.ip


@root_test
def test_port_already_forwarded_is_refused_and_leaves_nothing(lab: Lab) -> None:
    net = lab.network()
    a, b = lab.namespace(), lab.namespace()
    port = free_host_port()
    lab.attach(net, "first", a, [PortMapping(port, 80)])
    with pytest.raises(NetworkError, match=f"host port tcp/{port} is already forwarded to pod first"):
        lab.attach(net, "second", b, [PortMapping(port, 81)])
    assert "eth0" not in links_in(f"/run/netns/{b}")
    assert list(net.allocated().values()) == ["first"]
    with pytest.raises(NetworkError, match="already attached"):
        lab.attach(net, "first", b)


@root_test
def test_subnet_overlapping_a_host_address_is_refused(lab: Lab) -> None:
    net = lab.network()
    a = lab.namespace()
    lab.attach(net, "p", a)
    # A second network on another bridge but the same subnet would put addresses where the first lives.
    clash = PodNetwork(lab.tmp / "clash", bridge=f"gifeet{RUN}c", subnet=net.subnet)
    b = lab.namespace()
    with pytest.raises(NetworkError, match=f"overlaps .* on host interface {net.bridge}"):
        clash.attach("q", f"/run/netns/{b}")
    assert "eth0" not in links_in(f"/run/netns/{b}")


@root_test
def test_net_none_brings_up_loopback_only(lab: Lab) -> None:
    net = lab.network()
    a = lab.namespace()
    assert not links_in(f"/run/netns/{a}")["lo"]["up"]
    net.attach_loopback_only(f"/run/netns/{a}")
    links = links_in(f"/run/netns/{a}")
    assert set(links) == {"lo"} and links["lo"]["up"] and links["lo"]["addrs"] == ["127.0.0.1"]
    lab.serve(a, 8000)
    assert lab.fetch("127.0.0.1", 8000, ns=a) == "hello 127.0.0.1"


@root_test
def test_remove_bridge_leaves_nothing(lab: Lab) -> None:
    had_portmap_chains = "CNI-HOSTPORT-DNAT" in nat_rules()
    net = lab.network()
    a = lab.namespace()
    lab.attach(net, "p", a, [PortMapping(free_host_port(), 80)])
    assert net.bridge in sh("ip", "link", "show").stdout
    net.detach("p")
    net.remove_bridge()
    net.remove_bridge()
    assert net.bridge not in sh("ip", "link", "show").stdout
    rules = nat_rules()
    assert net.name not in rules
    if not had_portmap_chains and not any("id: " in line for line in rules.splitlines()):
        assert "CNI-HOSTPORT" not in rules


@root_test
def test_detach_cleans_up_when_a_plugin_del_fails(lab: Lab) -> None:
    """The safety net: a bridge plugin whose DEL fails still leaves no interface, rule or address."""
    net = lab.network()
    a = lab.namespace()
    sa = lab.attach(net, "stuck", a, [PortMapping(free_host_port(), 80)])
    fake = lab.tmp / "plugins"
    fake.mkdir()
    for plugin in ("loopback", "host-local", "portmap"):
        (fake / plugin).symlink_to(f"/usr/lib/cni/{plugin}")
    (fake / "bridge").write_text('#!/bin/sh\necho \'{"cniVersion": "1.0.0", "code": 7, "msg": "bridge is broken"}\'\nexit 1\n')
    (fake / "bridge").chmod(0o755)
    broken = PodNetwork(net.state_dir, bridge=net.bridge, subnet=net.subnet, plugin_dir=fake)
    broken.detach("stuck", f"/run/netns/{a}")
    assert "eth0" not in links_in(f"/run/netns/{a}")
    assert net.allocated() == {}
    rules = nat_rules()
    assert sa.ip not in rules and 'id: \\"stuck\\"' not in rules
    assert bridge_ports(net.bridge) == []
    # And an ADD through the broken plugin fails with its message, leaving nothing.
    with pytest.raises(NetworkError, match=r"CNI plugin bridge ADD failed: bridge is broken \[CNI error code 7\]"):
        broken.attach("stuck", f"/run/netns/{a}")
    assert broken.status("stuck") is None and net.allocated() == {}


@root_test
def test_detach_survives_a_corrupt_pod_record(lab: Lab) -> None:
    net = lab.network()
    a = lab.namespace()
    port = free_host_port()
    st = lab.attach(net, "torn", a, [PortMapping(port, 80)])
    (net.state_dir / "pods" / "torn.json").write_text("{not json")
    with pytest.raises(NetworkError, match="unreadable network record"):
        net.status("torn")
    net.detach("torn", f"/run/netns/{a}", [PortMapping(port, 80)])
    assert net.allocated() == {} and st.ip not in nat_rules()
    assert not (net.state_dir / "pods" / "torn.json").exists()
