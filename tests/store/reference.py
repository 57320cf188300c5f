"""Harness for the differential tests: run the same script on Debian's etcd and on gifee.

Pieces:

* `ServerProcess` starts a store command (etcd's flag names) on free loopback ports in a
  data dir, waits until `Maintenance.Status` answers, and stops it, always.  It also
  supports `kill(signal)` and `restart()` (same ports, same data dir) for crash tests.
* `Client` holds grpc.aio stubs for every etcd service on one channel.
* `Normalizer` turns responses and errors into plain, comparable Python values after
  removing what legitimately differs between two servers (cluster/member ids, raft
  terms, server-chosen lease ids, remaining lease TTLs).
* `Run` records a script's normalized answers; `differential()` runs one script against
  both servers concurrently and fails with a unified diff when the answers differ.
* `etcdctl()` runs Debian's etcdctl (API v3) against one endpoint.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import difflib
import enum
import hashlib
import json
import os
import pprint
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from gifee.store.proto import (
    rpc_pb2,
    rpc_pb2_grpc,
    v3election_pb2_grpc,
    v3lock_pb2_grpc,
)

ETCD_BINARY = "/usr/bin/etcd"
ETCDCTL_BINARY = "/usr/bin/etcdctl"
GIFEE_CMD_ENV = "GIFEE_TEST_STORE_CMD"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
RPC_TIMEOUT = 5.0

LOOPBACK = "127.0.0.1"


# --------------------------------------------------------------------------- binaries


def require_etcd() -> None:
    """Fail (never skip) when the reference binaries are missing: the test command installs them."""
    missing = [b for b in (ETCD_BINARY, ETCDCTL_BINARY) if not os.access(b, os.X_OK)]
    if missing:
        pytest.fail(
            f"reference etcd binaries missing: {', '.join(missing)}. The differential tests need "
            "Debian's etcd 3.4: `apt-get install -y etcd-server etcd-client`.",
            pytrace=False,
        )


def gifee_command() -> list[str]:
    """The command prefix that starts the store under test (flags are appended)."""
    override = os.environ.get(GIFEE_CMD_ENV, "").strip()
    if override:
        return shlex.split(override)
    return [sys.executable, "-m", "gifee", "store"]


def candidate_label() -> str:
    cmd = gifee_command()
    if os.environ.get(GIFEE_CMD_ENV, "").strip():
        return Path(cmd[0]).name
    return "gifee"


# --------------------------------------------------------------------------- processes


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (loopback only), never one handed out before."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class ServerStartError(RuntimeError):
    pass


_LIVE: set[ServerProcess] = set()


@atexit.register
def _kill_leftovers() -> None:  # last resort if a fixture's finalizer never ran
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.kill(signal.SIGKILL)


class ServerProcess:
    """One store process (etcd or gifee) speaking etcd's v3 gRPC API on loopback.

    `command` is the program prefix; etcd's flags are appended by `argv()`.
    Output (stdout and stderr) goes to `log_path`, appended across restarts.
    """

    def __init__(
        self,
        label: str,
        command: Sequence[str],
        workdir: Path,
        *,
        member_name: str = "ref",
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self.label = label
        self.command = list(command)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "server.log"
        self.member_name = member_name
        self.ready_timeout = ready_timeout
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._swept: set[int] = set()

    # -- addresses
    @property
    def endpoint(self) -> str:
        """host:port for gRPC channels and etcdctl --endpoints."""
        return f"{LOOPBACK}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://{LOOPBACK}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{LOOPBACK}:{self.peer_port}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.label} is not started")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def argv(self) -> list[str]:
        return [
            *self.command,
            "--name", self.member_name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", f"{self.member_name}={self.peer_url}",
        ]  # fmt: skip

    # -- lifecycle
    def launch(self) -> None:
        """Start the process without waiting for it to serve."""
        if self.running:
            raise RuntimeError(f"{self.label} already running (pid {self.pid})")
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start #{self.starts + 1}: {shlex.join(self.argv())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        self.starts += 1
        _LIVE.add(self)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until Maintenance.Status answers; on death or timeout raise with the log tail."""
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        with grpc.insecure_channel(self.endpoint) as channel:
            stub = rpc_pb2_grpc.MaintenanceStub(channel)
            while True:
                assert self.proc is not None
                code = self.proc.poll()
                if code is not None:
                    _LIVE.discard(self)
                    raise ServerStartError(
                        f"{self.label} exited with code {code} before serving on {self.endpoint}\n"
                        f"command: {shlex.join(self.argv())}\n--- log tail ---\n{self.log_tail()}"
                    )
                try:
                    stub.Status(rpc_pb2.StatusRequest(), timeout=0.5)
                    return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServerStartError(
                        f"{self.label} did not answer Maintenance.Status on {self.endpoint} within "
                        f"{self.ready_timeout:.0f}s\ncommand: {shlex.join(self.argv())}\n"
                        f"--- log tail ---\n{self.log_tail()}"
                    )
                time.sleep(0.05)

    def start(self) -> None:
        """Launch and wait until ready.

        A fresh start (no data dir yet) that dies on a port clash (the free port was taken
        between probing and binding) is retried on new ports; a start on existing data never is.
        """
        fresh = not self.data_dir.exists()
        self.launch()
        for attempt in range(3):
            try:
                self.wait_ready()
                return
            except ServerStartError:
                if attempt == 2 or not fresh or not self._port_clash():
                    raise
                self._new_ports()
                self.launch()

    def _port_clash(self) -> bool:
        return "address already in use" in self.log_tail(10)

    def _new_ports(self) -> None:
        self.client_port, self.peer_port = free_port(), free_port()
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` seconds. Returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait(timeout)
        finally:
            _LIVE.discard(self)
            # The server leads its own process group (start_new_session): sweep any helper
            # processes it left behind (e.g. worker processes orphaned by a kill -9).
            # Only once per process, right after it ended, so the group id cannot have been reused.
            if proc.returncode is not None and proc.pid not in self._swept:
                self._swept.add(proc.pid)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
        return proc.returncode

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` (default: kill -9). For SIGKILL, wait until the process is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait(STOP_TIMEOUT)
            _LIVE.discard(self)

    def group_pids(self) -> list[int]:
        """Live (non-zombie) processes of the server's process group: gifee's core and its gRPC workers."""
        if self.proc is None:
            return []
        pids = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError):
                stat = Path(entry.path, "stat").read_text()
                state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
                if int(pgrp) == self.proc.pid and state != "Z":
                    pids.append(int(entry.name))
        return pids

    def kill_group(self) -> None:
        """SIGKILL the server and every process left in its group (its workers)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:  # the leader lives, so the group id is certainly ours
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.kill(signal.SIGKILL)
        self.stop()
        if self.group_pids():  # orphans keep the group (and its id) alive: still ours
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def restart(self) -> None:
        """Stop (if running) and start again on the same ports with the same data dir."""
        self.stop()
        self.launch()
        self.wait_ready()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ServerProcess({self.label!r}, endpoint={self.endpoint!r})"


@dataclasses.dataclass
class ServerPair:
    reference: ServerProcess  # Debian's etcd
    candidate: ServerProcess  # gifee (or the GIFEE_TEST_STORE_CMD override)

    def __iter__(self) -> Any:
        return iter((self.reference, self.candidate))


def start_all(servers: Iterable[ServerProcess]) -> None:
    """Start fresh servers at once and wait for all of them (start-up runs in parallel)."""
    servers = list(servers)
    try:
        for s in servers:
            s.launch()
        for s in servers:
            try:
                s.wait_ready()
            except ServerStartError:
                if s.starts > 1 or not s._port_clash():
                    raise
                s._new_ports()
                s.start()
    except BaseException:
        for s in servers:
            s.stop()
        raise


# --------------------------------------------------------------------------- clients


class Client:
    """grpc.aio stubs for every service, on one channel to one server."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        # etcd's clientv3 sends up to MaxInt32 and accepts up to MaxInt32: do the same.
        opts = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self.channel = grpc.aio.insecure_channel(endpoint, options=opts)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.watch = rpc_pb2_grpc.WatchStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.cluster = rpc_pb2_grpc.ClusterStub(self.channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(self.channel)
        self.lock = v3lock_pb2_grpc.LockStub(self.channel)
        self.election = v3election_pb2_grpc.ElectionStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()


# --------------------------------------------------------------------------- normalization

# (message full name, field name) -> kind of identifier
_LEASE_FIELDS = {
    ("etcdserverpb.LeaseGrantResponse", "ID"),
    ("etcdserverpb.LeaseTimeToLiveResponse", "ID"),
    ("etcdserverpb.LeaseKeepAliveResponse", "ID"),
    ("etcdserverpb.LeaseStatus", "ID"),
    ("mvccpb.KeyValue", "lease"),
    ("v3electionpb.LeaderKey", "lease"),
}
_MEMBER_FIELDS = {
    ("etcdserverpb.Member", "ID"),
    ("etcdserverpb.AlarmMember", "memberID"),
    ("etcdserverpb.StatusResponse", "leader"),
}
# Raft bookkeeping and sizes: no two implementations agree on these.
_DROPPED_FIELDS = {
    ("etcdserverpb.ResponseHeader", "cluster_id"),
    ("etcdserverpb.ResponseHeader", "member_id"),
    ("etcdserverpb.ResponseHeader", "raft_term"),
    ("etcdserverpb.StatusResponse", "version"),
    ("etcdserverpb.StatusResponse", "raftIndex"),
    ("etcdserverpb.StatusResponse", "raftTerm"),
    ("etcdserverpb.StatusResponse", "raftAppliedIndex"),
    ("etcdserverpb.StatusResponse", "dbSize"),
    ("etcdserverpb.StatusResponse", "dbSizeInUse"),
}
_UNORDERED_FIELDS = {
    ("etcdserverpb.LeaseLeasesResponse", "leases"),
    ("etcdserverpb.LeaseTimeToLiveResponse", "keys"),
}
_KEY_WITH_LEASE = re.compile(rb"^(.*/)([0-9a-f]+)$", re.S)


class Normalizer:
    """Maps server-chosen identifiers to ordinal names, in order of first appearance.

    Lease ids the script chose itself (`fixed_leases`) stay as numbers so that a server
    ignoring a requested id shows up in the diff.
    """

    def __init__(self) -> None:
        self.leases: dict[int, str] = {}
        self.members: dict[int, str] = {}
        self.fixed_leases: set[int] = set()
        self.strings: dict[str, str] = {}  # exact string replacements (the server's own URLs)

    def lease(self, lease_id: int) -> str | int:
        if lease_id in self.fixed_leases:
            return lease_id
        if lease_id not in self.leases:
            self.leases[lease_id] = f"<lease#{len(self.leases) + 1}>"
        return self.leases[lease_id]

    def member(self, member_id: int) -> str:
        if member_id not in self.members:
            self.members[member_id] = f"<member#{len(self.members) + 1}>"
        return self.members[member_id]

    def known_lease_name(self, lease_id: int) -> str | None:
        if lease_id in self.fixed_leases:
            return str(lease_id)
        return self.leases.get(lease_id)

    # -- values
    def raw_bytes(self, b: bytes) -> str:
        if len(b) > 256:
            return f"<{len(b)} bytes sha1={hashlib.sha1(b).hexdigest()[:12]}>"
        try:
            text = b.decode("utf-8")
        except UnicodeDecodeError:
            return repr(b)
        return text if text.isprintable() else repr(b)

    def key_bytes(self, b: bytes) -> str:
        """A key; lock/election keys end in the owner's lease id in hex: name that lease."""
        m = _KEY_WITH_LEASE.match(b)
        if m:
            name = self.known_lease_name(int(m.group(2), 16))
            if name is not None:
                return self.raw_bytes(m.group(1)) + name
        return self.raw_bytes(b)

    def message(self, msg: Message) -> dict[str, Any]:
        full = msg.DESCRIPTOR.full_name
        if full == "etcdserverpb.ResponseHeader" and msg.member_id:  # type: ignore[attr-defined]
            self.member(msg.member_id)  # type: ignore[attr-defined]
        out: dict[str, Any] = {}
        for fd, value in msg.ListFields():
            key = (full, fd.name)
            if key in _DROPPED_FIELDS:
                continue
            if fd.is_repeated:
                items = [self._value(full, fd, v) for v in value]
                if key in _UNORDERED_FIELDS:  # etcd fills these from Go maps: order is random
                    items.sort(key=repr)
                out[fd.name] = items
            else:
                out[fd.name] = self._value(full, fd, value)
        if full == "etcdserverpb.LeaseTimeToLiveResponse":
            self._ttl(out)
        return out

    def _ttl(self, out: dict[str, Any]) -> None:
        """Remaining TTL depends on timing: keep -1 (unknown lease) and check the range."""
        ttl = out.get("TTL", 0)
        granted = out.get("grantedTTL", 0)
        if isinstance(ttl, int) and ttl > 0:
            out["TTL"] = (
                "<remaining in (0, grantedTTL]>" if ttl <= granted else f"<remaining {ttl} > granted>"
            )

    def _value(self, full: str, fd: FieldDescriptor, value: Any) -> Any:
        key = (full, fd.name)
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            return self.message(value)
        if key in _LEASE_FIELDS:
            return self.lease(int(value)) if value else 0
        if key in _MEMBER_FIELDS:
            return self.member(int(value)) if value else 0
        if fd.type == FieldDescriptor.TYPE_ENUM:
            ev = fd.enum_type.values_by_number.get(value) if fd.enum_type is not None else None
            return ev.name if ev is not None else value
        if fd.type == FieldDescriptor.TYPE_BYTES:
            if fd.name == "key" or full == "etcdserverpb.LeaseTimeToLiveResponse":
                return self.key_bytes(value)
            return self.raw_bytes(value)
        if fd.type == FieldDescriptor.TYPE_STRING:
            return self.strings.get(value, value)
        return value

    def error(self, err: grpc.RpcError) -> dict[str, Any]:
        code = err.code() if hasattr(err, "code") else None
        details = err.details() if hasattr(err, "details") else str(err)
        return {"error": code.name if code is not None else "?", "details": details}


# --------------------------------------------------------------------------- recording


class Expect(enum.Enum):
    ANY = "any"
    OK = "ok"
    ERROR = "error"


@dataclasses.dataclass
class Entry:
    label: str
    value: Any
    expect: Expect = Expect.ANY
    failed: bool = False


class ScriptCrash(Exception):
    pass


class Run:
    """One server's side of a differential test: a client and the log of normalized answers."""

    def __init__(self, server: ServerProcess, name: str) -> None:
        self.server = server
        self.name = name
        self.client = Client(server.endpoint)
        self.norm = Normalizer()
        self.norm.strings = {server.client_url: "<client-url>", server.peer_url: "<peer-url>"}
        self.log: list[Entry] = []
        self.crash: str | None = None

    # shorthands for scripts
    @property
    def kv(self) -> rpc_pb2_grpc.KVStub:
        return self.client.kv

    @property
    def lease(self) -> rpc_pb2_grpc.LeaseStub:
        return self.client.lease

    def fixed_lease(self, lease_id: int) -> int:
        """Declare a lease id chosen by the script (kept literal in the normalized output)."""
        self.norm.fixed_leases.add(lease_id)
        return lease_id

    async def call(
        self,
        label: str,
        method: Callable[..., Any],
        request: Message,
        *,
        expect: Expect = Expect.ANY,
        timeout: float = RPC_TIMEOUT,
    ) -> Any:
        """Call a unary RPC, record its normalized response or error, return the response (or None)."""
        try:
            response = await method(request, timeout=timeout)
        except grpc.RpcError as err:
            self.log.append(Entry(label, self.norm.error(err), expect, failed=True))
            return None
        self.log.append(Entry(label, self.norm.message(response), expect))
        return response

    def record(self, label: str, value: Any) -> None:
        """Record an arbitrary (already normalized) value."""
        self.log.append(Entry(label, value))

    def msg(self, message: Message) -> dict[str, Any]:
        return self.norm.message(message)

    async def execute(self, script: Callable[[Run], Awaitable[None]]) -> None:
        try:
            await script(self)
        except Exception as e:  # record the crash; a reference crash fails the test below
            import traceback

            self.crash = "".join(traceback.format_exception_only(type(e), e)).strip()
            self.crash_tb = traceback.format_exc()
            self.log.append(Entry("<script crashed>", self.crash))
        finally:
            await self.client.close()

    def render(self) -> list[str]:
        lines: list[str] = []
        for e in self.log:
            body = pprint.pformat(e.value, width=100, sort_dicts=True)
            lines.append(f"{e.label}:")
            lines.extend("    " + ln for ln in body.splitlines())
        return lines


def _check_reference(ref: Run) -> None:
    if ref.crash is not None:
        pytest.fail(f"the script crashed on the reference etcd (test bug):\n{ref.crash_tb}")
    wrong = [
        e
        for e in ref.log
        if (e.expect is Expect.OK and e.failed) or (e.expect is Expect.ERROR and not e.failed)
    ]
    if wrong:
        text = "\n".join(f"{e.label}: expected {e.expect.value}, got {e.value!r}" for e in wrong)
        pytest.fail(f"reference etcd did not behave as the test expects (test bug):\n{text}")


def assert_same_runs(ref: Run, cand: Run) -> None:
    _check_reference(ref)
    a, b = ref.render(), cand.render()
    if a != b:
        diff = "\n".join(
            difflib.unified_diff(a, b, f"etcd ({ref.name})", f"candidate ({cand.name})", lineterm="")
        )
        pytest.fail(f"answers differ between the reference etcd and {cand.name}:\n{diff}", pytrace=False)


def assert_same(label: str, ref_value: Any, cand_value: Any, cand_name: str = "candidate") -> None:
    """Compare two normalized values with a unified diff of their pretty forms."""
    a = pprint.pformat(ref_value, width=100, sort_dicts=True).splitlines()
    b = pprint.pformat(cand_value, width=100, sort_dicts=True).splitlines()
    if a != b:
        diff = "\n".join(difflib.unified_diff(a, b, "etcd", cand_name, lineterm=""))
        pytest.fail(
            f"{label}: answers differ between the reference etcd and {cand_name}:\n{diff}", pytrace=False
        )


async def differential(pair: ServerPair, script: Callable[[Run], Awaitable[None]]) -> tuple[Run, Run]:
    """Run `script` against both servers (concurrently) and assert equal normalized logs."""
    ref = Run(pair.reference, "etcd")
    cand = Run(pair.candidate, pair.candidate.label)
    await asyncio.gather(ref.execute(script), cand.execute(script))
    dump_dir = os.environ.get("GIFEE_TEST_DUMP_DIR")
    if dump_dir:  # debugging aid: the rendered answers of both sides, one file per test and side
        test = re.sub(r"[^\w.-]+", "_", os.environ.get("PYTEST_CURRENT_TEST", "test").split(" ")[0])
        Path(dump_dir).mkdir(parents=True, exist_ok=True)
        for side, run in (("reference", ref), ("candidate", cand)):
            Path(dump_dir, f"{test}.{side}.txt").write_text("\n".join(run.render()) + "\n")
    assert ref.log, "the script recorded nothing"
    assert_same_runs(ref, cand)
    return ref, cand


# --------------------------------------------------------------------------- streams


class WatchStream:
    """A Watch bidi stream whose responses are collected in the background."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.requests: asyncio.Queue[rpc_pb2.WatchRequest | None] = asyncio.Queue()
        self.responses: list[rpc_pb2.WatchResponse] = []
        self.error: grpc.RpcError | None = None
        self._changed = asyncio.Event()
        self._call = run.client.watch.Watch(self._gen())
        self._task = asyncio.create_task(self._read())

    async def _gen(self) -> Any:
        while True:
            req = await self.requests.get()
            if req is None:
                return
            yield req

    async def _read(self) -> None:
        try:
            async for resp in self._call:
                self.responses.append(resp)
                self._changed.set()
        except grpc.RpcError as e:
            self.error = e
        except asyncio.CancelledError:
            pass
        finally:
            self._changed.set()

    def send(self, req: rpc_pb2.WatchRequest) -> None:
        self.requests.put_nowait(req)

    def create(self, **kwargs: Any) -> None:
        self.send(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(**kwargs)))

    def cancel(self, watch_id: int) -> None:
        self.send(rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=watch_id)))

    def progress(self) -> None:
        self.send(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    async def wait_for(
        self, pred: Callable[[list[rpc_pb2.WatchResponse]], bool], timeout: float = 3.0
    ) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while not pred(self.responses):
            if self._task.done():
                return pred(self.responses)
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True

    async def wait_events(self, n: int, timeout: float = 3.0) -> bool:
        return await self.wait_for(lambda rs: sum(len(r.events) for r in rs) >= n, timeout)

    async def wait_responses(self, n: int, timeout: float = 3.0) -> bool:
        return await self.wait_for(lambda rs: len(rs) >= n, timeout)

    async def settle(self, quiet: float = 0.3) -> None:
        """Wait until no response arrived for `quiet` seconds (to catch unexpected extras)."""
        while True:
            count = len(self.responses)
            await asyncio.sleep(quiet)
            if len(self.responses) == count:
                return

    async def close(self) -> None:
        self.requests.put_nowait(None)
        self._call.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.RpcError):
            await self._task

    def flatten(self, *, group_by_watch: bool = True, header_revisions: bool = True) -> list[Any]:
        """Events one by one plus control responses, independent of batching.

        Control responses (no events) keep their flags and header revision; event responses
        are split into single events. With `group_by_watch`, items are grouped per watch_id
        (stable), since two watchers' interleaving on one stream is not specified.
        """
        norm = self.run.norm
        items: list[tuple[int, Any]] = []
        for r in self.responses:
            if r.events:
                for ev in r.events:
                    items.append((r.watch_id, {"watch_id": r.watch_id, "event": norm.message(ev)}))
            else:
                d = norm.message(r)
                if not header_revisions or r.compact_revision:
                    # etcd sends the compacted-watch cancelation with header revision 0
                    d.pop("header", None)
                d.setdefault("watch_id", 0)
                items.append((r.watch_id, {"control": d}))
        if group_by_watch:
            items.sort(key=lambda it: it[0])
        out: list[Any] = [it[1] for it in items]
        if self.error is not None:
            out.append({"stream_error": norm.error(self.error)})
        return out


def kv_summary(kv: Any) -> tuple[str, str, int, int, int]:
    return (
        kv.key.decode(),
        kv.value.decode(errors="replace"),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
    )


# --------------------------------------------------------------------------- etcdctl


def etcdctl(
    endpoint: str,
    *args: str,
    input: str | None = None,
    timeout: float = 15.0,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    cmd = [ETCDCTL_BINARY, "--endpoints", endpoint, "--dial-timeout", "3s", "--command-timeout", "5s", *args]
    proc = subprocess.run(
        cmd,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def etcdctl_popen(endpoint: str, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    """Start etcdctl in the background (for watch, lock, elect); stdout is a pipe."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    cmd = [ETCDCTL_BINARY, "--endpoints", endpoint, "--dial-timeout", "3s", *args]
    return subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        **kwargs,
    )


