"""A watch stream writes at most once per `watch_linger`: events that come faster go out together
in the next write, none lost, in order; the first of a quiet stream goes at once."""

from __future__ import annotations

import asyncio
from typing import Any

from gifee.api import resources, routing
from gifee.api.server import ApiConfig, ApiServer
from gifee.api.watchcache import ResourceWatchCache
from gifee.api.watchcore import Event, EventWindow, WatchFilter

PODS = resources.by_plural("pods")


def _writes(linger: float) -> list[tuple[float, list[str]]]:
    assert PODS is not None
    res = PODS

    async def main() -> list[tuple[float, list[str]]]:
        loop = asyncio.get_running_loop()
        server = ApiServer(None, ApiConfig("unused", watch_linger=linger))  # type: ignore[arg-type]
        cache = ResourceWatchCache(None, res)  # type: ignore[arg-type]
        cache.window = EventWindow(100, 0)
        writes: list[tuple[float, list[str]]] = []

        async def write(data: bytes) -> None:
            writes.append((loop.time(), data.decode().splitlines()))

        def line(kind: str, obj: dict[str, Any]) -> bytes:
            return obj["metadata"]["name"].encode() + b"\n"

        opts = routing.list_options({"watch": "1"}, res)
        target = routing.Target(res, "", "", "")
        stream = asyncio.create_task(server._stream_events(write, line, target, opts, cache, [], 0, 5, WatchFilter()))
        await asyncio.sleep(0.01)
        [sub] = cache.subscribers
        for i in range(1, 6):
            obj = {"metadata": {"name": f"p{i}", "namespace": "default", "resourceVersion": str(i)}}
            sub.offer(Event("ADDED", obj, None, i))
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.1)
        stream.cancel()
        await asyncio.gather(stream, return_exceptions=True)
        return writes
    return asyncio.run(main())


def test_events_faster_than_the_linger_go_out_in_one_write() -> None:
    writes = _writes(0.05)
    assert [lines for _, lines in writes] == [["p1"], ["p2", "p3", "p4", "p5"]]
    assert writes[1][0] - writes[0][0] >= 0.045


def test_without_a_linger_every_wake_writes() -> None:
    writes = _writes(0.0)
    assert [lines for _, lines in writes] == [["p1"], ["p2"], ["p3"], ["p4"], ["p5"]]
