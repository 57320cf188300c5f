"""What a pod is, decided from the image's config and the command line.

Rules, all in this module and all without I/O:
- Quantities read as Kubernetes (and rkt) read them: `--cpu=750m` is 750
  millicores, `--cpu=1.5` 1500; `--memory=128M` is 128*10^6 bytes, `128Mi` 2^27.
- The command is the image's Entrypoint followed by its Cmd; arguments after `--`
  replace Cmd (as `docker run` does), so an image with an entrypoint keeps it.
- The environment is the image's Env, then PATH if the image set none, then each
  `--env`, later settings winning.
- Options that cannot be honoured are refused with a message naming the option,
  before anything is created.
A PodSpec is plain data: launch.py turns it into namespaces, mounts and a process,
and the pod directory keeps it as JSON so that later commands (status, enter,
restart by an agent) see exactly what was asked for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NET_MODES = ("default", "host", "none", "pod:UUID")
JOIN_PREFIX = "pod:"  # --net=pod:UUID shares a running pod's network, UTS and IPC namespaces


def joined_pod(net: str) -> str | None:
    """The pod whose namespaces --net=pod:UUID joins (how a Kubernetes pod's containers
    share one network: each runs as a gifee pod joined to the pod's sandbox)."""
    return net[len(JOIN_PREFIX):] if net.startswith(JOIN_PREFIX) else None

# The capabilities a pod's processes keep: rkt's and Docker's default set.
DEFAULT_CAPABILITIES = frozenset({
    0,   # CAP_CHOWN
    1,   # CAP_DAC_OVERRIDE
    3,   # CAP_FOWNER
    4,   # CAP_FSETID
    5,   # CAP_KILL
    6,   # CAP_SETGID
    7,   # CAP_SETUID
    8,   # CAP_SETPCAP
    10,  # CAP_NET_BIND_SERVICE
    13,  # CAP_NET_RAW
    18,  # CAP_SYS_CHROOT
    27,  # CAP_MKNOD
    29,  # CAP_AUDIT_WRITE
    31,  # CAP_SETFCAP
})


class SpecError(ValueError):
    """An option or image config that cannot make a pod; the message names it."""


_DECIMAL_SUFFIX = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_BINARY_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
# A pattern, not a compiled regex: compiled (and cached by re) only when a quantity is given.
_QUANTITY = r"^([0-9]+(?:\.[0-9]+)?)([a-zA-Z]{0,2})$"


def parse_cpu(text: str) -> int:
    """Millicores from a CPU quantity: "750m" -> 750, "2" -> 2000, "0.25" -> 250."""
    from decimal import Decimal  # only with a CPU option: not on every pod's start

    m = re.match(_QUANTITY, text.strip())
    if not m or m.group(2) not in ("", "m"):
        raise SpecError(f"--cpu={text}: not a CPU quantity (examples: 750m, 1, 1.5)")
    value = Decimal(m.group(1))
    millis = value if m.group(2) == "m" else value * 1000
    if millis != millis.to_integral_value() or millis <= 0:
        raise SpecError(f"--cpu={text}: must be a positive whole number of millicores")
    return int(millis)


def parse_memory(text: str) -> int:
    """Bytes from a memory quantity: "128M" -> 128000000, "128Mi" -> 134217728."""
    from decimal import Decimal, InvalidOperation  # only with --memory

    m = re.match(_QUANTITY, text.strip())
    if not m:
        raise SpecError(f"--memory={text}: not a memory quantity (examples: 128M, 128Mi, 1G)")
    number, suffix = m.groups()
    factor = _DECIMAL_SUFFIX.get(suffix) or _BINARY_SUFFIX.get(suffix)
    if factor is None:
        raise SpecError(f"--memory={text}: unknown suffix {suffix!r}")
    try:
        value = Decimal(number) * factor
    except InvalidOperation:
        raise SpecError(f"--memory={text}: not a number") from None
    if value != value.to_integral_value() or value < 4096:
        raise SpecError(f"--memory={text}: must be a whole number of bytes, at least 4096")
    return int(value)


# PodSpec and its parts are named tuples: immutable values like frozen dataclasses,
# but defined in a tenth of the time (dataclass() compiles six methods per class on
# every start of `gifee run`, and importing dataclasses brings inspect: 6-9 ms).
class PortMap(NamedTuple):
    """A host port forwarded to a pod port (--port)."""

    host_port: int
    pod_port: int
    protocol: str = "tcp"
    host_ip: str = ""


def parse_port(text: str) -> PortMap:
    """`HOST:POD`, `HOST:POD/udp` or `IP:HOST:POD`."""
    body, _, protocol = text.partition("/")
    protocol = protocol or "tcp"
    if protocol not in ("tcp", "udp"):
        raise SpecError(f"--port={text}: protocol must be tcp or udp")
    parts = body.rsplit(":", 2)
    if len(parts) == 2:
        host_ip, host, pod = "", parts[0], parts[1]
    elif len(parts) == 3:
        host_ip, host, pod = parts
    else:
        raise SpecError(f"--port={text}: expected HOST:POD")
    try:
        host_port, pod_port = int(host), int(pod)
    except ValueError:
        raise SpecError(f"--port={text}: ports must be numbers") from None
    if not (0 < host_port < 65536 and 0 < pod_port < 65536):
        raise SpecError(f"--port={text}: ports must be between 1 and 65535")
    return PortMap(host_port, pod_port, protocol, host_ip)


class Volume(NamedTuple):
    """A host path bound into the pod (--volume)."""

    host_path: str
    pod_path: str
    read_only: bool = False


def parse_volume(text: str) -> Volume:
    """`HOST:POD` or `HOST:POD:ro` (or `:rw`); both paths absolute."""
    parts = text.split(":")
    mode = "rw"
    if len(parts) == 3:
        mode = parts.pop()
    if len(parts) != 2 or mode not in ("ro", "rw"):
        raise SpecError(f"--volume={text}: expected HOST:POD[:ro]")
    host, pod = parts
    if not host.startswith("/") or not pod.startswith("/"):
        raise SpecError(f"--volume={text}: both paths must be absolute")
    if any(part == ".." for part in pod.split("/")):
        raise SpecError(f"--volume={text}: the pod path may not contain '..'")
    if pod.rstrip("/") in ("", "/proc", "/dev", "/sys"):
        raise SpecError(f"--volume={text}: cannot mount over {pod}")
    return Volume(host, pod.rstrip("/") or "/", mode == "ro")


def parse_hosts_entry(text: str) -> tuple[str, str]:
    """`ADDRESS=NAME[,NAME...]` (rkt's --hosts-entry) -> one /etc/hosts line's parts."""
    address, sep, names = text.partition("=")
    if not sep or not address or not names or any(c.isspace() for c in text):
        raise SpecError(f"--hosts-entry={text}: expected ADDRESS=NAME[,NAME...]")
    return address, " ".join(n for n in names.split(",") if n)


def parse_env(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or "\0" in text:
        raise SpecError(f"--env={text}: expected NAME=VALUE")
    return name, value


class Limits(NamedTuple):
    """The pod's cgroup limits; None is no limit."""

    cpu_millis: int | None = None
    memory_bytes: int | None = None
    pids: int | None = None
    cpu_request_millis: int | None = None  # a relative weight (cpu.shares / cpu.weight), not a cap


class Dns(NamedTuple):
    """What the pod's /etc/resolv.conf says instead of the host's (rkt's --dns flags)."""

    servers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def resolv_conf(self) -> str:
        lines = [f"nameserver {s}" for s in self.servers]
        if self.search:
            lines.append("search " + " ".join(self.search))
        if self.options:
            lines.append("options " + " ".join(self.options))
        return "\n".join(lines) + "\n"


class PodSpec(NamedTuple):
    """Everything a pod is, as plain data (see the module's docstring)."""

    image_name: str
    image_digest: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    cwd: str
    user: str
    hostname: str
    net: str = "default"
    ports: tuple[PortMap, ...] = ()
    volumes: tuple[Volume, ...] = ()
    limits: Limits = Limits()
    readonly_root: bool = False
    interactive: bool = False
    capabilities: frozenset[int] = DEFAULT_CAPABILITIES
    private_users: bool = False
    dns: Dns | None = None  # None: the host's resolv.conf
    hosts_entries: tuple[tuple[str, str], ...] = ()  # (address, names) lines added to /etc/hosts
    restart: str = "no"  # no | on-failure | always (--restart)
    restart_max: int = 0  # on-failure:N: at most N restarts (0: no limit)

    def replace(self, **changes: Any) -> PodSpec:
        """A copy with `changes`."""
        return self._replace(**changes)

    def to_json(self) -> dict[str, Any]:
        data = dict(self._asdict())
        # The named tuples as JSON objects (as tuples, JSON would make them arrays).
        data["ports"] = [p._asdict() for p in self.ports]
        data["volumes"] = [v._asdict() for v in self.volumes]
        data["limits"] = self.limits._asdict()
        data["dns"] = self.dns._asdict() if self.dns is not None else None
        data["capabilities"] = sorted(self.capabilities)
        return data

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> PodSpec:
        return PodSpec(
            image_name=data["image_name"],
            image_digest=data["image_digest"],
            argv=tuple(data["argv"]),
            env=tuple((k, v) for k, v in data["env"]),
            cwd=data["cwd"],
            user=data["user"],
            hostname=data["hostname"],
            net=data["net"],
            ports=tuple(PortMap(**p) for p in data["ports"]),
            volumes=tuple(Volume(**v) for v in data["volumes"]),
            limits=Limits(**data["limits"]),
            readonly_root=data["readonly_root"],
            interactive=data["interactive"],
            capabilities=frozenset(data["capabilities"]),
            private_users=bool(data.get("private_users", False)),
            dns=Dns(**{k: tuple(v) for k, v in data["dns"].items()}) if data.get("dns") else None,
            hosts_entries=tuple((a, n) for a, n in data.get("hosts_entries", ())),
            restart=str(data.get("restart", "no")),
            restart_max=int(data.get("restart_max", 0)),
        )


RESTART_POLICIES = ("no", "on-failure", "always")


def parse_restart(text: str) -> tuple[str, int]:
    """--restart=no|always|on-failure[:N] (Docker's and Podman's form) -> (policy, max restarts or 0)."""
    policy, _, count = text.partition(":")
    if policy not in RESTART_POLICIES or (count and policy != "on-failure"):
        raise SpecError(f"--restart={text}: must be no, always, or on-failure[:N]")
    if not count:
        return policy, 0
    if not count.isdigit() or int(count) < 1:
        raise SpecError(f"--restart={text}: N must be a whole number of at least 1")
    return policy, int(count)


def make_spec(
    *,
    image_name: str,
    image_digest: str,
    image_config: Mapping[str, Any],
    hostname: str,
    args: Sequence[str] = (),
    env: Sequence[str] = (),
    cpu: str | None = None,
    memory: str | None = None,
    pids: int | None = None,
    net: str = "default",
    ports: Sequence[str] = (),
    volumes: Sequence[str] = (),
    readonly_root: bool = False,
    interactive: bool = False,
    private_users: bool = False,
    cpu_request: str | None = None,
    dns: Sequence[str] = (),
    dns_search: Sequence[str] = (),
    dns_opt: Sequence[str] = (),
    hosts_entries: Sequence[str] = (),
    restart: str = "no",
) -> PodSpec:
    """The pod that `gifee run` options ask for, over an image's OCI config."""
    config = image_config.get("config") or {}
    entrypoint = list(config.get("Entrypoint") or [])
    cmd = list(args) if args else list(config.get("Cmd") or [])
    argv = entrypoint + cmd
    if not argv:
        raise SpecError(f"{image_name} has no entrypoint or command: give one after --")
    merged: dict[str, str] = {}
    for item in config.get("Env") or []:
        name, _, value = str(item).partition("=")
        merged[name] = value
    merged.setdefault("PATH", DEFAULT_PATH)
    for item in env:
        name, value = parse_env(item)
        merged[name] = value
    if net not in NET_MODES and not joined_pod(net):
        raise SpecError(f"--net={net}: must be one of {', '.join(NET_MODES)}")
    if joined_pod(net) and private_users:
        raise SpecError("--net=pod:UUID and --private-users exclude each other")
    port_maps = tuple(parse_port(p) for p in ports)
    if port_maps and net != "default":
        raise SpecError(f"--port needs --net=default (the pod's own network); got --net={net}")
    if pids is not None and pids < 1:
        raise SpecError(f"--pids={pids}: must be at least 1")
    restart_policy, restart_max = parse_restart(restart)
    return PodSpec(
        image_name=image_name,
        image_digest=image_digest,
        argv=tuple(argv),
        env=tuple(merged.items()),
        cwd=str(config.get("WorkingDir") or "/"),
        user=str(config.get("User") or "0:0"),
        hostname=hostname,
        net=net,
        ports=port_maps,
        volumes=tuple(parse_volume(v) for v in volumes),
        limits=Limits(
            cpu_millis=parse_cpu(cpu) if cpu else None,
            memory_bytes=parse_memory(memory) if memory else None,
            pids=pids,
            cpu_request_millis=parse_cpu(cpu_request) if cpu_request else None,
        ),
        readonly_root=readonly_root,
        interactive=interactive,
        private_users=private_users,
        dns=Dns(tuple(dns), tuple(dns_search), tuple(dns_opt)) if dns or dns_search or dns_opt else None,
        hosts_entries=tuple(parse_hosts_entry(h) for h in hosts_entries),
        restart=restart_policy,
        restart_max=restart_max,
    )
