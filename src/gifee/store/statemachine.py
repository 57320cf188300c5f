"""The store's state machine: applies ordered log entries to MVCC, leases and alarms. No I/O.

What lives here: every rule for turning one committed request (an `Entry`)
into a response and a list of changes — etcd's apply rules for Put,
DeleteRange, Txn (compares, branches, nested txns), Compaction, LeaseGrant,
LeaseRevoke and Alarm — plus the read path (Range) and the request checks that
etcd makes before proposing (`check_*`: empty keys, txn size, duplicate keys).

What never happens here: clocks, files, sockets, randomness. A lease's expiry
time is the shell's business; here a lease only has its granted TTL and its
keys, and it ends when a LeaseRevoke entry is applied. Applying the same
entries in the same order therefore gives the same state on every member and
on every replay after a restart, which is what Raft (part 2) needs.

An entry that fails (unknown lease, NOSPACE, ...) changes nothing and yields
the error; the error is deterministic too, so a replay fails it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gifee.store import errors
from gifee.store.errors import StoreError
from gifee.store.membership import Membership
from gifee.store.mvcc import ALL_KEYS, MVCC, Change, Record, WriteBatch
from gifee.store.proto import internal_pb2, kv_pb2, rpc_pb2
from gifee.store.raft.types import ConfChange

MAX_TXN_OPS = 128
MAX_LEASE_TTL = 9_000_000_000
MIN_LEASE_TTL = 2  # etcd's floor with default heartbeat (100 ms) and election (1 s) timeouts

RangeRequest = rpc_pb2.RangeRequest
Compare = rpc_pb2.Compare
NOSPACE = rpc_pb2.NOSPACE


@dataclass
class Lease:
    id: int
    ttl: int
    keys: set[bytes] = field(default_factory=set)


Response = (
    rpc_pb2.PutResponse
    | rpc_pb2.DeleteRangeResponse
    | rpc_pb2.TxnResponse
    | rpc_pb2.CompactionResponse
    | rpc_pb2.LeaseGrantResponse
    | rpc_pb2.LeaseRevokeResponse
    | rpc_pb2.AlarmResponse
    | rpc_pb2.MemberUpdateResponse
    | rpc_pb2.LeaseKeepAliveResponse
)


@dataclass
class Applied:
    """The outcome of applying one entry."""

    response: Response | None
    error: StoreError | None
    changes: list[Change]
    revision: int


# ------------------------------------------------------------ request checks


def check_range(r: rpc_pb2.RangeRequest) -> None:
    if not r.key:
        raise errors.EMPTY_KEY


def check_put(r: rpc_pb2.PutRequest) -> None:
    if not r.key:
        raise errors.EMPTY_KEY
    if r.ignore_value and r.value:
        raise errors.VALUE_PROVIDED
    if r.ignore_lease and r.lease:
        raise errors.LEASE_PROVIDED


def check_delete(r: rpc_pb2.DeleteRangeRequest) -> None:
    if not r.key:
        raise errors.EMPTY_KEY


def _check_op(op: rpc_pb2.RequestOp, budget: int) -> None:
    kind = op.WhichOneof("request")
    if kind == "request_range":
        check_range(op.request_range)
    elif kind == "request_put":
        check_put(op.request_put)
    elif kind == "request_delete_range":
        check_delete(op.request_delete_range)
    elif kind == "request_txn":
        _check_txn_ops(op.request_txn, budget)
    else:
        raise errors.KEY_NOT_FOUND  # an empty RequestOp: etcd's answer, word for word


def _check_txn_ops(r: rpc_pb2.TxnRequest, budget: int = MAX_TXN_OPS) -> None:
    ops = max(len(r.compare), len(r.success), len(r.failure))
    if ops > budget:
        raise errors.TOO_MANY_OPS
    for c in r.compare:
        if not c.key:
            raise errors.EMPTY_KEY
    # A nested txn gets what its parent leaves of the budget.
    for op in r.success:
        _check_op(op, budget - ops)
    for op in r.failure:
        _check_op(op, budget - ops)


class _Intervals:
    """Deleted intervals of a txn branch, compared as etcd's string-affine intervals."""

    def __init__(self) -> None:
        self.items: list[tuple[bytes, bytes | None]] = []  # (start, end); end None = a point

    def add(self, start: bytes, end: bytes) -> None:
        self.items.append((start, end if end else None))

    def contains(self, key: bytes) -> bool:
        for start, end in self.items:
            if end is None:
                if key == start:
                    return True
            elif start <= key < end:
                return True
        return False


