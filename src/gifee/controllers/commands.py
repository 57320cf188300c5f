"""`gifee controller-manager` and `gifee hollow-node` (argparse only at import time)."""

from __future__ import annotations

import argparse
import sys


def _duration(value: str) -> float:
    """A Go duration (40s, 5m, 1h, 500ms) or plain seconds."""
    v = value.strip()
    for suffix, mult in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if v.endswith(suffix) and v[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(v[: -len(suffix)]) * mult
    return float(v)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--master", default="http://127.0.0.1:8080", help="the API server's URL")
    p.add_argument("--v", type=int, default=1, help="log verbosity (0-4)")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cm = sub.add_parser("controller-manager", help="run the controllers (replica sets, deployments, GC, ...)")
    _common(cm)
    cm.add_argument("--controllers", default="*",
                    help="comma-separated controllers, * for all, -name to leave one out")
    cm.add_argument("--leader-elect", default="true", choices=["true", "false"])
    cm.add_argument("--leader-elect-lease-duration", type=_duration, default=15.0)
    cm.add_argument("--leader-elect-renew-deadline", type=_duration, default=10.0)
    cm.add_argument("--leader-elect-retry-period", type=_duration, default=2.0)
    cm.add_argument("--node-monitor-grace-period", type=_duration, default=40.0)
    cm.add_argument("--default-not-ready-toleration-seconds", type=int, default=300)
    cm.add_argument("--min-resync-period", type=_duration, default=30.0)
    cm.add_argument("--concurrent-syncs", type=int, default=5)
    cm.add_argument("--identity", default="", help="leader election identity (default: host_pid)")
    cm.set_defaults(run=run_controller_manager)

    hn = sub.add_parser("hollow-node", help="register simulated nodes that run pods without running anything")
    _common(hn)
    hn.add_argument("--count", type=int, default=1)
    hn.add_argument("--name-prefix", default="hollow-node-")
    hn.add_argument("--start-index", type=int, default=0)
    hn.add_argument("--capacity", default="cpu=4,memory=8Gi,pods=110,ephemeral-storage=50Gi")
    hn.add_argument("--node-labels", default="", help="k=v,k2=v2")
    hn.add_argument("--lease-interval", type=_duration, default=10.0)
    hn.set_defaults(run=run_hollow_node)


def _logging(verbosity: int) -> None:
    import logging
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity <= 2 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")


def _identity(args: argparse.Namespace) -> str:
    import os
    import socket
    return str(args.identity or f"{socket.gethostname()}_{os.getpid()}")


def selected_controllers(text: str) -> tuple[str, ...]:
    from gifee.controllers.manager import ALL_CONTROLLERS
    items = [t.strip() for t in text.split(",") if t.strip()]
    chosen: list[str] = []
    if "*" in items or not items:
        chosen = list(ALL_CONTROLLERS)
    for t in items:
        if t.startswith("-"):
            chosen = [c for c in chosen if c != t[1:]]
        elif t != "*":
            if t not in ALL_CONTROLLERS:
                raise SystemExit(f"unknown controller {t!r} (known: {', '.join(ALL_CONTROLLERS)})")
            if t not in chosen:
                chosen.append(t)
    return tuple(chosen)


def run_controller_manager(args: argparse.Namespace) -> int:

    from gifee.api.client import ApiClient
    from gifee.controllers.framework import LeaderElector
    from gifee.controllers.manager import ControllerManager, Options

    _logging(args.v)
    opts = Options(controllers=selected_controllers(args.controllers), resync=args.min_resync_period,
                   node_monitor_grace_period=int(args.node_monitor_grace_period),
                   default_toleration_seconds=args.default_not_ready_toleration_seconds,
                   workers=args.concurrent_syncs)

    async def main() -> None:
        async with ApiClient(args.master) as api:
            manager = ControllerManager(api, opts)
            if args.leader_elect == "true":
                elector = LeaderElector(api, "kube-controller-manager", _identity(args),
                                        lease_duration=args.leader_elect_lease_duration,
                                        renew_deadline=args.leader_elect_renew_deadline,
                                        retry_period=args.leader_elect_retry_period)
                await elector.run(manager.run)
            else:
                await manager.run()

    return _run(main())


def _run(coro: object) -> int:
    import asyncio
    import signal

    from gifee import gcpolicy

    gcpolicy.install()  # informers hold every object: no automatic full collections (gcpolicy.py)

    async def wrapper() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    try:
        from gifee import eventloop

        eventloop.run(wrapper())
    except RuntimeError as e:  # lost leadership
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def run_hollow_node(args: argparse.Namespace) -> int:
    from gifee.api.client import ApiClient
    from gifee.controllers.hollow import HollowNodes
    from gifee.scheduler.core import parse_resources

    _logging(args.v)
    labels = dict(p.split("=", 1) for p in args.node_labels.split(",") if "=" in p)

    async def main() -> None:
        async with ApiClient(args.master) as api:
            nodes = HollowNodes(api, args.count, prefix=args.name_prefix, start_index=args.start_index,
                                capacity=parse_resources(args.capacity), labels=labels,
                                lease_interval=args.lease_interval)
            await nodes.run()

    return _run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gifee")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parsers(sub)
    from gifee.scheduler.commands import add_parsers as add_scheduler
    add_scheduler(sub)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
