"""`gifee proxy`: keeps the node's `table ip gifee` equal to render(services, endpoints),
and (with --routes) the routes to other nodes' pod subnets.

Level-triggered: a Mirror of services and endpoints (and nodes) pokes a
debouncer; the sync loop wakes on a poke or every --sync-period, renders, and
runs `nft -f` only when the text differs from what it last applied or the table
has gone missing. The kernel does the forwarding: this process is never in the
data path, and the rules stay when it dies (SIGKILL); a clean stop (SIGTERM,
SIGINT) removes the table unless --keep-rules-on-exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from gifee.proxy import rules
from gifee.proxy.mirror import Debouncer, Mirror
from gifee.signals import stop_on_signals

log = logging.getLogger("gifee.proxy")
# How long after a TCP backend goes its finished flows are swept, and how often: a client's unanswered
# FIN keeps such an entry alive about a minute, then conntrack keeps it 30 s (conntrack.py).
FINISHED_WATCH = 150.0
FINISHED_SWEEP_PERIOD = 5.0


class NftError(Exception):
    pass


async def nft(text: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec("nft", *args, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(text.encode())
    if proc.returncode != 0:
        raise NftError(err.decode(errors="replace").strip())
    return out.decode()


async def table_exists() -> bool:
    try:
        await nft("", "list", "table", "ip", rules.TABLE)
    except NftError:
        return False
    return True


async def cleanup() -> None:
    await nft(rules.cleanup_text(), "-f", "-")


@dataclass
class ProxyConfig:
    server: str
    node_name: str
    sync_period: float = 1.0
    debounce: float = 0.05
    cluster_cidr: str = ""
    routes: bool = False
    keep_rules_on_exit: bool = False


class Proxy:
    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.debouncer = Debouncer(config.debounce)
        plurals = ["services", "endpoints"] + (["nodes"] if config.routes else [])
        self.mirror = Mirror(config.server, plurals, self.debouncer.poke)
        self.applied = ""
        self.applied_ports: list[rules.ServicePort] = []
        self._stale: set[tuple[str, str, int]] = set()  # backends whose flows are still to forget
        self._forgetting: asyncio.Task[None] | None = None
        self._finishing: dict[tuple[str, str, int], float] = {}  # gone TCP backend -> when it went
        self._sweeping: asyncio.Task[None] | None = None
        self._next_sweep = 0.0
        self.syncs = 0
        self._routes = None
        if config.routes:
            from gifee.proxy.routes import RouteSyncer

            self._routes = RouteSyncer()

    async def sync_once(self) -> bool:
        """Render and apply if different; True when nft ran."""
        services, endpoints = self.mirror.items("services"), self.mirror.items("endpoints")
        text = rules.render(services, endpoints, cluster_cidr=self.config.cluster_cidr)
        if self._routes is not None:
            from gifee.proxy.routes import plan

            await asyncio.to_thread(self._routes.sync, plan(self.mirror.items("nodes"), self.config.node_name))
        if text == self.applied and await table_exists():
            return False
        await nft(text, "-f", "-")
        self.applied = text
        self.syncs += 1
        log.info("applied %d bytes of rules (sync %d)", len(text), self.syncs)
        ports = rules.service_ports(services, endpoints)
        gone = rules.removed_backends(self.applied_ports, ports)
        self.applied_ports = ports
        in_use = rules.backends_in_use(ports)
        self._stale = (self._stale | gone) - in_use
        now = asyncio.get_running_loop().time()
        self._finishing = {b: t for b, t in self._finishing.items() if b not in in_use}
        self._finishing |= {b: now for b in gone if b[0] == "tcp"}
        if self._stale and (self._forgetting is None or self._forgetting.done()):
            # in the background: the next sync must not wait for conntrack
            self._forgetting = asyncio.create_task(self._forget())
        return True

    async def _forget(self) -> None:
        """Forget the flows of backends gone from every service, until none are left to forget; a
        backend that came back meanwhile (readiness flapping, an address reused) is left alone."""
        from gifee.proxy.conntrack import forget_flows

        while self._stale:
            gone, self._stale = self._stale - rules.backends_in_use(self.applied_ports), set()
            if not gone:
                continue
            try:
                deleted = await asyncio.to_thread(forget_flows, gone)
            except Exception as e:  # the rules are in place; stale flows only cost their clients a retry
                log.warning("conntrack: %s", e)
            else:
                log.info("%d backends gone, %d of their unanswered flows forgotten", len(gone), deleted)

    def sweep_finished(self) -> None:
        """Every FINISHED_SWEEP_PERIOD, in the background, forget the finished flows of the TCP backends
        that went in the last FINISHED_WATCH seconds and have not come back."""
        now = asyncio.get_running_loop().time()
        self._finishing = {b: t for b, t in self._finishing.items() if now - t < FINISHED_WATCH}
        if not self._finishing or now < self._next_sweep or (self._sweeping and not self._sweeping.done()):
            return
        self._next_sweep = now + FINISHED_SWEEP_PERIOD
        self._sweeping = asyncio.create_task(self._sweep(set(self._finishing)))

    async def _sweep(self, backends: set[tuple[str, str, int]]) -> None:
        from gifee.proxy.conntrack import forget_finished_flows

        try:
            deleted = await asyncio.to_thread(forget_finished_flows, backends)
        except FileNotFoundError:
            log.warning("conntrack(8) is not installed: finished flows to gone backends are left to expire")
            self._finishing.clear()
        except Exception as e:  # the rules are in place; stale flows only cost a client whose port they match
            log.warning("conntrack: %s", e)
        else:
            if deleted:
                log.info("%d finished flows to %d gone backends forgotten", deleted, len(backends))

    async def run(self, stop: asyncio.Event) -> None:
        await self.mirror.start()
        try:
            await self.mirror.wait_synced()
            while not stop.is_set():
                try:
                    await self.sync_once()
                except NftError as e:
                    log.error("nft: %s", e)
                    self.applied = ""
                self.sweep_finished()
                waiter = asyncio.create_task(self.debouncer.wait(self.config.sync_period))
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                for t in (waiter, stopper):
                    t.cancel()
                    with contextlib.suppress(BaseException):
                        await t
        finally:
            for task in (self._forgetting, self._sweeping):
                if task is not None:
                    with contextlib.suppress(BaseException):
                        await task
            await self.mirror.stop()
            if not self.config.keep_rules_on_exit:
                with contextlib.suppress(NftError):
                    await cleanup()
                if self._routes is not None:
                    await asyncio.to_thread(self._routes.remove_all)


async def main(config: ProxyConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    stop_on_signals(loop, stop.set)
    await Proxy(config).run(stop)
