"""Services + endpoints → the node's complete nftables ruleset (`table ip gifee`).

Rules (kube-proxy's semantics):
- Every (cluster IP, protocol, port) of a service with a cluster IP is DNATed to
  one of the service port's *ready* endpoints (Endpoints `subsets[].addresses`;
  `notReadyAddresses` are never used), chosen with equal probability
  (`numgen random mod N` verdict map). The endpoint port is the Endpoints port
  whose name (and protocol) matches the service port's name.
- DNAT happens in the nat prerouting hook (traffic from pods and other hosts)
  and the nat output hook (the node itself), so both reach cluster IPs.
- Hairpin: a connection whose source is the endpoint it lands on is marked and
  masqueraded in postrouting, so a pod reaching itself through its service gets
  the replies.
- NodePort: (protocol, nodePort) on any local address of the node (not
  127.0.0.0/8) goes to the same service chain, marked for masquerade (external
  traffic policy Cluster).
- With a cluster CIDR given, traffic to cluster IPs from outside it is
  masqueraded too (kube-proxy's off-cluster rule).
- A service port without ready endpoints is rejected (ICMP port unreachable) for
  new connections instead of black-holed.
- Headless (clusterIP None), ExternalName and IP-less services get no rules.
- A backend that stops serving every service port it served has its not-yet-answered
  translated flows forgotten (`removed_backends`; the shell deletes their conntrack
  entries): a new connection that reuses a client port must be balanced anew, not
  follow an old entry to a dead pod. Answered TCP flows are left alone so that a pod
  leaving gracefully finishes the requests it has.

Theory of operation: `render` is a pure, deterministic function (objects are
sorted by namespace/name/port; equal inputs give byte-equal text). The text
starts with `table ip gifee` + `delete table ip gifee`, so `nft -f` replaces
the whole table in one kernel transaction: no packet ever sees a half-written
ruleset. The shell (daemon.py) re-renders when its cache changes, compares
with the last applied text and runs `nft -f` only when they differ.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
TABLE = "gifee"
MASQ_MARK = 0x4000
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}


@dataclass(frozen=True)
class Backend:
    ip: str
    port: int


@dataclass
class ServicePort:
    namespace: str
    name: str
    port_name: str
    protocol: str  # tcp | udp | sctp
    cluster_ip: str
    port: int
    node_port: int
    backends: list[Backend] = field(default_factory=list)

    @property
    def chain(self) -> str:
        return f"svc/{self.namespace}/{self.name}/{self.port_name or '_'}/{self.protocol}"


def _ipv4(value: Any) -> str:
    try:
        addr = ipaddress.ip_address(str(value))
    except ValueError:
        return ""
    return str(addr) if addr.version == 4 else ""


def ready_backends(endpoints: Obj | None, port_name: str, protocol: str) -> list[Backend]:
    """The ready (address, port) pairs an Endpoints object offers for one service port."""
    out: set[Backend] = set()
    for subset in (endpoints or {}).get("subsets") or []:
        if not isinstance(subset, dict):
            continue
        ports = [p for p in subset.get("ports") or [] if isinstance(p, dict)
                 and str(p.get("name", "") or "") == port_name
                 and PROTOCOLS.get(str(p.get("protocol", "TCP")), "") == protocol
                 and isinstance(p.get("port"), int)]
        for addr in subset.get("addresses") or []:
            ip = _ipv4((addr or {}).get("ip"))
            if not ip:
                continue
            for p in ports:
                out.add(Backend(ip, int(p["port"])))
    return sorted(out, key=lambda b: (ipaddress.ip_address(b.ip), b.port))


def service_ports(services: Iterable[Obj], endpoints: Iterable[Obj]) -> list[ServicePort]:
    """Flatten services and their endpoints into sorted service ports (the model `render` draws)."""
    eps = {((e.get("metadata") or {}).get("namespace", ""), (e.get("metadata") or {}).get("name", "")): e
           for e in endpoints}
    out: list[ServicePort] = []
    for svc in services:
        meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
        if spec.get("type") == "ExternalName":
            continue
        ip = _ipv4(spec.get("clusterIP"))
        if not ip:
            continue
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        for p in spec.get("ports") or []:
            if not isinstance(p, dict) or not isinstance(p.get("port"), int):
                continue
            proto = PROTOCOLS.get(str(p.get("protocol", "TCP")))
            if proto is None:
                continue
            pname = str(p.get("name", "") or "")
            node_port = int(p.get("nodePort") or 0) if spec.get("type") in ("NodePort", "LoadBalancer") else 0
            out.append(ServicePort(ns, name, pname, proto, ip, int(p["port"]), node_port,
                                   ready_backends(eps.get((ns, name)), pname, proto)))
    out.sort(key=lambda s: (s.namespace, s.name, s.port_name, s.protocol, s.port))
    return out


def render(services: Iterable[Obj], endpoints: Iterable[Obj], *, cluster_cidr: str = "") -> str:
    """The complete ruleset text for `nft -f` (replaces `table ip gifee` atomically)."""
    ports = service_ports(services, endpoints)
    mark = f"0x{MASQ_MARK:08x}"
    served = [p for p in ports if p.backends]
    empty = [p for p in ports if not p.backends]
    lines = [f"table ip {TABLE}", f"delete table ip {TABLE}", f"table ip {TABLE} {{"]

    def elements(items: list[str]) -> str:
        return f"\t\telements = {{ {', '.join(items)} }}\n" if items else ""

    svc_elems = [f"{p.cluster_ip} . {p.protocol} . {p.port} : goto {p.chain}" for p in served]
    np_elems = [f"{p.protocol} . {p.node_port} : goto np/{p.chain[4:]}" for p in served if p.node_port]
    noep = [f"{p.cluster_ip} . {p.protocol} . {p.port}" for p in empty]
    noep_np = [f"{p.protocol} . {p.node_port}" for p in empty if p.node_port]
    lines.append("\tset noendpoints {\n\t\ttype ipv4_addr . inet_proto . inet_service\n" + elements(noep) + "\t}")
    lines.append("\tset noendpoints-nodeports {\n\t\ttype inet_proto . inet_service\n" + elements(noep_np) + "\t}")
    lines.append("\tmap services {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n"
                 + elements(svc_elems) + "\t}")
    lines.append("\tmap nodeports {\n\t\ttype inet_proto . inet_service : verdict\n" + elements(np_elems) + "\t}")
    lines.append("\tchain prerouting {\n\t\ttype nat hook prerouting priority -100; policy accept;\n"
                 "\t\tjump services\n\t}")
    lines.append("\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n"
                 "\t\tjump services\n\t}")
    lines.append("\tchain postrouting {\n\t\ttype nat hook postrouting priority 100; policy accept;\n"
                 f"\t\tmeta mark & {mark} == {mark} meta mark set meta mark & 0x{0xffffffff ^ MASQ_MARK:08x} "
                 "masquerade fully-random\n\t}")
    lines.append("\tchain services {\n"
                 "\t\tip daddr . meta l4proto . th dport vmap @services\n"
                 "\t\tfib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @nodeports\n\t}")
    for hook in ("input", "forward", "output"):
        rules = "\t\tct state new ip daddr . meta l4proto . th dport @noendpoints reject\n"
        if hook != "forward":
            rules += ("\t\tct state new fib daddr type local ip daddr != 127.0.0.0/8 "
                      "meta l4proto . th dport @noendpoints-nodeports reject\n")
        lines.append(f"\tchain filter-{hook} {{\n\t\ttype filter hook {hook} priority -1; policy accept;\n"
                     f"{rules}\t}}")
    for p in served:
        if p.node_port:
            lines.append(f"\tchain np/{p.chain[4:]} {{\n\t\tmeta mark set meta mark | {mark}\n"
                         f"\t\tgoto {p.chain}\n\t}}")
        body = ""
        if cluster_cidr:
            body += f"\t\tip saddr != {cluster_cidr} meta mark set meta mark | {mark}\n"
        if len(p.backends) == 1:
            body += f"\t\tgoto ep/{p.chain[4:]}/0\n"
        else:
            choices = ", ".join(f"{i} : goto ep/{p.chain[4:]}/{i}" for i in range(len(p.backends)))
            body += f"\t\tnumgen random mod {len(p.backends)} vmap {{ {choices} }}\n"
        lines.append(f"\tchain {p.chain} {{\n{body}\t}}")
        for i, b in enumerate(p.backends):
            lines.append(f"\tchain ep/{p.chain[4:]}/{i} {{\n"
                         f"\t\tip saddr {b.ip} meta mark set meta mark | {mark}\n"
                         f"\t\tmeta l4proto {p.protocol} dnat to {b.ip}:{b.port}\n\t}}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def backends_in_use(ports: Iterable[ServicePort]) -> set[tuple[str, str, int]]:
    """(protocol, ip, port) of every backend some service port uses."""
    return {(p.protocol, b.ip, b.port) for p in ports for b in p.backends}


def removed_backends(before: Iterable[ServicePort], after: Iterable[ServicePort]) -> set[tuple[str, str, int]]:
    """(protocol, ip, port) of every backend some service port used before and none uses after."""
    return backends_in_use(before) - backends_in_use(after)


def cleanup_text() -> str:
    """`nft -f` input that removes the table whether or not it exists."""
    return f"table ip {TABLE}\ndelete table ip {TABLE}\n"
