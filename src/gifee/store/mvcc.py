"""Multi-version key-value state with etcd's revision rules. No I/O.

Every rule about revisions, versions, ranges and compaction lives in this file;
nothing here touches files, sockets or clocks, and nothing here knows about
leases' lifetimes, durability or watchers (the state machine above combines
them). The class is driven only by method calls, so it is deterministic.

Rules (etcd's, as clients observe them):
- The store revision starts at 1 and rises by exactly one for each write
  request that changes something. All changes of one request share that main
  revision and get sub-revisions 0, 1, 2, ... in order.
- A put on a key that is absent starts a new life of the key: create_revision
  is the put's revision and version is 1; each later put adds one to version.
  A delete writes a tombstone (version 0); the next put starts a new life.
- Reads name a revision: 0 means the current one; older than the compaction
  revision is COMPACTED, newer than the current one is FUTURE_REV. The
  compaction revision is -1 until the first compaction (so Compact(0) works).
- range_end conventions: empty = the single key; b"\\0" = every key >= key;
  otherwise the half-open interval [key, range_end).
- Compaction at C keeps, for each key, the newest record at or below C unless
  that record is a tombstone, and every record above C.

Theory of operation: each key owns its history, a list of `Record`s in
revision order; a sorted list of keys serves ranges by bisection. Reads at the
current revision look only at the last record of each history. A second list,
`_log`, holds every record in revision order so that watchers can replay what
happened since a past revision without scanning all keys.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import google_crc32c

from gifee.store import errors
from gifee.store.proto import kv_pb2

ALL_KEYS = b"\0"


class Record:
    """One revision of one key. version == 0 marks a tombstone."""

    __slots__ = ("key", "value", "create", "mod", "sub", "version", "lease")

    def __init__(self, key: bytes, value: bytes, create: int, mod: int, sub: int, version: int, lease: int) -> None:
        self.key = key
        self.value = value
        self.create = create
        self.mod = mod
        self.sub = sub
        self.version = version
        self.lease = lease

    @property
    def is_tombstone(self) -> bool:
        return self.version == 0

    def to_pb(self, keys_only: bool = False) -> kv_pb2.KeyValue:
        if self.version == 0:
            return kv_pb2.KeyValue(key=self.key, mod_revision=self.mod)
        return kv_pb2.KeyValue(
            key=self.key,
            create_revision=self.create,
            mod_revision=self.mod,
            version=self.version,
            value=b"" if keys_only else self.value,
            lease=self.lease,
        )

    def __repr__(self) -> str:
        return f"Record({self.key!r}, {self.value!r}, c={self.create}, m={self.mod}.{self.sub}, v={self.version}, l={self.lease})"


@dataclass
class Change:
    """What one write did to one key.

    prev is the live record it replaced (what the write's own prev_kv reports);
    before is the key's live record at the revision before the write's (what
    a watch event's prev_kv reports: etcd reads it at mod_revision - 1). They
    differ only when a txn changes one key twice.
    """

    record: Record
    prev: Record | None
    before: Record | None = None


@dataclass
class RangeResult:
    records: list[Record]
    count: int
    revision: int


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    """Whether key falls in etcd's interval given by (start, range_end)."""
    if not end:
        return key == start
    if end == ALL_KEYS:
        return key >= start
    return start <= key < end


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key with this prefix (etcd's GetPrefixRangeEnd)."""
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return ALL_KEYS


def _live_at(history: list[Record], rev: int) -> Record | None:
    """The key's live record at revision rev, or None if absent or deleted then."""
    for i in range(len(history) - 1, -1, -1):
        r = history[i]
        if r.mod <= rev:
            return None if r.version == 0 else r
    return None


_REV_KEY = struct.Struct(">Q")


@dataclass
class MVCC:
    revision: int = 1
    compact_revision: int = -1  # etcd's value before the first compaction
    _histories: dict[bytes, list[Record]] = field(default_factory=dict)
    _keys: list[bytes] = field(default_factory=list)
    _log: list[Record] = field(default_factory=list)

    # ----------------------------------------------------------------- reads

    def check_revision(self, rev: int) -> int:
        """The revision a read at `rev` sees, or the error etcd gives for it."""
        if rev <= 0:
            return self.revision
        if rev > self.revision:
            raise errors.FUTURE_REV
        if rev < self.compact_revision:
            raise errors.COMPACTED
        return rev

    def get(self, key: bytes, rev: int = 0) -> Record | None:
        history = self._histories.get(key)
        if history is None:
            return None
        at = self.revision if rev <= 0 or rev > self.revision else rev
        last = history[-1]
        if last.mod <= at:
            return None if last.version == 0 else last
        return _live_at(history, at)

    def _keys_in(self, start: bytes, end: bytes) -> Iterator[bytes]:
        if not end:
            if start in self._histories:
                yield start
            return
        keys = self._keys
        lo = bisect.bisect_left(keys, start)
        hi = len(keys) if end == ALL_KEYS else bisect.bisect_left(keys, end, lo)
        for i in range(lo, hi):
            yield keys[i]

    def range(self, start: bytes, end: bytes = b"", rev: int = 0, limit: int = 0) -> RangeResult:
        """Live records in [start, end) at rev, in key order; count is the total before limit."""
        at = self.check_revision(rev)
        histories = self._histories
        out: list[Record] = []
        count = 0
        for key in self._keys_in(start, end):
            history = histories[key]
            last = history[-1]
            # Most reads are at the current revision: the last record answers. It may
            # also belong to a write request still in progress, which a read at a
            # committed revision must not see.
            if last.mod > at:
                r = _live_at(history, at)
            else:
                r = None if last.version == 0 else last
            if r is None:
                continue
            count += 1
            if not limit or len(out) < limit:
                out.append(r)
        # etcd answers with the current revision in the header, whatever revision was read.
        return RangeResult(out, count, self.revision)

    # ---------------------------------------------------------------- writes

    def write(self) -> WriteBatch:
        """Begin the changes of one write request; they share one main revision."""
        return WriteBatch(self)

    def _append(self, record: Record) -> None:
        history = self._histories.get(record.key)
        if history is None:
            self._histories[record.key] = [record]
            keys = self._keys
            if not keys or keys[-1] < record.key:
                keys.append(record.key)
            else:
                bisect.insort(keys, record.key)
        else:
            history.append(record)
        self._log.append(record)

    # ------------------------------------------------------------ compaction

    def compact(self, rev: int) -> None:
        if rev <= self.compact_revision:
            raise errors.COMPACTED
        if rev > self.revision:
            raise errors.FUTURE_REV
        self.compact_revision = rev
        emptied = False
        for history in self._histories.values():
            if history[0].mod > rev:
                continue
            i = len(history) - 1
            while history[i].mod > rev:
                i -= 1
            if history[i].version == 0:
                i += 1
            if i:
                del history[:i]
                emptied = emptied or not history
        if emptied:
            self._histories = {k: h for k, h in self._histories.items() if h}
            self._keys = [k for k in self._keys if k in self._histories]
        # Watchers may start at the compaction revision itself, so keep its records
        # in the log, but only those compaction kept (a tombstone at rev is gone).
        log = self._log
        cut = bisect.bisect_left(log, rev, key=lambda r: r.mod)
        stop = bisect.bisect_right(log, rev, cut, key=lambda r: r.mod)
        histories = self._histories
        kept = [r for r in log[cut:stop] if (h := histories.get(r.key)) is not None and h[0] is r]
        log[:stop] = kept

    # ---------------------------------------------------------------- replay

    def changes_since(self, rev: int, until: int | None = None) -> list[Change]:
        """Every change with main revision in [rev, until], in revision order.

        The caller checks rev against the compaction revision first.
        """
        log = self._log
        lo = bisect.bisect_left(log, rev, key=lambda r: r.mod)
        hi = len(log) if until is None else bisect.bisect_right(log, until, lo, key=lambda r: r.mod)
        return [Change(r, self._prev_of(r), self._before(r)) for r in log[lo:hi]]

    def _prev_of(self, record: Record) -> Record | None:
        """The live record this one replaced (the record before it in the key's history)."""
        history = self._histories.get(record.key)
        if not history:
            return None
        i = bisect.bisect_left(history, (record.mod, record.sub), key=lambda r: (r.mod, r.sub))
        if i == 0:
            return None
        prev = history[i - 1]
        return None if prev.version == 0 else prev

    def _before(self, record: Record) -> Record | None:
        """The key's live record at record.mod - 1; None once that revision is compacted, as in etcd."""
        if record.mod - 1 < self.compact_revision:
            return None
        history = self._histories.get(record.key)
        if not history:
            return None
        return _live_at(history, record.mod - 1)

    # ------------------------------------------------------------- integrity

    def hash_kv(self, rev: int = 0) -> tuple[int, int, int]:
        """(hash, current revision, compact revision), computed as etcd 3.4's HashKV.

        etcd hashes its "key" bucket: for each stored revision up to rev, the
        17-byte revision key (plus "t" for tombstones) and the marshalled
        KeyValue. Stored revisions at or below the compaction revision count only
        if they are some key's live record *at rev* (3.4 computes its "keep" set
        at the hash revision, not at the compaction revision), unless no key is
        live at rev.
        """
        if rev > 0 and rev <= self.compact_revision:
            raise errors.COMPACTED
        if rev > self.revision:
            raise errors.FUTURE_REV
        if rev <= 0:
            rev = self.revision
        compact = self.compact_revision
        keep: set[int] = set()
        for history in self._histories.values():
            live = _live_at(history, rev)
            if live is not None:
                keep.add(id(live))
        records = [
            r
            for h in self._histories.values()
            for r in h
            if r.mod <= rev and (r.mod > compact or not keep or id(r) in keep)
        ]
        records.sort(key=lambda r: (r.mod, r.sub))
        h = google_crc32c.Checksum(b"key")  # type: ignore[no-untyped-call]
        for r in records:
            revkey = _REV_KEY.pack(r.mod) + b"_" + _REV_KEY.pack(r.sub)
            if r.version == 0:
                h.update(revkey + b"t")  # type: ignore[no-untyped-call]
                h.update(kv_pb2.KeyValue(key=r.key).SerializeToString())  # type: ignore[no-untyped-call]
            else:
                h.update(revkey)  # type: ignore[no-untyped-call]
                h.update(r.to_pb().SerializeToString())  # type: ignore[no-untyped-call]
        digest: bytes = h.digest()  # type: ignore[no-untyped-call]
        return int.from_bytes(digest, "big"), self.revision, compact

    # ------------------------------------------------------------ snapshots

    def stored_records(self) -> Iterator[Record]:
        for history in self._histories.values():
            yield from history

    def record_count(self) -> int:
        return sum(len(h) for h in self._histories.values())

    def live_bytes(self) -> int:
        return sum(len(r.key) + len(r.value) + 48 for h in self._histories.values() for r in h)

    @classmethod
    def restore(cls, revision: int, compact_revision: int, records: list[Record]) -> MVCC:
        """Rebuild from records of a snapshot (any order)."""
        m = cls(revision=revision, compact_revision=compact_revision)
        records = sorted(records, key=lambda r: (r.mod, r.sub))
        histories: dict[bytes, list[Record]] = {}
        for r in records:
            histories.setdefault(r.key, []).append(r)
        m._histories = histories
        m._keys = sorted(histories)
        m._log = [r for r in records if r.mod >= compact_revision]
        return m


class WriteBatch:
    """The changes of one write request, visible to reads inside it as they happen."""

    __slots__ = ("mvcc", "rev", "changes")

    def __init__(self, mvcc: MVCC) -> None:
        self.mvcc = mvcc
        self.rev = mvcc.revision + 1
        self.changes: list[Change] = []

    @property
    def read_revision(self) -> int:
        """The revision reads inside this request see (including its own writes)."""
        return self.rev if self.changes else self.mvcc.revision

    def get(self, key: bytes) -> Record | None:
        history = self.mvcc._histories.get(key)
        if history is None:
            return None
        last = history[-1]
        return None if last.version == 0 else last

    def range(self, start: bytes, end: bytes = b"", limit: int = 0) -> RangeResult:
        m = self.mvcc
        if not self.changes:
            return m.range(start, end, 0, limit)
        out: list[Record] = []
        count = 0
        for key in m._keys_in(start, end):
            last = m._histories[key][-1]
            if last.version == 0:
                continue
            count += 1
            if not limit or len(out) < limit:
                out.append(last)
        return RangeResult(out, count, self.rev)

    def _committed(self, key: bytes) -> Record | None:
        history = self.mvcc._histories.get(key)
        return None if history is None else _live_at(history, self.rev - 1)

    def put(self, key: bytes, value: bytes, lease: int) -> Change:
        prev = self.get(key)
        if prev is None:
            record = Record(key, value, self.rev, self.rev, len(self.changes), 1, lease)
        else:
            record = Record(key, value, prev.create, self.rev, len(self.changes), prev.version + 1, lease)
        before = prev if prev is not None and prev.mod < self.rev else self._committed(key)
        self.mvcc._append(record)
        change = Change(record, prev, before)
        self.changes.append(change)
        return change

    def delete_range(self, start: bytes, end: bytes = b"") -> list[Change]:
        m = self.mvcc
        victims = [r for r in (m._histories[k][-1] for k in list(m._keys_in(start, end))) if r.version]
        out = []
        for prev in victims:
            tomb = Record(prev.key, b"", 0, self.rev, len(self.changes), 0, 0)
            before = prev if prev.mod < self.rev else self._committed(prev.key)
            m._append(tomb)
            change = Change(tomb, prev, before)
            self.changes.append(change)
            out.append(change)
        return out

    def commit(self) -> int:
        """Finish the request; returns the store revision after it."""
        if self.changes:
            self.mvcc.revision = self.rev
        return self.mvcc.revision
