"""Pod networking: each pod's namespace on a gifee bridge, through the CNI plugins.

Job: attach a pinned network namespace to a bridge (address from a file-locked allocator,
masquerade out, port forwarding in), detach it again, or just bring `lo` up (--net=none).
It runs Debian's CNI plugins (/usr/lib/cni) as a conflist would: loopback, bridge
(isGateway, ipMasq, host-local IPAM whose dataDir is under state_dir), portmap (the
`portMappings` capability, passed as runtimeConfig; snat on, so 127.0.0.1:HOSTPORT, the
bridge address and other pods all reach forwarded ports). ADD runs in order with prevResult
chaining, DEL in reverse order, CHECK is offered.

Rules:
- The core (configuration building, plugin output parsing, the result -> NetworkStatus
  mapping, port conflict checks, iptables-save and allocator-file parsing) is plain
  functions; `PodNetwork` is the thin shell that runs plugins and touches files and links.
- Everything fails with NetworkError and a readable message; plugin errors carry the
  plugin's own msg/code. A failed attach is rolled back (DEL of every plugin, then direct
  removal of the pod's interface, iptables rules and address as a safety net).
- detach is idempotent: after the pod's processes are gone, after a partial attach, twice.
  The ports and the CNI result are kept per pod in state_dir/pods/<pod_id>.json, because
  portmap's DEL only removes the mappings it is told about.
- Host ports are reserved in state_dir/ports.json under a file lock: a second pod asking
  for a forwarded (host_ip, host_port, protocol) gets a NetworkError, not a silent shadow.
- portmap, and the sweep of stale NAT rules, run one at a time on the host (PORTMAP_LOCK,
  an flock): portmap's ADD creates the host-wide top-level chains when they are missing, and
  two ADDs at once both try, one failing with "CHAIN_USER_ADD failed (File exists)" under
  iptables' nf_tables backend.
- Addresses only ever live in namespaces and the bridge that gifee creates; a subnet that
  overlaps an address already on the host is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gifee.runtime.netns import NetworkError, is_netns, pin_netns, unpin_netns

__all__ = [
    "CNI_VERSION",
    "NetworkError",
    "NetworkStatus",
    "PodNetwork",
    "PortMapping",
    "build_conflist",
    "pin_netns",
    "unpin_netns",
]

CNI_VERSION = "1.0.0"
DEFAULT_PLUGIN_DIR = Path("/usr/lib/cni")
DEFAULT_BRIDGE = "gifee0"
DEFAULT_SUBNET = "10.22.0.0/16"
POD_IFNAME = "eth0"
PLUGIN_TIMEOUT = 60.0
# host-wide, as the iptables chains it guards are (every gifee network's portmap shares them)
PORTMAP_LOCK = Path("/run/lock" if os.path.isdir("/run/lock") else "/tmp") / "gifee-cni-portmap.lock"
LOOPBACK_ONLY_ID = "gifee-loopback-only"
PROTOCOLS = ("tcp", "udp", "sctp")
# Chains the portmap plugin shares between all CNI networks on the host.
PORTMAP_SHARED_CHAINS = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ")

_POD_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,15}$")


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class PortMapping:
    """Forward host_ip:host_port (all host addresses when host_ip is "") to the pod's pod_port."""

    host_port: int
    pod_port: int
    protocol: str = "tcp"
    host_ip: str = ""

    def __post_init__(self) -> None:
        for name in ("host_port", "pod_port"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
                raise NetworkError(f"port mapping: {name} must be an integer 1-65535, got {value!r}")
        if self.protocol not in PROTOCOLS:
            raise NetworkError(f"port mapping: protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if self.host_ip:
            try:
                addr = ipaddress.ip_address(self.host_ip)
            except ValueError:
                raise NetworkError(f"port mapping: host_ip {self.host_ip!r} is not an IP address") from None
            if addr.version != 4:
                raise NetworkError(f"port mapping: only IPv4 host_ip is supported, got {self.host_ip!r}")

    @classmethod
    def parse(cls, text: str, protocol: str = "tcp") -> PortMapping:
        """Parse the CLI form HOST:POD, IP:HOST:POD, optionally with /PROTO (e.g. 8080:80/udp)."""
        spec, _, proto = text.partition("/")
        parts = spec.rsplit(":", 2)
        try:
            if len(parts) == 2:
                return cls(int(parts[0]), int(parts[1]), proto or protocol)
            if len(parts) == 3:
                return cls(int(parts[1]), int(parts[2]), proto or protocol, parts[0])
        except ValueError:
            pass
        raise NetworkError(f"port mapping {text!r}: expected HOST:POD or IP:HOST:POD[/tcp|udp|sctp]")

    def to_cni(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hostPort": self.host_port, "containerPort": self.pod_port, "protocol": self.protocol}
        if self.host_ip:
            out["hostIP"] = self.host_ip
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"host_port": self.host_port, "pod_port": self.pod_port, "protocol": self.protocol, "host_ip": self.host_ip}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PortMapping:
        try:
            return cls(int(d["host_port"]), int(d["pod_port"]), str(d.get("protocol", "tcp")), str(d.get("host_ip", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise NetworkError(f"port mapping: bad record {dict(d)!r}: {e}") from None


@dataclass(frozen=True)
class NetworkStatus:
    """Where a pod is on its network: what `attach` returns and the runtime stores as JSON."""

    ip: str
    prefix_len: int
    gateway: str
    interface: str = POD_IFNAME
    mac: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ip": self.ip, "prefix_len": self.prefix_len, "gateway": self.gateway,
                "interface": self.interface, "mac": self.mac}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NetworkStatus:
        try:
            return cls(str(d["ip"]), int(d["prefix_len"]), str(d.get("gateway", "")),
                       str(d.get("interface", POD_IFNAME)), str(d.get("mac", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise NetworkError(f"network status: bad record {dict(d)!r}: {e}") from None


# ---------------------------------------------------------------- core (no I/O)


def validate_pod_id(pod_id: str) -> None:
    if not isinstance(pod_id, str) or not _POD_ID_RE.match(pod_id):
        raise NetworkError(
            f"invalid pod id {pod_id!r}: use 1-128 letters, digits, '_', '.', '-', starting with a letter or digit")


def parse_subnet(subnet: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as e:
        raise NetworkError(f"invalid pod subnet {subnet!r}: {e}") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise NetworkError(f"invalid pod subnet {subnet!r}: only IPv4 is supported")
    if net.prefixlen > 30:
        raise NetworkError(f"invalid pod subnet {subnet!r}: needs room for a gateway and pods (/30 or larger)")
    return net


def validate_bridge(bridge: str) -> None:
    if not isinstance(bridge, str) or not _IFNAME_RE.match(bridge) or bridge in (".", ".."):
        raise NetworkError(f"invalid bridge name {bridge!r}: 1-15 letters, digits, '_', '.', '-'")


def network_name(bridge: str) -> str:
    """The CNI network name: it scopes the allocator's directory and the iptables comments."""
    return f"gifee-{bridge}"


def build_conflist(name: str, bridge: str, subnet: str, ipam_dir: str) -> dict[str, Any]:
    """The network configuration list gifee runs: loopback, bridge (+host-local), portmap."""
    net = parse_subnet(subnet)
    gateway = str(net.network_address + 1)
    return {
        "cniVersion": CNI_VERSION,
        "name": name,
        "plugins": [
            {"type": "loopback"},
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(net), "gateway": gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir,
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


def plugin_config(conflist: Mapping[str, Any], plugin: Mapping[str, Any],
                  prev_result: Mapping[str, Any] | None, runtime_config: Mapping[str, Any]) -> dict[str, Any]:
    """One plugin's stdin: its entry plus name/cniVersion, prevResult, and the runtimeConfig
    keys for the capabilities it declares (as libcni does)."""
    conf = dict(plugin)
    conf["cniVersion"] = conflist["cniVersion"]
    conf["name"] = conflist["name"]
    if prev_result is not None:
        conf["prevResult"] = dict(prev_result)
    caps = plugin.get("capabilities") or {}
    rc = {k: v for k, v in runtime_config.items() if caps.get(k)}
    if rc:
        conf["runtimeConfig"] = rc
    return conf


def plugin_env(command: str, container_id: str, netns: str, ifname: str, cni_path: str,
               base_path: str) -> dict[str, str]:
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_PATH": cni_path,
        "PATH": base_path,
    }


def parse_plugin_output(plugin: str, command: str, returncode: int, stdout: bytes,
                        stderr: bytes) -> dict[str, Any] | None:
    """The plugin's result (ADD), None (DEL/CHECK), or NetworkError with the plugin's message."""
    text = stdout.decode("utf-8", "replace").strip()
    if returncode != 0:
        msg = ""
        try:
            err = json.loads(text) if text else None
        except json.JSONDecodeError:
            err = None
        if isinstance(err, dict) and "msg" in err:
            msg = str(err["msg"])
            if err.get("details"):
                msg += f" ({err['details']})"
            if "code" in err:
                msg += f" [CNI error code {err['code']}]"
        else:
            msg = (text or stderr.decode("utf-8", "replace").strip() or f"exit status {returncode}")
        raise NetworkError(f"CNI plugin {plugin} {command} failed: {msg}")
    if command != "ADD":
        return None
    try:
        result = json.loads(text)
    except json.JSONDecodeError:
        raise NetworkError(f"CNI plugin {plugin} {command} printed no JSON result: {text[:200]!r}") from None
    if not isinstance(result, dict):
        raise NetworkError(f"CNI plugin {plugin} {command}: result is not a JSON object")
    return result


def status_from_result(result: Mapping[str, Any], ifname: str = POD_IFNAME) -> NetworkStatus:
    """The pod's IPv4 address, gateway and MAC from a (1.0.0) CNI result."""
    interfaces = result.get("interfaces") or []
    index = next((i for i, itf in enumerate(interfaces)
                  if itf.get("name") == ifname and itf.get("sandbox")), None)
    for ip in result.get("ips") or []:
        if index is not None and ip.get("interface") not in (index, None):
            continue
        try:
            iface = ipaddress.ip_interface(ip["address"])
        except (KeyError, ValueError):
            continue
        if iface.version != 4:
            continue
        mac = str(interfaces[index].get("mac", "")) if index is not None else ""
        return NetworkStatus(str(iface.ip), iface.network.prefixlen, str(ip.get("gateway", "")), ifname, mac)
    raise NetworkError(f"CNI result has no IPv4 address for {ifname}: {json.dumps(dict(result))[:300]}")


def _overlaps(a: PortMapping, b: PortMapping) -> bool:
    return (a.host_port == b.host_port and a.protocol == b.protocol
            and (not a.host_ip or not b.host_ip or a.host_ip == b.host_ip))


def port_conflicts(wanted: Sequence[PortMapping], taken: Mapping[str, Sequence[PortMapping]],
                   pod_id: str) -> list[str]:
    """Readable conflicts between `wanted` (for pod_id) and other pods' forwarded ports,
    and within `wanted` itself."""
    problems: list[str] = []
    for i, p in enumerate(wanted):
        for q in wanted[:i]:
            if _overlaps(p, q):
                problems.append(f"host port {p.protocol}/{p.host_port} is requested twice")
        for other, ports in taken.items():
            if other == pod_id:
                continue
            for q in ports:
                if _overlaps(p, q):
                    problems.append(f"host port {p.protocol}/{p.host_port} is already forwarded to pod {other}")
    return problems


_COMMENT_RE = re.compile(r'name: \\?"(?P<name>[^"\\]*)\\?" id: \\?"(?P<id>[^"\\]*)\\?"')


def stale_nat_rules(save_text: str, name: str, pod_id: str | None) -> tuple[list[list[str]], list[str]]:
    """From `iptables-save -t nat`: the rules the bridge/portmap plugins made for network
    `name` (and pod `pod_id`, or any pod if None), as `-D` argument lists, and the per-pod
    chains they jump to (to flush and delete afterwards)."""
    deletes: list[list[str]] = []
    chains: list[str] = []
    for line in save_text.splitlines():
        if not line.startswith("-A "):
            continue
        m = _COMMENT_RE.search(line)
        if not m or m.group("name") != name or (pod_id is not None and m.group("id") != pod_id):
            continue
        try:
            args = shlex.split(line)
        except ValueError:
            continue
        chain = args[1]
        if chain.startswith("CNI-") and chain not in PORTMAP_SHARED_CHAINS:
            if chain not in chains:
                chains.append(chain)
            continue  # goes with its chain
        deletes.append(["-D", *args[1:]])
        if "-j" in args:
            target = args[args.index("-j") + 1]
            if target.startswith("CNI-") and target not in PORTMAP_SHARED_CHAINS and target not in chains:
                chains.append(target)
    return deletes, chains


def portmap_scaffolding(save_text: str) -> tuple[list[list[str]], list[str]] | None:
    """If no pod anywhere still has a port forwarded (CNI-HOSTPORT-DNAT is empty), the
    portmap plugin's shared jumps and chains as (-D argument lists, chains); else None."""
    chains = [line[1:].split()[0] for line in save_text.splitlines() if line.startswith(":")]
    present = [c for c in PORTMAP_SHARED_CHAINS if c in chains]
    if not present:
        return None
    jumps: list[list[str]] = []
    for line in save_text.splitlines():
        if not line.startswith("-A "):
            continue
        args = shlex.split(line)
        if args[1] == "CNI-HOSTPORT-DNAT":
            return None  # still in use
        if args[1] in ("PREROUTING", "OUTPUT", "POSTROUTING") and "-j" in args \
                and args[args.index("-j") + 1] in PORTMAP_SHARED_CHAINS:
            jumps.append(["-D", *args[1:]])
    return jumps, present


def allocations_of(files: Mapping[str, str], pod_id: str, ifname: str = POD_IFNAME) -> list[str]:
    """host-local's files (name -> content; one per address, holding "ID\\r\\nIFNAME"):
    the addresses held by pod_id."""
    held = []
    for fname, content in files.items():
        lines = content.replace("\r\n", "\n").split("\n")
        if lines and lines[0].strip() == pod_id and (len(lines) < 2 or lines[1].strip() in ("", ifname)):
            held.append(fname)
    return sorted(held)


# ---------------------------------------------------------------- shell


@dataclass
class _PodRecord:
    netns: str
    ports: list[PortMapping]
    result: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps({"netns": self.netns, "ports": [p.to_dict() for p in self.ports],
                           "result": self.result}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> _PodRecord:
        d = json.loads(text)
        return cls(str(d["netns"]), [PortMapping.from_dict(p) for p in d.get("ports", [])], d.get("result"))


@contextlib.contextmanager
def _portmap_lock() -> Iterator[None]:
    fd = os.open(PORTMAP_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass
class PodNetwork:
    """Pods of one bridge network. State (allocator, pod records, port reservations) lives
    in state_dir; the network's name is gifee-<bridge>."""

    state_dir: Path
    bridge: str = DEFAULT_BRIDGE
    subnet: str = DEFAULT_SUBNET
    plugin_dir: Path = DEFAULT_PLUGIN_DIR
    net: ipaddress.IPv4Network = field(init=False, repr=False)
    name: str = field(init=False)
    gateway: str = field(init=False, repr=False)
    _checked_subnet: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        self.plugin_dir = Path(self.plugin_dir)
        validate_bridge(self.bridge)
        self.net = parse_subnet(self.subnet)
        self.subnet = str(self.net)
        self.name = network_name(self.bridge)
        self.gateway = str(self.net.network_address + 1)

    # ---- paths and locks

    @property
    def ipam_dir(self) -> Path:
        return self.state_dir / "ipam"

    @property
    def allocator_dir(self) -> Path:
        """host-local's own directory: one file per address in use."""
        return self.ipam_dir / self.name

    def _record_path(self, pod_id: str) -> Path:
        return self.state_dir / "pods" / f"{pod_id}.json"

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_record(self, pod_id: str) -> _PodRecord | None:
        try:
            return _PodRecord.from_json(self._record_path(pod_id).read_text())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as e:
            raise NetworkError(f"pod {pod_id}: unreadable network record {self._record_path(pod_id)}: {e}") from None

    def _write_record(self, pod_id: str, record: _PodRecord) -> None:
        path = self._record_path(pod_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(record.to_json())
        os.replace(tmp, path)

    def _all_ports(self) -> dict[str, list[PortMapping]]:
        out: dict[str, list[PortMapping]] = {}
        pods = self.state_dir / "pods"
        if pods.is_dir():
            for f in pods.glob("*.json"):
                try:
                    out[f.stem] = _PodRecord.from_json(f.read_text()).ports
                except (OSError, ValueError, KeyError, TypeError, NetworkError):
                    continue
        return out

    # ---- plugins

    def _conflist(self) -> dict[str, Any]:
        return build_conflist(self.name, self.bridge, self.subnet, str(self.ipam_dir))

    def _run_plugin(self, plugin: Mapping[str, Any], command: str, container_id: str, netns: str,
                    prev_result: Mapping[str, Any] | None,
                    runtime_config: Mapping[str, Any]) -> dict[str, Any] | None:
        ptype = str(plugin["type"])
        exe = self.plugin_dir / ptype
        if not os.access(exe, os.X_OK):
            raise NetworkError(f"CNI plugin {ptype} not found at {exe} (install containernetworking-plugins)")
        conf = plugin_config(self._conflist(), plugin, prev_result, runtime_config)
        env = plugin_env(command, container_id, netns, POD_IFNAME, str(self.plugin_dir),
                         os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
        try:
            with _portmap_lock() if ptype == "portmap" else contextlib.nullcontext():
                proc = subprocess.run([str(exe)], input=json.dumps(conf).encode(), env=env,
                                      capture_output=True, timeout=PLUGIN_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise NetworkError(f"CNI plugin {ptype} {command} timed out after {PLUGIN_TIMEOUT:.0f}s") from None
        except OSError as e:
            raise NetworkError(f"CNI plugin {ptype} {command} could not run: {e}") from None
        return parse_plugin_output(ptype, command, proc.returncode, proc.stdout, proc.stderr)

    # ---- host checks

    def _check_subnet_is_ours(self) -> None:
        """Refuse a subnet that overlaps an address on any host link but our own bridge."""
        if self._checked_subnet:
            return
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            # Addresses first, then the links' names: pods attaching at the same time may
            # create the bridge and give it the gateway address in between, and a link seen
            # only in the address dump would have no name, so our own bridge would look
            # like someone else's interface on the subnet.
            addresses = list(ipr.get_addr(family=2))  # read now, before the links
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            for addr in addresses:
                if addr["index"] not in names:
                    continue  # the link went away after the address dump: it is on no subnet now
                if names[addr["index"]] == self.bridge:
                    continue
                host_net = ipaddress.ip_network(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}", strict=False)
                if host_net.overlaps(self.net):
                    raise NetworkError(
                        f"pod subnet {self.subnet} overlaps {host_net} on host interface "
                        f"{names.get(addr['index'])}; choose another subnet")
        self._checked_subnet = True

    # ---- public

    def attach(self, pod_id: str, netns_path: str | os.PathLike[str],
               ports: Sequence[PortMapping] = ()) -> NetworkStatus:
        """Put the pod's namespace on the bridge; returns its address. Rolled back on failure."""
        validate_pod_id(pod_id)
        netns = str(netns_path)
        ports = list(ports)
        for p in ports:
            if not isinstance(p, PortMapping):
                raise NetworkError(f"attach: ports must be PortMapping values, got {p!r}")
        if not is_netns(netns):
            raise NetworkError(f"attach: {netns} is not a network namespace (pin it first)")
        self._check_subnet_is_ours()
        with self._lock():
            if self._read_record(pod_id) is not None:
                raise NetworkError(f"attach: pod {pod_id} is already attached to {self.bridge}; detach it first")
            problems = port_conflicts(ports, self._all_ports(), pod_id)
            if problems:
                raise NetworkError(f"attach: pod {pod_id}: " + "; ".join(problems))
            # Written first, so that ports are known to detach even if we die half-way.
            self._write_record(pod_id, _PodRecord(netns, ports))
        conflist = self._conflist()
        runtime = {"portMappings": [p.to_cni() for p in ports]}
        result: dict[str, Any] | None = None
        try:
            for plugin in conflist["plugins"]:
                if plugin["type"] == "portmap" and not ports:
                    continue
                out = self._run_plugin(plugin, "ADD", pod_id, netns, result, runtime)
                if out is not None:
                    result = out
            if result is None:
                raise NetworkError("attach: the plugins returned no result")
            status = status_from_result(result)
            self._write_record(pod_id, _PodRecord(netns, ports, result))
        except BaseException as e:
            try:
                self._teardown(pod_id, netns, ports, result)
            except NetworkError as cleanup_error:
                if isinstance(e, NetworkError):
                    raise NetworkError(f"{e}; and the rollback failed: {cleanup_error}") from e
            raise
        return status

    def attach_loopback_only(self, netns_path: str | os.PathLike[str]) -> None:
        """--net=none: bring lo up in the namespace, nothing else."""
        netns = str(netns_path)
        if not is_netns(netns):
            raise NetworkError(f"attach_loopback_only: {netns} is not a network namespace")
        self._run_plugin({"type": "loopback"}, "ADD", LOOPBACK_ONLY_ID, netns, None, {})

    def check(self, pod_id: str, netns_path: str | os.PathLike[str]) -> None:
        """CNI CHECK of loopback and bridge against the stored result (interface, address,
        routes, bridge membership); NetworkError if anything is off. portmap is not checked:
        Debian's portmap 1.1.1 CHECK always fails on hosts without IPv6 port chains."""
        validate_pod_id(pod_id)
        record = self._read_record(pod_id)
        if record is None or record.result is None:
            raise NetworkError(f"check: pod {pod_id} is not attached to {self.bridge}")
        runtime = {"portMappings": [p.to_cni() for p in record.ports]}
        for plugin in self._conflist()["plugins"]:
            if plugin["type"] == "portmap":
                continue
            self._run_plugin(plugin, "CHECK", pod_id, str(netns_path), record.result, runtime)

    def status(self, pod_id: str) -> NetworkStatus | None:
        record = self._read_record(pod_id)
        return status_from_result(record.result) if record and record.result else None

    def detach(self, pod_id: str, netns_path: str | os.PathLike[str] | None = None,
               ports: Sequence[PortMapping] | None = None) -> None:
        """Undo attach: free the address, remove port forwarding and the pod's interface.
        Idempotent; works when the namespace is gone. Ports default to those attached with."""
        validate_pod_id(pod_id)
        try:
            record = self._read_record(pod_id)
        except NetworkError:
            record = None  # unreadable: tear down from what we are told, then drop it
        netns = str(netns_path) if netns_path is not None else (record.netns if record else "")
        all_ports = list(record.ports) if record else []
        for p in ports or ():
            if p not in all_ports:
                all_ports.append(p)
        self._teardown(pod_id, netns, all_ports, record.result if record else None)

    def _teardown(self, pod_id: str, netns: str, ports: Sequence[PortMapping],
                  result: Mapping[str, Any] | None) -> None:
        live_netns = netns if netns and is_netns(netns) else ""
        runtime = {"portMappings": [p.to_cni() for p in ports]}
        plugin_errors: list[str] = []
        for plugin in reversed(self._conflist()["plugins"]):
            if plugin["type"] == "portmap" and not ports:
                continue
            try:
                self._run_plugin(plugin, "DEL", pod_id, live_netns, result, runtime)
            except NetworkError as e:
                plugin_errors.append(str(e))
        # Safety net for what a failed ADD or DEL can leave: the interface, NAT rules, the address.
        problems: list[str] = []
        steps: list[tuple[Callable[..., None], Any]] = [
            (self._remove_pod_interface, live_netns), (self._sweep_nat, pod_id), (self._release_addresses, pod_id)]
        for step, arg in steps:
            try:
                step(arg)
            except (OSError, NetworkError, subprocess.SubprocessError) as e:
                problems.append(str(e))
            except Exception as e:  # pyroute2 raises its own NetlinkError
                problems.append(f"{type(e).__name__}: {e}")
        if problems:
            raise NetworkError(f"detach of pod {pod_id} incomplete: " + "; ".join(problems + plugin_errors))
        with self._lock():
            self._record_path(pod_id).unlink(missing_ok=True)

    def _remove_pod_interface(self, netns: str) -> None:
        if not netns:
            return
        from pyroute2 import NetNS

        ns = NetNS(netns)
        try:
            for idx in ns.link_lookup(ifname=POD_IFNAME):
                ns.link("del", index=idx)
        finally:
            ns.close()

    def _iptables(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["iptables", "-w", "-t", "nat", *args], capture_output=True, text=True,
                              timeout=30, check=False)

    def _apply_nat_deletes(self, deletes: Sequence[Sequence[str]], chains: Sequence[str]) -> None:
        for d in deletes:
            self._iptables(*d)  # a rule already gone is fine
        for c in chains:
            self._iptables("-F", c)
        for c in chains:
            proc = self._iptables("-X", c)
            if proc.returncode != 0 and "No such file" not in proc.stderr and "does not exist" not in proc.stderr:
                raise NetworkError(f"cannot delete iptables chain {c}: {proc.stderr.strip()}")

    def _nat_save(self) -> str:
        try:
            proc = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True,
                                  timeout=30, check=False)
        except FileNotFoundError:
            return ""  # no iptables: the plugins could not have made rules either
        if proc.returncode != 0:
            raise NetworkError(f"iptables-save failed: {proc.stderr.strip()}")
        return proc.stdout

    def _sweep_nat(self, pod_id: str | None) -> None:
        # under portmap's lock: a jump into a shared chain that looks unused here must not be
        # deleted while a concurrent ADD puts its first mapping behind it
        with _portmap_lock():
            deletes, chains = stale_nat_rules(self._nat_save(), self.name, pod_id)
            if deletes or chains:
                self._apply_nat_deletes(deletes, chains)

    def _release_addresses(self, pod_id: str) -> None:
        adir = self.allocator_dir
        if not adir.is_dir():
            return
        fd = os.open(adir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # host-local's own lock
            files = {}
            for f in adir.iterdir():
                if f.name == "lock" or f.name.startswith("last_reserved_ip") or not f.is_file():
                    continue
                with contextlib.suppress(OSError):
                    files[f.name] = f.read_text()
            for name in allocations_of(files, pod_id):
                (adir / name).unlink(missing_ok=True)
        finally:
            os.close(fd)

    def allocated(self) -> dict[str, str]:
        """The allocator's view: address -> pod id."""
        out: dict[str, str] = {}
        adir = self.allocator_dir
        if adir.is_dir():
            for f in adir.iterdir():
                if f.name == "lock" or f.name.startswith("last_reserved_ip") or not f.is_file():
                    continue
                with contextlib.suppress(OSError):
                    out[f.name] = f.read_text().replace("\r\n", "\n").split("\n")[0].strip()
        return out

    def remove_bridge(self) -> None:
        """Tear the network down on the host: every pod's rules, the bridge, and portmap's
        shared chains if no pod of any network still forwards a port. Pods' namespaces are
        the caller's; run detach for each first."""
        self._sweep_nat(None)
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            for idx in ipr.link_lookup(ifname=self.bridge):
                ipr.link("del", index=idx)
        scaffold = portmap_scaffolding(self._nat_save())
        if scaffold is not None:
            self._apply_nat_deletes(*scaffold)
