"""`gifee dns`: the cluster DNS server."""

from __future__ import annotations

import argparse


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, 53
    return host.strip("[]") or "0.0.0.0", int(port)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dns", help="serve cluster DNS (<service>.<namespace>.svc.<domain>) from the API",
                       description="Answers A, SRV (named ports), PTR, headless services and pod names from a "
                       "watched cache of services and endpoints.")
    p.add_argument("--kubeconfig", default="", help="kubeconfig naming the API server")
    p.add_argument("--server", "--master", dest="server", default="", help="API server URL")
    p.add_argument("--listen", type=_listen, default=("0.0.0.0", 53), help="ADDR:PORT (UDP and TCP; default :53)")
    p.add_argument("--domain", default="cluster.local", help="the cluster domain")
    p.add_argument("--upstream", default="none", help="IP[:PORT] to forward other names to, or none (REFUSED)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"])
    p.set_defaults(run=run_dns)


def run_dns(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from gifee.dns.server import DnsConfig, main
    from gifee.proxy.commands import _server

    logging.basicConfig(level={"warn": "WARNING"}.get(args.log_level, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, port = args.listen
    config = DnsConfig(server=_server(args), host=host, port=port, domain=args.domain.strip("."),
                       upstream=args.upstream)
    try:
        asyncio.run(main(config))
    except KeyboardInterrupt:
        return 0
    except OSError as e:
        logging.getLogger("gifee.dns").error("%s", e)
        return 1
    return 0
