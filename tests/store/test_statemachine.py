"""Table tests of etcd v3 rules that are easy to get wrong, on the pure StateMachine.

Expected values are etcd 3.4's answers (checked against Debian's etcd 3.4.23
where noted "etcd:"). Nothing here does I/O: every request is an `Entry`
applied in order, and the pre-proposal checks (`check_*`) are called where the
server calls them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from gifee.store import errors
from gifee.store.errors import StoreError
from gifee.store.proto import internal_pb2, kv_pb2, rpc_pb2
from gifee.store.statemachine import (
    MAX_LEASE_TTL,
    MAX_TXN_OPS,
    MIN_LEASE_TTL,
    Applied,
    StateMachine,
    check_delete,
    check_put,
    check_range,
    check_txn,
)

P = rpc_pb2
C = rpc_pb2.Compare
R = rpc_pb2.RangeRequest
AnyRequest = P.PutRequest | P.RangeRequest | P.DeleteRangeRequest | P.TxnRequest


# ------------------------------------------------------------------------------------ builders


def put(key: bytes, value: bytes = b"", **kw: Any) -> rpc_pb2.PutRequest:
    return P.PutRequest(key=key, value=value, **kw)


def rng(key: bytes, range_end: bytes = b"", **kw: Any) -> rpc_pb2.RangeRequest:
    return P.RangeRequest(key=key, range_end=range_end, **kw)


def dele(key: bytes, range_end: bytes = b"", **kw: Any) -> rpc_pb2.DeleteRangeRequest:
    return P.DeleteRangeRequest(key=key, range_end=range_end, **kw)


def op(r: AnyRequest | rpc_pb2.RequestOp) -> rpc_pb2.RequestOp:
    if isinstance(r, P.RequestOp):
        return r
    if isinstance(r, P.PutRequest):
        return P.RequestOp(request_put=r)
    if isinstance(r, P.RangeRequest):
        return P.RequestOp(request_range=r)
    if isinstance(r, P.DeleteRangeRequest):
        return P.RequestOp(request_delete_range=r)
    return P.RequestOp(request_txn=r)


def txn(
    compare: Iterable[rpc_pb2.Compare] = (),
    success: Iterable[AnyRequest | rpc_pb2.RequestOp] = (),
    failure: Iterable[AnyRequest | rpc_pb2.RequestOp] = (),
) -> rpc_pb2.TxnRequest:
    return P.TxnRequest(
        compare=list(compare), success=[op(x) for x in success], failure=[op(x) for x in failure]
    )


def cmp(key: bytes, target: str, result: str, want: int | bytes, range_end: bytes = b"") -> rpc_pb2.Compare:
    field = {
        "VALUE": "value",
        "VERSION": "version",
        "CREATE": "create_revision",
        "MOD": "mod_revision",
        "LEASE": "lease",
    }
    c = C(key=key, range_end=range_end, target=getattr(C, target), result=getattr(C, result))
    setattr(c, field[target], want)
    return c


def check_error(check: Callable[[Any], None], req: Any) -> StoreError | None:
    try:
        check(req)
    except StoreError as e:
        return e
    return None


class Store:
    """A StateMachine driven entry by entry, with short-hands."""

    def __init__(self) -> None:
        self.sm = StateMachine()
        self.index = 0

    @property
    def rev(self) -> int:
        return self.sm.mvcc.revision

    def apply(self, **entry: Any) -> Applied:
        self.index += 1
        return self.sm.apply(self.index, internal_pb2.Entry(**entry))

    def ok(self, **entry: Any) -> Any:
        a = self.apply(**entry)
        assert a.error is None, a.error
        assert a.revision == self.rev
        return a.response

    def fails(self, **entry: Any) -> StoreError:
        before = (self.rev, self.sm.mvcc.record_count())
        a = self.apply(**entry)
        assert a.error is not None, f"expected an error, got {a.response}"
        assert a.response is None and a.changes == []
        assert (self.rev, self.sm.mvcc.record_count()) == before, "a failed entry changed the store"
        return a.error

    def put(self, key: bytes, value: bytes = b"", **kw: Any) -> rpc_pb2.PutResponse:
        return self.ok(put=put(key, value, **kw))

    def delete(self, key: bytes, range_end: bytes = b"", **kw: Any) -> rpc_pb2.DeleteRangeResponse:
        return self.ok(delete_range=dele(key, range_end, **kw))

    def txn(self, t: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        assert check_txn(t) is None
        return self.ok(txn=t)

    def grant(self, lease_id: int, ttl: int = 60) -> rpc_pb2.LeaseGrantResponse:
        return self.ok(lease_grant=P.LeaseGrantRequest(ID=lease_id, TTL=ttl))

    def revoke(self, lease_id: int) -> rpc_pb2.LeaseRevokeResponse:
        return self.ok(lease_revoke=P.LeaseRevokeRequest(ID=lease_id))

    def alarm(self, action: int, alarm: int = P.NOSPACE, member: int = 1) -> rpc_pb2.AlarmResponse:
        return self.ok(alarm=P.AlarmRequest(action=action, memberID=member, alarm=alarm))

    def get(self, key: bytes, range_end: bytes = b"", **kw: Any) -> rpc_pb2.RangeResponse:
        return self.sm.range(rng(key, range_end, **kw))

    def keys(self, key: bytes = b"\x00", range_end: bytes = b"\0", **kw: Any) -> list[bytes]:
        return [kv.key for kv in self.get(key, range_end, **kw).kvs]

    def value(self, key: bytes) -> bytes | None:
        kvs = self.get(key).kvs
        return kvs[0].value if kvs else None


@pytest.fixture
def s() -> Store:
    return Store()


def abc(s: Store) -> None:
    """Keys a, b, c with values 3, 2, 1 at revisions 2, 3, 4; b written twice more (revisions 5, 6)."""
    s.put(b"a", b"3")
    s.put(b"b", b"x")
    s.put(b"c", b"1")
    s.put(b"b", b"y")
    s.put(b"b", b"2")


# ------------------------------------------------------------------------- txn duplicate keys

DUP = errors.DUPLICATE_KEY

DUPLICATE_KEY_CASES = [
    ("put twice", txn(success=[put(b"a"), put(b"a")]), DUP),
    ("two keys", txn(success=[put(b"a"), put(b"b")]), None),
    ("put twice in failure", txn(failure=[put(b"a"), put(b"a", b"2")]), DUP),
    ("same key in success and failure", txn(success=[put(b"a")], failure=[put(b"a")]), None),
    ("put inside a deleted range", txn(success=[dele(b"a", b"c"), put(b"b")]), DUP),
    ("put before the delete of its range", txn(success=[put(b"b"), dele(b"a", b"c")]), DUP),
    ("put at a deleted range's end", txn(success=[dele(b"a", b"c"), put(b"c")]), None),
    ("put on a deleted key", txn(success=[dele(b"a"), put(b"a")]), DUP),
    ("put beside a deleted key", txn(success=[dele(b"a"), put(b"ab")]), None),
    ("put in a deleted prefix", txn(success=[dele(b"a", b"b"), put(b"ab")]), DUP),
    # etcd's string-affine interval [key, "\0") is empty, so it never conflicts (etcd: allowed)
    ("put after a delete to the end", txn(success=[dele(b"a", b"\0"), put(b"b")]), None),
    ("delete twice", txn(success=[dele(b"a"), dele(b"a", b"b")]), None),
    ("range and put", txn(success=[rng(b"a"), put(b"a")]), None),
    ("nested put vs outer put", txn(success=[put(b"a"), txn(success=[put(b"a")])]), DUP),
    ("nested else put vs outer put", txn(success=[put(b"a"), txn(failure=[put(b"a")])]), DUP),
    ("nested put vs outer delete", txn(success=[dele(b"a", b"b"), txn(success=[put(b"ab")])]), DUP),
    ("nested delete vs outer put", txn(success=[put(b"ab"), txn(success=[dele(b"a", b"b")])]), DUP),
    ("nested then/else put the same key", txn(success=[txn(success=[put(b"a")], failure=[put(b"a")])]), None),
    (
        "two nested txns put the same key",
        txn(success=[txn(success=[put(b"a")]), txn(success=[put(b"a")])]),
        DUP,
    ),
    (
        "else put vs another nested txn's put",
        txn(success=[txn(success=[put(b"a")]), txn(failure=[put(b"a")])]),
        DUP,
    ),
    (
        "nested delete, then a nested put in it",
        txn(success=[txn(success=[dele(b"a")]), txn(success=[put(b"a")])]),
        DUP,
    ),
    # etcd only checks puts of later levels against earlier deletes, not the other way round.
    (
        "nested put, then a nested delete of it",
        txn(success=[txn(success=[put(b"a")]), txn(success=[dele(b"a")])]),
        None,
    ),
    (
        "doubly nested put vs outer put",
        txn(success=[put(b"a"), txn(success=[txn(failure=[put(b"a")])])]),
        DUP,
    ),
]


@pytest.mark.parametrize(("name", "t", "want"), DUPLICATE_KEY_CASES, ids=[c[0] for c in DUPLICATE_KEY_CASES])
def test_txn_duplicate_keys(name: str, t: rpc_pb2.TxnRequest, want: StoreError | None) -> None:
    assert check_error(check_txn, t) == want


def test_nested_put_then_delete_of_one_key_is_one_revision(s: Store) -> None:
    s.put(b"a", b"old")
    t = txn(success=[txn(success=[put(b"a", b"new")]), txn(success=[dele(b"a", prev_kv=True)])])
    a = s.apply(txn=t)
    assert a.error is None and a.revision == 3
    assert [(c.record.mod, c.record.sub, c.record.version) for c in a.changes] == [(3, 0, 2), (3, 1, 0)]
    # The delete's prev_kv is the put made earlier in the same txn (etcd: the same).
    inner = a.response.responses[1].response_txn.responses[0].response_delete_range
    assert [kv.value for kv in inner.prev_kvs] == [b"new"]
    assert s.value(b"a") is None


# ------------------------------------------------------------------------------ txn size, keys


def ranges(n: int) -> list[rpc_pb2.RangeRequest]:
    return [rng(b"k")] * n


@pytest.mark.parametrize(
    ("t", "want"),
    [
        (txn(success=ranges(MAX_TXN_OPS)), None),
        (txn(success=ranges(MAX_TXN_OPS + 1)), errors.TOO_MANY_OPS),
        (txn(failure=ranges(MAX_TXN_OPS + 1)), errors.TOO_MANY_OPS),
        (txn(compare=[cmp(b"k", "VERSION", "EQUAL", 0)] * (MAX_TXN_OPS + 1)), errors.TOO_MANY_OPS),
        (txn(success=[txn(success=ranges(MAX_TXN_OPS + 1))]), errors.TOO_MANY_OPS),
        (txn(success=ranges(64), failure=ranges(64)), None),
    ],
    ids=["128", "129 success", "129 failure", "129 compares", "129 nested", "64+64"],
)
def test_too_many_ops(t: rpc_pb2.TxnRequest, want: StoreError | None) -> None:
    assert check_error(check_txn, t) == want


def test_nested_txn_ops_share_the_parents_budget() -> None:
    """etcd's checkTxnReq gives a nested txn maxTxnOps minus its parent's op count (etcd: rejected)."""
    inner = txn(success=ranges(29))
    assert check_error(check_txn, txn(success=[*ranges(98), inner])) is None  # 99 + 29 = 128
    assert check_error(check_txn, txn(success=[*ranges(99), inner])) == errors.TOO_MANY_OPS  # 100 + 29


@pytest.mark.parametrize(
    ("check", "req"),
    [
        (check_put, put(b"")),
        (check_range, rng(b"")),
        (check_range, rng(b"", b"\0")),
        (check_delete, dele(b"")),
        (check_delete, dele(b"", b"\0")),
        (check_txn, txn(compare=[cmp(b"", "VERSION", "EQUAL", 0)])),
        (check_txn, txn(success=[put(b"")])),
        (check_txn, txn(failure=[rng(b"")])),
        (check_txn, txn(success=[dele(b"")])),
        (check_txn, txn(success=[txn(failure=[put(b"")])])),
    ],
    ids=[
        "put",
        "range",
        "range all",
        "delete",
        "delete all",
        "compare",
        "txn put",
        "txn range",
        "txn delete",
        "nested",
    ],
)
def test_empty_keys(check: Callable[[Any], None], req: Any) -> None:
    assert check_error(check, req) == errors.EMPTY_KEY


def test_empty_request_op_in_txn() -> None:
    """A RequestOp with no request set (etcd: "etcdserver: key not found")."""
    assert check_error(check_txn, P.TxnRequest(success=[P.RequestOp()])) == errors.KEY_NOT_FOUND


# -------------------------------------------------------------------- ignore_value / ignore_lease


@pytest.mark.parametrize(
    ("req", "want"),
    [
        (put(b"k", b"v", ignore_value=True), errors.VALUE_PROVIDED),
        (put(b"k", ignore_value=True), None),
        (put(b"k", b"v", lease=5, ignore_lease=True), errors.LEASE_PROVIDED),
        (put(b"k", ignore_lease=True), None),
        (put(b"k", ignore_value=True, ignore_lease=True), None),
        (put(b"k", lease=5, ignore_value=True), None),
    ],
)
def test_ignore_flags_checks(req: rpc_pb2.PutRequest, want: StoreError | None) -> None:
    assert check_error(check_put, req) == want
    assert check_error(check_txn, txn(success=[req])) == want


def test_ignore_flags_apply(s: Store) -> None:
    assert s.fails(put=put(b"k", ignore_value=True)) == errors.KEY_NOT_FOUND
    assert s.fails(put=put(b"k", b"v", ignore_lease=True)) == errors.KEY_NOT_FOUND
    assert s.fails(txn=txn(success=[put(b"k", ignore_value=True)])) == errors.KEY_NOT_FOUND
    s.grant(7)
    s.grant(8)
    s.put(b"k", b"v1", lease=7)
    s.put(b"k", ignore_value=True, lease=8)  # keeps the value, moves to lease 8
    kv = s.get(b"k").kvs[0]
    assert (kv.value, kv.lease, kv.version) == (b"v1", 8, 2)
    s.put(b"k", b"v2", ignore_lease=True)  # keeps the lease
    kv = s.get(b"k").kvs[0]
    assert (kv.value, kv.lease, kv.version) == (b"v2", 8, 3)
    assert s.sm.lease_keys(8) == [b"k"] and s.sm.lease_keys(7) == []
    s.put(b"k", ignore_value=True, ignore_lease=True)  # a pure version bump
    kv = s.get(b"k").kvs[0]
    assert (kv.value, kv.lease, kv.version, kv.mod_revision) == (b"v2", 8, 4, s.rev)


def test_plain_put_checks_the_lease_before_the_key(s: Store) -> None:
    """etcd's applier Put looks the lease up first (etcd: "requested lease not found")."""
    assert s.fails(put=put(b"k", ignore_value=True, lease=99)) == errors.LEASE_NOT_FOUND


