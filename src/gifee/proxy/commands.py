"""`gifee proxy` (the service data plane, kube-proxy's flags) and `gifee nodeipam`."""

from __future__ import annotations

import argparse


def _duration(value: str) -> float:
    v = value.strip()
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if v.endswith(suffix) and v[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(v[: -len(suffix)]) * scale
    return float(v)


def _server(args: argparse.Namespace) -> str:
    if args.server:
        return str(args.server)
    if args.kubeconfig:
        import yaml

        with open(args.kubeconfig) as f:
            doc = yaml.safe_load(f) or {}
        current = doc.get("current-context")
        ctx = next((c["context"] for c in doc.get("contexts") or [] if c.get("name") == current), None)
        cluster_name = ctx.get("cluster") if ctx else None
        for c in doc.get("clusters") or []:
            if cluster_name is None or c.get("name") == cluster_name:
                return str(c["cluster"]["server"])
    return "http://127.0.0.1:8080"


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("proxy", help="keep the node's service rules (nftables) in sync with the API",
                       description="Writes `table ip gifee`: DNAT from service cluster IPs and node ports to ready "
                       "endpoints, masquerade where needed. The kernel forwards; this process is not in the data "
                       "path.")
    p.add_argument("--kubeconfig", default="", help="kubeconfig naming the API server")
    p.add_argument("--server", "--master", dest="server", default="", help="API server URL (overrides kubeconfig)")
    p.add_argument("--node-name", default="", help="this node's name (default: the host name)")
    p.add_argument("--sync-period", type=_duration, default=1.0, help="re-check interval (e.g. 1s, 500ms)")
    p.add_argument("--cluster-cidr", default="", help="pod CIDR: traffic to services from outside it is masqueraded")
    p.add_argument("--routes", action="store_true",
                   help="also route other nodes' pod subnets (spec.podCIDR) via their InternalIP")
    p.add_argument("--keep-rules-on-exit", action="store_true", help="leave the table in place on SIGTERM")
    p.add_argument("--cleanup", action="store_true", help="remove gifee's table (and routes) and exit")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"])
    p.set_defaults(run=run_proxy)

    n = sub.add_parser("nodeipam", help="assign each node a pod subnet (spec.podCIDR) from the cluster CIDR")
    n.add_argument("--kubeconfig", default="")
    n.add_argument("--server", "--master", dest="server", default="")
    n.add_argument("--cluster-cidr", default="10.244.0.0/16")
    n.add_argument("--node-cidr-mask-size", type=int, default=24)
    n.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"])
    n.set_defaults(run=run_nodeipam)


def _logging(level: str) -> None:
    import logging

    logging.basicConfig(level={"warn": "WARNING"}.get(level, level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_proxy(args: argparse.Namespace) -> int:
    import asyncio
    import socket

    from gifee.proxy import daemon

    _logging(args.log_level)
    if args.cleanup:
        try:
            asyncio.run(daemon.cleanup())
        except daemon.NftError as e:
            print(f"gifee proxy: {e}")
            return 1
        from gifee.proxy.routes import RouteSyncer

        RouteSyncer().remove_all()
        return 0
    config = daemon.ProxyConfig(server=_server(args), node_name=args.node_name or socket.gethostname(),
                                sync_period=args.sync_period, cluster_cidr=args.cluster_cidr, routes=args.routes,
                                keep_rules_on_exit=args.keep_rules_on_exit)
    try:
        asyncio.run(daemon.main(config))
    except KeyboardInterrupt:
        return 0
    return 0


def run_nodeipam(args: argparse.Namespace) -> int:
    import asyncio

    from gifee.proxy import nodeipam
    from gifee.signals import stop_on_signals

    _logging(args.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        stop_on_signals(loop, stop.set)
        await nodeipam.run(_server(args), args.cluster_cidr, args.node_cidr_mask_size, stop)

    asyncio.run(main())
    return 0
