"""Which watcher sees which change. No I/O.

Rules (etcd's):
- A watcher covers a key or a range with etcd's range_end conventions and
  wants every change from its start revision on, in revision order, each
  exactly once. start_revision 0 means "from the next revision".
- A watcher whose start revision is older than the compaction revision cannot
  be served: it gets the compaction revision and is cancelled.
- Filters drop PUT (NOPUT) or DELETE (NODELETE) events; prev_kv attaches the
  key's live value at the revision before the event's (etcd reads it at
  mod_revision - 1, so two changes of a key in one txn share one prev_kv).
- Watch IDs belong to a stream: 0 asks for the next free ID (counting from
  0), any other ID is used as given and must not be in use.

Theory of operation: a new watcher whose start revision is already in the
past is first replayed from the MVCC log (`WatchHub.add` returns those
changes), and from then on it is "synced": every applied entry's changes are
matched against synced watchers only. Applying and adding both run on one
thread in the shell, so nothing can slip between replay and live delivery.
Single-key watchers sit in a dict by key so that a put costs one lookup
however many idle watchers there are; range watchers are scanned.
"""

from __future__ import annotations

from collections.abc import Iterable

from gifee.store import errors
from gifee.store.mvcc import MVCC, Change, in_range
from gifee.store.proto import kv_pb2, rpc_pb2

_PUT = kv_pb2.Event.PUT
_DELETE = kv_pb2.Event.DELETE


class Watcher:
    __slots__ = ("id", "key", "end", "prev_kv", "no_put", "no_delete", "next_rev", "progress_notify", "fragment", "sink")

    def __init__(self, watch_id: int, req: rpc_pb2.WatchCreateRequest, next_rev: int, sink: object) -> None:
        self.id = watch_id
        self.key = req.key
        self.end = req.range_end
        self.prev_kv = req.prev_kv
        filters = set(req.filters)
        self.no_put = rpc_pb2.WatchCreateRequest.NOPUT in filters
        self.no_delete = rpc_pb2.WatchCreateRequest.NODELETE in filters
        self.next_rev = next_rev
        self.progress_notify = req.progress_notify
        self.fragment = req.fragment
        self.sink = sink  # the shell's stream object that owns this watcher

    def matches(self, key: bytes) -> bool:
        return in_range(key, self.key, self.end)

    def events(self, changes: Iterable[Change]) -> list[kv_pb2.Event]:
        """Events for the changes this watcher wants, with its filters and prev_kv applied."""
        out = []
        for c in changes:
            r = c.record
            if r.version == 0:
                if self.no_delete:
                    continue
                ev = kv_pb2.Event(type=_DELETE, kv=kv_pb2.KeyValue(key=r.key, mod_revision=r.mod))
            else:
                if self.no_put:
                    continue
                ev = kv_pb2.Event(type=_PUT, kv=r.to_pb())
            if self.prev_kv and c.before is not None:
                ev.prev_kv.CopyFrom(c.before.to_pb())
            out.append(ev)
        return out


def fragments(resp: rpc_pb2.WatchResponse, limit: int) -> list[rpc_pb2.WatchResponse]:
    """etcd's watch fragmentation: split a response of several events that reaches
    limit bytes into responses under it, all but the last marked fragment."""
    if resp.ByteSize() < limit or len(resp.events) < 2:
        return [resp]
    out: list[rpc_pb2.WatchResponse] = []
    events = list(resp.events)
    i = 0
    while i < len(events):
        part = rpc_pb2.WatchResponse(header=resp.header, watch_id=resp.watch_id, fragment=True)
        part.events.append(events[i])
        i += 1
        while i < len(events):
            part.events.append(events[i])
            if part.ByteSize() >= limit:
                del part.events[-1]
                break
            i += 1
        out.append(part)
    out[-1].fragment = False
    return out


class WatchHub:
    """All synced watchers of a store, indexed for matching."""

    def __init__(self) -> None:
        self._by_key: dict[bytes, set[Watcher]] = {}
        self._ranges: set[Watcher] = set()

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_key.values()) + len(self._ranges)

    def add(self, w: Watcher, mvcc: MVCC) -> list[Change]:
        """Register w; returns the past changes it must be sent first.

        Raises COMPACTED (the caller reports compact_revision) if its start is gone.
        """
        backlog: list[Change] = []
        if w.next_rev <= mvcc.revision:
            if w.next_rev < mvcc.compact_revision:
                raise errors.COMPACTED
            backlog = [c for c in mvcc.changes_since(w.next_rev) if w.matches(c.record.key)]
            w.next_rev = mvcc.revision + 1
        if w.end:
            self._ranges.add(w)
        else:
            self._by_key.setdefault(w.key, set()).add(w)
        return backlog

    def remove(self, w: Watcher) -> None:
        if w.end:
            self._ranges.discard(w)
            return
        group = self._by_key.get(w.key)
        if group is not None:
            group.discard(w)
            if not group:
                del self._by_key[w.key]

    def match(self, changes: list[Change]) -> dict[Watcher, list[Change]]:
        """The changes of one applied entry, grouped by the synced watchers that want them.

        A watcher created with a start revision in the future skips changes before it.
        """
        out: dict[Watcher, list[Change]] = {}
        by_key = self._by_key
        ranges = self._ranges
        for c in changes:
            record = c.record
            key = record.key
            mod = record.mod
            group = by_key.get(key)
            if group:
                for w in group:
                    if mod >= w.next_rev:
                        out.setdefault(w, []).append(c)
            if ranges:
                for w in ranges:
                    if mod >= w.next_rev and w.matches(key):
                        out.setdefault(w, []).append(c)
        if changes:
            rev = changes[-1].record.mod + 1
            for w in out:
                w.next_rev = rev
        return out