def test_txn_put_checks_the_key_before_the_lease(s: Store) -> None:
    """etcd's checkRequestPut (txn path) looks for the key first (etcd: "key not found")."""
    assert s.fails(txn=txn(success=[put(b"k", ignore_value=True, lease=99)])) == errors.KEY_NOT_FOUND


def test_txn_checks_puts_before_ranges(s: Store) -> None:
    """etcd runs checkPut over the whole txn path before checkRange (etcd: "key not found")."""
    t = txn(success=[rng(b"a", revision=99), put(b"k", ignore_value=True)])
    assert s.fails(txn=t) == errors.KEY_NOT_FOUND


# --------------------------------------------------------------------------------------- leases


def test_lease_attach_detach_and_revoke(s: Store) -> None:
    s.grant(1)
    s.grant(2)
    s.put(b"a", lease=1)
    s.put(b"b", lease=1)
    s.put(b"c", lease=2)
    assert (s.sm.lease_keys(1), s.sm.lease_keys(2)) == ([b"a", b"b"], [b"c"])
    s.put(b"a", b"detached")  # a put without lease detaches
    s.put(b"b", lease=2)  # a put with another lease moves the key
    assert (s.sm.lease_keys(1), s.sm.lease_keys(2)) == ([], [b"b", b"c"])
    s.delete(b"c")  # a delete detaches
    assert s.sm.lease_keys(2) == [b"b"]
    s.put(b"d", lease=2)
    s.put(b"e", lease=2)
    before = s.rev
    a = s.apply(lease_revoke=P.LeaseRevokeRequest(ID=2))
    assert a.error is None
    # Every key of the lease goes in one revision, in key order.
    assert s.rev == before + 1 == a.response.header.revision
    assert [(c.record.key, c.record.mod, c.record.sub, c.record.version) for c in a.changes] == [
        (b"b", before + 1, 0, 0),
        (b"d", before + 1, 1, 0),
        (b"e", before + 1, 2, 0),
    ]
    assert s.keys() == [b"a"]
    assert s.sm.lease_keys(2) is None
    # A lease without keys goes without a revision.
    assert s.revoke(1).header.revision == s.rev == before + 1
    assert s.fails(lease_revoke=P.LeaseRevokeRequest(ID=1)) == errors.LEASE_NOT_FOUND
    assert s.fails(put=put(b"x", lease=1)) == errors.LEASE_NOT_FOUND
    assert s.fails(txn=txn(success=[put(b"x", lease=1)])) == errors.LEASE_NOT_FOUND


