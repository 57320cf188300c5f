"""Pod routes across nodes: every other node's pod subnet via that node's IP.

Rules: for each Node other than this one with a spec.podCIDR (IPv4) and an
InternalIP (status.addresses; else the first IPv4 address listed), this node
has a route `podCIDR via InternalIP`. Nodes without either get none; a node
whose podCIDR is this node's own or overlaps an earlier one (by name order) is
skipped. Routes gifee installed are tagged with protocol RT_PROTO (so they are
told apart from every other route); a tagged route no longer in the plan is
removed.

Theory of operation: `plan` is pure (nodes → {cidr: gateway}); `RouteSyncer`
reads the tagged routes of the main table with pyroute2, adds/replaces what the
plan wants and deletes what it no longer wants. It runs level-triggered from the
proxy's node mirror (every change, and every sync period).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

Obj = dict[str, Any]
RT_PROTO = 0xBE  # "gifee" routes: any number the kernel and common daemons do not use
log = logging.getLogger("gifee.routes")


def node_ip(node: Obj) -> str:
    addrs = [a for a in (node.get("status") or {}).get("addresses") or [] if isinstance(a, dict)]
    for kind in ("InternalIP", "ExternalIP", None):
        for a in addrs:
            if kind is None or a.get("type") == kind:
                try:
                    ip = ipaddress.ip_address(str(a.get("address", "")))
                except ValueError:
                    continue
                if ip.version == 4:
                    return str(ip)
    return ""


def pod_cidr(node: Obj) -> str:
    spec = node.get("spec") or {}
    for c in [spec.get("podCIDR"), *(spec.get("podCIDRs") or [])]:
        try:
            net = ipaddress.ip_network(str(c), strict=False)
        except ValueError:
            continue
        if net.version == 4:
            return str(net)
    return ""


def plan(nodes: Iterable[Obj], self_name: str) -> dict[str, str]:
    """{pod CIDR: gateway} for every other node."""
    by_name = sorted(nodes, key=lambda n: str((n.get("metadata") or {}).get("name", "")))
    own = ""
    for n in by_name:
        if (n.get("metadata") or {}).get("name") == self_name:
            own = pod_cidr(n)
    taken = [ipaddress.ip_network(own)] if own else []
    out: dict[str, str] = {}
    for n in by_name:
        if (n.get("metadata") or {}).get("name") == self_name:
            continue
        cidr, gw = pod_cidr(n), node_ip(n)
        if not cidr or not gw:
            continue
        net = ipaddress.ip_network(cidr)
        if any(net.overlaps(t) for t in taken):
            continue
        taken.append(net)
        out[cidr] = gw
    return out


class RouteSyncer:
    """Installs the plan in the current network namespace's main routing table. Blocking (pyroute2's
    synchronous IPRoute, one socket per sync): call it from a worker thread inside an event loop."""

    def installed(self, ipr: Any) -> dict[str, str]:
        out: dict[str, str] = {}
        for r in ipr.get_routes(family=2, proto=RT_PROTO):
            dst = r.get_attr("RTA_DST")
            gw = r.get_attr("RTA_GATEWAY")
            if dst and gw:
                out[f"{dst}/{r['dst_len']}"] = str(gw)
        return out

    def sync(self, want: dict[str, str]) -> None:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            have = self.installed(ipr)
            for cidr, gw in want.items():
                if have.get(cidr) == gw:
                    continue
                try:
                    ipr.route("replace", dst=cidr, gateway=gw, proto=RT_PROTO)
                    log.info("route %s via %s", cidr, gw)
                except Exception as e:  # unreachable gateway: try again next sync
                    log.warning("route %s via %s: %s", cidr, gw, e)
            for cidr, gw in have.items():
                if cidr not in want:
                    try:
                        ipr.route("del", dst=cidr, gateway=gw, proto=RT_PROTO)
                        log.info("removed route %s via %s", cidr, gw)
                    except Exception as e:
                        log.warning("removing route %s: %s", cidr, e)

    def remove_all(self) -> None:
        self.sync({})
