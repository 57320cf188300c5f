"""The watch cache's shell: one store watch per resource, fanned out to many
HTTP watchers (the decisions are in watchcore).

A `ResourceWatchCache` starts at the store's current revision and keeps a
window of recent events. A watcher subscribes at a revision: it gets the
window's later events, then live ones, through its own bounded queue; a
watcher that falls too far behind is closed (its client re-watches). A
revision older than the window is served by a direct store watch
(`direct_events`), which fails with Expired when the store has compacted it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from gifee.api.resources import Resource
from gifee.api.storage import decode, is_compacted
from gifee.api.versions import too_old
from gifee.api.watchcore import Event, EventWindow, WatchFilter, decide
from gifee.store.client import StoreClient
from gifee.store.errors import StoreError
from gifee.store.proto import kv_pb2

log = logging.getLogger("gifee.api.watch")
QUEUE_LIMIT = 10_000
OWN_WRITES = 4096  # written objects kept for their watch events; more only if the watch lags that far
CLOSED: tuple[str, Any] = ("CLOSED", None)


def to_events(res: Resource, resp: Any, known: dict[tuple[str, str], Any] | None = None,
              own: dict[bytes, tuple[int, Any]] | None = None) -> list[Event]:
    """The store's events as API events. `known` (the watch cache's objects) supplies a previous
    object already decoded when it is the one at prev_kv's revision: the same stored bytes. `own`
    (key -> (mod revision, object) of this server's writes) supplies the written object itself:
    a key at a mod revision is one stored value."""
    out = []
    for e in resp.events:
        kv = e.kv
        if e.type == kv_pb2.Event.DELETE:
            if not e.prev_kv.key:
                continue
            obj = decode(res, e.prev_kv.value, kv.mod_revision)
            out.append(Event("DELETED", obj, None, kv.mod_revision))
        else:
            mine = own.pop(kv.key, None) if own else None
            if mine is not None and mine[0] == kv.mod_revision:
                obj = mine[1]
            else:
                obj = decode(res, kv.value, kv.mod_revision)
            prev = None
            if e.prev_kv.key:
                if known is not None:
                    meta = obj["metadata"]
                    prev = known.get((meta.get("namespace", ""), meta.get("name", "")))
                    if prev is not None and prev["metadata"].get("resourceVersion") != str(e.prev_kv.mod_revision):
                        prev = None
                if prev is None:
                    prev = decode(res, e.prev_kv.value, e.prev_kv.mod_revision)
            kind = "ADDED" if kv.create_revision == kv.mod_revision else "MODIFIED"
            out.append(Event(kind, obj, prev, kv.mod_revision))
    return out


class Subscription:
    """One watcher's events, queued for its stream. `wait` sleeps until one is queued or a time
    comes; the time's timer is kept from wait to wait while the time stays (a stream's deadline or
    next bookmark), so a wake costs no timer of its own."""

    def __init__(self, flt: WatchFilter, start: int) -> None:
        self.filter = flt
        self.start = start
        self.seen = start
        self.events: collections.deque[tuple[str, Any]] = collections.deque()
        self.closed = False
        self._queued_revision = 0
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def offer(self, ev: Event) -> None:
        if self.closed or ev.revision <= self.start:
            return
        self.seen = max(self.seen, ev.revision)
        decision = decide(self.filter, ev)
        if decision is None:
            return
        # a watcher that fell behind is closed between revisions, never inside one: objects written
        # in one store Txn share a revision, and a client resumes after the last revision it saw
        if len(self.events) >= QUEUE_LIMIT and ev.revision != self._queued_revision:
            self.close()
            return
        self._queued_revision = ev.revision
        self.events.append(decision)
        if self._waiter is not None:
            self._wake()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.events.append(CLOSED)
            self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _ring(self) -> None:
        self._timer, self._timer_at = None, 0.0
        self._wake()

    async def wait(self, until: float) -> None:
        """Until an event is queued or the loop's clock passes `until`."""
        if self.events:
            return
        loop = asyncio.get_running_loop()
        if self._timer_at != until:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = loop.call_at(until, self._ring), until
        self._waiter = loop.create_future()
        await self._waiter

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, 0.0