def test_lease_grant_rules(s: Store) -> None:
    resp = s.grant(1, ttl=0)
    assert (resp.ID, resp.TTL, resp.header.revision) == (1, MIN_LEASE_TTL, 1)
    assert s.grant(2, ttl=MAX_LEASE_TTL).TTL == MAX_LEASE_TTL
    assert s.fails(lease_grant=P.LeaseGrantRequest(ID=1, TTL=60)) == errors.LEASE_EXIST
    assert s.fails(lease_grant=P.LeaseGrantRequest(ID=3, TTL=MAX_LEASE_TTL + 1)) == errors.LEASE_TTL_TOO_LARGE
    assert s.rev == 1


def test_lease_grant_checks_the_ttl_before_the_id(s: Store) -> None:
    """etcd's lessor.Grant: TTL first, then "already exists" (etcd: "too large lease TTL")."""
    s.grant(1)
    assert s.fails(lease_grant=P.LeaseGrantRequest(ID=1, TTL=MAX_LEASE_TTL + 1)) == errors.LEASE_TTL_TOO_LARGE


# ---------------------------------------------------------------------------------------- alarms


def test_nospace_blocks_puts_not_deletes(s: Store) -> None:
    s.put(b"a", b"1")
    s.put(b"b", b"1")
    s.grant(1)
    resp = s.alarm(P.AlarmRequest.ACTIVATE)
    assert [(m.memberID, m.alarm) for m in resp.alarms] == [(1, P.NOSPACE)]
    assert s.sm.nospace
    rev = s.rev
    assert s.fails(put=put(b"a", b"2")) == errors.NO_SPACE
    assert s.fails(txn=txn(success=[put(b"c")])) == errors.NO_SPACE
    assert s.fails(txn=txn(failure=[txn(success=[put(b"c")])])) == errors.NO_SPACE  # any branch, any depth
    assert s.fails(lease_grant=P.LeaseGrantRequest(ID=2, TTL=60)) == errors.NO_SPACE
    assert s.delete(b"a").deleted == 1
    assert s.txn(txn(success=[dele(b"b"), rng(b"a")])).header.revision == rev + 2
    assert s.ok(compaction=P.CompactionRequest(revision=rev + 1)).header.revision == rev + 2
    s.revoke(1)
    assert s.get(b"a", b"\0").count == 0
    listed = s.alarm(P.AlarmRequest.GET)
    assert [(m.memberID, m.alarm) for m in listed.alarms] == [(1, P.NOSPACE)]
    resp = s.alarm(P.AlarmRequest.DEACTIVATE)
    assert [(m.memberID, m.alarm) for m in resp.alarms] == [(1, P.NOSPACE)]
    assert not s.sm.nospace
    assert s.put(b"a", b"3").header.revision == rev + 3
    assert list(s.alarm(P.AlarmRequest.DEACTIVATE).alarms) == []


