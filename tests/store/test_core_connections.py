"""With gRPC workers, the core serves one gRPC connection itself while it serves none (`server.py`).

Which process holds a connection is read from the kernel: the server side of the TCP
connection (its socket inode in /proc/net/tcp, by the client's port) is found among the
descriptors of the core and of its workers.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from gifee.store.proto import rpc_pb2, rpc_pb2_grpc
from tests.store.reference import ServerProcess
from tests.store.test_client_port_http import GifeeWith, _overridden

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        _overridden(), reason="--grpc-workers and --core-grpc-connections are gifee's own flags"
    ),
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _start(root: Path, extra: list[str], workers: int = 2) -> ServerProcess:
    s = GifeeWith(root, ["--grpc-workers", str(workers), *extra])
    s.start()
    return s


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    root = Path(tempfile.mkdtemp(prefix="gifee-core-conns-"))
    s = _start(root / "gifee", [])
    try:
        yield s
    finally:
        s.stop()
        shutil.rmtree(root, ignore_errors=True)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _server_side_inode(server_port: int, client_port: int) -> int | None:
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], int(fields[9])
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return inode
    return None


def holder(s: ServerProcess, client: socket.socket) -> str:
    """'core' or 'worker': the process that holds the server's end of `client`'s connection."""
    core = s.pid
    workers = [p for p in _children(core) if "gifee.store.worker" in Path(f"/proc/{p}/cmdline").read_text()]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        inode = _server_side_inode(s.client_port, client.getsockname()[1])
        if inode is not None:
            target = f"socket:[{inode}]"
            for pid, name in [(core, "core"), *((w, "worker") for w in workers)]:
                fd_dir = Path(f"/proc/{pid}/fd")
                for fd in os.listdir(fd_dir):
                    try:
                        if os.readlink(fd_dir / fd) == target:
                            return name
                    except OSError:
                        continue
        time.sleep(0.05)
    raise AssertionError("the server's end of the connection was not found in the core or its workers")


def grpc_client(s: ServerProcess) -> socket.socket:
    """A gRPC connection as a client opens one (the preface and SETTINGS): routed as gRPC."""
    sock = socket.create_connection(("127.0.0.1", s.client_port))
    sock.sendall(PREFACE + EMPTY_SETTINGS)
    sock.settimeout(5)
    assert sock.recv(9)  # the server's SETTINGS: someone serves it
    return sock


def connect_until_core(s: ServerProcess, timeout: float = 10) -> socket.socket:
    """A connection that the core serves. The core's word that it is free again (after the harness's
    readiness probe, or a client that left) reaches the workers as a frame, a moment after the fact."""
    deadline = time.monotonic() + timeout
    while True:
        client = grpc_client(s)
        if holder(s, client) == "core":
            return client
        client.close()
        if time.monotonic() > deadline:
            raise AssertionError("no connection reached the core")
        time.sleep(0.1)


def test_a_lone_connection_is_served_by_the_core_the_next_by_a_worker(server: ServerProcess) -> None:
    first = connect_until_core(server)
    second = grpc_client(server)
    assert holder(server, second) == "worker"
    first.close()
    third = connect_until_core(server)  # the core is free again once the first has gone
    third.close()
    second.close()


def test_the_core_takes_as_many_as_it_is_told_then_the_workers_do() -> None:
    # One worker: it must hear "free" again after each connection it passes while the core has room.
    root = Path(tempfile.mkdtemp(prefix="gifee-core-conns-"))
    s = _start(root / "gifee", ["--core-grpc-connections", "2"], workers=1)
    try:
        first = connect_until_core(s)
        second = connect_until_core(s)
        time.sleep(0.3)  # the core's "taken" has reached the worker
        third = grpc_client(s)
        assert holder(s, third) == "worker"
        for c in (first, second, third):
            c.close()
    finally:
        s.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_the_cores_connections_end_when_it_stops() -> None:
    root = Path(tempfile.mkdtemp(prefix="gifee-core-conns-"))
    s = _start(root / "gifee", [])
    try:
        client = connect_until_core(s)
        s.stop()
        client.settimeout(10)
        rest = b""
        while chunk := client.recv(65536):  # GOAWAY, then the end: nothing left open
            rest += chunk
        client.close()
    finally:
        s.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_calls_on_the_cores_connection_and_a_workers_agree(server: ServerProcess) -> None:
    a = grpc.insecure_channel(server.endpoint)
    b = grpc.insecure_channel(server.endpoint)
    try:
        kv_a, kv_b = rpc_pb2_grpc.KVStub(a), rpc_pb2_grpc.KVStub(b)
        put = kv_a.Put(rpc_pb2.PutRequest(key=b"k", value=b"from-a"), timeout=10)
        got = kv_b.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=10)
        assert [kv.value for kv in got.kvs] == [b"from-a"]
        assert got.header.revision == put.header.revision
        put_b = kv_b.Put(rpc_pb2.PutRequest(key=b"k", value=b"from-b"), timeout=10)
        assert put_b.header.revision == put.header.revision + 1
        got_a = kv_a.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=10)
        assert [kv.value for kv in got_a.kvs] == [b"from-b"]
    finally:
        a.close()
        b.close()


def test_zero_core_connections_leaves_every_connection_to_the_workers() -> None:
    root = Path(tempfile.mkdtemp(prefix="gifee-core-conns-"))
    s = _start(root / "gifee", ["--core-grpc-connections", "0"])
    try:
        for _ in range(3):
            time.sleep(0.3)  # time enough for a "free" from the core, were it to send one
            client = grpc_client(s)
            assert holder(s, client) == "worker"
            client.close()
    finally:
        s.stop()
        shutil.rmtree(root, ignore_errors=True)
