"""The control plane's loops in one asyncio process, for an all-in-one `gifee` command:
scheduler + controller manager (+ optional hollow nodes) against one API server.

    await run_control_plane("http://127.0.0.1:8080", hollow_nodes=3)

Leader election is on by default, so an all-in-one beside a separate
controller-manager or scheduler does not fight it.
"""

from __future__ import annotations

import asyncio
import os
import socket

from gifee.api.client import ApiClient
from gifee.controllers.framework import LeaderElector
from gifee.controllers.hollow import HollowNodes
from gifee.controllers.manager import ControllerManager, Options
from gifee.scheduler.shell import Scheduler


async def run_control_plane(master: str, *, hollow_nodes: int = 0, leader_elect: bool = True,
                            options: Options | None = None, identity: str = "") -> None:
    ident = identity or f"{socket.gethostname()}_{os.getpid()}"
    async with ApiClient(master) as api:
        manager = ControllerManager(api, options)
        scheduler = Scheduler(api)
        if leader_elect:
            coros = [LeaderElector(api, "kube-controller-manager", ident).run(manager.run),
                     LeaderElector(api, "kube-scheduler", ident).run(scheduler.run)]
        else:
            coros = [manager.run(), scheduler.run()]
        if hollow_nodes:
            coros.append(HollowNodes(api, hollow_nodes).run())
        await asyncio.gather(*coros)