# ----------------------------------------------------------------------------------- txn answers


def test_read_only_txn_keeps_the_revision(s: Store) -> None:
    s.put(b"a", b"1")
    for t in (
        txn(),
        txn(success=[rng(b"a")], failure=[put(b"a")]),
        txn(
            compare=[cmp(b"a", "VALUE", "EQUAL", b"1")], success=[rng(b"a", b"\0"), txn(success=[rng(b"b")])]
        ),
        txn(success=[dele(b"zz")]),  # a write request that deletes nothing
    ):
        resp = s.txn(t)
        assert resp.header.revision == s.rev == 2
    resp = s.txn(txn(success=[put(b"a", b"2"), put(b"b", b"2"), dele(b"zz")]))
    assert resp.header.revision == s.rev == 3  # one revision for the whole txn


def test_txn_inner_headers(s: Store) -> None:
    s.put(b"a", b"1")
    t = txn(
        success=[
            rng(b"a"),
            dele(b"zz"),
            put(b"b", b"1"),
            rng(b"a", b"\0"),
            dele(b"zz"),
            txn(success=[rng(b"a")]),
        ]
    )
    resp = s.txn(t)
    r = resp.responses
    assert resp.header.revision == 3
    assert r[0].response_range.header.revision == 2  # nothing written yet
    assert r[1].response_delete_range.header.revision == 2
    assert r[2].response_put.header.revision == 3
    assert r[3].response_range.header.revision == 3
    assert r[4].response_delete_range.header.revision == 3
    inner = r[5].response_txn
    assert inner.HasField("header") and inner.header == P.ResponseHeader()  # etcd: an empty header
    assert inner.succeeded and inner.responses[0].response_range.header.revision == 3