class ResourceWatchCache:
    def __init__(self, client: StoreClient, res: Resource, capacity: int = 1000) -> None:
        self.client = client
        self.res = res
        self.capacity = capacity
        self.window = EventWindow(capacity, 0)
        self.subscribers: set[Subscription] = set()
        # every object this watch has seen written since the server started, by (namespace, name):
        # the first guess for guarded writes (storage.Storage.cached); never mutated, never a read
        self.objects: dict[tuple[str, str], Any] = {}
        # this server's writes not yet seen on the watch: key -> (mod revision, the object as written)
        self.own: dict[bytes, tuple[int, Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self, revision: int) -> None:
        self.window = EventWindow(self.capacity, revision)
        self._task = asyncio.create_task(self._run(revision + 1))
        self._ready.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for sub in list(self.subscribers):
            sub.close()

    async def _run(self, next_revision: int) -> None:
        prefix = self.res.storage_prefix.encode()
        while True:
            try:
                async for resp in self.client.watch(prefix, prefix=True, start_revision=next_revision, prev_kv=True):
                    if resp.canceled:
                        if resp.compact_revision:
                            self._reset(int(resp.compact_revision))
                            next_revision = int(resp.compact_revision)
                        break
                    objects = self.objects
                    for ev in to_events(self.res, resp, objects, self.own):
                        meta = ev.obj["metadata"]
                        if ev.type == "DELETED":
                            objects.pop((meta.get("namespace", ""), meta["name"]), None)
                        else:
                            objects[(meta.get("namespace", ""), meta["name"])] = ev.obj
                        self.window.append(ev)
                        next_revision = ev.revision + 1
                        for sub in list(self.subscribers):
                            sub.offer(ev)
            except asyncio.CancelledError:
                raise
            except StoreError as e:
                if is_compacted(e):
                    self._reset(next_revision)
                log.warning("watch on %s: %s; retrying", self.res.plural, e.message)
            except Exception:  # the store went away: keep trying from where we were
                log.exception("watch on %s failed; retrying", self.res.plural)
            await asyncio.sleep(0.5)

    def _reset(self, revision: int) -> None:
        """Events were lost (compaction while disconnected): every watcher must start again."""
        for sub in list(self.subscribers):
            sub.close()
        self.subscribers.clear()
        self.objects.clear()
        self.own.clear()
        self.window = EventWindow(self.capacity, revision)

    def written(self, key: bytes, revision: int, obj: Any) -> None:
        """This server wrote obj at revision: its watch event carries obj itself instead of a decoding
        of the stored bytes (it is never mutated: the writer handed it over)."""
        if revision <= self.window.latest:  # its event came first
            return
        own = self.own
        own.pop(key, None)  # re-inserted at the end: the oldest entries go first
        own[key] = (revision, obj)
        if len(own) > OWN_WRITES:
            del own[next(iter(own))]

    def cached(self, namespace: str, name: str) -> Any:
        """The object as this watch last saw it (None: not seen, or deleted); may lag the store."""
        return self.objects.get((namespace, name))

    @property
    def latest(self) -> int:
        return self.window.latest

    def subscribe(self, revision: int, flt: WatchFilter) -> Subscription | None:
        """Events after `revision` from the window, then live; None if the window no longer covers it."""
        backlog = self.window.since(revision)
        if backlog is None:
            return None
        sub = Subscription(flt, revision)
        for ev in backlog:
            sub.offer(ev)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)
        sub.stop()


async def direct_events(client: StoreClient, res: Resource, revision: int,
                        flt: WatchFilter) -> AsyncIterator[list[tuple[str, Any]]]:
    """Events after `revision` straight from the store, for a revision older than the window
    (this watcher costs its own store watch), one list per store response (whole revisions);
    raises Expired (410) when the store has compacted it."""
    prefix = res.storage_prefix.encode()
    try:
        async for resp in client.watch(prefix, prefix=True, start_revision=revision + 1, prev_kv=True):
            if resp.canceled:
                if resp.compact_revision:
                    raise too_old(revision, int(resp.compact_revision))
                return
            decisions = [d for d in (decide(flt, ev) for ev in to_events(res, resp)) if d is not None]
            if decisions:
                yield decisions
    except StoreError as e:
        if is_compacted(e):
            raise too_old(revision, revision) from None
        raise
