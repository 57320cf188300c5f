"""`gifee up`: the single-machine cluster (see up.py)."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("up", help="run a whole single-machine cluster: store, API server, scheduler, controllers")
    p.add_argument("--data-dir", default="", help="where the cluster keeps its state (default: DIR/cluster)")
    p.add_argument("--listen-client-urls", default="http://127.0.0.1:2379", help="the store's client URL")
    p.add_argument("--listen-peer-urls", default="http://127.0.0.1:2380", help="the store's peer URL")
    p.add_argument("--bind-address", default="127.0.0.1", help="the API server's address")
    p.add_argument("--insecure-port", type=int, default=8080, help="the API server's port (plain HTTP)")
    p.add_argument("--service-cluster-ip-range", default="", help="virtual IPs for services (default 10.96.0.0/12)")
    p.add_argument("--hollow-nodes", type=int, default=0, help="simulated nodes to register (for trying things out)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"])
    p.set_defaults(run=run_up)


def run_up(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    from pathlib import Path

    from gifee.cluster.up import UpConfig, run

    level = {"warn": "WARNING"}.get(args.log_level, args.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = UpConfig(
        data_dir=Path(args.data_dir) if args.data_dir else Path(args.dir) / "cluster",
        store_client_url=args.listen_client_urls, store_peer_url=args.listen_peer_urls,
        bind_address=args.bind_address, api_port=args.insecure_port, hollow_nodes=args.hollow_nodes,
        service_cluster_ip_range=args.service_cluster_ip_range,
    )
    try:
        asyncio.run(run(config))
    except Exception as e:
        logging.getLogger("gifee").error("%s", e)
        return 1
    return 0