def test_txn_range_sees_its_own_writes_at_revision_zero(s: Store) -> None:
    s.put(b"a", b"1")
    resp = s.txn(txn(success=[put(b"a", b"2"), put(b"b", b"2"), rng(b"a", b"\0")]))
    assert [(kv.key, kv.value, kv.mod_revision) for kv in resp.responses[2].response_range.kvs] == [
        (b"a", b"2", 3),
        (b"b", b"2", 3),
    ]


def test_txn_range_at_an_explicit_revision_reads_the_committed_store(s: Store) -> None:
    """A range at the revision the txn started from, after the txn wrote (etcd: a=1, no b)."""
    s.put(b"a", b"1")
    resp = s.txn(txn(success=[put(b"a", b"2"), put(b"b", b"2"), rng(b"a", b"\0", revision=2)]))
    got = resp.responses[2].response_range
    assert [(kv.key, kv.value, kv.mod_revision) for kv in got.kvs] == [(b"a", b"1", 2)]
    assert (got.count, got.header.revision) == (1, 3)


def test_txn_range_revision_checks(s: Store) -> None:
    s.put(b"a", b"1")
    s.put(b"a", b"2")
    s.ok(compaction=P.CompactionRequest(revision=3))
    assert s.fails(txn=txn(success=[rng(b"a", revision=4)])) == errors.FUTURE_REV
    assert s.fails(txn=txn(success=[rng(b"a", revision=2)])) == errors.COMPACTED
    # Only the chosen branch is checked.
    assert s.txn(txn(success=[rng(b"a")], failure=[rng(b"a", revision=9)])).succeeded
    resp = s.txn(txn(success=[rng(b"a", revision=3)]))
    assert resp.responses[0].response_range.kvs[0].value == b"2"


