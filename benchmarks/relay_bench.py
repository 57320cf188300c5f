"""What relaying gRPC connections costs: the bare Python gRPC server behind different relays.

gifee's client port serves gRPC and HTTP on one listener (`gifee.store.clientport`):
the process that accepts a connection relays a gRPC connection's bytes to a gRPC
server on a private Unix socket. This runs `bare_grpc_server.py`'s handlers (no
storage, so CPU is all there is) behind each way of relaying, loads it with kvbench
(put, 64 clients, 4 connections) and reports the server process's CPU time per
request (user + system, all threads) and the throughput, alternating the variants
round by round:

    direct    gRPC on the TCP port itself, no relay (what gifee did before)
    relay     gifee's relay (`clientport.relay`): on uvloop its TransportRelay, on
              asyncio's loop readiness callbacks, recv_into one buffer, send at once
    protocol  the loop's transports, a Protocol's data_received writing straight through
    buffered  the loop's transports, a BufferedProtocol (recv_into) writing straight through
    splice    readiness callbacks moving bytes with os.splice through a pipe per direction

    python benchmarks/relay_bench.py --rounds 5 [--loop uvloop|asyncio]

The servers run on uvloop (as the store's processes do) unless `--loop asyncio`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bare_grpc_server as bare  # noqa: E402

from gifee import eventloop  # noqa: E402
from gifee.store import clientport  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KVBENCH = ROOT / "build" / "kvbench"
VARIANTS = ["direct", "relay", "protocol", "buffered", "splice"]
LOAD = [
    "-workload",
    "put",
    "-clients",
    "64",
    "-conns",
    "4",
    "-total",
    "20000",
    "-key-size",
    "8",
    "-val-size",
    "256",
]


# --------------------------------------------------------------------------- the alternative relays


class _Half(asyncio.Protocol):
    """One side's protocol; what arrives before the other side is connected waits in `early`.

    (uvloop reads as soon as a transport exists, so the gRPC server's first frames can arrive
    on the upstream side before the client's transport is made.)
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Half | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport instances
        peer = self.peer
        if peer is not None and peer.early:
            self.transport.write(b"".join(peer.early))
            peer.early.clear()

    def forward(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.early.append(data)

    def data_received(self, data: bytes) -> None:
        self.forward(data)

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class _BufferedHalf(_Half, asyncio.BufferedProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.buf = memoryview(bytearray(65536))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.forward(bytes(self.buf[:nbytes]))


async def _transport_relay(factory: type[_Half], sock: socket.socket, address: str) -> None:
    loop = asyncio.get_running_loop()
    up, client = factory(), factory()
    up.peer, client.peer = client, up
    await eventloop.connect_unix(lambda: up, address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await loop.connect_accepted_socket(lambda: client, sock)


class _Splice:
    """One direction: src -> pipe -> dst with os.splice (no copy through Python)."""

    FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK

    def __init__(self, loop: asyncio.AbstractEventLoop, src: socket.socket, dst: socket.socket) -> None:
        self.loop, self.src, self.dst = loop, src, dst
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.pending = 0
        loop.add_reader(src.fileno(), self.readable)

    def readable(self) -> None:
        try:
            n = os.splice(self.src.fileno(), self.w, 1 << 16, flags=self.FLAGS)
        except BlockingIOError:
            return
        except OSError:
            n = 0
        if n == 0:
            self.close()
            return
        self.pending += n
        self.drain()

    def drain(self) -> None:
        while self.pending:
            try:
                self.pending -= os.splice(self.r, self.dst.fileno(), self.pending, flags=self.FLAGS)
            except BlockingIOError:
                self.loop.remove_reader(self.src.fileno())
                self.loop.add_writer(self.dst.fileno(), self.writable)
                return

    def writable(self) -> None:
        self.drain()
        if not self.pending:
            self.loop.remove_writer(self.dst.fileno())
            self.loop.add_reader(self.src.fileno(), self.readable)

    def close(self) -> None:
        self.loop.remove_reader(self.src.fileno())
        self.loop.remove_writer(self.dst.fileno())
        for fd in (self.r, self.w):
            os.close(fd)
        self.dst.close()
        self.src.close()


async def _splice_relay(sock: socket.socket, address: str) -> None:
    loop = asyncio.get_running_loop()
    up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    up.setblocking(False)
    await loop.sock_connect(up, address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _Splice(loop, sock, up)
    _Splice(loop, up, sock)


# --------------------------------------------------------------------------- the server


async def serve(variant: str, port: int) -> None:
    server = grpc.aio.server()
    kv = {
        "Put": bare._unary(bare.rpc_pb2.PutResponse(header=bare.HEADER)),
        "Range": bare._unary(bare.rpc_pb2.RangeResponse(header=bare.HEADER)),
    }
    status = {
        "Status": bare._unary(bare.rpc_pb2.StatusResponse(header=bare.HEADER, version="3.4.0", leader=1))
    }
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler("etcdserverpb.KV", kv),
            grpc.method_handlers_generic_handler("etcdserverpb.Maintenance", status),
        ]
    )
    if variant == "direct":
        server.add_insecure_port(f"127.0.0.1:{port}")
    else:
        name = f"gifee-relay-bench-{os.getpid()}"
        server.add_insecure_port(f"unix-abstract:{name}")
        alternatives: dict[str, Any] = {
            "protocol": lambda sock, address, *_: _transport_relay(_Half, sock, address),
            "buffered": lambda sock, address, *_: _transport_relay(_BufferedHalf, sock, address),
            "splice": lambda sock, address, *_: _splice_relay(sock, address),
        }
        if variant in alternatives:
            clientport.relay = alternatives[variant]  # type: ignore[assignment]
        port_ = clientport.ClientPort(
            [f"http://127.0.0.1:{port}"],
            grpc_plain="\0" + name,
            grpc_tls=None,
            on_http=lambda s, _: s.close(),
        )
        port_.start()
    await server.start()
    await server.wait_for_termination()


# --------------------------------------------------------------------------- the harness


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(variant: str) -> tuple[float, float]:
    """(CPU microseconds per request, requests per second) of one fresh server."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", variant, "--port", str(port)])
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{variant}: server did not start")
            time.sleep(0.05)
        before = _cpu_seconds(proc.pid)
        out = subprocess.run(
            [str(KVBENCH), "-endpoints", f"127.0.0.1:{port}", *LOAD],
            capture_output=True,
            text=True,
            check=True,
        )
        used = _cpu_seconds(proc.pid) - before
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if result["errors"]:
            raise RuntimeError(f"{variant}: {result['errors']} errors")
        return used / result["total"] * 1e6, float(result["ops_per_sec"])
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--only", default=",".join(VARIANTS))
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="the servers' event loop")
    p.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        eventloop.run(serve(args.serve, args.port))
        return
    os.environ["GIFEE_EVENT_LOOP"] = args.loop
    variants = args.only.split(",")
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    ops: dict[str, list[float]] = {v: [] for v in variants}
    for rnd in range(args.rounds):
        for v in variants if rnd % 2 == 0 else variants[::-1]:
            us, rate = measure(v)
            cpu[v].append(us)
            ops[v].append(rate)
            print(f"[round {rnd + 1}] {v:9s} {us:6.0f} us CPU/request {rate:7.0f} requests/s", flush=True)
    print(f"\n{'variant':9s} {'CPU us/request (median)':>24s} {'requests/s (median)':>20s}")
    for v in variants:
        print(f"{v:9s} {statistics.median(cpu[v]):24.0f} {statistics.median(ops[v]):20.0f}")


if __name__ == "__main__":
    main()
