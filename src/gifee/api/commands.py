"""`gifee apiserver` (kube-apiserver's flag names) and `gifee apiserver kubeconfig`."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("apiserver", help="serve the Kubernetes API over the store",
                       description="A Kubernetes-compatible API server; state lives in an etcd v3 store. "
                       "No authentication: every client that reaches the port is an administrator.")
    p.add_argument("--etcd-servers", default="http://127.0.0.1:2379",
                   help="comma-separated etcd v3 endpoints (the first reachable one is used)")
    p.add_argument("--bind-address", default="127.0.0.1", help="address to serve on")
    p.add_argument("--secure-port", type=int, default=0, help="HTTPS port (needs --tls-cert-file/--tls-private-key-file)")
    p.add_argument("--insecure-port", type=int, default=0, help="plain HTTP port (default 8080 when no secure port)")
    p.add_argument("--tls-cert-file", default="")
    p.add_argument("--tls-private-key-file", default="")
    p.add_argument("--watch-cache-size", type=int, default=1000, help="events kept per resource for watchers")
    p.add_argument("--bookmark-interval", type=float, default=60.0, help="seconds between watch bookmarks")
    p.add_argument("--store-batch-size", type=int, default=64,
                   help="writes grouped into one store Txn under load, each guarded alone (1: one Txn per write)")
    p.add_argument("--service-cluster-ip-range", default="10.96.0.0/12",
                   help="CIDR for service cluster IPs (its first host is the kubernetes service's)")
    p.add_argument("--service-node-port-range", default="30000-32767", help="port range for NodePort services")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"])
    p.set_defaults(run=run_apiserver)
    asub = p.add_subparsers(dest="apiserver_command")
    k = asub.add_parser("kubeconfig", help="write a kubeconfig for a server")
    k.add_argument("--server", required=True, help="e.g. http://127.0.0.1:8080")
    k.add_argument("--output", "-o", default="-", help="file to write (default: stdout)")
    k.add_argument("--namespace", default="default")
    k.add_argument("--insecure-skip-tls-verify", action="store_true")
    k.set_defaults(run=run_kubeconfig)


def run_apiserver(args: argparse.Namespace) -> int:
    import logging
    import ssl
    import sys

    from gifee.api.server import ApiConfig, serve

    level = {"warn": "WARNING"}.get(args.log_level, args.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    endpoint = [u.strip() for u in args.etcd_servers.split(",") if u.strip()][0]
    endpoint = endpoint.removeprefix("http://").removeprefix("https://")
    context = None
    port = args.insecure_port or 8080
    if args.secure_port:
        if not (args.tls_cert_file and args.tls_private_key_file):
            print("gifee apiserver: --secure-port needs --tls-cert-file and --tls-private-key-file", file=sys.stderr)
            return 2
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert_file, args.tls_private_key_file)
        port = args.secure_port
    config = ApiConfig(etcd_endpoint=endpoint, bind_address=args.bind_address, port=port, ssl_context=context,
                       bookmark_interval=args.bookmark_interval, watch_window=args.watch_cache_size,
                       store_batch=max(1, min(args.store_batch_size, 64)))
    from gifee.api.ipalloc import parse_port_range

    config.extra["service_cluster_ip_range"] = args.service_cluster_ip_range
    config.extra["service_node_port_range"] = parse_port_range(args.service_node_port_range)
    from gifee import gcpolicy

    gcpolicy.install()  # the watch caches hold every object: no automatic full collections (gcpolicy.py)
    try:
        from gifee import eventloop

        eventloop.run(serve(config))
    except KeyboardInterrupt:
        return 0
    except Exception as e:
        logging.getLogger("gifee").error("%s", e)
        return 1
    return 0


def run_kubeconfig(args: argparse.Namespace) -> int:
    from gifee.api.kubeconfig import kubeconfig_yaml

    text = kubeconfig_yaml(args.server, namespace=args.namespace, insecure=args.insecure_skip_tls_verify)
    if args.output == "-":
        print(text, end="")
    else:
        with open(args.output, "w") as f:
            f.write(text)
    return 0
