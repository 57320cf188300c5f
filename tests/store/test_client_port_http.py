"""HTTP and gRPC on one client port, as etcd serves them (`gifee.store.clientport`).

`curl http://127.0.0.1:2379/health` works against etcd because etcd looks at each
connection's first bytes and hands it to its HTTP or its gRPC server. These tests
send curl-equivalent requests (urllib, aiohttp, raw sockets) to the client port of
a running `gifee store`, with worker processes and with `--grpc-workers 0`, beside
gRPC clients (grpc python, etcdctl) on the same port, and check that clients
that misbehave (garbage, silence, a disconnect in the middle of a gRPC
stream) leave the server as it was. The first tests check the routing rules
and the hand-over in-process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from gifee.store import clientport
from gifee.store.clientport import GRPC, HTTP, PREFACE, ClientPort, classify_plain, classify_tls, offered_alpn
from gifee.store.proto import rpc_pb2, rpc_pb2_grpc
from tests.store.reference import (
    GIFEE_CMD_ENV,
    LOOPBACK,
    ServerPair,
    ServerProcess,
    etcdctl,
    etcdctl_popen,
    free_port,
    gifee_command,
    require_etcd,
)

pytestmark = pytest.mark.timeout(120)

STEP = 5.0


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --------------------------------------------------------------------------- routing rules


def client_hello(alpn: Sequence[str]) -> bytes:
    """The first flight of a real TLS client (Python's ssl) that offers `alpn`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


def test_plain_routing_rule() -> None:
    assert classify_plain(PREFACE) == GRPC
    assert classify_plain(PREFACE + b"\x00\x00\x12\x04") == GRPC
    for i in range(1, len(PREFACE)):
        assert classify_plain(PREFACE[:i]) is None  # not enough to tell yet
    assert classify_plain(b"GET /health HTTP/1.1\r\n") == HTTP
    assert classify_plain(b"POST /v3/kv/range HTTP/1.1\r\n") == HTTP  # "P", then "O" is not "R"
    assert classify_plain(b"PRI * HTTP/1.1\r\n") == HTTP
    assert classify_plain(b"\x00") == HTTP


@pytest.mark.parametrize(
    ("alpn", "kind"),
    [
        (["h2"], GRPC),  # grpc-go (etcdctl, the Go client)
        (["grpc-exp", "h2"], GRPC),  # gRPC's C core (grpc python)
        (["h2", "http/1.1"], HTTP),  # curl, browsers
        (["http/1.1"], HTTP),
        ([], HTTP),  # no ALPN: openssl s_client, old clients
    ],
)
def test_tls_routing_rule(alpn: list[str], kind: str) -> None:
    hello = client_hello(alpn)
    assert offered_alpn(hello) == [a.encode() for a in alpn]
    assert classify_tls(hello) == kind
    # Until the whole ClientHello is there, no decision (it may come in pieces).
    for cut in (1, 4, 5, 40, len(hello) - 1):
        assert classify_tls(hello[:cut]) is None


def test_tls_routing_rule_fragmented_and_malformed() -> None:
    hello = client_hello(["h2"])
    body = hello[5:]
    # The same handshake message split over two TLS records.
    split = bytes([22, 3, 1]) + struct.pack(">H", 50) + body[:50]
    split += bytes([22, 3, 1]) + struct.pack(">H", len(body) - 50) + body[50:]
    assert offered_alpn(split) == [b"h2"]
    assert offered_alpn(split[:60]) is None
    assert offered_alpn(b"GET / HTTP/1.1\r\n\r\n") == []  # not TLS: HTTP (whose TLS handshake then fails)
    assert offered_alpn(bytes([22, 3, 1, 0, 4, 2, 0, 0, 0])) == []  # a handshake, but no ClientHello
    broken = bytes([22, 3, 1, 0, 8, 1, 0, 0, 4]) + b"\xff\xff\xff\xff"
    assert offered_alpn(broken) == []
    assert classify_tls(b"\x16" + b"\xff" * (clientport.MAX_HELLO + 10)) in (HTTP, None)


# --------------------------------------------------------------------------- the mux in-process


Mux = tuple[int, list[tuple[socket.socket, bool]], list[tuple[socket.socket, bool]], ClientPort]


def on_loop(loop: str, tmp_path: Path, test: Callable[[Mux], Awaitable[None]]) -> None:
    """Run `test` with a fresh mux on asyncio's loop or uvloop (which the store's processes run)."""

    async def main() -> None:
        async with mux(tmp_path) as m:
            await test(m)

    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


LOOPS = pytest.mark.parametrize("loop", ["asyncio", "uvloop"])


@contextlib.asynccontextmanager
async def mux(tmp_path: Path) -> AsyncIterator[Mux]:
    taken: list[tuple[socket.socket, bool]] = []
    grpc_taken: list[tuple[socket.socket, bool]] = []
    port = free_port()
    cp = ClientPort(
        [f"http://{LOOPBACK}:{port}"],
        on_grpc=lambda s, tls: grpc_taken.append((s, tls)),
        on_http=lambda s, tls: taken.append((s, tls)),
        sniff_timeout=0.5,
    )
    cp.start()
    try:
        yield port, taken, grpc_taken, cp
    finally:
        cp.close()
        for s, _ in taken + grpc_taken:
            s.close()


async def _taken(sockets: list[tuple[socket.socket, bool]]) -> tuple[socket.socket, bool]:
    for _ in range(100):
        if sockets:
            break
        await asyncio.sleep(0.02)
    assert len(sockets) == 1
    return sockets[0]


@LOOPS
def test_mux_hands_over_grpc_and_http_unread(loop: str, tmp_path: Path) -> None:
    on_loop(loop, tmp_path, _mux_hands_over_grpc_and_http_unread)


async def _mux_hands_over_grpc_and_http_unread(mux: Mux) -> None:
    port, taken, grpc_taken, _ = mux
    # gRPC: the socket goes to on_grpc with every byte still to be read, the preface first.
    payload = PREFACE + bytes(range(256)) * 4
    with socket.create_connection((LOOPBACK, port)) as c:
        c.sendall(payload)
        sock, tls = await _taken(grpc_taken)
        assert not tls and not taken
        sock.setblocking(True)
        sock.settimeout(STEP)
        got = b""
        while len(got) < len(payload):
            got += sock.recv(65536)
        assert got == payload

    # HTTP: the socket is handed over with nothing read from it.
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection((LOOPBACK, port)) as c:
        c.sendall(request)
        sock, tls = await _taken(taken)
        assert not tls and len(grpc_taken) == 1
        sock.setblocking(True)
        sock.settimeout(STEP)
        assert sock.recv(1000) == request


@LOOPS
def test_mux_closes_silent_and_half_sent_connections(loop: str, tmp_path: Path) -> None:
    on_loop(loop, tmp_path, _mux_closes_silent_and_half_sent_connections)


async def _mux_closes_silent_and_half_sent_connections(mux: Mux) -> None:
    port, taken, grpc_taken, cp = mux
    silent = socket.create_connection((LOOPBACK, port))
    partial = socket.create_connection((LOOPBACK, port))
    partial.sendall(PREFACE[:10])  # then nothing more
    for s in (silent, partial):
        s.settimeout(STEP)
    start = time.monotonic()
    # Closed by the server after sniff_timeout (a reset when unread bytes were left).
    assert await asyncio.to_thread(_read_all, silent) == b""
    assert await asyncio.to_thread(_read_all, partial) == b""
    assert 0.3 < time.monotonic() - start < STEP
    silent.close()
    partial.close()
    # Closed before saying anything, or with a partial preface: nothing left behind.
    for data in (b"", PREFACE[:5]):
        s = socket.create_connection((LOOPBACK, port))
        if data:
            s.sendall(data)
        s.close()
    await asyncio.sleep(0.7)
    assert not cp._sniffers and not taken and not grpc_taken


# --------------------------------------------------------------------------- servers


class GifeeWith(ServerProcess):
    """A gifee store with extra flags and, optionally, more client URLs (e.g. an https one)."""

    def __init__(
        self, workdir: Path, extra: Sequence[str] = (), more_client_urls: Sequence[str] = ()
    ) -> None:
        super().__init__("gifee", [*gifee_command(), *extra], workdir)
        self.more_client_urls = list(more_client_urls)

    def argv(self) -> list[str]:
        argv = super().argv()
        i = argv.index("--listen-client-urls") + 1
        argv[i] = ",".join([argv[i], *self.more_client_urls])
        return argv


def _overridden() -> bool:
    return bool(os.environ.get(GIFEE_CMD_ENV, "").strip())


@pytest.fixture(params=["workers", "in-process"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """gifee with its gRPC worker processes (2), and with `--grpc-workers 0`."""
    if request.param == "in-process" and _overridden():
        pytest.skip(f"{GIFEE_CMD_ENV} is set: --grpc-workers is gifee's own flag")
    extra = ["--grpc-workers", "2" if request.param == "workers" else "0"] if not _overridden() else []
    s = GifeeWith(tmp_path / "gifee", extra)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def curl(url: str, body: Any = None, *, context: ssl.SSLContext | None = None) -> tuple[int, str, str]:
    """A curl-equivalent request: (status, content type, body)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=STEP, context=context) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def base(s: ServerProcess) -> str:
    return f"http://{s.endpoint}"


def group_state(s: ServerProcess) -> dict[int, int]:
    """pid -> open descriptors, for every process of the server."""
    out = {}
    for pid in s.group_pids():
        with contextlib.suppress(OSError):
            out[pid] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def assert_serving(s: ServerProcess, key: str = "alive") -> None:
    assert curl(base(s) + "/health")[0] == 200
    with grpc.insecure_channel(s.endpoint) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        kv.Put(rpc_pb2.PutRequest(key=key.encode(), value=b"1"), timeout=STEP)
        assert kv.Range(rpc_pb2.RangeRequest(key=key.encode()), timeout=STEP).kvs[0].value == b"1"


# --------------------------------------------------------------------------- HTTP on the client port


def test_health_metrics_version_and_gateway(server: ServerProcess) -> None:
    status, ctype, body = curl(base(server) + "/health")
    assert (status, body) == (200, '{"health":"true"}')
    assert ctype.startswith("text/plain")

    status, ctype, body = curl(base(server) + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert "\netcd_server_has_leader 1\n" in body
    assert "# TYPE etcd_debugging_mvcc_current_revision gauge" in body

    status, _, body = curl(base(server) + "/version")
    assert status == 200 and "etcdserver" in json.loads(body)

    status, _, body = curl(base(server) + "/v3/kv/put", {"key": b64("foo"), "value": b64("bar")})
    assert status == 200, body
    revision = int(json.loads(body)["header"]["revision"])
    status, _, body = curl(base(server) + "/v3/kv/range", {"key": b64("foo")})
    assert status == 200, body
    kvs = json.loads(body)["kvs"]
    assert [(kv["key"], kv["value"], int(kv["mod_revision"])) for kv in kvs] == [
        (b64("foo"), b64("bar"), revision)
    ]
    # A gRPC client on the same port sees the same key.
    with grpc.insecure_channel(server.endpoint) as channel:
        resp = rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest(key=b"foo"), timeout=STEP)
        assert [(kv.key, kv.value) for kv in resp.kvs] == [(b"foo", b"bar")]


def test_keep_alive_connection_and_errors(server: ServerProcess) -> None:
    conn = http.client.HTTPConnection(LOOPBACK, server.client_port, timeout=STEP)
    try:
        for _ in range(3):  # several requests on one connection
            conn.request("GET", "/health")
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, b'{"health":"true"}')
        conn.request("POST", "/v3/kv/range", body=b'{"key": 1}')
        resp = conn.getresponse()
        assert resp.status == 400 and json.loads(resp.read())["code"] == 3
        conn.request("GET", "/no/such/path")
        resp = conn.getresponse()
        assert resp.status == 404
        resp.read()
    finally:
        conn.close()


@pytest.mark.reference
def test_health_answers_like_etcd(pair: ServerPair) -> None:
    """Same status, content type and body for /health on the client port of etcd and gifee."""
    answers = [curl(f"http://{s.endpoint}/health") for s in pair]
    assert answers[0] == answers[1], answers
    assert answers[0][0] == 200


@pytest.mark.parametrize("workers", ["2", "0"])
def test_extra_http_listeners_make_the_client_port_grpc_only(tmp_path: Path, workers: str) -> None:
    """As etcd 3.5: with --listen-client-http-urls, HTTP is served there (and /health, /metrics on
    the metrics URLs), and the client URLs serve gRPC alone."""
    if _overridden():
        pytest.skip(f"{GIFEE_CMD_ENV} is set")
    http_port, metrics_port = free_port(), free_port()
    s = GifeeWith(
        tmp_path / "gifee",
        [
            "--grpc-workers",
            workers,
            "--listen-client-http-urls",
            f"http://{LOOPBACK}:{http_port}",
            "--listen-metrics-urls",
            f"http://{LOOPBACK}:{metrics_port}",
        ],
    )
    with s:
        for port in (http_port, metrics_port):
            assert curl(f"http://{LOOPBACK}:{port}/health")[0] == 200
            assert "etcd_server_has_leader" in curl(f"http://{LOOPBACK}:{port}/metrics")[2]
        put = {"key": b64("k"), "value": b64("v")}
        assert curl(f"http://{LOOPBACK}:{http_port}/v3/kv/put", put)[0] == 200
        # etcd serves only /health and /metrics on its metrics URLs.
        assert curl(f"http://{LOOPBACK}:{metrics_port}/v3/kv/range", {"key": b64("k")})[0] == 404
        # gRPC on the client port, from several connections (with workers, the kernel spreads them)
        for _ in range(4):
            with grpc.insecure_channel(s.endpoint) as channel:
                kv = rpc_pb2_grpc.KVStub(channel)
                assert kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=STEP).kvs[0].value == b"v"
        # HTTP on the client port gets no HTTP answer: gRPC's server does not speak HTTP/1.1.
        with socket.create_connection((LOOPBACK, s.client_port), timeout=STEP) as c:
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b'"health"' not in _read_all(c)


# --------------------------------------------------------------------------- gRPC beside HTTP


@pytest.mark.reference
async def test_grpc_and_http_clients_at_the_same_time(server: ServerProcess) -> None:
    require_etcd()
    errors: list[str] = []

    async def grpc_writer(n: int) -> None:
        async with grpc.aio.insecure_channel(server.endpoint) as channel:
            kv = rpc_pb2_grpc.KVStub(channel)
            for i in range(n):
                await kv.Put(rpc_pb2.PutRequest(key=f"g/{i:04d}".encode(), value=b"x" * 100), timeout=STEP)

    async def grpc_watcher(expect: int) -> int:
        seen = 0
        async with grpc.aio.insecure_channel(server.endpoint) as channel:
            watch = rpc_pb2_grpc.WatchStub(channel)
            create = rpc_pb2.WatchCreateRequest(key=b"h/", range_end=b"h0")
            call = watch.Watch(iter([rpc_pb2.WatchRequest(create_request=create)]))
            async for resp in call:
                seen += len(resp.events)
                if seen >= expect:
                    call.cancel()
                    break
        return seen

    async def http_client(n: int) -> None:
        async with aiohttp.ClientSession(base_url=base(server)) as session:
            for i in range(n):
                async with session.get("/health") as resp:
                    if resp.status != 200:
                        errors.append(f"/health {resp.status}")
                body = {"key": b64(f"h/{i:04d}"), "value": b64("y")}
                async with session.post("/v3/kv/put", json=body) as resp:
                    if resp.status != 200:
                        errors.append(f"put {resp.status} {await resp.text()}")

    def ctl() -> None:
        for i in range(5):
            etcdctl(server.endpoint, "put", f"c/{i}", "z", check=True)
            out = etcdctl(server.endpoint, "get", f"c/{i}", "--print-value-only", check=True).stdout
            if out.strip() != "z":
                errors.append(f"etcdctl get c/{i}: {out!r}")

    watcher = asyncio.create_task(grpc_watcher(60))
    await asyncio.sleep(0.3)  # the watch is registered
    await asyncio.wait_for(
        asyncio.gather(grpc_writer(150), grpc_writer(150), http_client(60), asyncio.to_thread(ctl)), 60
    )
    assert await asyncio.wait_for(watcher, 10) == 60
    assert errors == []
    with grpc.insecure_channel(server.endpoint) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        for prefix, end, n in ((b"g/", b"g0", 150), (b"h/", b"h0", 60), (b"c/", b"c0", 5)):
            assert kv.Range(rpc_pb2.RangeRequest(key=prefix, range_end=end, count_only=True)).count == n


# --------------------------------------------------------------------------- misbehaving clients


def _rst(sock: socket.socket) -> None:
    """Close with a reset instead of a FIN, as a crashed client's kernel would."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or resets it)."""
    sock.settimeout(STEP)
    out = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            out += chunk
    return out


def _settled(s: ServerProcess, before: dict[int, int], slack: int = 4) -> dict[int, int]:
    """Wait until every server process holds about as many descriptors as before."""
    deadline = time.monotonic() + 10
    while True:
        now = group_state(s)
        if set(now) == set(before) and all(now[p] <= before[p] + slack for p in now):
            return now
        if time.monotonic() > deadline:
            return now
        time.sleep(0.1)


@pytest.mark.reference
def test_misbehaving_clients_do_not_hurt(server: ServerProcess) -> None:
    require_etcd()
    assert_serving(server, "before")
    before = group_state(server)
    addr = (LOOPBACK, server.client_port)

    # A client that connects and says nothing stays connected while everyone else is served.
    silent = [socket.create_connection(addr) for _ in range(5)]

    # Garbage first lines: HTTP's answer is 400 (etcd closes them), then the connection ends.
    for garbage in (
        b"\x00\x01\x02garbage\r\n\r\n",
        b"HELLO\r\n\r\n",
        b"PRI * HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x00",
    ):
        with socket.create_connection(addr) as c:
            c.sendall(garbage)
            c.shutdown(socket.SHUT_WR)
            answer = _read_all(c)
            status_line = answer.split(b"\r\n", 1)[0]
            assert answer == b"" or (status_line.startswith(b"HTTP/1.") and b" 400 " in status_line), answer

    # Part of the HTTP/2 preface, then gone; the preface and half a frame, then a reset.
    for data in (PREFACE[:7], PREFACE + b"\x00\x00\x12\x04\x00"):
        c = socket.create_connection(addr)
        c.sendall(data)
        _rst(c)
    # An HTTP request that promises a body and dies halfway through it.
    c = socket.create_connection(addr)
    c.sendall(b'POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"key":')
    time.sleep(0.1)
    _rst(c)

    # Disconnects in the middle of relayed gRPC: a watch and a snapshot download killed mid-stream.
    watcher = etcdctl_popen(server.endpoint, "watch", "w", "--prefix")
    time.sleep(0.5)
    etcdctl(server.endpoint, "put", "w/1", "x" * 1000, check=True)
    snapshot = subprocess.Popen(
        [
            "python",
            "-c",
            "import grpc, sys\n"
            "from gifee.store.proto import rpc_pb2, rpc_pb2_grpc\n"
            f"ch = grpc.insecure_channel('{server.endpoint}')\n"
            "for r in rpc_pb2_grpc.MaintenanceStub(ch).Snapshot(rpc_pb2.SnapshotRequest()):\n"
            "    print(len(r.blob), flush=True)\n"
            "    sys.stdin.readline()\n",  # never answered: the stream stalls, then the client is killed
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert snapshot.stdout is not None
    snapshot.stdout.readline()
    for proc in (watcher, snapshot):
        proc.kill()
        proc.wait(STEP)

    assert_serving(server, "during")
    assert (
        etcdctl(server.endpoint, "get", "w/1", "--print-value-only", check=True).stdout.strip() == "x" * 1000
    )
    for s in silent:
        s.close()
    after = _settled(server, before)
    assert set(after) == set(before), "a server process died or was replaced"
    assert all(after[p] <= before[p] + 4 for p in after), (before, after)
    assert_serving(server, "after")


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", f"subjectAltName=IP:{LOOPBACK},DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.reference
@pytest.mark.parametrize("workers", ["2", "0"])
def test_https_client_url(tmp_path: Path, certificate: tuple[Path, Path], workers: str) -> None:
    """On an https URL, gRPC clients (ALPN h2 only) reach gRPC and HTTP clients reach HTTP, over TLS."""
    require_etcd()
    if _overridden():
        pytest.skip(f"{GIFEE_CMD_ENV} is set")
    cert, key = certificate
    tls_port = free_port()
    tls_url = f"https://{LOOPBACK}:{tls_port}"
    s = GifeeWith(
        tmp_path / "gifee",
        ["--grpc-workers", workers, "--cert-file", str(cert), "--key-file", str(key)],
        more_client_urls=[tls_url],
    )
    with s:
        context = ssl.create_default_context(cafile=str(cert))
        status, _, body = curl(tls_url + "/health", context=context)
        assert (status, body) == (200, '{"health":"true"}')
        status, _, body = curl(tls_url + "/v3/kv/put", {"key": b64("t"), "value": b64("1")}, context=context)
        assert status == 200, body

        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"{LOOPBACK}:{tls_port}", credentials) as channel:
            kv = rpc_pb2_grpc.KVStub(channel)
            assert kv.Range(rpc_pb2.RangeRequest(key=b"t"), timeout=STEP).kvs[0].value == b"1"
            kv.Put(rpc_pb2.PutRequest(key=b"t", value=b"2"), timeout=STEP)
        out = etcdctl(tls_url, "--cacert", str(cert), "get", "t", "--print-value-only", check=True)
        assert out.stdout.strip() == "2"

        # Plain HTTP on the https port: the TLS handshake fails and the connection ends.
        with socket.create_connection((LOOPBACK, tls_port)) as c:
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b'"health"' not in _read_all(c)
        # The plain URL beside it still works.
        assert_serving(s)


@pytest.mark.parametrize("workers", ["2", "0"])
def test_grpc_only_https_client_url(tmp_path: Path, certificate: tuple[Path, Path], workers: str) -> None:
    """With --listen-client-http-urls, an https client URL is gRPC over TLS, served by gRPC itself."""
    if _overridden():
        pytest.skip(f"{GIFEE_CMD_ENV} is set")
    cert, key = certificate
    tls_port, http_port = free_port(), free_port()
    s = GifeeWith(
        tmp_path / "gifee",
        ["--grpc-workers", workers, "--cert-file", str(cert), "--key-file", str(key),
         "--listen-client-http-urls", f"http://{LOOPBACK}:{http_port}"],
        more_client_urls=[f"https://{LOOPBACK}:{tls_port}"],
    )  # fmt: skip
    with s:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"{LOOPBACK}:{tls_port}", credentials) as channel:
            kv = rpc_pb2_grpc.KVStub(channel)
            kv.Put(rpc_pb2.PutRequest(key=b"t", value=b"1"), timeout=STEP)
        with grpc.insecure_channel(s.endpoint) as channel:
            kv = rpc_pb2_grpc.KVStub(channel)
            assert kv.Range(rpc_pb2.RangeRequest(key=b"t"), timeout=STEP).kvs[0].value == b"1"
        status, _, body = curl(f"http://{LOOPBACK}:{http_port}/v3/kv/range", {"key": b64("t")})
        assert status == 200 and json.loads(body)["kvs"][0]["value"] == b64("1")
