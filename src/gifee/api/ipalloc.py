"""Service cluster IPs and node ports: allocation decisions (pure) and their
transactional record in the store.

Rules:
- A service's spec.clusterIP comes from --service-cluster-ip-range (default
  10.96.0.0/12). Neither the network address nor the broadcast address is handed
  out; the range's first host (10.96.0.1) is reserved for the `kubernetes`
  service in `default`. A clusterIP given on create must be inside the range and
  free; "None" (headless) allocates nothing; ExternalName services get none.
- Type NodePort and LoadBalancer services get spec.ports[].nodePort from
  30000-32767 (--service-node-port-range); a given nodePort must be free.
- clusterIP is immutable on update (an update that leaves it empty keeps it);
  nodePorts carry over by (port, protocol) when an update omits them; ports
  that stop needing one are released after the write.
- Allocations are released when the service is removed.

Theory of operation: every allocation is one key, /registry/ranges/serviceips/<ip>
or /registry/ranges/servicenodeports/<port>, whose value names the owner
("namespace/name"). A key is created in an etcd Txn guarded by
create_revision == 0, so two API servers racing for one IP cannot both win: the
loser picks again. Choosing is a pure function of the range, the keys in use and
a random seed (`choose_ip`, `choose_port`); the shell lists the keys, chooses,
and retries on a lost race. A release deletes the key only if it still names the
owner (Txn compare on the value). Allocation happens before the service is
written and is undone if the write fails. A claim, the service's write and the
release of what it no longer holds run to their end together even when the
request is cancelled (the API server cancels a handler whose client hangs up):
cancelled between them, a written service could keep an address whose claim was
undone, or a deleted service's address stay claimed. A crash of the API server
in between still leaks an address (no repair loop yet).
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from gifee.api import errors, resources
from gifee.store.client import StoreClient
from gifee.store.errors import StoreError
from gifee.store.mvcc import prefix_end
from gifee.store.proto import rpc_pb2

Obj = dict[str, Any]
IP_PREFIX = b"/registry/ranges/serviceips/"
PORT_PREFIX = b"/registry/ranges/servicenodeports/"
DEFAULT_RANGE = "10.96.0.0/12"
DEFAULT_PORTS = (30000, 32767)
NODE_PORT_TYPES = ("NodePort", "LoadBalancer")
SERVICES = resources.lookup("", "v1", "services")
assert SERVICES is not None


T = TypeVar("T")
_finishing: set[asyncio.Task[Any]] = set()  # strong references: shielded tasks outlive their callers


async def _to_the_end(coro: Coroutine[Any, Any, T]) -> T:
    """Await coro; a cancelled caller stops waiting, but coro still runs to its end."""
    task = asyncio.ensure_future(coro)
    _finishing.add(task)
    task.add_done_callback(_finishing.discard)
    return await asyncio.shield(task)


class AllocationError(Exception):
    """A requested address or port is unusable (field, message)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# -- pure decisions


