"""`gifee up`: a whole single-machine cluster in one process.

One asyncio process runs, in this order, each only once the one before answers:
  1. the store (gifee's etcd-compatible store, a single member, on loopback);
  2. the Kubernetes API server, which keeps its state in that store through the etcd
     v3 API exactly as it would in a real etcd;
  3. the scheduler and the controller manager (leader-elected through Leases, so a
     second `gifee up` or a separate controller-manager pointed at the same API never
     fights this one), and optionally hollow nodes;
  4. node IPAM (a podCIDR for every node from --cluster-cidr);
  5. unless --no-agent, this machine's node (cluster/node.py: the node agent running
     pods with gifee's runtime, the service proxy with routes to other nodes' pod
     subnets; a `gifee node join` child process) and cluster DNS: the `gifee dns` server in-process on the node IP,
     port 53, behind the `kube-dns` Service (cluster IP 10.96.0.10, the range's
     10th address) whose Endpoints name that listener; agents give ClusterFirst
     pods that nameserver and the cluster search path.
Other machines join with `gifee node join --server <this API>`.
It writes a kubeconfig (DIR/kubeconfig) that `kubectl --kubeconfig` uses, and stops
everything on SIGINT or SIGTERM. A part that fails stops the whole process with its
error, rather than leaving a cluster that half works.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path

from gifee.cluster.node import NodeConfig
from gifee.signals import stop_on_signals

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
    cluster_cidr: str = "10.244.0.0/16"
    node_cidr_mask_size: int = 24
    node: NodeConfig | None = None   # this machine's agent + proxy (None: --no-agent)
    dns_port: int = 53               # cluster DNS on node.node_ip (0: none)
    dns_upstream: str = "none"
    node_monitor_grace_period: int = 40
    default_toleration_seconds: int = 300
    log_level: str = "info"            # of the node's child process

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
    from gifee.cluster.node import dns_cluster_ip, ensure_kube_dns, kube_dns_objects, run_node_process
    from gifee.controllers.allinone import run_control_plane
    from gifee.controllers.manager import Options
    from gifee.dns.server import DnsConfig, DnsServer
    from gifee.proxy import nodeipam
    from gifee.store.node import StoreConfig
    from gifee.store.server import ServerConfig, StoreServer

    config.data_dir.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    stop_on_signals(loop, stop.set)

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
        options = Options(node_monitor_grace_period=config.node_monitor_grace_period,
                          default_toleration_seconds=config.default_toleration_seconds)
        tasks.append(asyncio.create_task(
            run_control_plane(config.api_url, hollow_nodes=config.hollow_nodes, options=options),
            name="control plane"))
        if config.cluster_cidr:
            tasks.append(asyncio.create_task(
                nodeipam.run(config.api_url, config.cluster_cidr, config.node_cidr_mask_size, stop),
                name="node IPAM"))
        if config.node is not None and config.dns_port:
            dns_ip = dns_cluster_ip(config.service_cluster_ip_range)
            await ensure_kube_dns(config.api_url, *kube_dns_objects(dns_ip, config.node.node_ip, config.dns_port))
            dns_server = DnsServer(DnsConfig(server=config.api_url, host=config.node.node_ip, port=config.dns_port,
                                             upstream=config.dns_upstream))
            dns_started = asyncio.Event()
            tasks.append(asyncio.create_task(dns_server.serve(stop, dns_started), name="DNS"))
            await wait_started(dns_started, tasks[-1])
            log.info("cluster DNS on %s:%d, service kube-system/kube-dns %s", config.node.node_ip, config.dns_port,
                     dns_ip)
            if config.node.cluster_dns is None:
                config.node.cluster_dns = (dns_ip,)
        if config.node is not None:
            tasks.append(asyncio.create_task(run_node_process(config.node, stop, config.log_level), name="node"))
        if config.agent is not None:
            tasks.append(asyncio.create_task(config.agent(config.api_url), name="agent"))
        def ended(t: asyncio.Task[None]) -> None:
            if t.cancelled() or (stop.is_set() and t.exception() is None):
                return
            failed(t.exception() or RuntimeError(f"{t.get_name()} stopped"))

        for task in tasks:
            task.add_done_callback(ended)
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


async def wait_started(started: asyncio.Event, task: asyncio.Task[None]) -> None:
    """Until `started` is set; the task's error if it ends first."""
    waiter = asyncio.create_task(started.wait())
    done, _ = await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        task.result()
        raise RuntimeError(f"the {task.get_name()} stopped while starting")
