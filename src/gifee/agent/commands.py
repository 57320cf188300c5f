"""`gifee agent`: the node agent (the kubelet's flags where the kubelet has them)."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("agent", help="run this machine's pods for the API server (the kubelet's job)",
                       description="Registers the node, renews its lease, runs the pods bound to it as gifee "
                       "pods, reports their status, probes them and serves their logs and exec.")
    p.add_argument("--master", "--server", dest="server", default="http://127.0.0.1:8080", help="API server URL")
    p.add_argument("--hostname-override", default="", help="node name (default: the host name)")
    p.add_argument("--node-ip", default="", help="the node's InternalIP (default: the address of the default route)")
    p.add_argument("--port", type=int, default=10250, help="port for logs and exec (proxied by the API server)")
    p.add_argument("--address", default="", help="address to serve on (default: --node-ip)")
    p.add_argument("--insecure-options", default="", help="image: run images without a trusted signature")
    p.add_argument("--insecure-registry", action="store_true", help="pull over plain HTTP / unverified TLS")
    p.add_argument("--node-status-update-frequency", type=float, default=10.0, help="seconds")
    p.add_argument("--lease-interval", type=float, default=10.0, help="seconds between lease renewals")
    p.add_argument("--sync-frequency", type=float, default=1.0, help="seconds between full reconciles")
    p.add_argument("--backoff-base", type=float, default=10.0, help="first restart back-off, seconds")
    p.add_argument("--backoff-max", type=float, default=300.0, help="longest restart back-off, seconds")
    p.add_argument("--max-pods", type=int, default=110)
    p.add_argument("--volume-refresh", type=float, default=10.0,
                   help="seconds between refreshes of configMap and secret volumes")
    p.add_argument("--node-labels", default="", help="k=v,k2=v2")
    p.add_argument("--cluster-dns", default="", help="nameserver IPs (comma-separated) for ClusterFirst pods")
    p.add_argument("--cluster-domain", default="cluster.local", help="the cluster's DNS domain")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"])
    p.set_defaults(run=run_agent)


def run_agent(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import socket
    import sys
    from pathlib import Path

    from gifee.agent.agent import Agent, AgentOptions, default_node_ip

    level = {"warn": "WARNING"}.get(args.log_level, args.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    insecure = {o.strip() for o in args.insecure_options.split(",") if o.strip()}
    if insecure - {"image", "all"}:
        print(f"gifee agent: --insecure-options: unknown {', '.join(sorted(insecure - {'image', 'all'}))}",
              file=sys.stderr)
        return 2
    labels = dict(kv.split("=", 1) for kv in args.node_labels.split(",") if "=" in kv)
    opts = AgentOptions(
        data_dir=Path(args.dir), server=args.server, node_name=(args.hostname_override or socket.gethostname()).lower(),
        node_ip=args.node_ip or default_node_ip(), port=args.port, bind_address=args.address,
        insecure_image=bool(insecure), insecure_registry=args.insecure_registry,
        lease_interval=args.lease_interval, status_interval=args.node_status_update_frequency,
        sync_interval=args.sync_frequency, backoff_base=args.backoff_base, backoff_cap=args.backoff_max,
        max_pods=args.max_pods, labels=labels, volume_refresh=args.volume_refresh,
        cluster_dns=tuple(ip.strip() for ip in args.cluster_dns.split(",") if ip.strip()),
        cluster_domain=args.cluster_domain.strip("."))
    try:
        asyncio.run(Agent(opts).run())
    except KeyboardInterrupt:
        return 0
    return 0