def test_nested_compares_see_the_state_before_the_txn(s: Store) -> None:
    """etcd decides every branch up front (compareToPath) (etcd: the inner compare holds)."""
    t = txn(
        success=[
            put(b"n", b"1"),
            txn(compare=[cmp(b"n", "VERSION", "EQUAL", 0)], success=[rng(b"n")], failure=[put(b"m")]),
        ]
    )
    resp = s.txn(t)
    inner = resp.responses[1].response_txn
    assert inner.succeeded
    assert [kv.value for kv in inner.responses[0].response_range.kvs] == [b"1"]
    assert s.get(b"m").count == 0


# ------------------------------------------------------------------------------------- compares


@pytest.mark.parametrize(
    ("c", "holds"),
    [
        (cmp(b"missing", "VALUE", "EQUAL", b""), False),
        (cmp(b"missing", "VALUE", "NOT_EQUAL", b"x"), False),
        (cmp(b"missing", "VALUE", "LESS", b"x"), False),
        (cmp(b"missing", "VERSION", "EQUAL", 0), True),
        (cmp(b"missing", "VERSION", "GREATER", 0), False),
        (cmp(b"missing", "CREATE", "EQUAL", 0), True),
        (cmp(b"missing", "MOD", "LESS", 1), True),
        (cmp(b"missing", "LEASE", "EQUAL", 0), True),
        (cmp(b"a", "VALUE", "EQUAL", b"3"), True),
        (cmp(b"a", "VALUE", "GREATER", b"2"), True),
        (cmp(b"b", "VERSION", "EQUAL", 3), True),
        (cmp(b"b", "CREATE", "EQUAL", 3), True),
        (cmp(b"b", "MOD", "EQUAL", 6), True),
        (cmp(b"b", "MOD", "NOT_EQUAL", 6), False),
        # with range_end: every key in the range must satisfy it
        (cmp(b"a", "VERSION", "GREATER", 0, b"\0"), True),
        (cmp(b"a", "VALUE", "GREATER", b"0", b"d"), True),
        (cmp(b"a", "VALUE", "GREATER", b"1", b"d"), False),
        (cmp(b"a", "MOD", "LESS", 6, b"c"), False),
        # an empty range compares as one empty key (etcd's applyCompare)
        (cmp(b"x", "VERSION", "EQUAL", 0, b"z"), True),
        (cmp(b"x", "VERSION", "GREATER", 0, b"z"), False),
        (cmp(b"x", "VALUE", "EQUAL", b"", b"z"), False),
        (cmp(b"x", "CREATE", "LESS", 1, b"\0"), True),
    ],
)
def test_compares(s: Store, c: rpc_pb2.Compare, holds: bool) -> None:
    abc(s)
    resp = s.txn(txn(compare=[c], success=[rng(b"a")], failure=[rng(b"b"), rng(b"c")]))
    assert resp.succeeded is holds
    assert len(resp.responses) == (1 if holds else 2)


def test_all_compares_must_hold(s: Store) -> None:
    abc(s)
    yes, no = cmp(b"a", "VERSION", "EQUAL", 1), cmp(b"a", "VERSION", "EQUAL", 2)
    assert s.txn(txn(compare=[yes, yes])).succeeded
    assert not s.txn(txn(compare=[yes, no])).succeeded
    assert s.txn(txn()).succeeded


# --------------------------------------------------------------------------------------- ranges


def kvs(resp: rpc_pb2.RangeResponse) -> list[tuple[bytes, bytes]]:
    return [(kv.key, kv.value) for kv in resp.kvs]