def parse_port_range(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    first, last = int(lo), int(hi if sep else lo)
    if not 0 < first <= last < 65536:
        raise ValueError(f"bad port range {text!r}")
    return first, last


def kubernetes_ip(cidr: str) -> str:
    """The range's first host address: the `kubernetes` service's."""
    net = ipaddress.ip_network(cidr, strict=False)
    return str(net.network_address + 1)


def ip_usable(cidr: str, ip: str) -> bool:
    net = ipaddress.ip_network(cidr, strict=False)
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if addr.version != net.version or addr not in net:
        return False
    return addr not in (net.network_address, net.broadcast_address) or net.num_addresses <= 2


def choose_ip(cidr: str, used: Iterable[str], seed: int) -> str | None:
    """A free address (not the network, broadcast or kubernetes address), or None when full.
    Starts at a seed-chosen offset and walks up, wrapping: O(size) worst case only when nearly full."""
    net = ipaddress.ip_network(cidr, strict=False)
    taken = {int(ipaddress.ip_address(u)) for u in used}
    first = int(net.network_address) + 2  # skip the network address and the kubernetes address
    last = int(net.broadcast_address) - 1
    size = last - first + 1
    if size <= 0:
        return None
    start = seed % size
    for i in range(size):
        cand = first + (start + i) % size
        if cand not in taken:
            return str(ipaddress.ip_address(cand))
    return None


def choose_port(port_range: tuple[int, int], used: Iterable[int], seed: int) -> int | None:
    lo, hi = port_range
    taken = set(used)
    size = hi - lo + 1
    start = seed % size
    for i in range(size):
        cand = lo + (start + i) % size
        if cand not in taken:
            return cand
    return None


def wants_cluster_ip(spec: Obj) -> bool:
    return spec.get("type", "ClusterIP") != "ExternalName" and spec.get("clusterIP") != "None"


def wants_node_ports(spec: Obj) -> bool:
    return spec.get("type", "ClusterIP") in NODE_PORT_TYPES


def _port_key(p: Obj) -> tuple[Any, str]:
    return p.get("port"), str(p.get("protocol", "TCP"))


def carry_over(old: Obj, new: Obj) -> None:
    """Update rules applied to `new` in place: clusterIP kept (AllocationError if changed), nodePorts
    kept by (port, protocol) when the update leaves them out and the service still needs them."""
    ospec, nspec = old.get("spec") or {}, new.setdefault("spec", {})
    old_ip = ospec.get("clusterIP", "")
    new_ip = nspec.get("clusterIP", "")
    if old_ip and (new_ip in ("", None)) and nspec.get("type") != "ExternalName":
        nspec["clusterIP"] = old_ip
        if ospec.get("clusterIPs"):
            nspec["clusterIPs"] = list(ospec["clusterIPs"])
    elif new_ip != old_ip and nspec.get("type") != "ExternalName" and ospec.get("type") != "ExternalName":
        raise AllocationError("spec.clusterIP", f'Invalid value: "{new_ip}": field is immutable')
    if nspec.get("clusterIP") and nspec.get("type") != "ExternalName":
        nspec["clusterIPs"] = [nspec["clusterIP"]]
    if wants_node_ports(nspec):
        previous = {_port_key(p): p.get("nodePort") for p in ospec.get("ports") or [] if p.get("nodePort")}
        for p in nspec.get("ports") or []:
            if isinstance(p, dict) and not p.get("nodePort") and _port_key(p) in previous:
                p["nodePort"] = previous[_port_key(p)]
    else:
        for p in nspec.get("ports") or []:
            if isinstance(p, dict):
                p.pop("nodePort", None)


def held(obj: Obj) -> tuple[set[str], set[int]]:
    """The IPs and node ports a stored service holds."""
    spec = obj.get("spec") or {}
    ips = {spec["clusterIP"]} if wants_cluster_ip(spec) and spec.get("clusterIP") else set()
    ports = {int(p["nodePort"]) for p in spec.get("ports") or [] if isinstance(p, dict) and p.get("nodePort")}
    return ips, ports


# -- the store shell


@dataclass
class Held:
    ips: list[str]
    ports: list[int]


def owner_of(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class ServiceAllocator:
    def __init__(self, client: StoreClient, cidr: str = DEFAULT_RANGE,
                 node_ports: tuple[int, int] = DEFAULT_PORTS) -> None:
        ipaddress.ip_network(cidr, strict=False)  # ValueError early
        self.client = client
        self.cidr = cidr
        self.node_ports = node_ports
        self._rng = random.Random()

    async def _keys(self, prefix: bytes) -> list[str]:
        resp = await self.client.range(rpc_pb2.RangeRequest(key=prefix, range_end=prefix_end(prefix),
                                                            keys_only=True))
        return [kv.key[len(prefix):].decode() for kv in resp.kvs]

    async def _claim(self, key: bytes, owner: str) -> bool:
        txn = rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.CREATE, result=rpc_pb2.Compare.EQUAL,
                                     create_revision=0)],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=owner.encode()))])
        resp = await self.client.txn(txn)
        return bool(resp.succeeded)

    async def _release_key(self, key: bytes, owner: str) -> None:
        txn = rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.VALUE, result=rpc_pb2.Compare.EQUAL,
                                     value=owner.encode())],
            success=[rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key))])
        await self.client.txn(txn)

    async def claim_ip(self, owner: str, ip: str = "") -> str:
        if ip:
            if not ip_usable(self.cidr, ip):
                raise AllocationError("spec.clusterIP", f'Invalid value: "{ip}": provided IP is not in the valid '
                                      f"range. The range of valid IPs is {self.cidr}")
            if not await self._claim(IP_PREFIX + ip.encode(), owner):
                raise AllocationError("spec.clusterIP", f'Invalid value: "{ip}": provided IP is already allocated')
            return ip
        for _ in range(8):
            used = await self._keys(IP_PREFIX)
            cand = choose_ip(self.cidr, used, self._rng.getrandbits(32))
            if cand is None:
                raise AllocationError("spec.clusterIP", f"no free addresses left in {self.cidr}")
            if await self._claim(IP_PREFIX + cand.encode(), owner):
                return cand
        raise AllocationError("spec.clusterIP", "could not allocate an address (too many races)")

    async def claim_port(self, owner: str, port: int = 0) -> int:
        lo, hi = self.node_ports
        if port:
            if not lo <= port <= hi:
                raise AllocationError("spec.ports.nodePort", f"Invalid value: {port}: provided port is not in the "
                                      f"valid range. The range of valid ports is {lo}-{hi}")
            if not await self._claim(PORT_PREFIX + str(port).encode(), owner):
                raise AllocationError("spec.ports.nodePort", f"Invalid value: {port}: provided port is already "
                                      "allocated")
            return port
        for _ in range(8):
            used = [int(k) for k in await self._keys(PORT_PREFIX) if k.isdigit()]
            cand = choose_port(self.node_ports, used, self._rng.getrandbits(32))
            if cand is None:
                raise AllocationError("spec.ports.nodePort", "no free node ports left")
            if await self._claim(PORT_PREFIX + str(cand).encode(), owner):
                return cand
        raise AllocationError("spec.ports.nodePort", "could not allocate a node port (too many races)")

    async def release(self, owner: str, ips: Iterable[str], ports: Iterable[int]) -> None:
        try:
            for ip in ips:
                await self._release_key(IP_PREFIX + ip.encode(), owner)
            for port in ports:
                await self._release_key(PORT_PREFIX + str(port).encode(), owner)
        except StoreError:
            pass  # a leak, not a failure of the request

    async def _fill(self, obj: Obj, got: Held, *, keep: tuple[set[str], set[int]] = (set(), set())) -> None:
        """Claim what `obj` needs and does not hold yet (keep: what it already holds)."""
        owner = owner_of(obj)
        spec = obj.setdefault("spec", {})
        if wants_cluster_ip(spec):
            ip = spec.get("clusterIP") or ""
            if ip not in keep[0]:
                ip = await self.claim_ip(owner, ip)
                got.ips.append(ip)
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
        elif spec.get("type") == "ExternalName":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        else:
            spec["clusterIPs"] = ["None"]
        if wants_node_ports(spec):
            for p in spec.get("ports") or []:
                if not isinstance(p, dict):
                    continue
                want = int(p.get("nodePort") or 0)
                if want and want in keep[1]:
                    continue
                p["nodePort"] = await self.claim_port(owner, want)
                got.ports.append(p["nodePort"])
        else:
            for p in spec.get("ports") or []:
                if isinstance(p, dict) and p.get("nodePort"):
                    raise AllocationError("spec.ports.nodePort", "may not be used when `type` is 'ClusterIP'")

    def _invalid(self, obj: Obj, e: AllocationError) -> errors.ApiError:
        assert SERVICES is not None
        return errors.invalid(SERVICES, str((obj.get("metadata") or {}).get("name", "")),
                              [errors.cause(e.field, e.message)])

    async def create(self, obj: Obj, write: Callable[[], Awaitable[Obj]], dry_run: bool) -> Obj:
        """Claim the new service's IP and node ports, then write it; undo the claims if the write fails."""
        return await _to_the_end(self._create(obj, write, dry_run))

    async def _create(self, obj: Obj, write: Callable[[], Awaitable[Obj]], dry_run: bool) -> Obj:
        got = Held([], [])
        try:
            await self._fill(obj, got)
            if dry_run:
                await self.release(owner_of(obj), got.ips, got.ports)
                got = Held([], [])
            return await write()
        except AllocationError as e:
            await self.release(owner_of(obj), got.ips, got.ports)
            raise self._invalid(obj, e) from None
        except BaseException:
            await self.release(owner_of(obj), got.ips, got.ports)
            raise

    async def update(self, current: Obj, make: Callable[[Obj], Obj],
                     write: Callable[[Callable[[Obj], Obj]], Awaitable[Obj]], dry_run: bool) -> Obj:
        """An update: clusterIP immutable, nodePorts carried over or claimed before the write; what the
        old object held and the new one does not is released after it."""
        return await _to_the_end(self._update(current, make, write, dry_run))

    async def _update(self, current: Obj, make: Callable[[Obj], Obj],
                      write: Callable[[Callable[[Obj], Obj]], Awaitable[Obj]], dry_run: bool) -> Obj:
        got = Held([], [])
        try:
            probe = make(_copy(current))
            carry_over(current, probe)
            await self._fill(probe, got, keep=held(current))
        except AllocationError as e:
            await self.release(owner_of(current), got.ips, got.ports)
            raise self._invalid(current, e) from None
        extra_ports = dict(zip([_port_key(p) for p in (probe.get("spec") or {}).get("ports") or []
                                if isinstance(p, dict) and p.get("nodePort") in got.ports], got.ports, strict=False))

        def guarded(now: Obj) -> Obj:
            new = make(now)
            try:
                carry_over(now, new)
            except AllocationError as e:
                raise self._invalid(now, e) from None
            if wants_node_ports(new.get("spec") or {}):
                for p in (new.get("spec") or {}).get("ports") or []:
                    if isinstance(p, dict) and not p.get("nodePort") and _port_key(p) in extra_ports:
                        p["nodePort"] = extra_ports[_port_key(p)]
            before, after = held(now), held(new)
            if not after[1] <= before[1] | set(got.ports) or not after[0] <= before[0] | set(got.ips):
                raise errors.conflict(SERVICES, str(now["metadata"]["name"]))  # type: ignore[arg-type]
            if wants_node_ports(new.get("spec") or {}) and any(
                    isinstance(p, dict) and not p.get("nodePort") for p in new["spec"].get("ports") or []):
                raise errors.conflict(SERVICES, str(now["metadata"]["name"]))  # type: ignore[arg-type]
            return new

        try:
            written = await write(guarded)
        except BaseException:
            await self.release(owner_of(current), got.ips, got.ports)
            raise
        if dry_run:
            await self.release(owner_of(current), got.ips, got.ports)
            return written
        before, after = held(current), held(written)
        unused_ips = (before[0] | set(got.ips)) - after[0]
        unused_ports = (before[1] | set(got.ports)) - after[1]
        if written["metadata"].get("resourceVersion") and (unused_ips or unused_ports):
            await self.release(owner_of(current), unused_ips, unused_ports)
        return written

    async def delete(self, remove: Awaitable[Obj | None]) -> Obj | None:
        """Remove a service (`remove` gives it, or None if it was not removed) and release what it held."""
        return await _to_the_end(self._delete(remove))

    async def _delete(self, remove: Awaitable[Obj | None]) -> Obj | None:
        removed = await remove
        if removed is not None:
            ips, ports = held(removed)
            await self.release(owner_of(removed), ips, ports)
        return removed


def _copy(obj: Obj) -> Obj:
    import copy

    return copy.deepcopy(obj)


def kubernetes_objects(cidr: str, address: str, port: int) -> tuple[Obj, Obj | None]:
    """The `kubernetes` service in `default` (first host of the range, port 443 → the API server's port)
    and its Endpoints (None when the server listens on a wildcard address: no single address to name)."""
    svc: Obj = {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "namespace": "default",
                             "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"type": "ClusterIP", "clusterIP": kubernetes_ip(cidr),
                         "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}}
    if address in ("", "0.0.0.0", "::"):
        return svc, None
    eps: Obj = {"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": "kubernetes", "namespace": "default",
                             "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                "subsets": [{"addresses": [{"ip": address}],
                             "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}
    return svc, eps
