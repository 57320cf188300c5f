"""The `gifee` command: one entry point, one subcommand per part.

Flags follow the tool a user already knows: `gifee store` takes etcd's, `gifee run`
rkt's. Each part other than the store contributes its subcommands from its own
`gifee.<part>.commands` module, which must stay cheap to import (argparse only; the
work imports lazily) so that `gifee run` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when used: `gifee run` must not pay for the store's imports
    import ssl

# Parts whose `commands` module adds subcommands, in the order `gifee --help` lists them.
PART_COMMANDS = ("runtime", "image", "registry", "scan", "api", "scheduler", "controllers", "agent", "proxy",
                 "dns", "cluster")
DEFAULT_DIR = "/var/lib/gifee"


def _urls(value: str) -> list[str]:
    return [u.strip() for u in value.split(",") if u.strip()]


def _size(value: str) -> int:
    return int(float(value))


def _retention(value: str) -> float:
    """etcd's --auto-compaction-retention: hours as a number, or a Go duration like 30m, 1h, 10s."""
    v = value.strip()
    if not v:
        return 0.0
    units = {"h": 1.0, "m": 1 / 60, "s": 1 / 3600}
    if v[-1] in units and v[:-1].replace(".", "", 1).isdigit():
        return float(v[:-1]) * units[v[-1]]
    return float(v)


def _initial_cluster(value: str) -> dict[str, list[str]]:
    """etcd's --initial-cluster: name=url pairs, a name repeated for each of its URLs."""
    out: dict[str, list[str]] = {}
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, url = part.partition("=")
        if not sep or not name or not url:
            raise ValueError(f"--initial-cluster: {part!r} is not name=URL")
        out.setdefault(name, []).append(url)
    return out


def _peer_tls(args: argparse.Namespace) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    import ssl

    """TLS between members when --peer-cert-file/--peer-key-file are given (mutual, with the trusted CA)."""
    if not (args.peer_cert_file and args.peer_key_file):
        return None, None
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(args.peer_cert_file, args.peer_key_file)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_cert_chain(args.peer_cert_file, args.peer_key_file)
    if args.peer_trusted_ca_file:
        server.load_verify_locations(args.peer_trusted_ca_file)
        server.verify_mode = ssl.CERT_REQUIRED
        client.load_verify_locations(args.peer_trusted_ca_file)
    else:
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
    return server, client


def store_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("store", help="run the etcd-compatible key-value store", description="etcd's flags apply.")
    p.add_argument("--name", default="default", help="human-readable name for this member")
    p.add_argument("--data-dir", default="", help="path to the data directory (default: ${name}.etcd)")
    p.add_argument("--listen-client-urls", type=_urls, default=["http://localhost:2379"])
    p.add_argument("--advertise-client-urls", type=_urls, default=None)
    p.add_argument("--listen-client-http-urls", type=_urls, default=[],
                   help="URLs for the HTTP gateway (/v3/...), /health and /metrics; "
                        "with them the client URLs serve gRPC only (as etcd 3.5)")
    p.add_argument("--listen-metrics-urls", type=_urls, default=[], help="URLs for /health and /metrics")
    p.add_argument("--listen-peer-urls", type=_urls, default=["http://localhost:2380"])
    p.add_argument("--initial-advertise-peer-urls", type=_urls, default=None)
    p.add_argument("--initial-cluster", default="", help="name=peerURL,... for bootstrapping (default: this member)")
    p.add_argument("--initial-cluster-state", choices=["new", "existing"], default="new")
    p.add_argument("--initial-cluster-token", default="etcd-cluster")
    p.add_argument("--heartbeat-interval", type=int, default=100, help="time (in milliseconds) of a heartbeat")
    p.add_argument("--election-timeout", type=int, default=1000, help="time (in milliseconds) for an election")
    p.add_argument("--peer-cert-file", default="")
    p.add_argument("--peer-key-file", default="")
    p.add_argument("--peer-trusted-ca-file", default="")
    p.add_argument("--quota-backend-bytes", type=_size, default=0, help="backend size quota (0 = 2 GiB)")
    p.add_argument("--max-request-bytes", type=_size, default=int(1.5 * 1024 * 1024))
    p.add_argument("--snapshot-count", type=int, default=100_000)
    p.add_argument("--auto-compaction-retention", type=_retention, default=0.0)
    p.add_argument("--auto-compaction-mode", choices=["periodic", "revision"], default="periodic")
    p.add_argument("--experimental-watch-progress-notify-interval", type=_retention, default=600 / 3600)
    p.add_argument("--cert-file", default="")
    p.add_argument("--key-file", default="")
    p.add_argument("--grpc-workers", type=int, default=None,
                   help="processes that terminate gRPC for the core (default: 2 on multi-core machines; 0 = in-process)")
    p.add_argument("--core-grpc-connections", type=int, default=1,
                   help="with gRPC workers: connections the core serves itself, sparing them a hop (0 = none)")
    p.add_argument("--busy-poll-us", type=int, default=500,
                   help="microseconds the core keeps polling after answering a gRPC client it serves, "
                        "rather than sleep until the next request (0 = never)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"])
    p.set_defaults(run=run_store)