def json_strip_ids(value: Any) -> Any:
    """Drop the header fields that differ between servers from etcdctl's JSON output."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in ("cluster_id", "member_id", "raft_term"):
                continue
            out[k] = json_strip_ids(v)
        return out
    if isinstance(value, list):
        return [json_strip_ids(v) for v in value]
    return value


def parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"<not json>": text}


class BackgroundCtl:
    """An etcdctl process in the background (watch, lock, elect) whose stdout lines are collected."""

    def __init__(self, endpoint: str, *args: str) -> None:
        import threading

        self.args = args
        self.proc = etcdctl_popen(endpoint, *args)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_lines(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until at least `n` lines were printed (or the process ended)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.lines) < n:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return len(self.lines) >= n
                self._cond.wait(min(left, 0.1))
            return True

    def wait_for(self, text: str, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(text in ln for ln in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return False
                self._cond.wait(min(left, 0.1))
            return True

    def stop(self, sig: int = signal.SIGINT, timeout: float = 5.0) -> tuple[int | None, list[str], str]:
        """Signal the process, wait for it; returns (exit code, stdout lines, stderr)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._reader.join(timeout)
        stderr = self.proc.stderr.read() if self.proc.stderr is not None else ""
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return self.proc.returncode, list(self.lines), stderr


