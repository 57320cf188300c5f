"""Run a store as a network server: gRPC on the client URLs, HTTP beside it.

The process shell: it opens the store, binds the listeners named by etcd's
flags, and shuts everything down cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import grpc
from aiohttp import web

from gifee.store import gateway
from gifee.store.grpc_api import add_services
from gifee.store.node import Store, StoreConfig

log = logging.getLogger("gifee.store.server")

GRPC_OVERHEAD_BYTES = 512 * 1024  # etcd lets gRPC frames exceed the request limit by this much


@dataclass
class ServerConfig:
    store: StoreConfig
    listen_client_urls: list[str] = field(default_factory=lambda: ["http://localhost:2379"])
    listen_client_http_urls: list[str] = field(default_factory=list)
    listen_metrics_urls: list[str] = field(default_factory=list)
    cert_file: str = ""
    key_file: str = ""


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.port is None:
        raise ValueError(f"URL {url!r} has no port")
    return parts.hostname or "localhost", parts.port


def grpc_options(store: StoreConfig) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", store.max_request_bytes + GRPC_OVERHEAD_BYTES),
        ("grpc.max_send_message_length", 2**31 - 1),
        # etcd's clients ping every few seconds even without calls; accept that as etcd does.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.max_concurrent_streams", 2**31 - 1),
    ]


class StoreServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.store = Store(config.store)
        self._grpc: grpc.aio.Server | None = None
        self._http_runners: list[web.AppRunner] = []

    async def start(self) -> None:
        cfg = self.config
        await self.store.start()
        server = grpc.aio.server(options=grpc_options(cfg.store))
        add_services(server, self.store)
        credentials = None
        if cfg.cert_file and cfg.key_file:
            with open(cfg.key_file, "rb") as k, open(cfg.cert_file, "rb") as c:
                credentials = grpc.ssl_server_credentials([(k.read(), c.read())])
        for url in cfg.listen_client_urls:
            host, port = host_port(url)
            address = f"{host}:{port}"
            if url.startswith("https://"):
                if credentials is None:
                    raise ValueError(f"{url}: https needs --cert-file and --key-file")
                server.add_secure_port(address, credentials)
            else:
                server.add_insecure_port(address)
        await server.start()
        self._grpc = server
        http_urls = cfg.listen_client_http_urls + cfg.listen_metrics_urls
        for url in http_urls:
            host, port = host_port(url)
            runner = web.AppRunner(gateway.build_app(self.store), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, host, port)
            await site.start()
            self._http_runners.append(runner)
        log.info("serving client requests on %s", ", ".join(cfg.listen_client_urls + http_urls))

    async def stop(self) -> None:
        for runner in self._http_runners:
            await runner.cleanup()
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        await self.store.close()


async def serve(config: ServerConfig) -> None:
    server = StoreServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.stop()
