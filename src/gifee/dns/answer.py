"""Cluster DNS answers: (question, services + endpoints) → a DNS response.

Rules (the Kubernetes DNS specification, for the zone `<domain>`, default cluster.local):
- `<svc>.<ns>.svc.<domain>` A: the cluster IP for a service with one; for a
  headless service (clusterIP None) the *ready* endpoint addresses (sorted).
  ExternalName services answer a CNAME to spec.externalName.
- Headless endpoints also own `<hostname>.<svc>.<ns>.svc.<domain>` A, where the
  hostname is the address's `hostname` or its IP with dashes (10-1-2-3).
- `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV, for named ports only:
  priority 0, weight 100, the service port, target the service name (cluster IP
  service) or one record per ready endpoint with the endpoint's port and its
  hostname target (headless); the targets' A records go in the additional section.
- `<a-b-c-d>.<ns>.pod.<domain>` A: a-b-c-d as an address (no lookup, as the spec allows).
- PTR `d.c.b.a.in-addr.arpa` for cluster IPs and headless endpoint addresses.
- A name that exists with other types, or is an ancestor of an existing name
  inside the zone (empty non-terminal, e.g. `<ns>.svc.<domain>`), answers
  NOERROR with no records (NODATA); any other name in the zone NXDOMAIN; both
  carry the zone's SOA in the authority section (negative caching TTL).
- Names outside the zone (and outside in-addr.arpa's cluster IPs): REFUSED here;
  the server forwards them when given an upstream.
- Answers are authoritative (AA), TTL 5 s; names compare case-insensitively and
  the response echoes the question as asked.

Theory of operation: `build(services, endpoints, domain)` turns the cache into
an index {owner name: {rdtype: [rdata text]}} once per change (the server
rebuilds on watch events); `answer(query, index)` is then a dictionary lookup,
so a query is answered in microseconds. Both are pure.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

Obj = dict[str, Any]
TTL = 5
PROTOS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}


@dataclass
class Index:
    domain: dns.name.Name
    records: dict[dns.name.Name, dict[int, list[str]]] = field(default_factory=dict)
    existing: set[dns.name.Name] = field(default_factory=set)  # owners and their in-zone ancestors
    reverse: dns.name.Name = dns.name.from_text("in-addr.arpa.")

    def add(self, owner: dns.name.Name, rdtype: int, value: str) -> None:
        values = self.records.setdefault(owner, {}).setdefault(rdtype, [])
        if value not in values:
            values.append(value)
        name = owner
        while name != dns.name.root and name not in self.existing:
            self.existing.add(name)
            if name == self.domain or name == self.reverse:
                break
            name = name.parent()

    def in_zone(self, name: dns.name.Name) -> bool:
        return name.is_subdomain(self.domain) or name.is_subdomain(self.reverse)


def _dashed(ip: str) -> str:
    return ip.replace(".", "-").replace(":", "-")


def _ipv4(value: Any) -> str:
    try:
        addr = ipaddress.ip_address(str(value))
    except ValueError:
        return ""
    return str(addr) if addr.version == 4 else ""


def _ready(endpoints: Obj | None) -> list[tuple[str, str, list[Obj]]]:
    """[(ip, hostname-or-dashed-ip, ports of its subset)] for ready addresses."""
    out = []
    for subset in (endpoints or {}).get("subsets") or []:
        if not isinstance(subset, dict):
            continue
        ports = [p for p in subset.get("ports") or [] if isinstance(p, dict)]
        for a in subset.get("addresses") or []:
            ip = _ipv4((a or {}).get("ip"))
            if ip:
                out.append((ip, str(a.get("hostname") or _dashed(ip)), ports))
    out.sort(key=lambda t: (ipaddress.ip_address(t[0]), t[1]))
    return out


def build(services: Iterable[Obj], endpoints: Iterable[Obj], domain: str = "cluster.local") -> Index:
    zone = dns.name.from_text(domain)
    idx = Index(zone)
    idx.add(zone, dns.rdatatype.SOA, soa_text(zone))
    eps = {((e.get("metadata") or {}).get("namespace", ""), (e.get("metadata") or {}).get("name", "")): e
           for e in endpoints}
    for svc in services:
        meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        if not ns or not name:
            continue
        owner = dns.name.from_text(f"{name}.{ns}.svc", zone)
        if spec.get("type") == "ExternalName":
            if spec.get("externalName"):
                idx.add(owner, dns.rdatatype.CNAME, str(dns.name.from_text(str(spec["externalName"]))))
            continue
        cluster_ip = _ipv4(spec.get("clusterIP"))
        headless = spec.get("clusterIP") == "None"
        if not cluster_ip and not headless:
            continue
        idx.existing.add(owner)
        ready = _ready(eps.get((ns, name))) if headless else []
        if cluster_ip:
            idx.add(owner, dns.rdatatype.A, cluster_ip)
            idx.add(dns.reversename.from_address(cluster_ip), dns.rdatatype.PTR, str(owner))
        for ip, host, _ in ready:
            idx.add(owner, dns.rdatatype.A, ip)
            target = dns.name.from_text(host, owner)
            idx.add(target, dns.rdatatype.A, ip)
            idx.add(dns.reversename.from_address(ip), dns.rdatatype.PTR, str(target))
        for p in spec.get("ports") or []:
            if not isinstance(p, dict) or not p.get("name") or not isinstance(p.get("port"), int):
                continue
            proto = PROTOS.get(str(p.get("protocol", "TCP")))
            if proto is None:
                continue
            srv = dns.name.from_text(f"_{p['name']}._{proto}", owner)
            if cluster_ip:
                idx.add(srv, dns.rdatatype.SRV, f"0 100 {p['port']} {owner}")
            for _, host, ports in ready:
                for ep in ports:
                    if ep.get("name") == p["name"] and PROTOS.get(str(ep.get("protocol", "TCP"))) == proto:
                        idx.add(srv, dns.rdatatype.SRV, f"0 100 {ep.get('port')} {dns.name.from_text(host, owner)}")
    return idx


def soa_text(zone: dns.name.Name) -> str:
    return f"{dns.name.from_text('ns.dns', zone)} {dns.name.from_text('hostmaster', zone)} 1 7200 1800 86400 {TTL}"


def _rrset(name: dns.name.Name, rdtype: int, values: list[str]) -> dns.rrset.RRset:
    return dns.rrset.from_text_list(name, TTL, dns.rdataclass.IN, dns.rdatatype.RdataType.make(rdtype), values)


def _pod_address(qname: dns.name.Name, zone: dns.name.Name) -> str:
    rel = qname.relativize(zone).labels if qname.is_subdomain(zone) else ()
    if len(rel) == 3 and rel[2].lower() == b"pod":
        return _ipv4(rel[0].decode(errors="replace").replace("-", "."))
    return ""


def in_zone(query: dns.message.Message, index: Index) -> bool:
    return bool(query.question) and index.in_zone(query.question[0].name)


def answer(query: dns.message.Message, index: Index) -> dns.message.Message:
    """The response to `query` from `index` (REFUSED outside the zone: the server may forward those)."""
    response = dns.message.make_response(query)
    response.flags &= ~dns.flags.RA
    if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
        response.set_rcode(dns.rcode.NOTIMP if query.opcode() != dns.opcode.QUERY else dns.rcode.FORMERR)
        return response
    q = query.question[0]
    qname, qtype = q.name, q.rdtype
    if q.rdclass != dns.rdataclass.IN or not index.in_zone(qname):
        response.set_rcode(dns.rcode.REFUSED)
        return response
    response.flags |= dns.flags.AA
    pod_ip = _pod_address(qname, index.domain)
    found = index.records.get(qname, {})
    if pod_ip:
        found = {dns.rdatatype.A: [pod_ip]}
    if dns.rdatatype.CNAME in found and qtype != dns.rdatatype.CNAME:
        response.answer.append(_rrset(qname, dns.rdatatype.CNAME, found[dns.rdatatype.CNAME]))
        return response
    types = list(found) if qtype == dns.rdatatype.ANY else [qtype] if qtype in found else []
    for t in types:
        response.answer.append(_rrset(qname, t, found[t]))
        if t == dns.rdatatype.SRV:
            for value in found[t]:
                target = dns.name.from_text(value.split()[3])
                addrs = index.records.get(target, {}).get(dns.rdatatype.A)
                if addrs:
                    response.additional.append(_rrset(target, dns.rdatatype.A, addrs))
    if not types:
        if not found and not pod_ip and qname not in index.existing:
            response.set_rcode(dns.rcode.NXDOMAIN)
        if qname.is_subdomain(index.domain):
            response.authority.append(_rrset(index.domain, dns.rdatatype.SOA, [soa_text(index.domain)]))
    return response