_TOOK = re.compile(r"took = [0-9.]+[a-zµ]*s")
_REMAINING = re.compile(r"remaining\(-?\d+s\)")
_ATTACHED = re.compile(r"attached keys\(\[([^\]]*)\]\)")
_LEASE_GRANTED = re.compile(r"lease ([0-9a-f]+) granted with TTL")


class Ctl:
    """Runs etcdctl commands against one server and records a normalized transcript.

    Identifiers that differ between servers are replaced: the endpoint and URLs, the
    member and cluster ids (hex and decimal), and lease ids (learned from `lease grant`
    output, named in order of appearance).
    """

    def __init__(self, server: ServerProcess, name: str) -> None:
        self.server = server
        self.name = name
        self.transcript: list[tuple[str, Any]] = []
        self.leases: dict[int, str] = {}
        self.owner_prefixes: set[str] = set()  # key prefixes of lock/election names used
        self.crash: str | None = None
        with grpc.insecure_channel(server.endpoint) as ch:
            st = rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=5)
        self.member_id = st.header.member_id
        self.cluster_id = st.header.cluster_id

    # -- normalization
    def lease_name(self, lease_id: int) -> str:
        if lease_id not in self.leases:
            self.leases[lease_id] = f"<lease#{len(self.leases) + 1}>"
        return self.leases[lease_id]

    def _id_patterns(self) -> list[tuple[str, str]]:
        # etcdctl prints lease ids as %016x in text; short forms are only replaced when long
        # enough not to be mistaken for ordinary values (a server may use small ids).
        pats: list[tuple[str, str]] = []
        for lid, name in self.leases.items():
            pats += [(f"{lid:016x}", name), (f"{lid:x}", name), (str(lid), name)]
        for num, name in ((self.member_id, "<member>"), (self.cluster_id, "<cluster>")):
            if num:
                pats += [(f"{num:016x}", name), (f"{num:x}", name), (str(num), name)]
        return [(p, n) for p, n in pats if len(p) >= 6]

    def text(self, text: str) -> str:
        for url, name in (
            (self.server.peer_url, "<peer-url>"),
            (self.server.client_url, "<client-url>"),
            (self.server.endpoint, "<endpoint>"),
        ):
            text = text.replace(url, name)
        for pat, name in sorted(self._id_patterns(), key=lambda p: -len(p[0])):
            text = re.sub(rf"(?<![0-9A-Za-z]){re.escape(pat)}(?![0-9A-Za-z])", name, text)
        text = _TOOK.sub("took = <t>", text)
        text = _REMAINING.sub("remaining(<n>s)", text)
        text = _ATTACHED.sub(lambda m: "attached keys([" + " ".join(sorted(m.group(1).split())) + "])", text)
        if self.owner_prefixes:
            # lock and election keys end in the owner's lease id in hex (%x)
            owned = re.compile(
                "^(" + "|".join(re.escape(p) for p in self.owner_prefixes) + ")[0-9a-f]{1,16}$", re.M
            )
            text = owned.sub(r"\1<some-lease>", text)
        return text

    def json(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            is_status = "dbSize" in value
            for k, v in value.items():
                if k in ("cluster_id", "member_id", "raft_term", "took"):
                    continue
                if is_status and k in ("raftTerm", "raftIndex", "raftAppliedIndex", "version"):
                    continue
                if is_status and k in ("dbSize", "dbSizeInUse"):
                    out[k + ">0"] = isinstance(v, int) and v > 0
                    continue
                out[k] = self.json(v, k)
            for unordered in ("leases", "keys"):  # filled from Go maps by etcd
                if isinstance(out.get(unordered), list):
                    out[unordered] = sorted(out[unordered], key=repr)
            return out
        if isinstance(value, list):
            return [self.json(v, key) for v in value]
        if isinstance(value, int) and not isinstance(value, bool):
            if value and value == self.member_id:
                return "<member>"
            if key in ("ID", "id", "lease") and value:
                return self.lease_name(value)
            if key == "ttl":  # remaining TTL in timetolive: timing dependent
                return "<remaining>" if value > 0 else value
            return value
        if isinstance(value, str):
            return self.text(value)
        return value

    def stderr(self, text: str) -> list[str]:
        """etcdctl's own messages; the client library's JSON log lines are dropped."""
        return [self.text(ln) for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("{")]

    # -- running
    def run(
        self,
        *args: str,
        input: str | None = None,
        sort_lines: bool = False,
        label: str | None = None,
        record: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run etcdctl; unless `record` is false, append the normalized result to the transcript."""
        proc = etcdctl(self.server.endpoint, *args, input=input)
        for m in _LEASE_GRANTED.finditer(proc.stdout):
            self.lease_name(int(m.group(1), 16))
        out: Any
        if "-w" in args and args[args.index("-w") + 1] == "json":
            lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
            out = [self.json(parse_json(ln)) for ln in lines]
        else:
            lines = self.text(proc.stdout).split("\n")
            if sort_lines:
                lines = lines[:1] + sorted(lines[1:])
            out = lines
        if not record:
            return proc
        self.transcript.append(
            (
                label or "etcdctl " + self.text(" ".join(args)),
                {"rc": proc.returncode, "stdout": out, "stderr": self.stderr(proc.stderr)},
            )
        )
        return proc

    def record(self, label: str, value: Any) -> None:
        self.transcript.append((label, value))

    def grant(self, ttl: int) -> str:
        """`lease grant TTL`; returns the lease id in hex as etcdctl prints it."""
        proc = self.run("lease", "grant", str(ttl))
        m = _LEASE_GRANTED.search(proc.stdout)
        return m.group(1) if m else "0"

    def background(self, *args: str) -> BackgroundCtl:
        return BackgroundCtl(self.server.endpoint, *args)


def ctl_differential(pair: ServerPair, script: Callable[[Ctl], None]) -> tuple[Ctl, Ctl]:
    """Run an etcdctl script against both servers (in two threads) and compare transcripts."""
    import concurrent.futures
    import traceback

    ref, cand = Ctl(pair.reference, "etcd"), Ctl(pair.candidate, pair.candidate.label)

    def execute(ctl: Ctl) -> None:
        try:
            script(ctl)
        except Exception:
            ctl.crash = traceback.format_exc()
            ctl.record("<script crashed>", traceback.format_exception_only(*sys.exc_info()[:2])[-1].strip())

    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        list(ex.map(execute, (ref, cand)))
    if ref.crash:
        pytest.fail(f"the etcdctl script crashed on the reference etcd (test bug):\n{ref.crash}")
    dump_dir = os.environ.get("GIFEE_TEST_DUMP_DIR")
    if dump_dir:
        test = re.sub(r"[^\w.-]+", "_", os.environ.get("PYTEST_CURRENT_TEST", "test").split(" ")[0])
        Path(dump_dir).mkdir(parents=True, exist_ok=True)
        for side, c in (("reference", ref), ("candidate", cand)):
            Path(dump_dir, f"{test}.{side}.txt").write_text(pprint.pformat(c.transcript, width=110) + "\n")
    assert_same("etcdctl transcript", ref.transcript, cand.transcript, cand.name)
    return ref, cand