def test_range_count_limit_more(s: Store) -> None:
    abc(s)
    r = s.get(b"a", b"\0", limit=2)
    assert (kvs(r), r.count, r.more) == ([(b"a", b"3"), (b"b", b"2")], 3, True)
    r = s.get(b"a", b"\0", limit=3)
    assert (len(r.kvs), r.count, r.more) == (3, 3, False)
    r = s.get(b"a", b"\0", limit=4)
    assert (len(r.kvs), r.count, r.more) == (3, 3, False)
    r = s.get(b"a", b"\0")
    assert (len(r.kvs), r.count, r.more) == (3, 3, False)
    r = s.get(b"b", b"c", limit=1)
    assert (kvs(r), r.count, r.more) == ([(b"b", b"2")], 1, False)
    assert s.get(b"a", b"\0").header.revision == 6


def test_range_count_only(s: Store) -> None:
    abc(s)
    r = s.get(b"a", b"\0", count_only=True)
    assert (list(r.kvs), r.count, r.more) == ([], 3, False)
    r = s.get(b"a", b"\0", count_only=True, limit=1)  # etcd: count 3, no kvs, no more
    assert (list(r.kvs), r.count, r.more) == ([], 3, False)


def test_range_keys_only(s: Store) -> None:
    abc(s)
    r = s.get(b"b", keys_only=True)
    kv = r.kvs[0]
    assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"b", b"", 3, 6, 3)


@pytest.mark.parametrize(
    ("options", "keys", "more"),
    [
        ({"sort_order": R.ASCEND}, [b"a", b"b", b"c"], False),
        ({"sort_order": R.DESCEND}, [b"c", b"b", b"a"], False),
        ({"sort_order": R.DESCEND, "limit": 2}, [b"c", b"b"], True),
        ({"sort_order": R.DESCEND, "limit": 3}, [b"c", b"b", b"a"], False),
        ({"sort_target": R.MOD, "sort_order": R.DESCEND}, [b"b", b"c", b"a"], False),
        ({"sort_target": R.CREATE, "sort_order": R.DESCEND}, [b"c", b"b", b"a"], False),
        ({"sort_target": R.VALUE}, [b"c", b"b", b"a"], False),  # a target without order sorts ascending
        ({"sort_target": R.VALUE, "sort_order": R.DESCEND}, [b"a", b"b", b"c"], False),
        (
            {"sort_target": R.VERSION, "sort_order": R.DESCEND},
            [b"b", b"a", b"c"],
            False,
        ),  # ties keep key order
        ({"sort_target": R.VERSION}, [b"a", b"c", b"b"], False),
        ({"sort_target": R.VALUE, "sort_order": R.ASCEND, "limit": 1}, [b"c"], True),
        # etcd quirk: with sort_order NONE it fetches limit + 1 keys in key order, then sorts them
        ({"sort_target": R.VALUE, "limit": 1}, [b"b"], True),
        ({"min_mod_revision": 4}, [b"b", b"c"], False),
        ({"max_mod_revision": 4}, [b"a", b"c"], False),
        ({"min_create_revision": 3, "max_create_revision": 3}, [b"b"], False),
        ({"min_mod_revision": 3, "limit": 1}, [b"b"], True),
        ({"min_mod_revision": 5, "limit": 1}, [b"b"], False),  # more counts what the filters left
    ],
)
def test_range_sort_and_filters(s: Store, options: dict[str, int], keys: list[bytes], more: bool) -> None:
    abc(s)
    r = s.get(b"a", b"\0", **options)
    assert [kv.key for kv in r.kvs] == keys
    assert r.count == 3  # count is taken before filters and limit
    assert r.more is more


def test_range_more_after_filters(s: Store) -> None:
    abc(s)
    r = s.get(b"a", b"\0", min_mod_revision=4, limit=1)
    assert ([kv.key for kv in r.kvs], r.count, r.more) == ([b"b"], 3, True)
    r = s.get(b"a", b"\0", min_mod_revision=6, limit=1)
    assert ([kv.key for kv in r.kvs], r.count, r.more) == ([b"b"], 3, False)


@pytest.mark.parametrize(
    ("key", "end", "keys"),
    [
        (b"a", b"", [b"a"]),
        (b"ab", b"", [b"ab"]),
        (b"abc", b"", []),
        (b"a", b"\0", [b"a", b"ab", b"b", b"\xff"]),
        (b"\x00", b"\0", [b"a", b"ab", b"b", b"\xff"]),
        (b"ab", b"\0", [b"ab", b"b", b"\xff"]),
        (b"a", b"b", [b"a", b"ab"]),  # the prefix a
        (b"ab", b"ac", [b"ab"]),  # the prefix ab
        (b"\xff", b"\0", [b"\xff"]),  # the prefix \xff (etcd's GetPrefixRangeEnd gives "\0")
        (b"a", b"ab", [b"a"]),
        (b"b", b"a", []),  # end before key: nothing
        (b"a", b"a", []),
        (b"c", b"\xff", []),
        (b"c", b"\xff\x00", [b"\xff"]),
    ],
)
def test_range_ends(s: Store, key: bytes, end: bytes, keys: list[bytes]) -> None:
    for k in (b"a", b"ab", b"b", b"\xff"):
        s.put(k, k)
    assert s.keys(key, end) == keys
    assert s.get(key, end).count == len(keys)
    resp = s.delete(key, end)
    assert resp.deleted == len(keys)
    assert s.keys() == [k for k in (b"a", b"ab", b"b", b"\xff") if k not in keys]


