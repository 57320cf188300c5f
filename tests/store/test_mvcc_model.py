"""Model-based test of the store's pure cores: StateMachine (+ MVCC, snapshots) against a dumb model.

The model keeps one full copy of the key space per revision ({key: KV}) and a
flat list of changes; every read is answered from those copies by brute force.
It follows etcd v3.4's apply rules, ported from etcd's applier (not from
gifee's code):

* Txn: every compare, nested ones included, is evaluated against the store as
  it was before the txn (etcd's compareToPath); put checks (KEY_NOT_FOUND for
  ignore_* on a missing key, then LEASE_NOT_FOUND) run over the chosen path
  before range checks (FUTURE_REV / COMPACTED); a compare with a range_end
  that selects no key behaves as a compare against an empty KeyValue (so a
  VALUE compare fails).
* A range inside a txn at an explicit revision reads the committed store at
  that revision; revision 0 reads the txn's own writes.
* Range: count_only answers never have more=true (etcd fetches no kvs for
  them); with a limit and neither sort_order nor a filter set, etcd fetches
  limit + 1 kvs in key order and only then sorts them by sort_target.
* LeaseGrant checks the TTL before whether the ID is taken.
* Txn size: a nested txn's budget is 128 minus its parent's op count
  (etcd's checkTxnReq(maxTxnOps - opc)).
* Replay (`changes_since`) after a compaction at C: etcd's compaction drops
  tombstones at or below C and every record superseded at or below C, so a
  watcher starting at C sees only the last record of each key at C if it is
  live, and it has no prev (the older records are gone).

A twin StateMachine fed the same entries must agree on hash_kv, and a
snapshot round trip (encode -> decode into a fresh StateMachine) must answer
every read the same; the rule `restart` then continues the run on the restored
copy so that its future behaviour is checked too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from gifee.store import errors, snapshot
from gifee.store.errors import StoreError
from gifee.store.mvcc import Change, Record
from gifee.store.proto import internal_pb2, kv_pb2, rpc_pb2
from gifee.store.statemachine import (
    MAX_LEASE_TTL,
    MIN_LEASE_TTL,
    StateMachine,
    check_delete,
    check_put,
    check_range,
    check_txn,
)

P = rpc_pb2
C = rpc_pb2.Compare
R = rpc_pb2.RangeRequest

KEYS = [b"a", b"ab", b"b", b"\xff"]
# range_end values: single key, all keys >= key, plain ends, prefix ends of the keys, past every key.
ENDS = [b"", b"\0", b"a", b"ab", b"ac", b"b", b"c", b"\xff", b"\xff\x00"]
NAMED_RANGES = [(k, b"") for k in KEYS] + [
    (b"\x00", b"\0"),
    (b"a", b"b"),
    (b"a", b"ac"),
    (b"ab", b"\0"),
    (b"\xff", b"\0"),
    (b"a", b"\xff"),
    (b"b", b"a"),
    (b"ab", b"\xff\x00"),
    (b"c", b""),
]
VALUES = [b"", b"x", b"y", b"zz"]
# Options of the ranges checked after every step (besides random ones in rules), on a few ranges.
VARIANT_RANGES = [(b"\x00", b"\0"), (b"a", b"b"), (b"ab", b"\0"), (b"b", b"\xff\x00")]
RANGE_VARIANTS: list[dict[str, int | bool]] = [
    {"limit": 1},
    {"limit": 1, "count_only": True},
    {"limit": 2, "keys_only": True},
    {"limit": 2, "sort_order": rpc_pb2.RangeRequest.DESCEND, "sort_target": rpc_pb2.RangeRequest.MOD},
    {"sort_target": rpc_pb2.RangeRequest.VALUE},
    {"sort_order": rpc_pb2.RangeRequest.DESCEND, "limit": 3, "min_create_revision": 3},
]
LEASE_IDS = [1, 2, 3]


# ------------------------------------------------------------------------------------------ the model


class KV(NamedTuple):
    key: bytes
    value: bytes
    create: int
    mod: int
    version: int
    lease: int

    def pb(self, keys_only: bool = False) -> kv_pb2.KeyValue:
        return kv_pb2.KeyValue(
            key=self.key,
            create_revision=self.create,
            mod_revision=self.mod,
            version=self.version,
            value=b"" if keys_only else self.value,
            lease=self.lease,
        )


EMPTY_KV = KV(b"", b"", 0, 0, 0, 0)


class MChange(NamedTuple):
    rev: int
    sub: int
    key: bytes
    kv: KV | None  # None: a delete
    prev: KV | None


def kv_of(r: Record | None) -> KV | None:
    if r is None or r.version == 0:
        return None
    return KV(r.key, r.value, r.create, r.mod, r.version, r.lease)


def change_tuple(c: Change) -> MChange:
    r = c.record
    if r.version == 0:
        assert (r.value, r.lease) == (b"", 0), r
    return MChange(r.mod, r.sub, r.key, kv_of(r), kv_of(c.prev))


def selects(key: bytes, start: bytes, end: bytes) -> bool:
    if not end:
        return key == start
    if end == b"\0":
        return key >= start
    return start <= key < end


def in_order(state: dict[bytes, KV], start: bytes, end: bytes) -> list[KV]:
    return [state[k] for k in sorted(state) if selects(k, start, end)]


_SORT = {
    R.KEY: lambda kv: kv.key,
    R.VERSION: lambda kv: kv.version,
    R.CREATE: lambda kv: kv.create,
    R.MOD: lambda kv: kv.mod,
    R.VALUE: lambda kv: kv.value,
}


def model_range(state: dict[bytes, KV], r: rpc_pb2.RangeRequest, header_rev: int) -> rpc_pb2.RangeResponse:
    """etcd's applyRange over one full copy of the key space."""
    kvs = in_order(state, r.key, r.range_end)
    count = len(kvs)
    if r.limit > 0 and not (
        r.sort_order
        or r.min_mod_revision
        or r.max_mod_revision
        or r.min_create_revision
        or r.max_create_revision
    ):
        # etcd fetches limit + 1 kvs in key order unless sort_order or a filter is set, and only then
        # sorts: a sort_target with sort_order NONE (sorted ascending) sorts just those.
        kvs = kvs[: r.limit + 1]
    if r.max_mod_revision:
        kvs = [kv for kv in kvs if kv.mod <= r.max_mod_revision]
    if r.min_mod_revision:
        kvs = [kv for kv in kvs if kv.mod >= r.min_mod_revision]
    if r.max_create_revision:
        kvs = [kv for kv in kvs if kv.create <= r.max_create_revision]
    if r.min_create_revision:
        kvs = [kv for kv in kvs if kv.create >= r.min_create_revision]
    order = r.sort_order
    if r.sort_target != R.KEY and order == R.NONE:
        order = R.ASCEND
    if order != R.NONE:
        # Go's sort for so few items is an insertion sort: stable, also under sort.Reverse.
        kvs = sorted(kvs, key=_SORT[r.sort_target], reverse=order == R.DESCEND)
    if r.count_only:
        kvs = []  # etcd fetches no kvs for count_only, so `more` stays false
    more = False
    if r.limit > 0 and len(kvs) > r.limit:
        kvs = kvs[: r.limit]
        more = True
    resp = P.RangeResponse(count=count, more=more)
    resp.header.revision = header_rev
    resp.kvs.extend(kv.pb(r.keys_only) for kv in kvs)
    return resp


