"""`gifee up`: a whole single-machine cluster in one process.

One asyncio process runs, in this order, each only once the one before answers:
  1. the store (gifee's etcd-compatible store, a single member, on loopback);
  2. the Kubernetes API server, which keeps its state in that store through the etcd
     v3 API exactly as it would in a real etcd;
  3. the scheduler and the controller manager (leader-elected through Leases, so a
     second `gifee up` or a separate controller-manager pointed at the same API never
     fights this one), and optionally hollow nodes;
  4. the node agent, when asked for (`--agent`), running pods with gifee's runtime.
It writes a kubeconfig (DIR/kubeconfig) that `kubectl --kubeconfig` uses, and stops
everything on SIGINT or SIGTERM. A part that fails stops the whole process with its
error, rather than leaving a cluster that half works.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path

log = logging.getLogger("gifee.up")


@dataclasses.dataclass
class UpConfig:
    data_dir: Path
    store_client_url: str = "http://127.0.0.1:2379"
    store_peer_url: str = "http://127.0.0.1:2380"
    bind_address: str = "127.0.0.1"
    api_port: int = 8080
    hollow_nodes: int = 0
    agent: Callable[[str], Coroutine[object, object, None]] | None = None  # runs the node agent against the API URL
    service_cluster_ip_range: str = ""

    @property
    def api_url(self) -> str:
        return f"http://{self.bind_address}:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig"


async def run(config: UpConfig) -> None:
    from gifee.api.kubeconfig import write_kubeconfig
    from gifee.api.server import ApiConfig
    from gifee.api.server import serve as serve_api
    from gifee.controllers.allinone import run_control_plane
    from gifee.store.node import StoreConfig
    from gifee.store.server import ServerConfig, StoreServer

    config.data_dir.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    store = StoreServer(ServerConfig(
        store=StoreConfig(name="gifee-up", data_dir=str(config.data_dir / "store"),
                          client_urls=[config.store_client_url], peer_urls=[config.store_peer_url],
                          listen_peer_urls=[config.store_peer_url]),
        listen_client_urls=[config.store_client_url],
        grpc_workers=0,  # the API server is the store's only client: no worker processes needed
    ))
    failures: list[BaseException] = []

    def failed(exc: BaseException) -> None:
        failures.append(exc)
        stop.set()

    store.store.on_fatal = failed
    await store.start()
    log.info("store serving on %s", config.store_client_url)
    tasks: list[asyncio.Task[None]] = []
    try:
        api_config = ApiConfig(etcd_endpoint=config.store_client_url.split("://", 1)[-1],
                               bind_address=config.bind_address, port=config.api_port)
        if config.service_cluster_ip_range:
            api_config.extra["service_cluster_ip_range"] = config.service_cluster_ip_range
        api_ready = asyncio.Event()
        tasks.append(asyncio.create_task(serve_api(api_config, ready=api_ready), name="apiserver"))
        ready_wait = asyncio.create_task(api_ready.wait())
        done, _ = await asyncio.wait([ready_wait, tasks[0]], return_when=asyncio.FIRST_COMPLETED)
        if tasks[0] in done:
            ready_wait.cancel()
            tasks[0].result()  # raises the API server's start-up error
            raise RuntimeError("the API server stopped while starting")
        write_kubeconfig(str(config.kubeconfig), config.api_url)
        log.info("Kubernetes API on %s; kubeconfig: %s", config.api_url, config.kubeconfig)
        tasks.append(asyncio.create_task(
            run_control_plane(config.api_url, hollow_nodes=config.hollow_nodes), name="control plane"))
        if config.agent is not None:
            tasks.append(asyncio.create_task(config.agent(config.api_url), name="agent"))
        for task in tasks:
            task.add_done_callback(lambda t: failed(t.exception() or RuntimeError(f"{t.get_name()} stopped"))
                                   if not t.cancelled() else None)
        print(f"gifee up: cluster ready; kubectl --kubeconfig {config.kubeconfig} get nodes", flush=True)
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await store.stop()
    if failures:
        raise RuntimeError(f"stopped: {failures[0]}")
