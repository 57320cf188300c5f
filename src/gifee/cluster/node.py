"""A machine's node parts in one asyncio process: the node agent (pods) and the service
proxy with pod routes. `gifee node join` runs them against an existing cluster's API
server; `gifee up` runs them beside the control plane for its own machine.

Rules:
- The node's name is --hostname-override or the host name, lower-cased; its
  InternalIP is --node-ip (else the address of the default route).
- Cluster DNS: the nameserver ClusterFirst pods get is --cluster-dns, else the
  cluster IP of the `kube-dns` Service in kube-system when the API has one at
  start, else none (pods get the host's resolv.conf).
- The kube-dns Service `gifee up` creates has the fixed cluster IP the 10th
  address of the service range (10.96.0.10 in 10.96.0.0/12), ports `dns` (UDP 53)
  and `dns-tcp` (TCP 53), no selector; its Endpoints name the DNS listener
  (the control-plane machine's node IP, port 53) and are rewritten on every start.
- The proxy writes `table ip gifee` and, for every other node, a route to its
  podCIDR via its InternalIP; traffic to cluster IPs from outside --cluster-cidr
  is masqueraded.
- Either part stopping with an error stops the process with that error; SIGTERM
  stops both (pods keep running, as they do when the kubelet stops; the proxy
  removes its rules and routes).

Theory of operation: `kube_dns_objects`, `dns_cluster_ip` and `join_argv` are pure;
`run_node` is the shell that starts Agent and Proxy as tasks and waits for the first
to end. `gifee up` runs its node as a `gifee node join` child process
(`run_node_process`): the runtime forks pods, and the up process serves gRPC (the
store), whose threads make forked children unreliable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("gifee.node")
Obj = dict[str, Any]
KUBE_DNS = "kube-dns"
KUBE_SYSTEM = "kube-system"


def dns_cluster_ip(service_cidr: str) -> str:
    """The 10th address of the service range (10.96.0.10 for 10.96.0.0/12), as kubeadm chooses."""
    net = ipaddress.ip_network(service_cidr or "10.96.0.0/12", strict=False)
    return str(net.network_address + 10)


def kube_dns_objects(cluster_ip: str, listen_ip: str, port: int = 53) -> tuple[Obj, Obj]:
    """The kube-dns Service (no selector, fixed cluster IP) and its Endpoints (the listener)."""
    labels = {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": KUBE_DNS, "namespace": KUBE_SYSTEM, "labels": labels},
               "spec": {"clusterIP": cluster_ip, "type": "ClusterIP",
                        "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": port},
                                  {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": port}]}}
    endpoints = {"apiVersion": "v1", "kind": "Endpoints",
                 "metadata": {"name": KUBE_DNS, "namespace": KUBE_SYSTEM, "labels": labels},
                 "subsets": [{"addresses": [{"ip": listen_ip}],
                              "ports": [{"name": "dns", "port": port, "protocol": "UDP"},
                                        {"name": "dns-tcp", "port": port, "protocol": "TCP"}]}]}
    return service, endpoints


async def ensure_kube_dns(server: str, service: Obj, endpoints: Obj) -> None:
    """Create the kube-dns Service (kept if it exists) and create or replace its Endpoints."""
    from gifee.api.client import ApiClient
    from gifee.api.errors import ApiError

    async with ApiClient(server) as api:
        try:
            await api.create("services", service, namespace=KUBE_SYSTEM)
        except ApiError as e:
            if e.code != 409:
                raise
            have = await api.get("services", KUBE_DNS, namespace=KUBE_SYSTEM)
            if (have.get("spec") or {}).get("clusterIP") != service["spec"]["clusterIP"]:
                log.warning("service kube-system/kube-dns has cluster IP %s, not %s",
                            (have.get("spec") or {}).get("clusterIP"), service["spec"]["clusterIP"])
        try:
            await api.create("endpoints", endpoints, namespace=KUBE_SYSTEM)
        except ApiError as e:
            if e.code != 409:
                raise
            have = await api.get("endpoints", KUBE_DNS, namespace=KUBE_SYSTEM)
            await api.update("endpoints", {**have, "subsets": endpoints["subsets"]})


async def discover_cluster_dns(server: str) -> tuple[str, ...]:
    """The kube-dns Service's cluster IP, if the API server has one (retried until it answers)."""
    import aiohttp

    from gifee.api.client import ApiClient
    from gifee.api.errors import ApiError

    delay = 0.5
    async with ApiClient(server) as api:
        while True:
            try:
                svc = await api.get("services", KUBE_DNS, namespace=KUBE_SYSTEM)
            except ApiError as e:
                if e.code == 404:
                    return ()
                raise
            except (aiohttp.ClientError, OSError) as e:
                log.warning("looking up kube-dns at %s: %s", server, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            ip = str((svc.get("spec") or {}).get("clusterIP") or "")
            return (ip,) if ip and ip != "None" else ()


@dataclasses.dataclass
class NodeConfig:
    server: str
    data_dir: Path
    node_name: str
    node_ip: str
    agent_port: int = 10250
    cluster_cidr: str = "10.244.0.0/16"
    cluster_dns: tuple[str, ...] | None = None  # None: the kube-dns Service's cluster IP, if any
    cluster_domain: str = "cluster.local"
    insecure_image: bool = False
    insecure_registry: bool = False
    lease_interval: float = 10.0
    status_interval: float = 10.0
    backoff_base: float = 10.0
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    proxy_sync_period: float = 1.0
    proxy: bool = True


def join_argv(config: NodeConfig, python: str, log_level: str = "info") -> list[str]:
    """`gifee node join` for `config`: how `gifee up` runs its own machine's node as a child process (the
    runtime forks pods, which a process serving gRPC must not do)."""
    argv = [python, "-m", "gifee", "--dir", str(config.data_dir), "node", "join", "--server", config.server,
            "--node-ip", config.node_ip, "--hostname-override", config.node_name,
            "--agent-port", str(config.agent_port), "--cluster-cidr", config.cluster_cidr,
            "--cluster-domain", config.cluster_domain, "--lease-interval", str(config.lease_interval),
            "--node-status-update-frequency", str(config.status_interval),
            "--backoff-base", str(config.backoff_base), "--log-level", log_level]
    if config.cluster_dns is not None:
        argv += ["--cluster-dns", ",".join(config.cluster_dns)]
    if config.labels:
        argv += ["--node-labels", ",".join(f"{k}={v}" for k, v in sorted(config.labels.items()))]
    if config.insecure_image:
        argv += ["--insecure-options", "image"]
    if config.insecure_registry:
        argv.append("--insecure-registry")
    return argv


async def run_node_process(config: NodeConfig, stop: asyncio.Event, log_level: str = "info") -> None:
    """`gifee node join` as a child process until `stop` (SIGTERM, then SIGKILL after 20 s); an early exit
    is an error. (If this process is SIGKILLed, the node keeps running, as a kubelet outlives its API server.)"""
    import sys

    proc = await asyncio.create_subprocess_exec(*join_argv(config, sys.executable, log_level))
    waiter = asyncio.create_task(proc.wait())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        if waiter.done():
            raise RuntimeError(f"the node process (gifee node join) exited with {proc.returncode}")
    finally:
        stopper.cancel()
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(waiter), 20)
            except (TimeoutError, asyncio.CancelledError):
                proc.kill()
                await proc.wait()