def _compare_kv(c: rpc_pb2.Compare, kv: KV) -> bool:
    have: int | bytes
    want: int | bytes
    if c.target == C.VALUE:
        have, want = kv.value, c.value
    elif c.target == C.VERSION:
        have, want = kv.version, c.version
    elif c.target == C.CREATE:
        have, want = kv.create, c.create_revision
    elif c.target == C.MOD:
        have, want = kv.mod, c.mod_revision
    else:
        have, want = kv.lease, c.lease
    return {
        C.EQUAL: have == want,
        C.NOT_EQUAL: have != want,
        C.GREATER: have > want,  # type: ignore[operator]
        C.LESS: have < want,  # type: ignore[operator]
    }[c.result]


def model_compare(c: rpc_pb2.Compare, state: dict[bytes, KV]) -> bool:
    """etcd's applyCompare."""
    kvs = in_order(state, c.key, c.range_end)
    if not kvs:
        if c.target == C.VALUE:
            return False
        return _compare_kv(c, EMPTY_KV)
    return all(_compare_kv(c, kv) for kv in kvs)


def has_put(t: rpc_pb2.TxnRequest) -> bool:
    for op in [*t.success, *t.failure]:
        kind = op.WhichOneof("request")
        if kind == "request_put" or (kind == "request_txn" and has_put(op.request_txn)):
            return True
    return False


def model_check_txn(t: rpc_pb2.TxnRequest, max_ops: int = 128) -> None:
    """etcd's checkTxnReq + checkIntervals (v3rpc/key.go), ported."""
    _check_txn_req(t, max_ops)
    _check_intervals(list(t.success))
    _check_intervals(list(t.failure))


