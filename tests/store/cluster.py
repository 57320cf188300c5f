"""Clusters of gifee store members as real processes, on loopback or each member in its own network namespace.

Pieces:

* `LoopbackNetwork`: every member on 127.0.0.1 with its own free ports. No faults of the network.
* `NamespaceNetwork` (root only): a "switch" namespace holding a bridge, and one namespace per host
  with a veth pair to the bridge and an address from a private /24 (10.77.K.0/24, K free on this
  machine). The test process reaches the hosts through a veth pair between the root namespace
  (10.77.K.1) and the bridge. Hosts have no default route and IPv6 is off everywhere, so nothing
  talks to any address but these. Each host namespace holds an nftables table (`inet gifeet`) whose
  sets say which peers' packets are dropped: that is how partitions are made and healed.
  Names are ``gifeet-<pid>-<seq>-<host>`` (namespaces), ``gfe<pid hex>x<seq hex>`` (the root end of the
  switch's veth) and ``/sys/fs/cgroup/blkio/gifeet-<pid>-<seq>-<member>`` (slow disks), so that parallel
  runs never clash and what a crashed run left behind (its pid is gone) is found and removed by the
  next run (`cleanup_stale`). Deleting the namespaces removes every veth and the bridge with them.
* `Member` (a `ServerProcess` from the shared harness): one `gifee store` process with etcd's cluster
  flags, run through ``ip netns exec`` in namespace mode. Faults: `kill` (SIGKILL), `pause`/`resume`
  (SIGSTOP/SIGCONT of its process group), `restart` (same data dir), a slow disk (`Cluster.slow_disk`:
  a blkio cgroup v1 write-IOPS throttle on the data dir's block device; no kernel module needed).
* `Cluster`: N members, bootstrap, membership changes through the Cluster API, leader lookup,
  convergence waits (applied index, revision and HashKV equal), partitions (`partition`, `isolate`,
  `cut`, `one_way`, `heal`) and `close()`, which always kills every process and removes everything
  the network created, also when a test fails.

`one_way(a, b)` drops what a sends to b, but lets TCP segments without payload through (pure ACKs,
SYN, FIN, RST): a connection that b opened to a keeps carrying b's data to a, while a's data never
reaches b -- the "a can hear b, b cannot hear a" split, not merely a broken link both ways.

tc netem is not available (no kernel module), so there are no delays or losses other than drops.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import grpc
import pytest

from gifee.store.proto import rpc_pb2, rpc_pb2_grpc
from tests.store.reference import (
    _LIVE,
    ETCDCTL_BINARY,
    LOOPBACK,
    ServerProcess,
    ServerStartError,
    gifee_command,
)

T = TypeVar("T")

NETNS_PREFIX = "gifeet-"
LINK_PREFIX = "gfe"
CGROUP_BLKIO = Path("/sys/fs/cgroup/blkio")
SUBNET_LOCK = Path("/run/lock/gifeet-subnets.lock")
SUBNET_BASE = "10.77"
CLIENT_PORT = 2379
PEER_PORT = 2380
NFT_TABLE = "gifeet"
GRPC_OPTIONS = [
    ("grpc.enable_http_proxy", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
SETPRIV = shutil.which("setpriv")  # util-linux
CALL_TIMEOUT = 3.0
MEMBER_READY_TIMEOUT = 40.0

NetworkKind = Literal["loopback", "netns"]


# --------------------------------------------------------------------------- commands


def run(cmd: Sequence[str], *, input: str | None = None, check: bool = True, timeout: float = 20.0) -> str:
    """Run a command (ip, nft); returns stdout. Raises with stderr when check and it fails."""
    proc = subprocess.run(
        list(cmd),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def clean_env() -> dict[str, str]:
    """The environment for etcdctl and helpers: no etcdctl settings, no proxies (nothing leaves the box)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ETCDCTL_") and not k.lower().endswith("_proxy") and k.lower() != "no_proxy"
    }
    env["ETCDCTL_API"] = "3"
    return env


