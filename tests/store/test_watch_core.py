"""WatchHub / Watcher on their own: which watcher gets which change, with what.

The shell (node.py) creates a watcher with next_rev = start_revision, or the
current revision + 1 for start_revision 0, sends `WatchHub.add`'s backlog
first, then after every applied entry the changes `WatchHub.match` hands it,
each through `Watcher.events`. These tests do the same without the shell.

Expected events follow etcd 3.4: every change in the watcher's range from its
start revision on, in order, each once; a start below the compaction revision
is refused; prev_kv is the key's value at the event's revision - 1 (what etcd's
watch stream reads for it), so none for an event at the compaction revision;
and a replay from the compaction revision C only has what etcd's compaction
keeps at C: each key's last record at C, if it is live.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gifee.store import errors, snapshot
from gifee.store.errors import StoreError
from gifee.store.mvcc import Change
from gifee.store.proto import internal_pb2, kv_pb2, rpc_pb2
from gifee.store.statemachine import StateMachine, check_txn
from gifee.store.watch import Watcher, WatchHub

P = rpc_pb2
W = rpc_pb2.WatchCreateRequest
PUT, DELETE = kv_pb2.Event.PUT, kv_pb2.Event.DELETE


class Harness:
    """A StateMachine, a WatchHub, and what each watcher has been sent, driven as the shell drives them."""

    def __init__(self) -> None:
        self.sm = StateMachine()
        self.hub = WatchHub()
        self.index = 0
        self.sent: dict[int, list[kv_pb2.Event]] = {}
        self.watchers: dict[int, Watcher] = {}

    @property
    def rev(self) -> int:
        return self.sm.mvcc.revision

    def apply(self, **entry: Any) -> list[Change]:
        self.index += 1
        applied = self.sm.apply(self.index, internal_pb2.Entry(**entry))
        assert applied.error is None, applied.error
        for w, changes in self.hub.match(applied.changes).items():
            self.sent[w.id].extend(w.events(changes))
        return applied.changes

    def put(self, key: bytes, value: bytes = b"") -> None:
        self.apply(put=P.PutRequest(key=key, value=value))

    def delete(self, key: bytes, range_end: bytes = b"") -> None:
        self.apply(delete_range=P.DeleteRangeRequest(key=key, range_end=range_end))

    def compact(self, rev: int) -> None:
        self.apply(compaction=P.CompactionRequest(revision=rev))

    def watch(self, key: bytes, range_end: bytes = b"", start: int = 0, **kw: Any) -> int:
        wid = len(self.watchers) + 1
        w = Watcher(
            wid, W(key=key, range_end=range_end, start_revision=start, **kw), start or self.rev + 1, None
        )
        backlog = self.hub.add(w, self.sm.mvcc)
        self.watchers[wid] = w
        self.sent[wid] = w.events(backlog)
        return wid

    def cancel(self, wid: int) -> None:
        self.hub.remove(self.watchers[wid])

    def events(self, wid: int) -> list[tuple[str, bytes, bytes, int]]:
        return [
            ("PUT" if e.type == PUT else "DELETE", e.kv.key, e.kv.value, e.kv.mod_revision)
            for e in self.sent[wid]
        ]

    def prevs(self, wid: int) -> list[bytes | None]:
        return [e.prev_kv.value if e.HasField("prev_kv") else None for e in self.sent[wid]]


@pytest.fixture
def h() -> Harness:
    return Harness()


# ----------------------------------------------------------------------------------- matching


def test_single_key_watcher(h: Harness) -> None:
    wid = h.watch(b"a")
    h.put(b"a", b"1")
    h.put(b"ab", b"1")
    h.put(b"b", b"1")
    h.delete(b"a")
    h.put(b"a", b"2")
    assert h.events(wid) == [("PUT", b"a", b"1", 2), ("DELETE", b"a", b"", 5), ("PUT", b"a", b"2", 6)]


@pytest.mark.parametrize(
    ("key", "end", "seen"),
    [
        (b"a", b"b", [b"a", b"ab"]),  # prefix a
        (b"ab", b"\0", [b"ab", b"b", b"\xff"]),  # everything from ab
        (b"\x00", b"\0", [b"a", b"ab", b"b", b"\xff"]),  # everything
        (b"\xff", b"\0", [b"\xff"]),  # prefix \xff
        (b"a", b"ab", [b"a"]),
        (b"b", b"a", []),  # end before key
        (b"c", b"\xff\x00", [b"\xff"]),
    ],
)
def test_range_watchers(h: Harness, key: bytes, end: bytes, seen: list[bytes]) -> None:
    wid = h.watch(key, end)
    for k in (b"a", b"ab", b"b", b"\xff"):
        h.put(k, b"v")
    assert [e[1] for e in h.events(wid)] == seen
    h.delete(b"\x00", b"\0")  # one revision, one event per key
    assert [(e[0], e[1], e[3]) for e in h.events(wid)[len(seen) :]] == [("DELETE", k, 6) for k in seen]


def test_many_watchers_same_key(h: Harness) -> None:
    a, b, c = h.watch(b"k"), h.watch(b"k"), h.watch(b"k", b"l")
    h.put(b"k", b"1")
    assert h.events(a) == h.events(b) == h.events(c) == [("PUT", b"k", b"1", 2)]
    assert len(h.hub) == 3
    h.cancel(a)
    h.cancel(c)
    assert len(h.hub) == 1
    h.put(b"k", b"2")
    assert (len(h.events(a)), len(h.events(b)), len(h.events(c))) == (1, 2, 1)


def test_filters(h: Harness) -> None:
    no_put = h.watch(b"k", filters=[W.NOPUT])
    no_delete = h.watch(b"k", filters=[W.NODELETE])
    both = h.watch(b"k", filters=[W.NOPUT, W.NODELETE])
    h.put(b"k", b"1")
    h.delete(b"k")
    assert h.events(no_put) == [("DELETE", b"k", b"", 3)]
    assert h.events(no_delete) == [("PUT", b"k", b"1", 2)]
    assert h.events(both) == []


def test_prev_kv(h: Harness) -> None:
    wid = h.watch(b"k", prev_kv=True)
    plain = h.watch(b"k")
    h.put(b"k", b"1")
    h.put(b"k", b"2")
    h.delete(b"k")
    h.put(b"k", b"3")
    assert h.prevs(wid) == [None, b"1", b"2", None]
    prev = h.sent[wid][2].prev_kv
    assert (prev.key, prev.mod_revision, prev.version, prev.create_revision) == (b"k", 3, 2, 2)
    assert h.prevs(plain) == [None] * 4


def test_events_of_one_txn_come_in_order(h: Harness) -> None:
    h.put(b"c", b"0")
    wid = h.watch(b"a", b"\0")
    t = P.TxnRequest(
        success=[
            P.RequestOp(request_put=P.PutRequest(key=b"b", value=b"1")),
            P.RequestOp(request_delete_range=P.DeleteRangeRequest(key=b"c")),
            P.RequestOp(request_put=P.PutRequest(key=b"a", value=b"1")),
        ]
    )
    h.apply(txn=t)
    assert h.events(wid) == [("PUT", b"b", b"1", 3), ("DELETE", b"c", b"", 3), ("PUT", b"a", b"1", 3)]


def test_lease_revoke_events(h: Harness) -> None:
    h.apply(lease_grant=P.LeaseGrantRequest(ID=1, TTL=60))
    h.apply(put=P.PutRequest(key=b"b", lease=1))
    h.apply(put=P.PutRequest(key=b"a", lease=1))
    wid = h.watch(b"a", b"\0")
    h.apply(lease_revoke=P.LeaseRevokeRequest(ID=1))
    assert h.events(wid) == [("DELETE", b"a", b"", 4), ("DELETE", b"b", b"", 4)]


# ----------------------------------------------------------------------------- start revisions


def test_backlog_from_a_past_revision(h: Harness) -> None:
    h.put(b"a", b"1")  # 2
    h.put(b"b", b"1")  # 3
    h.put(b"a", b"2")  # 4
    h.delete(b"a")  # 5
    wid = h.watch(b"a", start=3, prev_kv=True)
    assert h.events(wid) == [("PUT", b"a", b"2", 4), ("DELETE", b"a", b"", 5)]
    assert h.prevs(wid) == [b"1", b"2"]
    h.put(b"a", b"3")  # 6: live from here on, nothing twice
    assert h.events(wid)[2:] == [("PUT", b"a", b"3", 6)]
    everything = h.watch(b"\x00", b"\0", start=1)
    assert [e[3] for e in h.events(everything)] == [2, 3, 4, 5, 6]
    current = h.watch(b"a", start=h.rev)
    assert h.events(current) == [("PUT", b"a", b"3", 6)]


def test_start_zero_means_next_revision(h: Harness) -> None:
    h.put(b"a", b"1")
    wid = h.watch(b"a")
    assert h.events(wid) == []
    h.put(b"a", b"2")
    assert h.events(wid) == [("PUT", b"a", b"2", 3)]


def test_future_start_revision(h: Harness) -> None:
    """etcd: a watcher from a future revision gets nothing before it."""
    wid = h.watch(b"a", start=h.rev + 3)  # 4
    for v in (b"1", b"2", b"3", b"4"):  # 2, 3, 4, 5
        h.put(b"a", v)
    assert h.events(wid) == [("PUT", b"a", b"3", 4), ("PUT", b"a", b"4", 5)]


def test_compacted_start(h: Harness) -> None:
    for v in (b"1", b"2", b"3", b"4"):  # 2, 3, 4, 5
        h.put(b"a", v)
    h.compact(4)
    with pytest.raises(StoreError) as e:
        h.watch(b"a", start=3)
    assert e.value == errors.COMPACTED
    with pytest.raises(StoreError):
        h.watch(b"a", b"\0", start=1)
    assert len(h.hub) == 0
    at_compaction = h.watch(b"a", start=4, prev_kv=True)
    assert h.events(at_compaction) == [("PUT", b"a", b"3", 4), ("PUT", b"a", b"4", 5)]
    assert h.prevs(at_compaction) == [None, b"3"]  # revision 3 is compacted: no prev for the first


def test_replay_from_the_compaction_revision_skips_what_compaction_removed(h: Harness) -> None:
    """etcd's compaction at C removes a tombstone at C, so a watcher from C never sees that delete.

    (etcd 3.4: watch from C after put d, delete d (= C), put e, compact C delivers only the put of e.)
    Without this, the same watch also answers differently before and after a snapshot restore.
    """
    h.put(b"d", b"1")  # 2
    h.delete(b"d")  # 3
    h.put(b"e", b"1")  # 4
    h.compact(3)
    wid = h.watch(b"d", b"f", start=3)
    assert h.events(wid) == [("PUT", b"e", b"1", 4)]
    restored = StateMachine()
    snapshot.decode(snapshot.encode(h.sm), restored)
    hub = WatchHub()
    w = Watcher(99, W(key=b"d", range_end=b"f", start_revision=3), 3, None)
    assert [(c.record.key, c.record.mod) for c in hub.add(w, restored.mvcc)] == [(b"e", 4)]


def test_prev_kv_of_a_key_written_twice_in_one_revision(h: Harness) -> None:
    """etcd reads prev_kv at the event's revision - 1: both events get the value before the txn.

    (etcd 3.4: put w=1; txn[txn{put w=2}, txn{delete w}] gives PUT w=2 and DELETE w, both with prev_kv w=1.)
    """
    h.put(b"w", b"1")
    wid = h.watch(b"w", prev_kv=True)
    t = P.TxnRequest(
        success=[
            P.RequestOp(
                request_txn=P.TxnRequest(
                    success=[P.RequestOp(request_put=P.PutRequest(key=b"w", value=b"2"))]
                )
            ),
            P.RequestOp(
                request_txn=P.TxnRequest(
                    success=[P.RequestOp(request_delete_range=P.DeleteRangeRequest(key=b"w"))]
                )
            ),
        ]
    )
    check_txn(t)
    h.apply(txn=t)
    assert h.events(wid) == [("PUT", b"w", b"2", 3), ("DELETE", b"w", b"", 3)]
    assert h.prevs(wid) == [b"1", b"1"]
    replay = h.watch(b"w", start=3, prev_kv=True)
    assert h.prevs(replay) == [b"1", b"1"]


# ------------------------------------------------------------------------------ the property

KEYS = [b"a", b"ab", b"b", b"\xff"]
ENDS = [b"", b"", b"\0", b"b", b"ac", b"\xff"]


class KV(NamedTuple):
    value: bytes
    create: int
    mod: int
    version: int


class Ev(NamedTuple):
    rev: int
    sub: int
    key: bytes
    kv: KV | None  # None: a delete


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    if not end:
        return key == start
    if end == b"\0":
        return key >= start
    return start <= key < end


class WatchModel:
    """Full copies of the key space by revision, and every change."""

    def __init__(self) -> None:
        self.snaps: list[dict[bytes, KV]] = [{}, {}]
        self.changes: list[Ev] = []
        self.compact = 0

    @property
    def rev(self) -> int:
        return len(self.snaps) - 1

    def write(self, ops: list[tuple[str, bytes, bytes]]) -> None:
        """One write request: ("put", key, value) / ("del", key, range_end) in order."""
        state = dict(self.snaps[-1])
        rev, sub = self.rev + 1, 0
        for kind, key, arg in ops:
            if kind == "put":
                prev = state.get(key)
                kv = KV(arg, prev.create if prev else rev, rev, prev.version + 1 if prev else 1)
                state[key] = kv
                self.changes.append(Ev(rev, sub, key, kv))
                sub += 1
            else:
                for k in sorted(k for k in state if in_range(k, key, arg)):
                    del state[k]
                    self.changes.append(Ev(rev, sub, k, None))
                    sub += 1
        if sub:
            self.snaps.append(state)

    def expected(
        self, w: rpc_pb2.WatchCreateRequest, start: int, until: int, compact: int
    ) -> list[kv_pb2.Event]:
        """What a watcher over w created when `compact` was the compaction revision gets up to `until`."""
        last_at_c = {ev.key: ev for ev in self.changes if ev.rev == compact}
        out = []
        for ev in self.changes:
            if ev.rev < start or ev.rev > until or not in_range(ev.key, w.key, w.range_end):
                continue
            if ev.rev == compact and (last_at_c[ev.key] is not ev or ev.kv is None):
                continue  # etcd's compaction at `compact` removed it
            if ev.kv is None:
                if W.NODELETE in w.filters:
                    continue
                e = kv_pb2.Event(type=DELETE, kv=kv_pb2.KeyValue(key=ev.key, mod_revision=ev.rev))
            else:
                if W.NOPUT in w.filters:
                    continue
                kv = ev.kv
                e = kv_pb2.Event(type=PUT, kv=pb(ev.key, kv))
            prev = self.snaps[ev.rev - 1].get(ev.key) if ev.rev - 1 >= compact else None
            if w.prev_kv and prev is not None:
                e.prev_kv.CopyFrom(pb(ev.key, prev))
            out.append(e)
        return out


def pb(key: bytes, kv: KV) -> kv_pb2.KeyValue:
    return kv_pb2.KeyValue(
        key=key, value=kv.value, create_revision=kv.create, mod_revision=kv.mod, version=kv.version
    )


writes = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.sampled_from([b"", b"x", b"y"])),
    st.tuples(st.just("del"), st.sampled_from(KEYS), st.sampled_from(ENDS)),
    # a txn of puts on distinct keys, then maybe a delete of another key
    st.tuples(
        st.just("txn"), st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True), st.booleans()
    ),
    # one key put and deleted by two nested txns: two changes of one key in one revision
    st.tuples(st.just("put+del"), st.sampled_from(KEYS), st.just(b"z")),
    st.tuples(st.just("compact"), st.sampled_from([0, 0, 1, 2]), st.just(b"")),
)
watches = st.tuples(
    st.just("watch"),
    st.sampled_from(KEYS + [b"\x00"]),
    st.sampled_from([*ENDS, b"\0"]),
    # start: 0, relative to the current revision (past, current, next, future), or the compaction revision
    st.sampled_from([0, 0, -1, -2, -3, -5, 1, 2, 3, 5, "compact", "compact"]),
    st.sampled_from([(), (), (W.NOPUT,), (W.NODELETE,)]),
    st.booleans(),
)
cancels = st.tuples(st.just("cancel"), st.integers(0, 10))
steps = st.one_of(writes, watches, cancels)  # flattened: 5 kinds of writes, watches, cancels


def _op(kind: str, key: bytes, arg: bytes) -> rpc_pb2.RequestOp:
    if kind == "put":
        return P.RequestOp(request_put=P.PutRequest(key=key, value=arg))
    return P.RequestOp(request_delete_range=P.DeleteRangeRequest(key=key, range_end=arg))


@settings(
    max_examples=300,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(script=st.lists(steps, min_size=6, max_size=30))
def test_watchers_get_each_change_once_in_order(script: list[tuple[Any, ...]]) -> None:
    h = Harness()
    m = WatchModel()
    # watch id -> (request, start revision, compaction revision at creation, revision of its cancel or None)
    live: dict[int, tuple[rpc_pb2.WatchCreateRequest, int, int, int | None]] = {}
    for step in script:
        kind = step[0]
        if kind == "put":
            ops = [("put", step[1], step[2])]
        elif kind == "del":
            ops = [("del", step[1], step[2])]
        elif kind == "txn":
            ops = [("put", k, b"t") for k in step[1]]
            rest = [k for k in KEYS if k not in step[1]]
            if step[2] and rest:
                ops.append(("del", rest[0], b""))
        elif kind == "put+del":
            ops = [("put", step[1], step[2]), ("del", step[1], b"")]
        elif kind == "compact":
            rev = max(h.rev - step[1], 1)
            if rev > h.sm.mvcc.compact_revision:
                h.compact(rev)
                m.compact = rev
            continue
        elif kind == "cancel":
            ids = sorted(i for i, x in live.items() if x[3] is None)
            if ids:
                wid = ids[step[1] % len(ids)]
                h.cancel(wid)
                live[wid] = (*live[wid][:3], h.rev)
            continue
        else:
            _, key, end, rel, filters, prev_kv = step
            if rel == "compact":
                start = max(m.compact, 1)
            else:
                start = 0 if rel == 0 else max(h.rev + rel, 1)
            req = W(key=key, range_end=end, start_revision=start, filters=list(filters), prev_kv=prev_kv)
            effective = start or h.rev + 1
            if effective < m.compact:
                with pytest.raises(StoreError) as e:
                    h.watch(key, end, start, filters=list(filters), prev_kv=prev_kv)
                assert e.value == errors.COMPACTED
                continue
            wid = h.watch(key, end, start, filters=list(filters), prev_kv=prev_kv)
            live[wid] = (req, effective, m.compact, None)
            continue
        # one write request
        if kind == "put+del":
            t = P.TxnRequest(success=[P.RequestOp(request_txn=P.TxnRequest(success=[_op(*o)])) for o in ops])
        else:
            t = P.TxnRequest(success=[_op(*o) for o in ops])
        check_txn(t)
        h.apply(txn=t)
        m.write(ops)
        assert h.rev == m.rev
    for wid, (req, start, compact, cancelled) in live.items():
        until = h.rev if cancelled is None else cancelled
        want = m.expected(req, start, until, compact)
        assert h.sent[wid] == want, f"watcher {wid} {req} from {start}"