def _check_intervals(ops: list[rpc_pb2.RequestOp]) -> tuple[set[bytes], _Intervals]:
    """etcd's duplicate-key rule: within one branch no key is put twice or put inside a deleted range."""
    dels = _Intervals()
    for op in ops:
        if op.WhichOneof("request") == "request_delete_range":
            d = op.request_delete_range
            dels.add(d.key, d.range_end)
    puts: set[bytes] = set()
    for op in ops:
        if op.WhichOneof("request") != "request_txn":
            continue
        puts_then, dels_then = _check_intervals(list(op.request_txn.success))
        puts_else, dels_else = _check_intervals(list(op.request_txn.failure))
        for k in puts_then:
            if k in puts or dels.contains(k):
                raise errors.DUPLICATE_KEY
            puts.add(k)
        for k in puts_else:
            if (k in puts and k not in puts_then) or dels.contains(k):
                raise errors.DUPLICATE_KEY
            puts.add(k)
        dels.items.extend(dels_then.items)
        dels.items.extend(dels_else.items)
    for op in ops:
        if op.WhichOneof("request") != "request_put":
            continue
        k = op.request_put.key
        if k in puts or dels.contains(k):
            raise errors.DUPLICATE_KEY
        puts.add(k)
    return puts, dels


def check_txn(r: rpc_pb2.TxnRequest) -> None:
    _check_txn_ops(r)
    _check_intervals(list(r.success))
    _check_intervals(list(r.failure))


def is_txn_readonly(r: rpc_pb2.TxnRequest) -> bool:
    for ops in (r.success, r.failure):
        for op in ops:
            kind = op.WhichOneof("request")
            if kind in ("request_put", "request_delete_range"):
                return False
            if kind == "request_txn" and not is_txn_readonly(op.request_txn):
                return False
    return True


def txn_has_put(r: rpc_pb2.TxnRequest) -> bool:
    for ops in (r.success, r.failure):
        for op in ops:
            kind = op.WhichOneof("request")
            if kind == "request_put":
                return True
            if kind == "request_txn" and txn_has_put(op.request_txn):
                return True
    return False


# ------------------------------------------------------------------ sorting

_SORT_KEYS = {
    RangeRequest.KEY: lambda r: r.key,
    RangeRequest.VERSION: lambda r: r.version,
    RangeRequest.CREATE: lambda r: r.create,
    RangeRequest.MOD: lambda r: r.mod,
    RangeRequest.VALUE: lambda r: r.value,
}


def _compare_holds(c: rpc_pb2.Compare, r: Record | None) -> bool:
    target = c.target
    if target == Compare.VALUE:
        if r is None:
            return False  # a missing key has no value to compare, in etcd every VALUE compare fails
        have: bytes | int = r.value
        want: bytes | int = c.value
    elif target == Compare.VERSION:
        have, want = (r.version if r else 0), c.version
    elif target == Compare.CREATE:
        have, want = (r.create if r else 0), c.create_revision
    elif target == Compare.MOD:
        have, want = (r.mod if r else 0), c.mod_revision
    elif target == Compare.LEASE:
        have, want = (r.lease if r else 0), c.lease
    else:
        return False
    result = c.result
    if result == Compare.EQUAL:
        return have == want
    if result == Compare.NOT_EQUAL:
        return have != want
    if result == Compare.GREATER:
        return have > want  # type: ignore[operator]
    if result == Compare.LESS:
        return have < want  # type: ignore[operator]
    return False


_REFUSED_WHEN_CORRUPT = frozenset({"put", "delete_range", "txn", "compaction", "lease_grant", "lease_revoke"})