async def run_node(config: NodeConfig, stop: asyncio.Event) -> None:
    """Agent + proxy until `stop` is set or one of them fails (its error is raised)."""
    from gifee.agent.agent import Agent, AgentOptions
    from gifee.proxy.daemon import Proxy, ProxyConfig

    cluster_dns = config.cluster_dns
    if cluster_dns is None:
        cluster_dns = await discover_cluster_dns(config.server)
        log.info("cluster DNS for pods: %s", ", ".join(cluster_dns) or "none (the host's resolv.conf)")
    agent = Agent(AgentOptions(
        data_dir=config.data_dir, server=config.server, node_name=config.node_name, node_ip=config.node_ip,
        port=config.agent_port, insecure_image=config.insecure_image, insecure_registry=config.insecure_registry,
        lease_interval=config.lease_interval, status_interval=config.status_interval,
        backoff_base=config.backoff_base, labels=config.labels, cluster_dns=cluster_dns,
        cluster_domain=config.cluster_domain))
    tasks: list[asyncio.Task[None]] = [asyncio.create_task(agent.run(), name="agent")]
    proxy_stop = asyncio.Event()
    if config.proxy:
        proxy = Proxy(ProxyConfig(server=config.server, node_name=config.node_name,
                                  sync_period=config.proxy_sync_period, cluster_cidr=config.cluster_cidr,
                                  routes=True))
        tasks.append(asyncio.create_task(proxy.run(proxy_stop), name="proxy"))
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            if t in done:
                t.result()  # raises the part's error
                raise RuntimeError(f"the {t.get_name()} stopped")
    finally:
        stopper.cancel()
        proxy_stop.set()
        for t in tasks:
            if t.get_name() == "agent":
                t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(t, 15)
