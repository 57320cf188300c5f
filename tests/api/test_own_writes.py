"""The API server's own writes reach its watch cache as the objects written, not decoded again
from the store's watch event (the same key at the same mod revision is the same stored value)."""

from __future__ import annotations

import asyncio
from typing import Any

from gifee.api import resources
from gifee.api.storage import Storage, as_written, encode
from gifee.api.watchcache import OWN_WRITES, ResourceWatchCache, to_events
from gifee.api.watchcore import EventWindow
from gifee.store.proto import kv_pb2, rpc_pb2
from tests.api.test_object_cache import MemoryStore

CONFIGMAPS = resources.by_plural("configmaps")
assert CONFIGMAPS is not None
KEY = CONFIGMAPS.key("default", "c")


def _put_event(obj: dict[str, Any], revision: int) -> rpc_pb2.WatchResponse:
    kv = kv_pb2.KeyValue(key=KEY, value=encode(obj), create_revision=revision, mod_revision=revision)
    return rpc_pb2.WatchResponse(events=[kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv)])


def test_the_event_of_a_write_carries_the_written_object() -> None:
    assert CONFIGMAPS is not None
    written = as_written(CONFIGMAPS, {"metadata": {"name": "c", "namespace": "default"}, "data": {"k": "v"}}, 7)
    own = {KEY: (7, written)}
    [event] = to_events(CONFIGMAPS, _put_event(written, 7), None, own)
    assert event.obj is written and not own
    # another revision of the key: decoded from the event's bytes
    own = {KEY: (6, written)}
    [event] = to_events(CONFIGMAPS, _put_event(written, 7), None, own)
    assert event.obj is not written and event.obj == written
    [event] = to_events(CONFIGMAPS, _put_event(written, 7))
    assert event.obj == written and event.type == "ADDED"


def test_the_cache_keeps_only_writes_its_watch_has_not_seen() -> None:
    assert CONFIGMAPS is not None
    cache = ResourceWatchCache(None, CONFIGMAPS)  # type: ignore[arg-type]
    cache.window = EventWindow(10, 5)
    cache.written(KEY, 5, {})
    assert not cache.own  # its event came first
    cache.written(KEY, 6, {})
    assert cache.own == {KEY: (6, {})}
    for i in range(OWN_WRITES + 10):
        cache.written(b"/registry/configmaps/default/%d" % i, 7, {})
    assert len(cache.own) == OWN_WRITES and KEY not in cache.own


def test_storage_tells_of_every_write() -> None:
    assert CONFIGMAPS is not None
    res = CONFIGMAPS
    told: list[tuple[bytes, int, Any]] = []

    async def main() -> None:
        storage = Storage(MemoryStore(), batch=1)  # type: ignore[arg-type]
        storage.written = lambda r, key, revision, obj: told.append((key, revision, obj))
        created = await storage.create(res, {"metadata": {"name": "c", "namespace": "default"}, "data": {}})
        _, updated = await storage.guaranteed_update(res, "default", "c", lambda cur: {**cur, "data": {"a": "b"}})
        assert told == [(KEY, int(created["metadata"]["resourceVersion"]), created),
                        (KEY, int(updated["metadata"]["resourceVersion"]), updated)]
        assert told[0][2] is created and told[1][2] is updated
    asyncio.run(main())