def etcdctl(
    endpoints: str | Sequence[str],
    *args: str,
    input: str | None = None,
    timeout: float = 30.0,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Debian's etcdctl 3.4 (API v3) against one or more endpoints (host:port)."""
    eps = endpoints if isinstance(endpoints, str) else ",".join(endpoints)
    cmd = [ETCDCTL_BINARY, "--endpoints", eps, "--dial-timeout", "3s", "--command-timeout", "10s", *args]
    proc = subprocess.run(
        cmd,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def etcdctl_json(endpoints: str | Sequence[str], *args: str) -> Any:
    proc = etcdctl(endpoints, *args, "-w", "json", check=True)
    return json.loads(proc.stdout)


def wait_for(what: str, predicate: Callable[[], T | None], timeout: float, interval: float = 0.2) -> T:
    """Poll predicate until it returns something truthy; fail the test after timeout."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (grpc.RpcError, OSError, RuntimeError, ValueError, AssertionError) as e:
            last_error = e
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


# --------------------------------------------------------------------------- root checks


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def require_netns() -> None:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_STALE_CHECKED = False
_STALE_LOCK = threading.Lock()


def cleanup_stale(*, include_own: bool = False) -> list[str]:
    """Remove namespaces, links and cgroups left by runs whose process is gone; returns what was removed.

    include_own: also what carries this process's pid (left by an earlier, crashed run that had the
    same pid): only safe before this process has created anything."""
    removed: list[str] = []

    def stale(pid: int) -> bool:
        return (include_own and pid == os.getpid()) or (pid != os.getpid() and not _pid_alive(pid))

    out = run(["ip", "netns", "list"], check=False)
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    ours = [n for n in names if n.startswith(NETNS_PREFIX)]
    for ns in sorted(ours, key=lambda n: n.endswith("-sw")):  # hosts first, the switch last
        m = re.match(rf"^{NETNS_PREFIX}(\d+)-", ns)
        if m and stale(int(m.group(1))):
            _delete_namespace(ns)
            removed.append(f"netns {ns}")
    out = run(["ip", "-o", "link", "show"], check=False)
    for line in out.splitlines():
        m = re.match(rf"^\d+:\s+({LINK_PREFIX}([0-9a-f]+)x[0-9a-f]+)[@:]", line)
        if m and stale(int(m.group(2), 16)):
            run(["ip", "link", "del", m.group(1)], check=False)
            removed.append(f"link {m.group(1)}")
    if CGROUP_BLKIO.is_dir():
        for d in CGROUP_BLKIO.glob(f"{NETNS_PREFIX}*"):
            m = re.match(rf"^{NETNS_PREFIX}(\d+)-", d.name)
            if m and stale(int(m.group(1))):
                _remove_cgroup(d)
                removed.append(f"cgroup {d}")
    return removed


def cleanup_stale_once() -> None:
    """cleanup_stale before this process creates its first namespace, link or cgroup (root only).

    Then, and only then, leftovers carrying our own pid are stale too."""
    global _STALE_CHECKED
    with _STALE_LOCK:
        if not _STALE_CHECKED and netns_unavailable() is None:
            cleanup_stale(include_own=True)
        _STALE_CHECKED = True


def _delete_namespace(ns: str) -> None:
    """Kill whatever still runs in one of our namespaces (our own leftovers), then delete it."""
    for _ in range(50):
        pids = [int(p) for p in run(["ip", "netns", "pids", ns], check=False).split()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    run(["ip", "netns", "del", ns], check=False)


def _remove_cgroup(path: Path) -> None:
    for _ in range(50):
        with contextlib.suppress(OSError):
            for pid in (path / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)


# --------------------------------------------------------------------------- networks


@dataclass
class Host:
    """Where a member runs: its address, and its namespace (None on loopback)."""

    name: str
    ip: str
    ns: str | None = None
    # nftables state: drop everything from / to these addresses; drop payload from these.
    drop_from: set[str] = field(default_factory=set)
    drop_to: set[str] = field(default_factory=set)
    data_from: set[str] = field(default_factory=set)

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns] if self.ns else []


class LoopbackNetwork:
    kind: NetworkKind = "loopback"
    client_ip = LOOPBACK

    def __init__(self) -> None:
        self.hosts: list[Host] = []

    def add_host(self) -> Host:
        host = Host(f"h{len(self.hosts) + 1}", LOOPBACK)
        self.hosts.append(host)
        return host

    def apply(self, host: Host) -> None:
        raise NotImplementedError("network faults need the namespace network (root)")

    def close(self) -> None:
        pass


_SEQ = itertools.count(1)
_LIVE_NETWORKS: set[NamespaceNetwork] = set()


@atexit.register
def _close_leftover_networks() -> None:  # if a fixture's finalizer never ran
    for net in list(_LIVE_NETWORKS):
        with contextlib.suppress(Exception):
            net.close()


class NamespaceNetwork:
    """A switch namespace with a bridge, one namespace per host, the test process on 10.77.K.1."""

    kind: NetworkKind = "netns"

    def __init__(self) -> None:
        require_netns()
        cleanup_stale_once()
        seq = next(_SEQ)
        pid = os.getpid()
        self.tag = f"{pid}-{seq}"
        self.switch = f"{NETNS_PREFIX}{self.tag}-sw"
        self.root_link = f"{LINK_PREFIX}{pid:x}x{seq:x}"
        self.hosts: list[Host] = []
        self.closed = False
        _LIVE_NETWORKS.add(self)
        try:
            self._create_switch()
        except BaseException:
            self.close()
            raise

    def _create_switch(self) -> None:
        sw = self.switch
        run(["ip", "netns", "add", sw])
        _disable_ipv6(sw)
        run(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", sw, "link", "set", "br0", "up"])
        SUBNET_LOCK.parent.mkdir(parents=True, exist_ok=True)
        with open(SUBNET_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.subnet = self._free_subnet()
            self.client_ip = f"{self.subnet}.1"
            run(["ip", "link", "add", self.root_link, "type", "veth", "peer", "name", "up0", "netns", sw])
            Path(f"/proc/sys/net/ipv6/conf/{self.root_link}/disable_ipv6").write_text("1")
            run(["ip", "addr", "add", f"{self.client_ip}/24", "dev", self.root_link])
            run(["ip", "link", "set", self.root_link, "up"])
        run(["ip", "-n", sw, "link", "set", "up0", "master", "br0"])
        run(["ip", "-n", sw, "link", "set", "up0", "up"])

    @staticmethod
    def _free_subnet() -> str:
        routes = run(["ip", "-4", "route", "show"]) + run(["ip", "-4", "addr", "show"])
        for k in range(1, 255):
            prefix = f"{SUBNET_BASE}.{k}"
            if f"{prefix}." not in routes:
                return prefix
        raise RuntimeError(f"no free {SUBNET_BASE}.K.0/24 subnet left")

    def add_host(self) -> Host:
        i = len(self.hosts) + 1
        ns = f"{NETNS_PREFIX}{self.tag}-h{i}"
        host = Host(f"h{i}", f"{self.subnet}.{10 + i}", ns)
        self.hosts.append(host)
        run(["ip", "netns", "add", ns])
        _disable_ipv6(ns)
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        port = f"h{i}"
        veth = ["link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns]
        run(["ip", "-n", self.switch, *veth])
        run(["ip", "-n", self.switch, "link", "set", port, "master", "br0"])
        run(["ip", "-n", self.switch, "link", "set", port, "up"])
        run(["ip", "-n", ns, "addr", "add", f"{host.ip}/24", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        # Payload-only drops (one_way): a TCP segment carries data when the IP length exceeds the
        # IP header (20, no options) plus the TCP header (doff words).
        data_rules = "\n".join(
            f"    ip saddr @data_from ip hdrlength 5 tcp doff {d} ip length > {20 + 4 * d} drop"
            for d in range(5, 16)
        )
        ruleset = f"""
table inet {NFT_TABLE} {{
  set drop_from {{ type ipv4_addr; }}
  set drop_to {{ type ipv4_addr; }}
  set data_from {{ type ipv4_addr; }}
  chain input {{
    type filter hook input priority 0; policy accept;
    ip saddr @drop_from drop
    ip saddr @data_from meta l4proto != tcp drop
    ip saddr @data_from ip hdrlength != 5 drop
{data_rules}
  }}
  chain output {{
    type filter hook output priority 0; policy accept;
    ip daddr @drop_to drop
  }}
}}
"""
        run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=ruleset)
        return host

    def apply(self, host: Host) -> None:
        """Load host's drop sets into its namespace's nftables table, atomically."""
        assert host.ns is not None
        lines = []
        for name, addrs in (
            ("drop_from", host.drop_from),
            ("drop_to", host.drop_to),
            ("data_from", host.data_from),
        ):
            lines.append(f"flush set inet {NFT_TABLE} {name}")
            if addrs:
                lines.append(f"add element inet {NFT_TABLE} {name} {{ {', '.join(sorted(addrs))} }}")
        run(["ip", "netns", "exec", host.ns, "nft", "-f", "-"], input="\n".join(lines) + "\n")

    def rules(self, host: Host) -> str:
        assert host.ns is not None
        return run(["ip", "netns", "exec", host.ns, "nft", "list", "table", "inet", NFT_TABLE])

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for host in self.hosts:
            if host.ns:
                _delete_namespace(host.ns)
        _delete_namespace(self.switch)
        if Path(f"/sys/class/net/{self.root_link}").exists():
            run(["ip", "link", "del", self.root_link], check=False)
        _LIVE_NETWORKS.discard(self)


def _disable_ipv6(ns: str) -> None:
    run(
        ["ip", "netns", "exec", ns, "sh", "-c",
         "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"],
    )  # fmt: skip


Network = LoopbackNetwork | NamespaceNetwork


# --------------------------------------------------------------------------- members


class Member(ServerProcess):
    """One `gifee store` member of a cluster (etcd's cluster flags), on its host."""

    def __init__(
        self,
        cluster: Cluster,
        name: str,
        host: Host,
        *,
        state: Literal["new", "existing"],
        initial_cluster: str,
        token: str,
        client_port: int | None = None,
        peer_port: int | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        super().__init__(
            name,
            [*host.prefix(), *gifee_command()],
            cluster.workdir / name,
            member_name=name,
            ready_timeout=MEMBER_READY_TIMEOUT,
        )
        self.cluster = cluster
        self.host = host
        if host.ns:
            self.client_port, self.peer_port = CLIENT_PORT, PEER_PORT
        if client_port is not None:
            self.client_port = client_port
        if peer_port is not None:
            self.peer_port = peer_port
        self.state = state
        self.initial_cluster = initial_cluster
        self.token = token
        self.extra = list(extra)
        self.member_id = 0  # learnt from the member's Status header (or MemberAdd)
        self.paused = False
        self.removed = False

    @property
    def name(self) -> str:
        return self.member_name

    @property
    def endpoint(self) -> str:
        return f"{self.host.ip}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.host.ip}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host.ip}:{self.peer_port}"

    def argv(self) -> list[str]:
        c = self.cluster
        return [
            *self.command,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-token", self.token,
            "--initial-cluster-state", self.state,
            "--heartbeat-interval", str(c.heartbeat_ms),
            "--election-timeout", str(c.election_ms),
            "--grpc-workers", str(c.grpc_workers),
            *(["--snapshot-count", str(c.snapshot_count)] if c.snapshot_count else []),
            *c.extra,
            *self.extra,
        ]  # fmt: skip

    # -- lifecycle (the shared harness's, plus faults)
    def launch(self) -> None:
        """The shared harness's launch, plus: the member dies with the thread that started it, so that
        a test run killed outright leaves no members behind (setpriv's PR_SET_PDEATHSIG survives exec;
        no preexec_fn: forking Python code in a process with gRPC threads can crash the child)."""
        if self.running:
            raise RuntimeError(f"{self.name} already running (pid {self.pid})")
        argv = self.argv()
        if SETPRIV:
            argv = [SETPRIV, "--pdeathsig", "KILL", "--", *argv]
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start #{self.starts + 1}: {shlex.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        self.starts += 1
        _LIVE.add(self)

    def start(self) -> None:
        """Launch and wait until it answers Maintenance.Status (never moves ports: peers know them)."""
        self.paused = False
        self.launch()
        self.wait_ready()
        self.cluster.learn_id(self)

    def crash(self) -> None:
        """kill -9 the member and every process of its group."""
        self.kill_group()
        self.paused = False

    def restart(self) -> None:
        """Start again on the same ports and data dir (after a crash or a stop)."""
        if self.running:
            self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP the member's process group."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.paused and self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGCONT)
        self.paused = False

    def stop(self, timeout: float = 10.0) -> int | None:
        self.resume()
        return super().stop(timeout)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running {timeout:.0f}s later\n--- log ---\n{self.log_tail()}"
            ) from None
        self.stop()  # sweeps the group
        return code

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"Member({self.name!r}, {self.endpoint}, id={self.member_id:x})"


def _channel(endpoint: str) -> grpc.Channel:
    return grpc.insecure_channel(endpoint, options=GRPC_OPTIONS)


@dataclass
class MemberState:
    member: Member
    status: rpc_pb2.StatusResponse

    @property
    def id(self) -> int:
        return int(self.status.header.member_id)

    @property
    def leader(self) -> int:
        return int(self.status.leader)


# --------------------------------------------------------------------------- the cluster


class Cluster:
    """N gifee members as processes; see the module docstring."""

    def __init__(
        self,
        workdir: Path,
        size: int,
        *,
        network: NetworkKind = "loopback",
        token: str | None = None,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
        snapshot_count: int | None = None,
        grpc_workers: int = 0,
        extra: Sequence[str] = (),
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.token = token or f"gifee-test-{os.getpid()}-{next(_SEQ)}"
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.snapshot_count = snapshot_count
        self.grpc_workers = grpc_workers
        self.extra = list(extra)
        self.members: list[Member] = []  # every member ever created, removed ones too
        self._names = itertools.count(1)
        self.cgroups: dict[str, Path] = {}
        cleanup_stale_once()
        self.network: Network = NamespaceNetwork() if network == "netns" else LoopbackNetwork()
        try:
            for _ in range(size):
                host = self.network.add_host()
                name = f"g{next(self._names)}"
                self.members.append(
                    Member(self, name, host, state="new", initial_cluster="", token=self.token)
                )
            initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
            for m in self.members:
                m.initial_cluster = initial
        except BaseException:
            self.close()
            raise

    # -- members
    @property
    def active(self) -> list[Member]:
        """Members not removed (running or not)."""
        return [m for m in self.members if not m.removed]

    @property
    def running(self) -> list[Member]:
        return [m for m in self.active if m.running]

    @property
    def serving(self) -> list[Member]:
        """Running and not paused."""
        return [m for m in self.active if m.running and not m.paused]

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    def by_id(self, member_id: int) -> Member:
        for m in self.members:
            if m.member_id == member_id and not m.removed:
                return m
        raise KeyError(f"{member_id:x}")

    def endpoints(self, members: Iterable[Member] | None = None) -> list[str]:
        return [m.endpoint for m in (self.active if members is None else members)]

    def start(self, members: Sequence[Member] | None = None, *, wait_leader: bool = True) -> None:
        """Launch members (default: all) in parallel, wait until each answers, then for a leader."""
        todo = list(self.active if members is None else members)
        for m in todo:
            m.launch()
        for m in todo:
            m.wait_ready()
        for m in todo:
            self.learn_id(m)
        if wait_leader:
            self.leader()

    def new_member(
        self,
        host: Host | None = None,
        *,
        name: str | None = None,
        token: str | None = None,
        state: Literal["new", "existing"] = "existing",
        client_port: int | None = None,
        peer_port: int | None = None,
        extra: Sequence[str] = (),
    ) -> Member:
        """A member that is not in the cluster yet (add it with MemberAdd or etcdctl, then start it).

        host: reuse a host (and its address; on loopback pass peer_port too) for a member that
        takes the place of a removed one."""
        host = host or self.network.add_host()
        name = name or f"g{next(self._names)}"
        member = Member(
            self, name, host, state=state, initial_cluster="", token=token or self.token,
            client_port=client_port, peer_port=peer_port, extra=extra,
        )  # fmt: skip
        others = [m for m in self.active if m.name != name]
        member.initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in [*others, member])
        self.members.append(member)
        return member

    def add_member(self, member: Member, *, learner: bool = False, timeout: float = 30.0) -> int:
        """MemberAdd through a serving member (retried while the cluster is busy); returns the new ID."""

        def attempt() -> int | None:
            for m in self.serving:
                if m is member:
                    continue
                try:
                    with _channel(m.endpoint) as ch:
                        resp = rpc_pb2_grpc.ClusterStub(ch).MemberAdd(
                            rpc_pb2.MemberAddRequest(peerURLs=[member.peer_url], isLearner=learner),
                            timeout=10.0,
                        )
                    return int(resp.member.ID)
                except grpc.RpcError as e:
                    if "Peer URLs already exists" in (e.details() or ""):
                        found = self._id_by_peer_url(member.peer_url)
                        if found:
                            return found
                    continue
            return None

        member.member_id = wait_for(f"MemberAdd of {member.name}", attempt, timeout, interval=0.5)
        return member.member_id

    def _id_by_peer_url(self, url: str) -> int:
        for m in self.serving:
            with contextlib.suppress(grpc.RpcError):
                for info in self.member_list(m):
                    if url in info.peerURLs:
                        return int(info.ID)
                return 0
        return 0

    def remove_member(self, member: Member, *, timeout: float = 30.0) -> None:
        """MemberRemove through a serving member other than `member` (retried)."""
        assert member.member_id, member

        def attempt() -> bool:
            for m in self.serving:
                if m is member:
                    continue
                try:
                    with _channel(m.endpoint) as ch:
                        rpc_pb2_grpc.ClusterStub(ch).MemberRemove(
                            rpc_pb2.MemberRemoveRequest(ID=member.member_id), timeout=10.0
                        )
                    return True
                except grpc.RpcError as e:
                    if "member not found" in (e.details() or ""):
                        return True
            return False

        wait_for(f"MemberRemove of {member.name}", attempt, timeout, interval=0.5)
        member.removed = True

    # -- queries
    def learn_id(self, member: Member, timeout: float = 30.0) -> int:
        """The member's ID, from its Status (retried: a busy machine may be slow to answer)."""
        return wait_for(f"{member.name}'s status", lambda: int(self.status(member).header.member_id), timeout)

    def status(self, member: Member, timeout: float = CALL_TIMEOUT) -> rpc_pb2.StatusResponse:
        with _channel(member.endpoint) as ch:
            resp: rpc_pb2.StatusResponse = rpc_pb2_grpc.MaintenanceStub(ch).Status(
                rpc_pb2.StatusRequest(), timeout=timeout
            )
        member.member_id = int(resp.header.member_id)
        return resp

    def states(self, members: Iterable[Member] | None = None) -> list[MemberState]:
        """Status of each member that answers."""
        out = []
        for m in self.serving if members is None else members:
            with contextlib.suppress(grpc.RpcError):
                out.append(MemberState(m, self.status(m)))
        return out

    def member_list(self, member: Member) -> list[rpc_pb2.Member]:
        with _channel(member.endpoint) as ch:
            resp = rpc_pb2_grpc.ClusterStub(ch).MemberList(rpc_pb2.MemberListRequest(), timeout=CALL_TIMEOUT)
        return list(resp.members)

    def hash_kv(self, member: Member, revision: int = 0) -> rpc_pb2.HashKVResponse:
        with _channel(member.endpoint) as ch:
            resp: rpc_pb2.HashKVResponse = rpc_pb2_grpc.MaintenanceStub(ch).HashKV(
                rpc_pb2.HashKVRequest(revision=revision), timeout=CALL_TIMEOUT
            )
        return resp

    def put(self, key: bytes, value: bytes, member: Member | None = None, timeout: float = 20.0) -> int:
        """A put through a member (default: any serving one), retried until acknowledged; returns its revision."""

        def attempt() -> int | None:
            for m in [member] if member is not None else self.serving:
                with contextlib.suppress(grpc.RpcError), _channel(m.endpoint) as ch:
                    resp = rpc_pb2_grpc.KVStub(ch).Put(
                        rpc_pb2.PutRequest(key=key, value=value), timeout=CALL_TIMEOUT
                    )
                    return int(resp.header.revision)
            return None

        return wait_for(f"put {key!r}", attempt, timeout)

    def get(
        self, key: bytes, member: Member, *, serializable: bool = False, prefix: bool = False
    ) -> list[Any]:
        req = rpc_pb2.RangeRequest(key=key, serializable=serializable)
        if prefix:
            req.range_end = _prefix_end(key)
        with _channel(member.endpoint) as ch:
            resp = rpc_pb2_grpc.KVStub(ch).Range(req, timeout=CALL_TIMEOUT)
        return list(resp.kvs)

    def leader(self, members: Sequence[Member] | None = None, timeout: float = 40.0) -> Member:
        """The leader every given (default: serving) member agrees on; waits for one."""

        def agreed() -> Member | None:
            group = list(self.serving if members is None else members)
            states = self.states(group)
            if len(states) < len(group):
                return None
            leaders = {s.leader for s in states}
            if len(leaders) != 1 or 0 in leaders:
                return None
            lid = leaders.pop()
            chosen = [s for s in states if s.id == lid]
            return chosen[0].member if chosen else None

        return wait_for("a leader all members agree on", agreed, timeout)

    def followers(self, leader: Member | None = None) -> list[Member]:
        leader = leader or self.leader()
        return [m for m in self.serving if m is not leader]

    def wait_converged(self, members: Sequence[Member] | None = None, timeout: float = 40.0) -> int:
        """Wait until the members (default: serving) applied the same index and hold the same data.

        Returns the common revision. Same data = HashKV at that revision is equal everywhere."""

        def converged() -> int | None:
            group = list(self.serving if members is None else members)
            states = self.states(group)
            if len(states) < len(group):
                return None
            applied = {(s.status.raftAppliedIndex, s.status.header.revision) for s in states}
            if len(applied) != 1 or any(s.status.raftIndex != s.status.raftAppliedIndex for s in states):
                return None
            revision = int(states[0].status.header.revision)
            hashes = {self.hash_kv(s.member, revision).hash for s in states}
            return revision if len(hashes) == 1 else None

        return wait_for("the members to converge", converged, timeout, interval=0.3)

    # -- network faults (namespace network only)
    def _hosts(self) -> list[Host]:
        return self.network.hosts

    def _apply_all(self) -> None:
        for host in self._hosts():
            self.network.apply(host)

    def heal(self) -> None:
        """Remove every network fault."""
        self._clear_rules()
        if self.network.kind == "netns":
            self._apply_all()

    def cut(self, pairs: Iterable[tuple[Member, Member]]) -> None:
        """Drop every packet between the members of each pair, both ways (added to the current faults)."""
        for a, b in pairs:
            if a.host is b.host:
                continue
            a.host.drop_from.add(b.host.ip)
            a.host.drop_to.add(b.host.ip)
            b.host.drop_from.add(a.host.ip)
            b.host.drop_to.add(a.host.ip)
        self._apply_all()

    def partition(self, *groups: Sequence[Member]) -> None:
        """Members in different groups cannot talk (members in no group form one more group).

        Replaces the current faults. Clients (the test process) still reach every member."""
        self._clear_rules()
        listed = {id(m) for g in groups for m in g}
        rest = [m for m in self.active if id(m) not in listed]
        all_groups = [list(g) for g in groups] + ([rest] if rest else [])
        pairs = [
            (a, b) for i, ga in enumerate(all_groups) for gb in all_groups[i + 1 :] for a in ga for b in gb
        ]
        self.cut(pairs)

    def isolate(self, member: Member) -> None:
        self.partition([member])

    def one_way(self, sender: Member, receiver: Member) -> None:
        """What sender sends to receiver is lost (TCP segments with payload and all other packets);
        what receiver sends to sender still arrives. Added to the current faults."""
        receiver.host.data_from.add(sender.host.ip)
        self.network.apply(receiver.host)

    def _clear_rules(self) -> None:
        for host in self._hosts():
            host.drop_from.clear()
            host.drop_to.clear()
            host.data_from.clear()

    # -- slow disk
    def slow_disk_unavailable(self) -> str | None:
        if not (CGROUP_BLKIO / "blkio.throttle.write_iops_device").exists():
            return "no blkio cgroup (v1) with throttling"
        if _block_device(self.workdir) is None:
            return f"{self.workdir} is not on a block device"
        return None

    def slow_disk(self, member: Member, write_iops: int) -> None:
        """Throttle the member's writes to the data dir's disk to write_iops operations per second.

        Every process of the member goes into a blkio cgroup of its own; a restarted member is not
        in it (call again)."""
        reason = self.slow_disk_unavailable()
        if reason:
            raise RuntimeError(reason)
        device = _block_device(member.data_dir.parent)
        assert device is not None
        path = self.cgroups.get(member.name)
        if path is None:
            tag = (
                self.network.tag
                if isinstance(self.network, NamespaceNetwork)
                else f"{os.getpid()}-{next(_SEQ)}"
            )
            path = CGROUP_BLKIO / f"{NETNS_PREFIX}{tag}-{member.name}"
            path.mkdir(exist_ok=True)
            self.cgroups[member.name] = path
        (path / "blkio.throttle.write_iops_device").write_text(f"{device} {write_iops}\n")
        for pid in member.group_pids():
            with contextlib.suppress(OSError):
                (path / "cgroup.procs").write_text(f"{pid}\n")

    def fast_disk(self, member: Member) -> None:
        path = self.cgroups.get(member.name)
        device = _block_device(member.data_dir.parent)
        if path is not None and device is not None:
            with contextlib.suppress(OSError):
                (path / "blkio.throttle.write_iops_device").write_text(f"{device} 0\n")

    # -- teardown
    def close(self) -> None:
        """Kill every member's processes, remove the network and the cgroups. Idempotent."""
        for m in self.members:
            with contextlib.suppress(Exception):
                m.resume()
                m.kill_group()
        for path in self.cgroups.values():
            _remove_cgroup(path)
        self.cgroups.clear()
        self.network.close()

    def logs(self, lines: int = 30) -> str:
        return "\n".join(f"--- {m.name} ({m.endpoint}) ---\n{m.log_tail(lines)}" for m in self.members)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _prefix_end(prefix: bytes) -> bytes:
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"


def _block_device(path: Path) -> str | None:
    """'MAJOR:MINOR' of the whole disk that holds path, or None (tmpfs, overlay, ...)."""
    path.mkdir(parents=True, exist_ok=True)
    dev = os.stat(path).st_dev
    node = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if os.major(dev) == 0 or not node.exists():
        return None
    if (node / "partition").exists():
        return (node.resolve().parent / "dev").read_text().strip()
    return f"{os.major(dev)}:{os.minor(dev)}"


@contextlib.contextmanager
def make_clusters(root: Path) -> Iterator[Callable[..., Cluster]]:
    """A factory of clusters under root; every cluster it made is closed on exit, whatever happened."""
    made: list[Cluster] = []

    def make(size: int, **kwargs: Any) -> Cluster:
        cluster = Cluster(root / f"c{len(made) + 1}", size, **kwargs)
        made.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for c in made:
            c.close()


__all__ = [
    "Cluster",
    "Host",
    "Member",
    "ServerStartError",
    "cleanup_stale",
    "etcdctl",
    "etcdctl_json",
    "make_clusters",
    "netns_unavailable",
    "require_netns",
    "wait_for",
]
