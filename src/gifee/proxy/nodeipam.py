"""Node IPAM: a pod subnet (spec.podCIDR) for every node, from --cluster-cidr.

Rules: subnets are the cluster CIDR cut into /--node-cidr-mask-size blocks
(default /24 of 10.244.0.0/16). A node that has a podCIDR keeps it (it is
immutable in Kubernetes) and its block counts as taken even when it lies outside
the cluster CIDR's blocks; a node without one gets the lowest free block, nodes
taken in name order, so the result is deterministic. When the blocks run out,
the remaining nodes get none (and are reported).

Theory of operation: `assign` is pure (nodes → {name: cidr} for the nodes that
need one); `run` mirrors nodes and, on every change, patches spec.podCIDR and
spec.podCIDRs of the nodes `assign` names. A patch that lost a race (the node
got a CIDR meanwhile) is harmless: the next pass sees the new state.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from gifee.proxy.mirror import Debouncer, Mirror
from gifee.proxy.routes import pod_cidr

Obj = dict[str, Any]
log = logging.getLogger("gifee.nodeipam")


def assign(nodes: Iterable[Obj], cluster_cidr: str, mask: int) -> tuple[dict[str, str], list[str]]:
    """({node name: new podCIDR}, [nodes left without one: range full])."""
    net = ipaddress.ip_network(cluster_cidr, strict=False)
    if mask < net.prefixlen:
        raise ValueError(f"node mask /{mask} is larger than the cluster CIDR {cluster_cidr}")
    ordered = sorted(nodes, key=lambda n: str((n.get("metadata") or {}).get("name", "")))
    taken = [ipaddress.ip_network(c) for c in (pod_cidr(n) for n in ordered) if c]
    out: dict[str, str] = {}
    full: list[str] = []
    blocks = net.subnets(new_prefix=mask)
    for n in ordered:
        if pod_cidr(n):
            continue
        name = str((n.get("metadata") or {}).get("name", ""))
        for block in blocks:
            if not any(block.overlaps(t) for t in taken):
                taken.append(block)
                out[name] = str(block)
                break
        else:
            full.append(name)
    return out, full


async def run(server: str, cluster_cidr: str, mask: int, stop: asyncio.Event, period: float = 5.0) -> None:
    from gifee.api.client import ApiClient
    from gifee.api.errors import ApiError

    deb = Debouncer(0.05)
    mirror = Mirror(server, ["nodes"], deb.poke)
    await mirror.start()
    api = ApiClient(server)
    try:
        await mirror.wait_synced()
        while not stop.is_set():
            want, full = assign(mirror.items("nodes"), cluster_cidr, mask)
            for name in full:
                log.warning("no pod CIDR left for node %s in %s", name, cluster_cidr)
            for name, cidr in want.items():
                try:
                    await api.patch("nodes", name, {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})
                    log.info("node %s: podCIDR %s", name, cidr)
                except ApiError as e:
                    log.warning("node %s: %s", name, e)
            waiter = asyncio.create_task(deb.wait(period))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for t in (waiter, stopper):
                t.cancel()
                with contextlib.suppress(BaseException):
                    await t
    finally:
        await api.close()
        await mirror.stop()