def _check_txn_req(t: rpc_pb2.TxnRequest, max_ops: int) -> None:
    opc = max(len(t.compare), len(t.success), len(t.failure))
    if opc > max_ops:
        raise errors.TOO_MANY_OPS
    for c in t.compare:
        if not c.key:
            raise errors.EMPTY_KEY
    for op in [*t.success, *t.failure]:
        kind = op.WhichOneof("request")
        if kind == "request_range":
            if not op.request_range.key:
                raise errors.EMPTY_KEY
        elif kind == "request_put":
            p = op.request_put
            if not p.key:
                raise errors.EMPTY_KEY
            if p.ignore_value and p.value:
                raise errors.VALUE_PROVIDED
            if p.ignore_lease and p.lease:
                raise errors.LEASE_PROVIDED
        elif kind == "request_delete_range":
            if not op.request_delete_range.key:
                raise errors.EMPTY_KEY
        elif kind == "request_txn":
            _check_txn_req(op.request_txn, max_ops - opc)
        else:
            raise errors.KEY_NOT_FOUND  # an empty RequestOp


def _deleted(dels: list[tuple[bytes, bytes]], key: bytes) -> bool:
    # etcd's string-affine interval tree; an interval ending in "\0" (or ending before it starts)
    # is empty there, so it never contains a put's key.
    for start, end in dels:
        if not end:
            if key == start:
                return True
        elif start <= key < end:
            return True
    return False


def _check_intervals(ops: list[rpc_pb2.RequestOp]) -> tuple[set[bytes], list[tuple[bytes, bytes]]]:
    dels = [
        (op.request_delete_range.key, op.request_delete_range.range_end)
        for op in ops
        if op.WhichOneof("request") == "request_delete_range"
    ]
    puts: set[bytes] = set()
    for op in ops:
        if op.WhichOneof("request") != "request_txn":
            continue
        puts_then, dels_then = _check_intervals(list(op.request_txn.success))
        puts_else, dels_else = _check_intervals(list(op.request_txn.failure))
        for k in puts_then:
            if k in puts or _deleted(dels, k):
                raise errors.DUPLICATE_KEY
            puts.add(k)
        for k in puts_else:
            if (k in puts and k not in puts_then) or _deleted(dels, k):
                raise errors.DUPLICATE_KEY
            puts.add(k)
        dels = dels + dels_then + dels_else
    for op in ops:
        if op.WhichOneof("request") != "request_put":
            continue
        k = op.request_put.key
        if k in puts or _deleted(dels, k):
            raise errors.DUPLICATE_KEY
        puts.add(k)
    return puts, dels


@dataclass
class Decision:
    """A txn's outcome of its compares, and those of the nested txns on its chosen branch."""

    ok: bool
    nested: list[Decision]

    def ops(self, t: rpc_pb2.TxnRequest) -> list[rpc_pb2.RequestOp]:
        return list(t.success if self.ok else t.failure)


class ModelBatch:
    def __init__(self, model: Model) -> None:
        self.model = model
        self.begin = model.revision
        self.rev = self.begin + 1
        self.state = dict(model.current)
        self.changes: list[MChange] = []

    @property
    def read_rev(self) -> int:
        return self.rev if self.changes else self.begin

    def put(self, key: bytes, value: bytes, lease: int) -> KV | None:
        prev = self.state.get(key)
        if prev is None:
            kv = KV(key, value, self.rev, self.rev, 1, lease)
        else:
            kv = KV(key, value, prev.create, self.rev, prev.version + 1, lease)
        self.state[key] = kv
        self.changes.append(MChange(self.rev, len(self.changes), key, kv, prev))
        return prev

    def delete(self, start: bytes, end: bytes) -> list[KV]:
        victims = in_order(self.state, start, end)
        for prev in victims:
            del self.state[prev.key]
            self.changes.append(MChange(self.rev, len(self.changes), prev.key, None, prev))
        return victims