def run_store(args: argparse.Namespace) -> int:
    from gifee.store.node import DEFAULT_QUOTA_BYTES, StoreConfig
    from gifee.store.server import ServerConfig, default_workers, serve

    peer_urls = args.initial_advertise_peer_urls or args.listen_peer_urls
    try:
        initial_cluster = _initial_cluster(args.initial_cluster) or None
    except ValueError as e:
        print(f"gifee store: {e}", file=sys.stderr)
        return 2
    server_ssl, client_ssl = _peer_tls(args)
    store = StoreConfig(
        name=args.name,
        data_dir=args.data_dir or f"{args.name}.etcd",
        client_urls=args.advertise_client_urls or args.listen_client_urls,
        peer_urls=peer_urls,
        listen_peer_urls=args.listen_peer_urls,
        initial_cluster=initial_cluster,
        initial_cluster_state=args.initial_cluster_state,
        heartbeat_ms=args.heartbeat_interval,
        election_ms=args.election_timeout,
        peer_server_ssl=server_ssl,
        peer_client_ssl=client_ssl,
        cluster_token=args.initial_cluster_token,
        quota_bytes=args.quota_backend_bytes or DEFAULT_QUOTA_BYTES,
        max_request_bytes=args.max_request_bytes,
        snapshot_count=args.snapshot_count,
        auto_compaction_mode=args.auto_compaction_mode,
        auto_compaction_retention=args.auto_compaction_retention,
        progress_notify_interval=args.experimental_watch_progress_notify_interval * 3600,
    )
    config = ServerConfig(
        store=store,
        listen_client_urls=args.listen_client_urls,
        listen_client_http_urls=args.listen_client_http_urls,
        listen_metrics_urls=args.listen_metrics_urls,
        cert_file=args.cert_file,
        key_file=args.key_file,
        grpc_workers=default_workers() if args.grpc_workers is None else args.grpc_workers,
        core_grpc_connections=args.core_grpc_connections,
        busy_poll_us=args.busy_poll_us,
    )
    level = {"warn": "WARNING"}.get(args.log_level, args.log_level.upper())
    import logging

    from gifee import eventloop

    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        eventloop.run(serve(config))
    except Exception as e:  # a start-up failure (corrupt data, port in use) ends with a clear message
        logging.getLogger("gifee").error("%s", e)
        return 1
    return 0


def _command_named(argv: Sequence[str]) -> str | None:
    """The subcommand the command line names: its first word that is neither an option
    nor --dir's value (the only global option that takes one)."""
    words = iter(argv)
    for word in words:
        if word == "--dir":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _terminal_columns() -> int:
    """What argparse's formatter asks shutil for, without importing shutil (and through it
    bz2 and lzma: 3-7 ms of every gifee run) to build parsers whose help is rarely printed."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 80
    except (AttributeError, ValueError, OSError):
        return 80


class _Formatter(argparse.HelpFormatter):
    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         width if width is not None else _terminal_columns() - 2)


class _Parser(argparse.ArgumentParser):
    """gifee's parsers (subcommands' too: add_subparsers makes parsers of its parser's class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


def _untranslated(message: str) -> str:
    return message


def _untranslated_plural(singular: str, plural: str, n: int) -> str:
    return singular if n == 1 else plural


# argparse passes its messages through gettext, which imports locale and looks for
# message catalogues on every call; Python ships none for argparse, so the lookup only
# costs time (a few ms of every gifee run).
argparse._ = _untranslated  # type: ignore[attr-defined]
argparse.ngettext = _untranslated_plural  # type: ignore[attr-defined]


def build_parser(wanted: str | None) -> tuple[argparse.ArgumentParser, bool]:
    """The command line's parser and whether it has the subcommand `wanted`. Only the
    parts up to the one that has it are loaded: building every part's parsers costs
    more than all of `gifee run`'s own work before the pod starts. With `wanted` None
    (help, no subcommand) every part is loaded, the store first, in help's order."""
    parser: argparse.ArgumentParser = _Parser(prog="gifee", description="Google's infrastructure for everyone else")
    parser.add_argument("--dir", default=os.environ.get("GIFEE_DIR", DEFAULT_DIR),
                        help="gifee's data directory: images, pods, trusted keys (like rkt's --dir; env GIFEE_DIR)")
    sub = parser.add_subparsers(dest="command", required=True)
    if wanted is None or wanted == "store":
        store_parser(sub)
    for part in PART_COMMANDS:
        if wanted is not None and wanted in sub.choices:
            break
        name = f"gifee.{part}.commands"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:  # a part without subcommands (importlib.util costs ~1 ms to ask)
            if e.name not in (f"gifee.{part}", name):
                raise
            continue
        module.add_parsers(sub)
    return parser, wanted is not None and wanted in sub.choices


def main(argv: Sequence[str] | None = None) -> int:
    wanted = _command_named(sys.argv[1:] if argv is None else argv)
    parser, found = build_parser(wanted)
    if wanted is not None and not found:  # a subcommand no part has: argparse lists them all
        parser, _ = build_parser(None)
    args = parser.parse_args(argv)
    try:
        code = int(args.run(args))
        if argv is None and getattr(args, "exit_at_once", False):
            # This process is the command and has nothing left to do: skip the interpreter's
            # teardown, which frees every module's objects one by one (60 ms against 6 for
            # os._exit, measured with gifee run's imports on a loaded 2-core machine).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    except BrokenPipeError:  # `gifee ... | head`: the reader left; stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