class StateMachine:
    """MVCC plus leases plus alarms, advanced only by `apply`."""

    def __init__(self, member_id: int = 0, cluster_id: int = 0) -> None:
        self.member_id = member_id
        self.cluster_id = cluster_id
        self.raft_term = 1
        self.mvcc = MVCC()
        self.leases: dict[int, Lease] = {}
        self.alarms: set[tuple[int, int]] = set()
        self.applied_index = 0
        self.membership = Membership()

    def apply_conf_change(self, index: int, cc: ConfChange) -> None:
        """A committed Raft membership change: the member list follows it."""
        self.applied_index = index
        self.membership.apply_conf_change(cc)

    def apply_empty(self, index: int) -> None:
        """A new leader's empty entry: it changes nothing but the applied index."""
        self.applied_index = index

    # ---------------------------------------------------------------- header

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        return rpc_pb2.ResponseHeader(
            cluster_id=self.cluster_id,
            member_id=self.member_id,
            revision=self.mvcc.revision if revision is None else revision,
            raft_term=self.raft_term,
        )

    @property
    def nospace(self) -> bool:
        return any(a == NOSPACE for _, a in self.alarms)

    @property
    def corrupt(self) -> bool:
        return any(a == rpc_pb2.CORRUPT for _, a in self.alarms)

    # ------------------------------------------------------------------ reads

    def range(self, r: rpc_pb2.RangeRequest, batch: WriteBatch | None = None) -> rpc_pb2.RangeResponse:
        """etcd's applyRange: fetch, filter, sort, truncate. Raises COMPACTED / FUTURE_REV."""
        needs_all = bool(
            r.sort_order
            or r.min_mod_revision
            or r.max_mod_revision
            or r.min_create_revision
            or r.max_create_revision
        )
        fetch_limit = 0 if needs_all or r.limit <= 0 else r.limit + 1
        end = r.range_end
        if batch is not None and (r.revision <= 0 or r.revision == batch.read_revision):
            result = batch.range(r.key, end, fetch_limit)
        else:
            if batch is not None:
                # A txn reads at a fixed revision against the store as it was when the txn began.
                if r.revision > batch.read_revision:
                    raise errors.FUTURE_REV
            result = self.mvcc.range(r.key, end, r.revision, fetch_limit)
            if batch is not None:
                result.revision = batch.read_revision
        records = result.records
        if r.max_mod_revision:
            records = [x for x in records if x.mod <= r.max_mod_revision]
        if r.min_mod_revision:
            records = [x for x in records if x.mod >= r.min_mod_revision]
        if r.max_create_revision:
            records = [x for x in records if x.create <= r.max_create_revision]
        if r.min_create_revision:
            records = [x for x in records if x.create >= r.min_create_revision]
        order = r.sort_order
        if r.sort_target != RangeRequest.KEY and order == RangeRequest.NONE:
            order = RangeRequest.ASCEND
        if order != RangeRequest.NONE:
            key = _SORT_KEYS.get(r.sort_target, _SORT_KEYS[RangeRequest.KEY])
            records = sorted(records, key=key, reverse=order == RangeRequest.DESCEND)
        more = False
        if r.count_only:
            records = []
        elif r.limit > 0 and len(records) > r.limit:
            records = records[: r.limit]
            more = True
        resp = rpc_pb2.RangeResponse(more=more, count=result.count)
        resp.header.revision = result.revision
        if not r.count_only:
            keys_only = r.keys_only
            resp.kvs.extend([x.to_pb(keys_only) for x in records])
        return resp

    def lease_keys(self, lease_id: int) -> list[bytes] | None:
        lease = self.leases.get(lease_id)
        return None if lease is None else sorted(lease.keys)

    # ----------------------------------------------------------------- apply

    def apply(self, index: int, entry: internal_pb2.Entry) -> Applied:
        """Apply one committed entry; the entry's effects are all-or-nothing."""
        self.applied_index = index
        kind = entry.WhichOneof("request")
        batch = self.mvcc.write()
        if (
            self.corrupt
            and kind in _REFUSED_WHEN_CORRUPT
            and not (kind == "txn" and is_txn_readonly(entry.txn))
        ):
            # etcd's corrupt applier: once a CORRUPT alarm is raised, writes stop.
            return Applied(None, errors.CORRUPT, [], self.mvcc.revision)
        try:
            response: Response
            if kind == "put":
                response = self._put(batch, entry.put)
            elif kind == "delete_range":
                response = self._delete(batch, entry.delete_range)
            elif kind == "txn":
                response = self._txn(batch, entry.txn)
            elif kind == "compaction":
                response = self._compact(entry.compaction)
            elif kind == "lease_grant":
                response = self._lease_grant(entry.lease_grant)
            elif kind == "lease_revoke":
                response = self._lease_revoke(batch, entry.lease_revoke)
            elif kind == "alarm":
                response = self._alarm(entry.alarm)
            elif kind == "member_attributes":
                a = entry.member_attributes
                self.membership.publish(a.id, a.name, list(a.client_urls))
                response = rpc_pb2.MemberUpdateResponse()
            elif kind == "lease_keepalive":
                lease = self.leases.get(entry.lease_keepalive.ID)
                if lease is None:
                    raise errors.LEASE_NOT_FOUND
                response = rpc_pb2.LeaseKeepAliveResponse(ID=lease.id, TTL=lease.ttl)
            else:
                return Applied(
                    None, errors.StoreError(errors.CORRUPT.code, "unknown entry"), [], self.mvcc.revision
                )
        except StoreError as e:
            # Checks run before any write, so a failed entry has changed nothing.
            assert not batch.changes, "a failing entry must fail before writing"
            return Applied(None, e, [], self.mvcc.revision)
        revision = batch.commit()
        return Applied(response, None, batch.changes, revision)

    # -- KV

    def _check_put_applicable(self, batch: WriteBatch, p: rpc_pb2.PutRequest) -> None:
        if p.lease and p.lease not in self.leases:
            raise errors.LEASE_NOT_FOUND
        if (p.ignore_value or p.ignore_lease) and batch.get(p.key) is None:
            raise errors.KEY_NOT_FOUND

    def _put(self, batch: WriteBatch, p: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        if self.nospace:
            raise errors.NO_SPACE
        self._check_put_applicable(batch, p)
        return self._do_put(batch, p)

    def _do_put(self, batch: WriteBatch, p: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        key = p.key
        prev = batch.get(key)
        value = prev.value if (p.ignore_value and prev is not None) else p.value
        lease = prev.lease if (p.ignore_lease and prev is not None) else p.lease
        change = batch.put(key, value, lease)
        if prev is not None and prev.lease and prev.lease != lease:
            old = self.leases.get(prev.lease)
            if old is not None:
                old.keys.discard(key)
        if lease:
            self.leases[lease].keys.add(key)
        resp = rpc_pb2.PutResponse()
        resp.header.revision = batch.rev
        if p.prev_kv and change.prev is not None:
            resp.prev_kv.CopyFrom(change.prev.to_pb())
        return resp

    def _delete(self, batch: WriteBatch, d: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
        changes = batch.delete_range(d.key, d.range_end)
        for c in changes:
            if c.prev is not None and c.prev.lease:
                lease = self.leases.get(c.prev.lease)
                if lease is not None:
                    lease.keys.discard(c.record.key)
        resp = rpc_pb2.DeleteRangeResponse(deleted=len(changes))
        resp.header.revision = batch.read_revision
        if d.prev_kv:
            resp.prev_kvs.extend([c.prev.to_pb() for c in changes if c.prev is not None])
        return resp

    def _compare(self, batch: WriteBatch, c: rpc_pb2.Compare) -> bool:
        if not c.range_end:
            return _compare_holds(c, batch.get(c.key))
        records = batch.range(c.key, c.range_end).records
        if not records:
            return _compare_holds(c, None)
        return all(_compare_holds(c, r) for r in records)

    def _txn_path(self, batch: WriteBatch, t: rpc_pb2.TxnRequest, path: list[bool]) -> None:
        """Decide every branch, nested ones included, against the state before the txn writes.

        etcd evaluates all compares of a txn tree up front (its "txn path"), so an
        inner compare never sees the outer txn's own writes.
        """
        ok = all(self._compare(batch, c) for c in t.compare)
        path.append(ok)
        for op in t.success if ok else t.failure:
            if op.WhichOneof("request") == "request_txn":
                self._txn_path(batch, op.request_txn, path)

    def _ops_on_path(
        self, t: rpc_pb2.TxnRequest, path: list[bool], at: int, out: list[rpc_pb2.RequestOp]
    ) -> int:
        """The ops the txn will run, nested ones included, in order."""
        ops = t.success if path[at] else t.failure
        at += 1
        for op in ops:
            out.append(op)
            if op.WhichOneof("request") == "request_txn":
                at = self._ops_on_path(op.request_txn, path, at, out)
        return at

    def _check_txn_applicable(self, batch: WriteBatch, t: rpc_pb2.TxnRequest, path: list[bool]) -> None:
        """etcd's checkRequests: every put on the path first, then every range."""
        ops: list[rpc_pb2.RequestOp] = []
        self._ops_on_path(t, path, 0, ops)
        for op in ops:
            if op.WhichOneof("request") == "request_put":
                p = op.request_put
                if (p.ignore_value or p.ignore_lease) and batch.get(p.key) is None:
                    raise errors.KEY_NOT_FOUND
                if p.lease and p.lease not in self.leases:
                    raise errors.LEASE_NOT_FOUND
        for op in ops:
            if op.WhichOneof("request") == "request_range":
                rev = op.request_range.revision
                if rev > 0:
                    if rev > batch.read_revision:
                        raise errors.FUTURE_REV
                    if rev < self.mvcc.compact_revision:
                        raise errors.COMPACTED

    def _txn(self, batch: WriteBatch, t: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        if self.nospace and txn_has_put(t):
            raise errors.NO_SPACE
        path: list[bool] = []
        self._txn_path(batch, t, path)
        self._check_txn_applicable(batch, t, path)
        resp, _ = self._run_txn(batch, t, path, 0)
        resp.header.revision = batch.read_revision
        return resp

    def _run_txn(
        self, batch: WriteBatch, t: rpc_pb2.TxnRequest, path: list[bool], at: int
    ) -> tuple[rpc_pb2.TxnResponse, int]:
        ok = path[at]
        at += 1
        resp = rpc_pb2.TxnResponse(succeeded=ok)
        for op in t.success if ok else t.failure:
            kind = op.WhichOneof("request")
            out = resp.responses.add()
            if kind == "request_range":
                out.response_range.CopyFrom(self.range(op.request_range, batch))
            elif kind == "request_put":
                out.response_put.CopyFrom(self._do_put(batch, op.request_put))
            elif kind == "request_delete_range":
                out.response_delete_range.CopyFrom(self._delete(batch, op.request_delete_range))
            elif kind == "request_txn":
                inner, at = self._run_txn(batch, op.request_txn, path, at)
                inner.header.SetInParent()
                out.response_txn.CopyFrom(inner)
        return resp, at

    def _compact(self, c: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        self.mvcc.compact(c.revision)
        return rpc_pb2.CompactionResponse(header=rpc_pb2.ResponseHeader(revision=self.mvcc.revision))

    # -- leases

    def _lease_grant(self, g: rpc_pb2.LeaseGrantRequest) -> rpc_pb2.LeaseGrantResponse:
        if self.nospace:
            raise errors.NO_SPACE
        if g.TTL > MAX_LEASE_TTL:
            raise errors.LEASE_TTL_TOO_LARGE
        if g.ID in self.leases:
            raise errors.LEASE_EXIST
        ttl = max(g.TTL, MIN_LEASE_TTL)
        self.leases[g.ID] = Lease(g.ID, ttl)
        return rpc_pb2.LeaseGrantResponse(
            ID=g.ID, TTL=ttl, header=rpc_pb2.ResponseHeader(revision=self.mvcc.revision)
        )

    def _lease_revoke(self, batch: WriteBatch, r: rpc_pb2.LeaseRevokeRequest) -> rpc_pb2.LeaseRevokeResponse:
        lease = self.leases.get(r.ID)
        if lease is None:
            raise errors.LEASE_NOT_FOUND
        del self.leases[r.ID]
        for key in sorted(lease.keys):
            batch.delete_range(key)
        resp = rpc_pb2.LeaseRevokeResponse()
        resp.header.revision = batch.read_revision
        return resp

    # -- alarms

    def _alarm(self, a: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        resp = rpc_pb2.AlarmResponse()
        if a.action == rpc_pb2.AlarmRequest.GET:
            members = sorted(self.alarms)
        elif a.action == rpc_pb2.AlarmRequest.ACTIVATE:
            if a.alarm == rpc_pb2.NONE:
                members = []
            else:
                self.alarms.add((a.memberID, a.alarm))
                members = [(a.memberID, a.alarm)]
        else:
            if a.alarm == rpc_pb2.NONE:
                # "etcdctl alarm disarm" sends the alarms it listed; NONE clears nothing.
                members = []
            else:
                members = [m for m in sorted(self.alarms) if m == (a.memberID, a.alarm)]
                self.alarms.difference_update(members)
        for member_id, alarm in members:
            resp.alarms.add(memberID=member_id, alarm=alarm)
        resp.header.revision = self.mvcc.revision
        return resp


def event_of(change: Change) -> kv_pb2.Event:
    record = change.record
    if record.version == 0:
        ev = kv_pb2.Event(
            type=kv_pb2.Event.DELETE, kv=kv_pb2.KeyValue(key=record.key, mod_revision=record.mod)
        )
    else:
        ev = kv_pb2.Event(type=kv_pb2.Event.PUT, kv=record.to_pb())
    return ev


__all__ = [
    "ALL_KEYS",
    "Applied",
    "Lease",
    "StateMachine",
    "check_delete",
    "check_put",
    "check_range",
    "check_txn",
    "event_of",
]