def test_range_revisions(s: Store) -> None:
    abc(s)
    s.delete(b"a")
    assert s.get(b"a", revision=6).kvs[0].value == b"3"
    assert s.get(b"a", revision=7).count == 0
    assert [kv.value for kv in s.get(b"b", revision=4).kvs] == [b"x"]
    assert s.get(b"b", revision=2).count == 0
    assert s.get(b"a", b"\0", revision=1).count == 0
    s.ok(compaction=P.CompactionRequest(revision=4))
    for rev in (1, 3):
        with pytest.raises(StoreError) as e:
            s.get(b"a", revision=rev)
        assert e.value == errors.COMPACTED
    assert [kv.value for kv in s.get(b"b", revision=4).kvs] == [b"x"]  # the compaction revision itself
    with pytest.raises(StoreError) as e:
        s.get(b"a", revision=s.rev + 1)
    assert e.value == errors.FUTURE_REV
    assert s.get(b"a", b"\0", revision=4).header.revision == s.rev  # the header has the current revision


# --------------------------------------------------------------------------------- put, delete


def test_create_mod_version(s: Store) -> None:
    s.put(b"k", b"1")
    s.put(b"k", b"2")
    kv = s.get(b"k").kvs[0]
    assert (kv.create_revision, kv.mod_revision, kv.version) == (2, 3, 2)
    s.delete(b"k")
    s.put(b"k", b"3")  # a new life
    kv = s.get(b"k").kvs[0]
    assert (kv.create_revision, kv.mod_revision, kv.version) == (5, 5, 1)


def test_put_and_delete_prev_kv(s: Store) -> None:
    assert not s.put(b"k", b"1", prev_kv=True).HasField("prev_kv")
    prev = s.put(b"k", b"2", prev_kv=True).prev_kv
    assert (prev.value, prev.mod_revision, prev.version) == (b"1", 2, 1)
    s.put(b"l", b"9")
    resp = s.delete(b"k", b"\0", prev_kv=True)
    assert (resp.deleted, resp.header.revision) == (2, 5)
    assert [(kv.key, kv.value) for kv in resp.prev_kvs] == [(b"k", b"2"), (b"l", b"9")]
    resp = s.delete(b"k", b"\0", prev_kv=True)
    assert (resp.deleted, list(resp.prev_kvs), resp.header.revision, s.rev) == (0, [], 5, 5)


def test_delete_of_nothing_keeps_the_revision(s: Store) -> None:
    a = s.apply(delete_range=dele(b"nothing", b"\0"))
    assert (a.error, a.changes, a.revision, s.rev) == (None, [], 1, 1)


# ----------------------------------------------------------------------------------- compaction


def test_compaction_rules(s: Store) -> None:
    abc(s)
    assert s.fails(compaction=P.CompactionRequest(revision=7)) == errors.FUTURE_REV
    assert s.ok(compaction=P.CompactionRequest(revision=3)).header.revision == 6
    assert s.rev == 6  # compaction is no write
    assert s.fails(compaction=P.CompactionRequest(revision=3)) == errors.COMPACTED
    assert s.fails(compaction=P.CompactionRequest(revision=2)) == errors.COMPACTED
    assert s.ok(compaction=P.CompactionRequest(revision=6)).header.revision == 6


def test_first_compaction_at_revision_zero(s: Store) -> None:
    """etcd's compactMainRev starts at -1, so a first Compact(0) succeeds (etcd: header revision 1)."""
    assert s.ok(compaction=P.CompactionRequest(revision=0)).header.revision == 1


def test_events_kinds(s: Store) -> None:
    a = s.apply(put=put(b"k", b"v"))
    assert [(c.record.key, c.record.version, c.prev) for c in a.changes] == [(b"k", 1, None)]
    a = s.apply(delete_range=dele(b"k"))
    ch = a.changes[0]
    assert ch.record.version == 0 and ch.prev is not None and ch.prev.value == b"v"
    assert ch.record.to_pb() == kv_pb2.KeyValue(key=b"k", mod_revision=3)
