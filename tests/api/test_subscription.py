"""A watcher's subscription: `wait` ends when an event is queued or its time comes, and keeps one
timer for the same time across waits."""

from __future__ import annotations

import asyncio

from gifee.api.watchcache import CLOSED, Subscription
from gifee.api.watchcore import Event, WatchFilter


def test_wait_ends_on_an_event_or_at_its_time_with_one_timer() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sub = Subscription(WatchFilter(), 0)
        until = loop.time() + 0.3
        waiting = asyncio.create_task(sub.wait(until))
        await asyncio.sleep(0.01)
        timer = sub._timer
        assert timer is not None and not waiting.done()
        obj = {"metadata": {"name": "a", "resourceVersion": "1"}}
        sub.offer(Event("ADDED", obj, None, 1))
        await asyncio.wait_for(waiting, 0.1)
        assert list(sub.events) == [("ADDED", obj)]
        await sub.wait(until)  # an event is queued: at once
        sub.events.clear()
        await asyncio.wait_for(sub.wait(until), 1)  # until its time
        assert loop.time() >= until - 0.01 and sub._timer is None and not sub.events
        waiting = asyncio.create_task(sub.wait(loop.time() + 5))
        await asyncio.sleep(0.01)
        assert sub._timer is not None and sub._timer is not timer
        sub.close()
        await asyncio.wait_for(waiting, 0.1)
        assert list(sub.events) == [CLOSED]
        sub.stop()
        assert sub._timer is None
    asyncio.run(main())