@dataclass
class Model:
    snaps: list[dict[bytes, KV]] = field(default_factory=lambda: [{}, {}])  # by revision; [0] unused
    changes: list[MChange] = field(default_factory=list)
    compact_rev: int = -1  # etcd: -1 until the first compaction
    leases: dict[int, int] = field(default_factory=dict)  # id -> ttl
    nospace: bool = False

    @property
    def revision(self) -> int:
        return len(self.snaps) - 1

    @property
    def current(self) -> dict[bytes, KV]:
        return self.snaps[-1]

    def lease_keys(self, lease_id: int) -> list[bytes]:
        return sorted(k for k, kv in self.current.items() if kv.lease == lease_id)

    # -- reads

    def at(self, rev: int) -> dict[bytes, KV]:
        if rev <= 0:
            return self.current
        if rev > self.revision:
            raise errors.FUTURE_REV
        if rev < self.compact_rev:
            raise errors.COMPACTED
        return self.snaps[rev]

    def range(self, r: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        return model_range(self.at(r.revision), r, self.revision)

    def changes_since(self, rev: int, until: int | None = None) -> list[MChange]:
        c = self.compact_rev
        last_at_c: dict[bytes, MChange] = {ch.key: ch for ch in self.changes if ch.rev == c}
        out = []
        for ch in self.changes:
            if ch.rev < rev or (until is not None and ch.rev > until):
                continue
            if ch.rev == c:
                if last_at_c[ch.key] is not ch or ch.kv is None:
                    continue  # removed by the compaction at c
                ch = ch._replace(prev=None)  # the record it replaced is compacted away
            out.append(ch)
        return out

    # -- writes

    def apply(self, entry: internal_pb2.Entry) -> tuple[object, StoreError | None, list[MChange]]:
        kind = entry.WhichOneof("request")
        batch: ModelBatch | None = None
        try:
            if kind == "put":
                resp, batch = self._put(entry.put)
            elif kind == "delete_range":
                batch = ModelBatch(self)
                resp = self._delete(batch, entry.delete_range)
            elif kind == "txn":
                resp, batch = self._txn(entry.txn)
            elif kind == "compaction":
                resp = self._compact(entry.compaction)
            elif kind == "lease_grant":
                resp = self._lease_grant(entry.lease_grant)
            elif kind == "lease_revoke":
                resp, batch = self._lease_revoke(entry.lease_revoke)
            elif kind == "alarm":
                resp = self._alarm(entry.alarm)
            else:
                raise AssertionError(kind)
        except StoreError as e:
            return None, e, []
        if batch is None or not batch.changes:
            return resp, None, []
        self.snaps.append(batch.state)
        self.changes.extend(batch.changes)
        return resp, None, batch.changes

    def _put(self, p: rpc_pb2.PutRequest) -> tuple[rpc_pb2.PutResponse, ModelBatch]:
        if self.nospace:
            raise errors.NO_SPACE
        if p.lease and p.lease not in self.leases:
            raise errors.LEASE_NOT_FOUND
        if (p.ignore_value or p.ignore_lease) and p.key not in self.current:
            raise errors.KEY_NOT_FOUND
        batch = ModelBatch(self)
        return self._do_put(batch, p), batch

    def _do_put(self, b: ModelBatch, p: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        old = b.state.get(p.key)
        value = old.value if (p.ignore_value and old) else p.value
        lease = old.lease if (p.ignore_lease and old) else p.lease
        prev = b.put(p.key, value, lease)
        resp = P.PutResponse()
        resp.header.revision = b.rev
        if p.prev_kv and prev is not None:
            resp.prev_kv.CopyFrom(prev.pb())
        return resp

    def _delete(self, b: ModelBatch, d: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
        victims = b.delete(d.key, d.range_end)
        resp = P.DeleteRangeResponse(deleted=len(victims))
        resp.header.revision = b.read_rev
        if d.prev_kv:
            resp.prev_kvs.extend(kv.pb() for kv in victims)
        return resp

    def _decide(self, t: rpc_pb2.TxnRequest, state: dict[bytes, KV]) -> Decision:
        d = Decision(all(model_compare(c, state) for c in t.compare), [])
        for op in d.ops(t):
            if op.WhichOneof("request") == "request_txn":
                d.nested.append(self._decide(op.request_txn, state))
        return d

    def _check_path(self, t: rpc_pb2.TxnRequest, d: Decision, what: str) -> None:
        nested = iter(d.nested)
        for op in d.ops(t):
            kind = op.WhichOneof("request")
            if kind == "request_txn":
                self._check_path(op.request_txn, next(nested), what)
            elif kind == "request_put" and what == "put":
                p = op.request_put
                if (p.ignore_value or p.ignore_lease) and p.key not in self.current:
                    raise errors.KEY_NOT_FOUND
                if p.lease and p.lease not in self.leases:
                    raise errors.LEASE_NOT_FOUND
            elif kind == "request_range" and what == "range":
                rev = op.request_range.revision
                if rev > 0:
                    if rev > self.revision:
                        raise errors.FUTURE_REV
                    if rev < self.compact_rev:
                        raise errors.COMPACTED

    def _txn(self, t: rpc_pb2.TxnRequest) -> tuple[rpc_pb2.TxnResponse, ModelBatch]:
        if self.nospace and has_put(t):
            raise errors.NO_SPACE
        d = self._decide(t, self.current)
        self._check_path(t, d, "put")
        self._check_path(t, d, "range")
        b = ModelBatch(self)
        resp = self._run(b, t, d)
        resp.header.revision = b.read_rev
        return resp, b

    def _run(self, b: ModelBatch, t: rpc_pb2.TxnRequest, d: Decision) -> rpc_pb2.TxnResponse:
        resp = P.TxnResponse(succeeded=d.ok)
        nested = iter(d.nested)
        for op in d.ops(t):
            kind = op.WhichOneof("request")
            out = resp.responses.add()
            if kind == "request_range":
                r = op.request_range
                at = r.revision if r.revision > 0 else b.read_rev
                state = b.state if at == b.read_rev else self.snaps[at]
                out.response_range.CopyFrom(model_range(state, r, b.read_rev))
            elif kind == "request_put":
                out.response_put.CopyFrom(self._do_put(b, op.request_put))
            elif kind == "request_delete_range":
                out.response_delete_range.CopyFrom(self._delete(b, op.request_delete_range))
            else:
                inner = self._run(b, op.request_txn, next(nested))
                inner.header.SetInParent()
                out.response_txn.CopyFrom(inner)
        return resp

    def _compact(self, c: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        if c.revision <= self.compact_rev:
            raise errors.COMPACTED
        if c.revision > self.revision:
            raise errors.FUTURE_REV
        self.compact_rev = c.revision
        return P.CompactionResponse(header=P.ResponseHeader(revision=self.revision))

    def _lease_grant(self, g: rpc_pb2.LeaseGrantRequest) -> rpc_pb2.LeaseGrantResponse:
        if self.nospace:
            raise errors.NO_SPACE
        if g.TTL > MAX_LEASE_TTL:  # etcd's lessor.Grant checks the TTL before the ID
            raise errors.LEASE_TTL_TOO_LARGE
        if g.ID in self.leases:
            raise errors.LEASE_EXIST
        ttl = max(g.TTL, MIN_LEASE_TTL)
        self.leases[g.ID] = ttl
        return P.LeaseGrantResponse(ID=g.ID, TTL=ttl, header=P.ResponseHeader(revision=self.revision))

    def _lease_revoke(self, r: rpc_pb2.LeaseRevokeRequest) -> tuple[rpc_pb2.LeaseRevokeResponse, ModelBatch]:
        if r.ID not in self.leases:
            raise errors.LEASE_NOT_FOUND
        b = ModelBatch(self)
        for key in self.lease_keys(r.ID):
            b.delete(key, b"")
        del self.leases[r.ID]
        resp = P.LeaseRevokeResponse()
        resp.header.revision = b.read_rev
        return resp, b

    def _alarm(self, a: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        resp = P.AlarmResponse()
        assert a.alarm == P.NOSPACE and a.memberID == 1
        if a.action == P.AlarmRequest.ACTIVATE:
            self.nospace = True
            resp.alarms.add(memberID=1, alarm=P.NOSPACE)
        elif a.action == P.AlarmRequest.DEACTIVATE:
            if self.nospace:
                resp.alarms.add(memberID=1, alarm=P.NOSPACE)
            self.nospace = False
        resp.header.revision = self.revision
        return resp


# ------------------------------------------------------------------------------------- strategies

keys = st.sampled_from(KEYS)
ends = st.sampled_from(ENDS)
values = st.sampled_from(VALUES)
small = st.sampled_from([0, 0, 0, 1, 2, 3])

# Revisions in generated requests are relative, so that the strategies need not know the store: a
# negative n stands for current + 2 + n (-1 the next, future revision, -2 the current one, -3 the one
# before, ...; never below 1), and `resolve` replaces it before the request is used. 0 stays 0.
rel_revisions = st.one_of(st.sampled_from([0, -2, -3, -1]), st.integers(-12, -1))
# Filters are mostly off: most non-zero filters leave nothing to sort, limit or count.
rel_filters = st.tuples(st.integers(0, 4), st.integers(-12, -1)).map(lambda t: t[1] if t[0] == 4 else 0)


def _abs(n: int, current: int) -> int:
    return max(current + 2 + n, 1) if n < 0 else n


def resolve(msg: object, current: int) -> None:
    """Turn relative revisions in a RangeRequest, Compare or TxnRequest (recursively) into absolute ones."""
    if isinstance(msg, rpc_pb2.RangeRequest):
        for f in (
            "revision",
            "min_mod_revision",
            "max_mod_revision",
            "min_create_revision",
            "max_create_revision",
        ):
            setattr(msg, f, _abs(getattr(msg, f), current))
    elif isinstance(msg, rpc_pb2.Compare):
        if msg.target == C.CREATE:
            msg.create_revision = _abs(msg.create_revision, current)
        elif msg.target == C.MOD:
            msg.mod_revision = _abs(msg.mod_revision, current)
    elif isinstance(msg, rpc_pb2.TxnRequest):
        for c in msg.compare:
            resolve(c, current)
        for op in [*msg.success, *msg.failure]:
            kind = op.WhichOneof("request")
            if kind == "request_range":
                resolve(op.request_range, current)
            elif kind == "request_txn":
                resolve(op.request_txn, current)


@st.composite
def range_requests(draw: st.DrawFn) -> rpc_pb2.RangeRequest:
    return P.RangeRequest(
        key=draw(st.sampled_from([*KEYS, b"\x00"])),
        range_end=draw(ends),
        revision=draw(rel_revisions),
        limit=draw(small),
        sort_order=draw(st.sampled_from([R.NONE, R.NONE, R.ASCEND, R.DESCEND])),
        sort_target=draw(st.sampled_from([R.KEY, R.KEY, R.VERSION, R.CREATE, R.MOD, R.VALUE])),
        keys_only=draw(st.sampled_from([False, False, True])),
        count_only=draw(st.sampled_from([False, False, False, True])),
        min_mod_revision=draw(rel_filters),
        max_mod_revision=draw(rel_filters),
        min_create_revision=draw(rel_filters),
        max_create_revision=draw(rel_filters),
    )


@st.composite
def put_requests(draw: st.DrawFn) -> rpc_pb2.PutRequest:
    mode = draw(st.sampled_from(["plain"] * 9 + ["ignore_value", "ignore_lease", "ignore_both"]))
    p = P.PutRequest(key=draw(keys), prev_kv=draw(st.booleans()))
    if mode in ("plain", "ignore_lease"):
        p.value = draw(values)
    if mode in ("plain", "ignore_value"):
        p.lease = draw(st.sampled_from([0, 0, 0, 0, 0, *LEASE_IDS]))
    p.ignore_value = mode in ("ignore_value", "ignore_both")
    p.ignore_lease = mode in ("ignore_lease", "ignore_both")
    return p


@st.composite
def delete_requests(draw: st.DrawFn) -> rpc_pb2.DeleteRangeRequest:
    return P.DeleteRangeRequest(key=draw(keys), range_end=draw(ends), prev_kv=draw(st.booleans()))


@st.composite
def compares(draw: st.DrawFn) -> rpc_pb2.Compare:
    c = C(
        key=draw(keys),
        range_end=draw(st.sampled_from([b"", b"", b"", b"\0", b"b", b"c"])),
        target=draw(st.sampled_from([C.VERSION, C.CREATE, C.MOD, C.VALUE, C.LEASE])),
        result=draw(st.sampled_from([C.EQUAL, C.NOT_EQUAL, C.GREATER, C.LESS])),
    )
    if c.target == C.VALUE:
        c.value = draw(values)
    elif c.target == C.VERSION:
        c.version = draw(st.integers(0, 3))
    elif c.target == C.CREATE:
        c.create_revision = draw(rel_revisions)
    elif c.target == C.MOD:
        c.mod_revision = draw(rel_revisions)
    else:
        c.lease = draw(st.sampled_from([0, *LEASE_IDS]))
    return c


def txn_request(
    compare: list[rpc_pb2.Compare], success: list[rpc_pb2.RequestOp], failure: list[rpc_pb2.RequestOp]
) -> rpc_pb2.TxnRequest:
    return P.TxnRequest(compare=compare, success=success, failure=failure)


@st.composite
def txn_range_requests(draw: st.DrawFn) -> rpc_pb2.RangeRequest:
    """Range requests inside txns: fewer draws than `range_requests`, one option at a time."""
    r = P.RangeRequest(key=draw(keys), range_end=draw(ends), revision=draw(rel_revisions), limit=draw(small))
    option = draw(st.sampled_from(["", "", "sort", "keys_only", "count_only", "filter"]))
    if option == "sort":
        r.sort_order = draw(st.sampled_from([R.ASCEND, R.DESCEND]))
        r.sort_target = draw(st.sampled_from([R.KEY, R.VERSION, R.CREATE, R.MOD, R.VALUE]))
    elif option == "keys_only":
        r.keys_only = True
    elif option == "count_only":
        r.count_only = True
    elif option == "filter":
        r.min_mod_revision = draw(rel_revisions)
    return r


def _txns(ops: st.SearchStrategy[rpc_pb2.RequestOp], size: int) -> st.SearchStrategy[rpc_pb2.TxnRequest]:
    return st.builds(
        txn_request,
        st.lists(compares(), max_size=2),
        st.lists(ops, max_size=size),
        st.lists(ops, max_size=size - 1),
    )


def range_op(r: rpc_pb2.RangeRequest) -> rpc_pb2.RequestOp:
    return P.RequestOp(request_range=r)


def put_op(p: rpc_pb2.PutRequest) -> rpc_pb2.RequestOp:
    return P.RequestOp(request_put=p)


def delete_op(d: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.RequestOp:
    return P.RequestOp(request_delete_range=d)


def txn_op(t: rpc_pb2.TxnRequest) -> rpc_pb2.RequestOp:
    return P.RequestOp(request_txn=t)


_flat_ops = st.one_of(
    st.builds(range_op, txn_range_requests()),
    st.builds(put_op, put_requests()),
    st.builds(put_op, put_requests()),
    st.builds(delete_op, delete_requests()),
)


def _with_nested(inner: st.SearchStrategy[rpc_pb2.TxnRequest]) -> st.SearchStrategy[rpc_pb2.RequestOp]:
    return st.one_of(_flat_ops, st.builds(txn_op, inner))


# Up to two levels of nesting, smaller as they go deeper.
txn_requests = _txns(_with_nested(_txns(_with_nested(_txns(_flat_ops, 2)), 3)), 4)


# ---------------------------------------------------------------------------------- the machine


def same(got: object, want: object, what: str) -> None:
    assert got == want, f"{what}:\n  got  {got!r}\n  want {want!r}"


def outcome(f: object, *args: object) -> object:
    try:
        return f(*args)  # type: ignore[operator]
    except StoreError as e:
        return e


def full_range(sm: StateMachine, rev: int) -> object:
    try:
        res = sm.mvcc.range(b"\x00", b"\0", rev)
    except StoreError as e:
        return e
    return [kv_of(r) for r in res.records], res.count, res.revision


class StoreModelMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sm = StateMachine()
        self.twin = StateMachine()
        self.model = Model()
        self.index = 0

    # -- driving

    def apply(self, entry: internal_pb2.Entry) -> None:
        self.index += 1
        want_resp, want_err, want_changes = self.model.apply(entry)
        got = self.sm.apply(self.index, entry)
        twin = self.twin.apply(self.index, entry)
        same(got.error, want_err, f"error of {entry}")
        same(got.response, want_resp, f"response to {entry}")
        same([change_tuple(c) for c in got.changes], want_changes, f"changes of {entry}")
        same(got.revision, self.model.revision, "Applied.revision")
        same(twin.error, got.error, "twin's error")

    def checked(self, check: object, req: object, entry: internal_pb2.Entry, model_check: object) -> None:
        """The shell's pre-proposal check, then apply (only if it passes, as the server does)."""
        want = outcome(model_check, req)
        got = outcome(check, req)
        same(
            got if isinstance(got, StoreError) else None,
            want if isinstance(want, StoreError) else None,
            f"check of {req}",
        )
        if not isinstance(got, StoreError):
            self.apply(entry)

    @rule(puts=st.lists(put_requests(), min_size=1, max_size=3))
    def put(self, puts: list[rpc_pb2.PutRequest]) -> None:
        def model_check(p: rpc_pb2.PutRequest) -> None:
            if p.ignore_value and p.value:
                raise errors.VALUE_PROVIDED
            if p.ignore_lease and p.lease:
                raise errors.LEASE_PROVIDED

        for p in puts:
            self.checked(check_put, p, internal_pb2.Entry(put=p), model_check)

    @rule(d=delete_requests())
    def delete(self, d: rpc_pb2.DeleteRangeRequest) -> None:
        check_delete(d)
        self.apply(internal_pb2.Entry(delete_range=d))

    @rule(txn=txn_requests)
    def txn(self, txn: rpc_pb2.TxnRequest) -> None:
        t = P.TxnRequest()
        t.CopyFrom(txn)
        resolve(t, self.model.revision)
        self.checked(check_txn, t, internal_pb2.Entry(txn=t), model_check_txn)

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        m = self.model
        lo = m.compact_rev + 1
        # Mostly a valid revision, sometimes an old or a future one.
        rev = data.draw(
            st.one_of(st.integers(min(lo, m.revision), m.revision), st.integers(1, m.revision + 2)),
            label="compact",
        )
        self.apply(internal_pb2.Entry(compaction=P.CompactionRequest(revision=rev)))

    @rule(
        action=st.sampled_from(["grant"] * 5 + ["revoke"] * 3 + ["alarm_on"] + ["alarm_off"] * 3),
        lease_id=st.sampled_from([*LEASE_IDS, 4]),
        ttl=st.sampled_from([0, 1, 5, MAX_LEASE_TTL, MAX_LEASE_TTL + 1]),
    )
    def admin(self, action: str, lease_id: int, ttl: int) -> None:
        """Lease grants and revokes; now and then the NOSPACE alarm goes on or off."""
        if action == "grant":
            self.apply(internal_pb2.Entry(lease_grant=P.LeaseGrantRequest(ID=lease_id, TTL=ttl)))
        elif action == "revoke":
            self.apply(internal_pb2.Entry(lease_revoke=P.LeaseRevokeRequest(ID=lease_id)))
        else:
            a = P.AlarmRequest.ACTIVATE if action == "alarm_on" else P.AlarmRequest.DEACTIVATE
            self.apply(internal_pb2.Entry(alarm=P.AlarmRequest(action=a, memberID=1, alarm=P.NOSPACE)))

    @rule(req=range_requests())
    def read(self, req: rpc_pb2.RangeRequest) -> None:
        r = P.RangeRequest()
        r.CopyFrom(req)
        resolve(r, self.model.revision)
        check_range(r)
        same(outcome(self.sm.range, r), outcome(self.model.range, r), f"range {r}")

    @rule()
    def restart(self) -> None:
        """Snapshot round trip; the run goes on with the restored state machine."""
        restored = StateMachine()
        snapshot.decode(snapshot.encode(self.sm), restored)
        old, new = self.sm, restored
        same(new.applied_index, old.applied_index, "applied_index")
        same(
            (new.mvcc.revision, new.mvcc.compact_revision),
            (old.mvcc.revision, old.mvcc.compact_revision),
            "revs",
        )
        same(new.mvcc.hash_kv(), old.mvcc.hash_kv(), "hash_kv")
        for rev in range(0, old.mvcc.revision + 2):
            same(full_range(new, rev), full_range(old, rev), f"full range at {rev}")
            for key in KEYS:
                same(kv_of(new.mvcc.get(key, rev)), kv_of(old.mvcc.get(key, rev)), f"get {key!r} at {rev}")
        for start, end in NAMED_RANGES:
            r = P.RangeRequest(key=start, range_end=end)
            same(new.range(r), old.range(r), f"range {start!r}..{end!r}")
        same(
            {i: (x.ttl, x.keys) for i, x in new.leases.items()},
            {i: (x.ttl, x.keys) for i, x in old.leases.items()},
            "leases",
        )
        same(new.alarms, old.alarms, "alarms")
        for rev in range(max(old.mvcc.compact_revision, 1), old.mvcc.revision + 2):
            same(
                [change_tuple(c) for c in new.mvcc.changes_since(rev)],
                [change_tuple(c) for c in old.mvcc.changes_since(rev)],
                f"changes_since({rev}) after a snapshot round trip",
            )
        self.sm = restored

    # -- invariants

    @invariant()
    def revisions_agree(self) -> None:
        m = self.model
        same(self.sm.mvcc.revision, m.revision, "revision")
        same(self.sm.mvcc.compact_revision, m.compact_rev, "compact revision")
        same(self.sm.applied_index, self.index, "applied index")

    @invariant()
    def reads_agree(self) -> None:
        m, mvcc = self.model, self.sm.mvcc
        first = max(m.compact_rev, 1)
        for rev in [0, *range(first, m.revision + 1)]:
            state = m.at(rev)
            want = [state[k] for k in sorted(state)]
            same(full_range(self.sm, rev), (want, len(want), m.revision), f"full range at {rev}")
            for key in KEYS:
                same(kv_of(mvcc.get(key, rev)), state.get(key), f"get {key!r} at {rev}")
            if rev not in (0, first, m.revision - 1, m.revision):
                continue
            for start, end in NAMED_RANGES:
                res = mvcc.range(start, end, rev, limit=2)
                kvs = in_order(state, start, end)
                same(
                    ([kv_of(r) for r in res.records], res.count),
                    (kvs[:2], len(kvs)),
                    f"range {start!r}..{end!r} @{rev}",
                )
        for rev in {1, first - 1} if first > 1 else ():
            same(full_range(self.sm, rev), errors.COMPACTED, f"read at compacted {rev}")
        for rev in (m.revision + 1, m.revision + 7):
            same(full_range(self.sm, rev), errors.FUTURE_REV, f"read at future {rev}")
        for start, end in NAMED_RANGES:
            r = P.RangeRequest(key=start, range_end=end)
            same(self.sm.range(r), m.range(r), f"StateMachine.range {r}")
        for start, end in VARIANT_RANGES:
            for options in RANGE_VARIANTS:
                r = P.RangeRequest(key=start, range_end=end, **options)
                same(self.sm.range(r), m.range(r), f"StateMachine.range {r}")

    @invariant()
    def replay_agrees(self) -> None:
        m, mvcc = self.model, self.sm.mvcc
        for rev in range(max(m.compact_rev, 1), m.revision + 2):
            same(
                [change_tuple(c) for c in mvcc.changes_since(rev)],
                m.changes_since(rev),
                f"changes_since({rev})",
            )
        if m.revision > 2:
            lo = max(m.compact_rev, 1)
            mid = (lo + m.revision) // 2
            same(
                [change_tuple(c) for c in mvcc.changes_since(lo, mid)],
                m.changes_since(lo, mid),
                f"changes_since({lo}, {mid})",
            )

    @invariant()
    def leases_agree(self) -> None:
        m = self.model
        same({i: x.ttl for i, x in self.sm.leases.items()}, m.leases, "leases")
        for lease_id in [*LEASE_IDS, 4]:
            want = m.lease_keys(lease_id) if lease_id in m.leases else None
            same(self.sm.lease_keys(lease_id), want, f"keys of lease {lease_id}")
        same(self.sm.nospace, m.nospace, "NOSPACE alarm")

    @invariant()
    def twin_hashes_agree(self) -> None:
        mvcc, twin = self.sm.mvcc, self.twin.mvcc
        same(mvcc.hash_kv(), twin.hash_kv(), "hash_kv of a twin fed the same entries")
        for rev in range(mvcc.compact_revision + 1, mvcc.revision + 1):
            same(mvcc.hash_kv(rev), twin.hash_kv(rev), f"hash_kv({rev}) of the twin")


StoreModelMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestStoreModel = StoreModelMachine.TestCase
