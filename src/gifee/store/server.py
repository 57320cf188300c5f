"""Run a store as a network server: gRPC and HTTP on the client URLs, HTTP beside them.

The process shell. With `grpc_workers` > 0 (the default on a machine with
several cores) this process is the core: it runs the store and the HTTP side,
and starts worker processes that own the client URLs, terminate gRPC and
relay calls over a Unix socket (`ipc.py`, `worker.py`); the HTTP/1.x
connections they accept on the client URLs come back to this process as
sockets (`clientport.py`). With 0 it owns the client URLs and serves gRPC
itself. With `listen_client_http_urls` the client URLs serve gRPC alone, as
etcd 3.5's do, and gRPC listens on them directly. Either way it stops cleanly
on SIGTERM/SIGINT.

With workers, the core also serves gRPC connections itself, about
`core_grpc_connections` of them (1 by default) at a time: while it serves fewer,
it tells each worker so (ipc.CORE_FREE), and a worker passes the next gRPC
connection it accepts, unread, to the core. A lone client (etcdctl, one
application's client) then skips the hop between processes, about 0.1 ms of a
put's latency; further connections are served by the workers, which carry the
load of many clients. A connection stays where it started. Workers that pass
connections at the same moment may take the core a little over its number (at
most one each). With `listen_client_http_urls` (no routing on the client URLs)
the workers serve every gRPC connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import ssl
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from gifee import eventloop
from gifee.store import clientport, gateway, grpcport, ipc
from gifee.store.handlers import methods, receive_limit
from gifee.store.listen import check_free, host_port
from gifee.store.node import Store, StoreConfig

log = logging.getLogger("gifee.store.server")

WORKER_START_TIMEOUT = 30.0


def default_workers() -> int:
    return 2 if (os.cpu_count() or 1) >= 2 else 0


@dataclass
class ServerConfig:
    store: StoreConfig
    listen_client_urls: list[str] = field(default_factory=lambda: ["http://localhost:2379"])
    listen_client_http_urls: list[str] = field(default_factory=list)
    listen_metrics_urls: list[str] = field(default_factory=list)
    cert_file: str = ""
    key_file: str = ""
    grpc_workers: int = 0
    core_grpc_connections: int = 1  # with workers: how many gRPC connections the core serves itself
    busy_poll_us: int = 0  # after the core answers a gRPC client, it polls that long before it sleeps

    @property
    def grpc_only_client_urls(self) -> bool:
        """As etcd 3.5: with HTTP URLs of their own, the client URLs serve gRPC alone. gRPC then
        listens on them directly, without the routing and relay that sharing the port costs."""
        return bool(self.listen_client_http_urls)


class StoreServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.store = Store(config.store)
        self._grpc_port: grpcport.GrpcPort | None = None
        self._local_link: grpcport.LocalLink | None = None
        self._name = f"gifee-store-{os.getpid()}-{secrets.token_hex(4)}"  # of private Unix sockets
        self._ssl: ssl.SSLContext | None = None
        self._client_http: web.AppRunner | None = None  # HTTP on the client URLs (and client-http URLs)
        self._http_runners: list[web.AppRunner] = []
        self._http_tasks: set[asyncio.Task[None]] = set()
        self._handoff: clientport.HandoffReceiver | None = None
        self._ipc_server: asyncio.AbstractServer | None = None
        self._workers: list[asyncio.subprocess.Process] = []
        self._worker_watch: asyncio.Task[None] | None = None
        self._worker_links: weakref.WeakSet[ipc.CoreConnection] = weakref.WeakSet()
        self._stopping = False
        self.failed = asyncio.Event()

    async def start(self) -> None:
        cfg = self.config
        http_urls = cfg.listen_client_http_urls + cfg.listen_metrics_urls
        for url in cfg.listen_client_urls + http_urls:
            if url.startswith("https://") and not (cfg.cert_file and cfg.key_file):
                raise ValueError(f"{url}: https needs --cert-file and --key-file")
        if cfg.cert_file and cfg.key_file:
            self._ssl = http_tls_context(cfg.cert_file, cfg.key_file)
        for url in cfg.listen_client_urls:
            check_free(url)
        await self.store.start()
        await self._start_http()
        if cfg.grpc_workers > 0:
            if not cfg.grpc_only_client_urls:
                on_grpc = None
                if cfg.core_grpc_connections > 0:
                    on_grpc = self._start_core_grpc().take
                self._handoff = clientport.HandoffReceiver(
                    "\0" + self._name + "-http", self._take_http, on_grpc
                )
                self._handoff.start()
            await self._start_workers()
        else:
            await self._start_grpc()
        # Clients could not keep their leases alive while we started: the TTLs run from now.
        self.store.renew_all_leases()
        log.info("serving client requests on %s", ", ".join(cfg.listen_client_urls + http_urls))

    async def _start_http(self) -> None:
        """The HTTP side: on the client URLs (connections handed over), client-http and metrics URLs."""
        cfg = self.config
        # etcd serves only /metrics and /health on its metrics URLs.
        runner = web.AppRunner(gateway.build_app(self.store), access_log=None)
        await runner.setup()
        self._client_http = runner
        self._http_runners.append(runner)
        for url in cfg.listen_client_http_urls:
            await self._http_site(runner, url)
        if cfg.listen_metrics_urls:
            metrics = web.AppRunner(gateway.build_app(self.store, with_gateway=False), access_log=None)
            await metrics.setup()
            self._http_runners.append(metrics)
            for url in cfg.listen_metrics_urls:
                await self._http_site(metrics, url)

    async def _http_site(self, runner: web.AppRunner, url: str) -> None:
        host, port = host_port(url)
        tls = self._ssl if url.startswith("https://") else None
        await web.TCPSite(runner, host, port, ssl_context=tls).start()

    def _take_http(self, sock: socket.socket, tls: bool) -> None:
        """Serve an HTTP connection accepted on a client URL (by a worker or by this process)."""
        task = asyncio.get_running_loop().create_task(self._serve_http(sock, tls))
        self._http_tasks.add(task)
        task.add_done_callback(self._http_tasks.discard)

    async def _serve_http(self, sock: socket.socket, tls: bool) -> None:
        runner = self._client_http
        server = runner.server if runner is not None else None
        if server is None or self._stopping or (tls and self._ssl is None):
            sock.close()
            return
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                server, sock, ssl=self._ssl if tls else None
            )
        except (Exception, asyncio.CancelledError) as e:  # a failed TLS handshake, a reset
            log.debug("HTTP connection on the client port failed: %s", e)
            sock.close()
            if isinstance(e, asyncio.CancelledError):
                raise

    async def _start_grpc(self) -> None:
        """Serve gRPC in this process: the connections as a worker serves them, the calls handed over in-process."""
        cfg = self.config
        table = methods(self.store)
        limit = receive_limit(cfg.store.max_request_bytes)
        self._local_link = link = grpcport.LocalLink(table, limit)
        on_http = None if cfg.grpc_only_client_urls else self._take_http
        port = grpcport.GrpcPort(
            cfg.listen_client_urls,
            link,
            ipc.method_table(table),
            limit,
            cfg.cert_file,
            cfg.key_file,
            on_http,
            after_write=self._busy_poll(),
        )
        await port.start()
        self._grpc_port = port

    def _start_core_grpc(self) -> grpcport.GrpcPort:
        """The gRPC connections workers hand to the core, served here (as with `--grpc-workers 0`)."""
        cfg = self.config
        table = methods(self.store)
        limit = receive_limit(cfg.store.max_request_bytes)
        self._local_link = link = grpcport.LocalLink(table, limit)
        port = grpcport.GrpcPort(
            [], link, ipc.method_table(table), limit, cfg.cert_file, cfg.key_file, after_write=self._busy_poll()
        )
        port.on_served = self._announce_core_free
        self._grpc_port = port
        return port

    def _busy_poll(self) -> Callable[[], None] | None:
        if self.config.busy_poll_us <= 0:
            return None
        return eventloop.BusyPoll(self.config.busy_poll_us / 1e6).poke

    def _core_free(self) -> bool:
        port = self._grpc_port
        return not self._stopping and port is not None and port.served < self.config.core_grpc_connections

    def _announce_core_free(self) -> None:
        # Told after every change, not only when the answer flips: a worker that passed a connection
        # counts the core as taken until it hears again, and with room for more the answer stays "free".
        free = self._core_free()
        for conn in self._worker_links:
            conn.announce(free)

    async def _start_workers(self) -> None:
        cfg = self.config
        table = methods(self.store)
        limit = receive_limit(cfg.store.max_request_bytes)
        name = self._name
        loop = asyncio.get_running_loop()
        ready: list[asyncio.Future[None]] = []

        core_free = self._core_free if self._grpc_port is not None else None

        def connection() -> ipc.CoreConnection:
            fut: asyncio.Future[None] = loop.create_future()
            ready.append(fut)
            conn = ipc.CoreConnection(table, limit, fut, core_free=core_free)
            self._worker_links.add(conn)
            return conn

        self._ipc_server = await loop.create_unix_server(connection, path="\0" + name)
        self._core_address = "@" + name
        for _ in range(cfg.grpc_workers):
            self._workers.append(await self._spawn_worker())
        deadline = loop.time() + WORKER_START_TIMEOUT
        while sum(1 for f in ready if f.done()) < cfg.grpc_workers:
            for proc in self._workers:
                if proc.returncode is not None:
                    err = b""
                    if proc.stderr is not None:
                        err = await proc.stderr.read()
                    raise RuntimeError(f"gRPC worker failed to start: {err.decode(errors='replace').strip()}")
            if loop.time() > deadline:
                raise RuntimeError("gRPC workers did not start in time")
            await asyncio.sleep(0.02)
        self._worker_watch = loop.create_task(self._watch_workers())

    async def _spawn_worker(self) -> asyncio.subprocess.Process:
        cfg = self.config
        args = [
            sys.executable, "-m", "gifee.store.worker",
            "--core", self._core_address,
            "--handoff", "@" + self._name + "-http",
            "--listen", ",".join(cfg.listen_client_urls),
            "--max-request-bytes", str(cfg.store.max_request_bytes),
        ]  # fmt: skip
        if cfg.cert_file and cfg.key_file:
            args += ["--cert-file", cfg.cert_file, "--key-file", cfg.key_file]
        if cfg.grpc_only_client_urls:
            args.append("--grpc-only")
        return await asyncio.create_subprocess_exec(*args, stderr=asyncio.subprocess.PIPE)

    async def _watch_workers(self) -> None:
        """A worker that dies is replaced; clients reconnect to its siblings meanwhile."""
        while not self._stopping:
            await asyncio.sleep(0.5)
            for i, proc in enumerate(self._workers):
                if proc.returncode is not None and not self._stopping:
                    err = b""
                    if proc.stderr is not None:
                        with contextlib.suppress(Exception):
                            err = await asyncio.wait_for(proc.stderr.read(), 1.0)
                    log.error(
                        "gRPC worker %d exited (%s); restarting: %s", proc.pid, proc.returncode, err[-500:]
                    )
                    self._workers[i] = await self._spawn_worker()

    async def stop(self) -> None:
        self._stopping = True
        self._announce_core_free()
        if self._worker_watch is not None:
            self._worker_watch.cancel()
        if self._grpc_port is not None:
            self._grpc_port.close()
        for proc in self._workers:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        for proc in self._workers:
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._handoff is not None:
            self._handoff.close()
        if self._ipc_server is not None:
            self._ipc_server.close()
        for task in list(self._http_tasks):
            task.cancel()
        for runner in self._http_runners:
            await runner.cleanup()
        if self._local_link is not None:
            self._local_link.close()
        await self.store.close()


def http_tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """TLS for the HTTP side. gRPC clients never reach it (`clientport` routes by ALPN), so HTTP/1.1 only."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["http/1.1"])
    return context


async def serve(config: ServerConfig) -> None:
    clientport.raise_descriptor_limit()
    # Handlers first: workers may answer clients before start() returns, and a
    # SIGTERM in that window must still stop everything cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = StoreServer(config)
    fatal: list[BaseException] = []

    def on_fatal(exc: BaseException) -> None:
        fatal.append(exc)
        stop.set()

    server.store.on_fatal = on_fatal
    try:
        await server.start()
    except BaseException:
        await server.stop()
        raise
    await stop.wait()
    log.info("shutting down")
    await server.stop()
    if fatal:
        raise RuntimeError(f"stopped: {fatal[0]}")
