"""`gifee registry`: serve an OCI registry; `gifee registry gc`; `gifee registry passwd`."""

from __future__ import annotations

import argparse
import os
import sys


def _root(args: argparse.Namespace) -> str:
    return str(args.root or os.path.join(args.dir, "registry"))


def _size(value: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    v = value.strip().lower().removesuffix("ib").removesuffix("b")
    if v and v[-1] in units:
        return int(float(v[:-1]) * units[v[-1]])
    return int(v)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("registry", help="run an OCI distribution registry",
                       description="An OCI distribution spec v1.1 registry over a filesystem store.")
    p.add_argument("--root", default="", help="storage directory (default: DIR/registry)")
    p.add_argument("--listen", default="127.0.0.1:5000", help="HOST:PORT to listen on")
    p.add_argument("--tls-cert", default="", help="PEM certificate (chain) for HTTPS")
    p.add_argument("--tls-key", default="", help="PEM private key for HTTPS")
    p.add_argument("--auth", choices=["none", "basic", "token"], default="none")
    p.add_argument("--htpasswd", default="", help="password file (see `gifee registry passwd`)")
    p.add_argument("--rights", default="", help='JSON rights file: {"user": {"repo/*": ["pull", "push"]}}')
    p.add_argument("--service", default="gifee-registry", help="service name in bearer tokens")
    p.add_argument("--realm", default="", help="token endpoint URL (default: this server's /token)")
    p.add_argument("--max-blob-size", type=_size, default=10 << 30, help="largest blob accepted (default 10G)")
    p.add_argument("--read-timeout", type=float, default=60.0,
                   help="seconds a request body may stall before it is abandoned (default 60)")
    p.add_argument("--vulndb", default="",
                   help="scan pushed images against this database (default: DIR/vulndb.sqlite, if it exists)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"])
    p.set_defaults(run=run_serve)
    rsub = p.add_subparsers(dest="registry_command")
    gc = rsub.add_parser("gc", help="delete blobs that no manifest refers to")
    gc.add_argument("--root", default=argparse.SUPPRESS, help="storage directory (default: DIR/registry)")
    gc.add_argument("--grace", type=float, default=3600.0,
                    help="keep unreferenced blobs younger than this many seconds (default 3600)")
    gc.add_argument("--dry-run", action="store_true", help="only report what would be deleted")
    gc.set_defaults(run=run_gc)
    pw = rsub.add_parser("passwd", help="add or replace a user in a password file (password on stdin)")
    pw.add_argument("--file", required=True)
    pw.add_argument("user")
    pw.set_defaults(run=run_passwd)


def run_serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    from pathlib import Path

    from gifee.registry.server import RegistryConfig, serve, tls_context

    level = {"warn": "WARNING"}.get(args.log_level, args.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        print(f"gifee registry: --listen {args.listen!r} is not HOST:PORT", file=sys.stderr)
        return 2
    if bool(args.tls_cert) != bool(args.tls_key):
        print("gifee registry: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    try:
        config = RegistryConfig(
            root=Path(_root(args)),
            auth=args.auth,
            password_file=Path(args.htpasswd) if args.htpasswd else None,
            rights_file=Path(args.rights) if args.rights else None,
            service=args.service,
            realm=args.realm,
            max_blob_bytes=args.max_blob_size,
            read_timeout=args.read_timeout,
            vulndb=Path(args.vulndb) if args.vulndb else Path(args.dir) / "vulndb.sqlite",
        )
        ssl_context = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
        asyncio.run(serve(config, host.strip("[]") or "0.0.0.0", int(port), ssl_context))
    except KeyboardInterrupt:
        return 0
    except Exception as e:  # a start-up failure (bad file, port in use) ends with a clear message
        print(f"gifee registry: {e}", file=sys.stderr)
        return 1
    return 0


def run_gc(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gifee.registry.gc import collect
    from gifee.registry.storage import Storage

    root = Path(_root(args))
    if not (root / "blobs").is_dir():
        print(f"gifee registry gc: {root} is not a registry root", file=sys.stderr)
        return 1
    report = collect(Storage(root), grace=args.grace, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for item in report.deleted:
        print(f"{verb} {item}")
    print(f"marked {report.marked}, {verb} {len(report.deleted)} ({report.freed_bytes} bytes), "
          f"kept {report.kept_young} young, removed {report.links_removed} links, "
          f"{report.uploads_removed} stale uploads")
    return 0


def run_passwd(args: argparse.Namespace) -> int:
    import getpass
    from pathlib import Path

    from gifee.registry.auth import hash_password
    from gifee.registry.storage import write_atomic

    if ":" in args.user or not args.user:
        print("gifee registry passwd: a user name cannot be empty or contain ':'", file=sys.stderr)
        return 2
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if not password:
        print("gifee registry passwd: empty password", file=sys.stderr)
        return 2
    path = Path(args.file)
    lines = path.read_text().splitlines() if path.exists() else []
    lines = [line for line in lines if line.partition(":")[0] != args.user]
    lines.append(f"{args.user}:{hash_password(password)}")
    write_atomic(path, ("\n".join(lines) + "\n").encode())
    return 0
