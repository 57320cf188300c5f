"""`gifee up` (the single-machine cluster, see up.py) and `gifee node join` (another
machine's agent and proxy, see node.py)."""

from __future__ import annotations

import argparse


def _node_flags(p: argparse.ArgumentParser, *, join: bool) -> None:
    p.add_argument("--node-ip", default="", help="this node's InternalIP (default: the address of the default route)")
    p.add_argument("--hostname-override", default="", help="node name (default: the host name)")
    p.add_argument("--agent-port", type=int, default=10250, help="the agent's port for logs and exec")
    p.add_argument("--cluster-cidr", default="10.244.0.0/16",
                   help="pod addresses of the whole cluster" + (" (node IPAM cuts it into node podCIDRs)"
                                                               if not join else ""))
    p.add_argument("--cluster-dns", default=None,
                   help="nameserver IPs for ClusterFirst pods (default: the kube-dns Service's cluster IP)")
    p.add_argument("--cluster-domain", default="cluster.local")
    p.add_argument("--insecure-options", default="", help="image: run images without a trusted signature")
    p.add_argument("--insecure-registry", action="store_true", help="pull over plain HTTP / unverified TLS")
    p.add_argument("--lease-interval", type=float, default=10.0, help="seconds between node lease renewals")
    p.add_argument("--node-status-update-frequency", type=float, default=10.0, help="seconds")
    p.add_argument("--backoff-base", type=float, default=10.0, help="first restart back-off, seconds")
    p.add_argument("--node-labels", default="", help="k=v,k2=v2")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"])


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("up", help="run a whole single-machine cluster: store, API server, scheduler, controllers, "
                       "node IPAM, cluster DNS and this machine's node (agent + proxy)")
    p.add_argument("--data-dir", default="", help="where the cluster keeps its state (default: DIR/cluster)")
    p.add_argument("--listen-client-urls", default="http://127.0.0.1:2379", help="the store's client URL")
    p.add_argument("--listen-peer-urls", default="http://127.0.0.1:2380", help="the store's peer URL")
    p.add_argument("--bind-address", default="127.0.0.1",
                   help="the API server's address (other machines join through it)")
    p.add_argument("--insecure-port", type=int, default=8080, help="the API server's port (plain HTTP)")
    p.add_argument("--service-cluster-ip-range", default="", help="virtual IPs for services (default 10.96.0.0/12)")
    p.add_argument("--node-cidr-mask-size", type=int, default=24)
    p.add_argument("--hollow-nodes", type=int, default=0, help="simulated nodes to register (for trying things out)")
    p.add_argument("--no-agent", action="store_true",
                   help="no node on this machine: no agent, proxy or cluster DNS (needs no root)")
    p.add_argument("--dns-port", type=int, default=53, help="cluster DNS port on the node IP (0: no cluster DNS)")
    p.add_argument("--dns-upstream", default="none", help="IP[:PORT] for names outside the cluster, or none")
    p.add_argument("--node-monitor-grace-period", type=int, default=40,
                   help="seconds without a heartbeat before a node is NotReady (Unknown)")
    p.add_argument("--default-toleration-seconds", type=int, default=300,
                   help="seconds pods stay on an unreachable or not-ready node before they are evicted")
    _node_flags(p, join=False)
    p.set_defaults(run=run_up)

    n = sub.add_parser("node", help="this machine as a node of a cluster")
    nsub = n.add_subparsers(dest="node_command", required=True)
    j = nsub.add_parser("join", help="run this machine's node agent and proxy for an existing cluster",
                        description="Registers this machine as a node of the cluster whose API server is "
                        "--server, runs the pods bound to it and keeps its service rules and pod routes.")
    j.add_argument("--server", "--master", dest="server", required=True, help="the API server, http://HOST:PORT")
    _node_flags(j, join=True)
    j.set_defaults(run=run_join)


def _logging(level: str) -> None:
    import logging

    logging.basicConfig(level={"warn": "WARNING"}.get(level, level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def node_config(args: argparse.Namespace, server: str) -> object:
    import socket
    from pathlib import Path

    from gifee.agent.agent import default_node_ip
    from gifee.cluster.node import NodeConfig

    insecure = {o.strip() for o in args.insecure_options.split(",") if o.strip()}
    if insecure - {"image", "all"}:
        raise ValueError(f"--insecure-options: unknown {', '.join(sorted(insecure - {'image', 'all'}))}")
    dns = None if args.cluster_dns is None else tuple(ip.strip() for ip in args.cluster_dns.split(",") if ip.strip())
    return NodeConfig(
        server=server, data_dir=Path(args.dir), node_name=(args.hostname_override or socket.gethostname()).lower(),
        node_ip=args.node_ip or default_node_ip(), agent_port=args.agent_port, cluster_cidr=args.cluster_cidr,
        cluster_dns=dns, cluster_domain=args.cluster_domain.strip("."), insecure_image=bool(insecure),
        insecure_registry=args.insecure_registry, lease_interval=args.lease_interval,
        status_interval=args.node_status_update_frequency, backoff_base=args.backoff_base,
        labels=dict(kv.split("=", 1) for kv in args.node_labels.split(",") if "=" in kv))


def run_up(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    from pathlib import Path

    from gifee.cluster.node import NodeConfig
    from gifee.cluster.up import UpConfig, run

    _logging(args.log_level)
    try:
        node = None if args.no_agent else node_config(args, f"http://{args.bind_address}:{args.insecure_port}")
    except ValueError as e:
        logging.getLogger("gifee").error("%s", e)
        return 2
    assert node is None or isinstance(node, NodeConfig)
    config = UpConfig(
        data_dir=Path(args.data_dir) if args.data_dir else Path(args.dir) / "cluster",
        store_client_url=args.listen_client_urls, store_peer_url=args.listen_peer_urls,
        bind_address=args.bind_address, api_port=args.insecure_port, hollow_nodes=args.hollow_nodes,
        service_cluster_ip_range=args.service_cluster_ip_range, cluster_cidr=args.cluster_cidr,
        node_cidr_mask_size=args.node_cidr_mask_size, node=node, dns_port=args.dns_port,
        dns_upstream=args.dns_upstream, node_monitor_grace_period=args.node_monitor_grace_period,
        default_toleration_seconds=args.default_toleration_seconds, log_level=args.log_level,
    )
    try:
        asyncio.run(run(config))
    except Exception as e:
        logging.getLogger("gifee").error("%s", e)
        return 1
    return 0


def run_join(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from gifee.cluster.node import NodeConfig, run_node
    from gifee.signals import stop_on_signals

    _logging(args.log_level)
    try:
        node = node_config(args, args.server)
    except ValueError as e:
        logging.getLogger("gifee").error("%s", e)
        return 2
    assert isinstance(node, NodeConfig)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        stop_on_signals(loop, stop.set)
        await run_node(node, stop)

    try:
        asyncio.run(main())
    except Exception as e:
        logging.getLogger("gifee").error("%s", e)
        return 1
    return 0
