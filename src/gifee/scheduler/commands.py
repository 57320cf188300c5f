"""`gifee scheduler` (argparse only at import time)."""

from __future__ import annotations

import argparse
import sys


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("scheduler", help="bind pending pods to nodes (filters and scores)")
    p.add_argument("--master", default="http://127.0.0.1:8080", help="the API server's URL")
    p.add_argument("--scheduler-name", default="default-scheduler")
    p.add_argument("--percentage-of-nodes-to-score", type=int, default=0,
                   help="stop filtering once this share of the nodes is feasible (0: adaptive, 100: all)")
    p.add_argument("--leader-elect", default="true", choices=["true", "false"])
    p.add_argument("--identity", default="")
    p.add_argument("--v", type=int, default=1)
    p.set_defaults(run=run_scheduler)


def run_scheduler(args: argparse.Namespace) -> int:
    import os
    import socket

    from gifee.api.client import ApiClient
    from gifee.controllers.commands import _logging, _run
    from gifee.controllers.framework import LeaderElector
    from gifee.scheduler.shell import Scheduler

    _logging(args.v)

    async def main() -> None:
        async with ApiClient(args.master) as api:
            sched = Scheduler(api, scheduler_name=args.scheduler_name,
                              percentage_of_nodes_to_score=args.percentage_of_nodes_to_score)
            if args.leader_elect == "true":
                ident = args.identity or f"{socket.gethostname()}_{os.getpid()}"
                await LeaderElector(api, "kube-scheduler", ident).run(sched.run)
            else:
                await sched.run()

    return _run(main())


if __name__ == "__main__":
    from gifee.controllers.commands import main

    sys.exit(main(["scheduler", *sys.argv[1:]]))
