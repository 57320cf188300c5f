"""A level-triggered local copy of some API resources (list, then watch from the
list's revision; on any error or an expired revision, list again).

`Mirror(server, ["services", "endpoints"], on_change)` keeps `objects[plural]`
= {(namespace, name): object} and calls on_change() after every applied event
or relist; consumers debounce and re-render from the whole cache, so a missed
or repeated notification never matters. Used by `gifee proxy`, `gifee dns` and
the route syncer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from gifee.api.client import ApiClient

Obj = dict[str, Any]
Key = tuple[str, str]
log = logging.getLogger("gifee.mirror")


def key_of(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


class Mirror:
    def __init__(self, server: str, plurals: list[str], on_change: Callable[[], None]) -> None:
        self.server = server
        self.plurals = plurals
        self.on_change = on_change
        self.objects: dict[str, dict[Key, Obj]] = {p: {} for p in plurals}
        self.synced: dict[str, asyncio.Event] = {p: asyncio.Event() for p in plurals}
        self._tasks: list[asyncio.Task[None]] = []
        self._client: ApiClient | None = None

    async def start(self) -> None:
        self._client = ApiClient(self.server)
        self._tasks = [asyncio.create_task(self._run(p)) for p in self.plurals]

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self.synced.values())), timeout)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        if self._client is not None:
            await self._client.close()

    async def _run(self, plural: str) -> None:
        assert self._client is not None
        delay = 0.2
        while True:
            try:
                listing = await self._client.list(plural)
                self.objects[plural] = {key_of(o): o for o in listing.get("items") or []}
                self.synced[plural].set()
                self.on_change()
                rv = str((listing.get("metadata") or {}).get("resourceVersion", ""))
                delay = 0.2
                async for event in self._client.watch(plural, resource_version=rv):
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        break
                    if kind == "BOOKMARK":
                        continue
                    if kind == "DELETED":
                        self.objects[plural].pop(key_of(obj), None)
                    else:
                        self.objects[plural][key_of(obj)] = obj
                    self.on_change()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the API server went away: retry, keep serving the cache
                log.warning("watching %s: %s", plural, e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def items(self, plural: str) -> list[Obj]:
        return list(self.objects[plural].values())


class Debouncer:
    """Coalesces change notifications: `fn` runs at most once per `delay` after a burst."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.event = asyncio.Event()

    def poke(self) -> None:
        self.event.set()

    async def wait(self, timeout: float) -> bool:
        """True when poked (after the debounce delay), False on timeout."""
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except TimeoutError:
            return False
        await asyncio.sleep(self.delay)
        self.event.clear()
        return True
