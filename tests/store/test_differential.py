"""Differential tests: the same gRPC script on Debian's etcd 3.4 and on gifee, answers compared.

Both servers start fresh for every test, so absolute revisions are compared exactly.
Run against etcd on both sides with `GIFEE_TEST_STORE_CMD=etcd` to validate the tests.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

import pytest

from gifee.store.proto import rpc_pb2, v3election_pb2, v3lock_pb2
from tests.store.reference import Expect, Run, ServerPair, WatchStream, differential

pytestmark = [pytest.mark.reference, pytest.mark.timeout(90)]

P = rpc_pb2
C = rpc_pb2.Compare
R = rpc_pb2.RangeRequest
OK, ERR, ANY = Expect.OK, Expect.ERROR, Expect.ANY


# --------------------------------------------------------------------------- request builders


def put(key: bytes, value: bytes = b"", **kw: Any) -> rpc_pb2.PutRequest:
    return P.PutRequest(key=key, value=value, **kw)


def rng(key: bytes, range_end: bytes = b"", **kw: Any) -> rpc_pb2.RangeRequest:
    return P.RangeRequest(key=key, range_end=range_end, **kw)


def delete(key: bytes, range_end: bytes = b"", **kw: Any) -> rpc_pb2.DeleteRangeRequest:
    return P.DeleteRangeRequest(key=key, range_end=range_end, **kw)


def op(req: Any) -> rpc_pb2.RequestOp:
    if isinstance(req, rpc_pb2.PutRequest):
        return P.RequestOp(request_put=req)
    if isinstance(req, rpc_pb2.RangeRequest):
        return P.RequestOp(request_range=req)
    if isinstance(req, rpc_pb2.DeleteRangeRequest):
        return P.RequestOp(request_delete_range=req)
    if isinstance(req, rpc_pb2.TxnRequest):
        return P.RequestOp(request_txn=req)
    raise TypeError(req)


def txn(
    compare: Sequence[rpc_pb2.Compare] = (), success: Sequence[Any] = (), failure: Sequence[Any] = ()
) -> rpc_pb2.TxnRequest:
    return P.TxnRequest(
        compare=list(compare), success=[op(r) for r in success], failure=[op(r) for r in failure]
    )


def cmp(key: bytes, target: str, result: str, operand: Any, range_end: bytes = b"") -> rpc_pb2.Compare:
    field = {
        "VERSION": "version",
        "CREATE": "create_revision",
        "MOD": "mod_revision",
        "VALUE": "value",
        "LEASE": "lease",
    }[target]
    return C(
        key=key,
        target=C.CompareTarget.Value(target),
        result=C.CompareResult.Value(result),
        range_end=range_end,
        **{field: operand},
    )


def prefix_end(prefix: bytes) -> bytes:
    """etcd's clientv3.GetPrefixRangeEnd."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


async def fill(r: Run, items: list[tuple[bytes, bytes]]) -> None:
    for k, v in items:
        await r.call(f"put {k!r}={v!r}", r.kv.Put, put(k, v), expect=OK)


async def wait_count(r: Run, prefix: bytes, n: int, timeout: float = 5.0) -> None:
    """Poll (unrecorded) until `n` keys exist under `prefix`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        resp = await r.kv.Range(rng(prefix, prefix_end(prefix), count_only=True), timeout=5)
        if resp.count >= n:
            return
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- KV


async def test_put_get_prev_kv(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        await r.call("get on empty store", r.kv.Range, rng(b"a"))
        await r.call("first put, prev_kv", r.kv.Put, put(b"a", b"1", prev_kv=True), expect=OK)
        await r.call("second put, prev_kv", r.kv.Put, put(b"a", b"2", prev_kv=True), expect=OK)
        await r.call("third put, no prev_kv", r.kv.Put, put(b"a", b"3"), expect=OK)
        await r.call("get a", r.kv.Range, rng(b"a"))
        await r.call("put empty value, prev_kv", r.kv.Put, put(b"b", b"", prev_kv=True), expect=OK)
        await r.call("get b (empty value)", r.kv.Range, rng(b"b"))
        await r.call("binary key and value", r.kv.Put, put(b"\x00\xff\x01", b"\xfe\x00", prev_kv=True))
        await r.call("get binary", r.kv.Range, rng(b"\x00\xff\x01"))
        await r.call("get missing", r.kv.Range, rng(b"zzz"))
        await r.call(
            "ignore_value keeps value", r.kv.Put, put(b"a", ignore_value=True, prev_kv=True), expect=OK
        )
        await r.call("get a after ignore_value", r.kv.Range, rng(b"a"))
        await r.call("serializable get", r.kv.Range, rng(b"a", serializable=True))

    await differential(pair, script)


async def test_range_end_conventions(pair: ServerPair) -> None:
    keys = [b"a", b"a/1", b"a/2", b"a/3", b"ab", b"b", b"c", b"\xff", b"\xff\xff"]

    async def script(r: Run) -> None:
        await fill(r, [(k, b"v-" + k) for k in keys])
        cases: list[tuple[str, bytes, bytes]] = [
            ("single key", b"a", b""),
            ("single missing key", b"a/0", b""),
            ("[a, b)", b"a", b"b"),
            ("prefix a/", b"a/", prefix_end(b"a/")),
            ("prefix a", b"a", prefix_end(b"a")),
            ("prefix \\xff", b"\xff", prefix_end(b"\xff")),
            ("from a/2 (range_end \\0)", b"a/2", b"\0"),
            ("everything (\\0, \\0)", b"\0", b"\0"),
            ("range_end < key", b"c", b"a"),
            ("range_end == key", b"b", b"b"),
            ("range_end = key + \\0", b"b", b"b\0"),
            ("[\\0, c)", b"\0", b"c"),
        ]
        for label, key, end in cases:
            await r.call(label, r.kv.Range, rng(key, end))
            await r.call(label + " count_only", r.kv.Range, rng(key, end, count_only=True))

    await differential(pair, script)


async def test_limit_more_count(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        await fill(r, [(b"k%d" % i, b"v%d" % i) for i in range(5)])
        everything = (b"\0", b"\0")
        for limit in (0, 1, 2, 4, 5, 6):
            await r.call(f"limit {limit}", r.kv.Range, rng(*everything, limit=limit))
        await r.call("limit 2 keys_only", r.kv.Range, rng(*everything, limit=2, keys_only=True))
        await r.call("limit 2 count_only", r.kv.Range, rng(*everything, limit=2, count_only=True))
        await r.call("limit 2 prefix k", r.kv.Range, rng(b"k", prefix_end(b"k"), limit=2))
        await r.call("limit 3 from k2", r.kv.Range, rng(b"k2", b"\0", limit=3))
        await r.call("limit on single key", r.kv.Range, rng(b"k1", limit=1))
        await r.call("keys_only", r.kv.Range, rng(*everything, keys_only=True))
        await r.call("count_only", r.kv.Range, rng(*everything, count_only=True))
        await r.call("keys_only + count_only", r.kv.Range, rng(*everything, keys_only=True, count_only=True))

    await differential(pair, script)


async def test_sort_orders_and_targets(pair: ServerPair) -> None:
    # Distinct values, versions, create and mod revisions, each ordering the keys differently.
    async def script(r: Run) -> None:
        await fill(r, [(b"s/c", b"1"), (b"s/a", b"5"), (b"s/e", b"3"), (b"s/b", b"4"), (b"s/d", b"2")])
        await fill(
            r,
            [(b"s/e", b"3"), (b"s/a", b"5"), (b"s/e", b"3"), (b"s/b", b"4"), (b"s/e", b"3"), (b"s/b", b"4")],
        )
        await fill(r, [(b"s/e", b"3"), (b"s/c", b"1"), (b"s/c", b"1"), (b"s/c", b"1")])
        # versions a=2 b=3 c=4 d=1 e=5; values c<d<e<b<a; creates c<a<e<b<d; mods d<a<b<e<c
        for order, target in itertools.product(R.SortOrder.keys(), R.SortTarget.keys()):
            so, st = R.SortOrder.Value(order), R.SortTarget.Value(target)
            resp = await r.kv.Range(rng(b"s/", prefix_end(b"s/"), sort_order=so, sort_target=st), timeout=5)
            r.record(
                f"sort {order} by {target}",
                [
                    (kv.key.decode(), kv.version, kv.create_revision, kv.mod_revision, kv.value.decode())
                    for kv in resp.kvs
                ],
            )
            await r.call(
                f"sort {order} by {target} limit 2",
                r.kv.Range,
                rng(b"s/", prefix_end(b"s/"), sort_order=so, sort_target=st, limit=2),
            )
        # Ties: etcd's sort is stable for short lists (equal elements stay in key order).
        await fill(r, [(b"t/b", b"same"), (b"t/a", b"same"), (b"t/c", b"same")])
        for order in ("ASCEND", "DESCEND"):
            for target in ("VERSION", "VALUE"):
                await r.call(
                    f"ties {order} by {target}",
                    r.kv.Range,
                    rng(
                        b"t/",
                        prefix_end(b"t/"),
                        sort_order=R.SortOrder.Value(order),
                        sort_target=R.SortTarget.Value(target),
                        keys_only=True,
                    ),
                )
        await r.call(
            "sort with keys_only by value",
            r.kv.Range,
            rng(b"s/", prefix_end(b"s/"), sort_order=2, sort_target=4, keys_only=True),
        )

    await differential(pair, script)


async def test_revision_filters(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        await fill(r, [(b"f/%d" % i, b"x") for i in range(6)])  # revisions 2..7
        await fill(r, [(b"f/1", b"y"), (b"f/3", b"y"), (b"f/5", b"y")])  # revisions 8..10
        everything = (b"f/", prefix_end(b"f/"))
        filters = [
            {"min_mod_revision": 5},
            {"max_mod_revision": 5},
            {"min_mod_revision": 4, "max_mod_revision": 8},
            {"min_create_revision": 4},
            {"max_create_revision": 4},
            {"min_create_revision": 3, "max_create_revision": 5},
            {"min_mod_revision": 8, "min_create_revision": 4},
            {"min_mod_revision": 100},
            {"max_create_revision": 3, "limit": 1},
            {"min_mod_revision": 5, "count_only": True},
            {"min_mod_revision": 5, "limit": 2},
        ]
        for f in filters:
            await r.call(f"filter {f}", r.kv.Range, rng(*everything, **f))  # type: ignore[arg-type]

    await differential(pair, script)


async def test_read_at_old_revisions(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        await r.call("put k=1", r.kv.Put, put(b"k", b"1"))  # rev 2
        await r.call("put j=1", r.kv.Put, put(b"j", b"1"))  # rev 3
        await r.call("put k=2", r.kv.Put, put(b"k", b"2"))  # rev 4
        await r.call("delete k", r.kv.DeleteRange, delete(b"k"))  # rev 5
        await r.call("put k=3", r.kv.Put, put(b"k", b"3"))  # rev 6
        for rev in range(0, 8):
            await r.call(f"get k at {rev}", r.kv.Range, rng(b"k", revision=rev))
            await r.call(f"get all at {rev}", r.kv.Range, rng(b"\0", b"\0", revision=rev))
        await r.call("count at 4", r.kv.Range, rng(b"\0", b"\0", revision=4, count_only=True))
        await r.call("keys_only at 3", r.kv.Range, rng(b"\0", b"\0", revision=3, keys_only=True))

    await differential(pair, script)


async def test_delete_variants(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        keys = [b"a", b"b", b"b/1", b"b/2", b"c", b"d", b"e"]
        await fill(r, [(k, b"v" + k) for k in keys])
        await r.call("delete single, prev_kv", r.kv.DeleteRange, delete(b"a", prev_kv=True), expect=OK)
        await r.call("delete missing single", r.kv.DeleteRange, delete(b"a", prev_kv=True), expect=OK)
        await r.call("delete prefix b/", r.kv.DeleteRange, delete(b"b/", prefix_end(b"b/"), prev_kv=True))
        await r.call("delete [c, e) no prev_kv", r.kv.DeleteRange, delete(b"c", b"e"))
        await r.call("delete empty range", r.kv.DeleteRange, delete(b"x", b"z", prev_kv=True))
        await r.call("state", r.kv.Range, rng(b"\0", b"\0"))
        await r.call("delete from b (\\0)", r.kv.DeleteRange, delete(b"b", b"\0", prev_kv=True))
        await fill(r, [(b"p", b"1"), (b"q", b"2")])
        await r.call("delete everything", r.kv.DeleteRange, delete(b"\0", b"\0", prev_kv=True))
        await r.call("state after all deleted", r.kv.Range, rng(b"\0", b"\0"))

    await differential(pair, script)


async def test_versions_reset_after_delete(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        for i in range(3):
            await r.call(f"put #{i}", r.kv.Put, put(b"v", b"%d" % i, prev_kv=True))
        await r.call("get (version 3)", r.kv.Range, rng(b"v"))
        await r.call("delete", r.kv.DeleteRange, delete(b"v", prev_kv=True))
        await r.call("re-create", r.kv.Put, put(b"v", b"new", prev_kv=True))
        await r.call("get (version 1, new create_revision)", r.kv.Range, rng(b"v"))
        await r.call("put again", r.kv.Put, put(b"v", b"newer", prev_kv=True))
        await r.call("get", r.kv.Range, rng(b"v"))
        await r.call("old incarnation at rev 3", r.kv.Range, rng(b"v", revision=3))
        await r.call("deleted at rev 5", r.kv.Range, rng(b"v", revision=5))

    await differential(pair, script)


# --------------------------------------------------------------------------- Txn


async def test_txn_compare_matrix(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        grant = await r.call("grant", r.lease.LeaseGrant, P.LeaseGrantRequest(TTL=60), expect=OK)
        lease_id = grant.ID if grant else 0
        await r.call("put k", r.kv.Put, put(b"k", b"m"), expect=OK)  # create rev 2
        await r.call("put other", r.kv.Put, put(b"other", b"o"))
        await r.call(
            "put k again, with lease", r.kv.Put, put(b"k", b"m", lease=lease_id), expect=OK
        )  # version 2, mod 4
        operands: dict[str, list[Any]] = {
            "VERSION": [1, 2, 3],
            "CREATE": [1, 2, 3],
            "MOD": [3, 4, 5],
            "VALUE": [b"a", b"m", b"z", b"", b"mm"],
            "LEASE": [0, lease_id, lease_id + 1],
        }
        for target, values in operands.items():
            for result in ("EQUAL", "GREATER", "LESS", "NOT_EQUAL"):
                for i, v in enumerate(values):
                    resp = await r.kv.Txn(txn([cmp(b"k", target, result, v)]), timeout=5)
                    r.record(f"k {target} {result} operand#{i}", resp.succeeded)
                    resp = await r.kv.Txn(txn([cmp(b"missing", target, result, v)]), timeout=5)
                    r.record(f"missing {target} {result} operand#{i}", resp.succeeded)
        # One full response, to compare headers and the empty branch.
        await r.call(
            "txn full response",
            r.kv.Txn,
            txn([cmp(b"k", "VALUE", "EQUAL", b"m")], [rng(b"k")], [rng(b"other")]),
        )

    await differential(pair, script)


async def test_txn_compare_with_range_end(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        await fill(r, [(b"r/1", b"a"), (b"r/2", b"b"), (b"r/3", b"c"), (b"s", b"z")])
        await fill(r, [(b"r/2", b"b")])
        end = prefix_end(b"r/")
        checks = [
            ("all versions > 0", cmp(b"r/", "VERSION", "GREATER", 0, end)),
            ("all versions == 1", cmp(b"r/", "VERSION", "EQUAL", 1, end)),
            ("all versions < 3", cmp(b"r/", "VERSION", "LESS", 3, end)),
            ("all values < d", cmp(b"r/", "VALUE", "LESS", b"d", end)),
            ("all values != b", cmp(b"r/", "VALUE", "NOT_EQUAL", b"b", end)),
            ("all create > 1", cmp(b"r/", "CREATE", "GREATER", 1, end)),
            ("all mod < 6", cmp(b"r/", "MOD", "LESS", 6, end)),
            ("empty range version == 0", cmp(b"t/", "VERSION", "EQUAL", 0, prefix_end(b"t/"))),
            ("empty range value == ''", cmp(b"t/", "VALUE", "EQUAL", b"", prefix_end(b"t/"))),
            ("from-key versions > 0", cmp(b"r/2", "VERSION", "GREATER", 0, b"\0")),
            ("everything mod > 1", cmp(b"\0", "MOD", "GREATER", 1, b"\0")),
        ]
        for label, c in checks:
            await r.call(label, r.kv.Txn, txn([c], [rng(b"r/", end, keys_only=True)], [rng(b"s")]))

    await differential(pair, script)


async def test_txn_branches_nested_and_own_writes(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        await r.call("seed x", r.kv.Put, put(b"x", b"1"))
        await r.call("seed w", r.kv.Put, put(b"w", b"1"))
        await r.call(
            "success branch writes and reads its own writes",
            r.kv.Txn,
            txn(
                [cmp(b"x", "VALUE", "EQUAL", b"1")],
                [
                    put(b"x", b"2", prev_kv=True),
                    rng(b"x"),
                    put(b"y", b"new"),
                    rng(b"\0", b"\0"),
                    delete(b"w", prev_kv=True),
                    rng(b"w"),
                    put(b"z", b"zz"),
                ],
                [put(b"never", b"1")],
            ),
            expect=OK,
        )
        await r.call("after success", r.kv.Range, rng(b"\0", b"\0"))
        await r.call(
            "failure branch",
            r.kv.Txn,
            txn(
                [cmp(b"x", "VALUE", "EQUAL", b"1")],
                [put(b"never", b"1")],
                [put(b"f", b"1"), rng(b"f"), delete(b"z", prev_kv=True)],
            ),
        )
        await r.call("after failure", r.kv.Range, rng(b"\0", b"\0"))
        await r.call(
            "multiple compares, one false",
            r.kv.Txn,
            txn(
                [cmp(b"x", "VALUE", "EQUAL", b"2"), cmp(b"f", "VERSION", "GREATER", 5)],
                [put(b"never", b"1")],
                [rng(b"x")],
            ),
        )
        await r.call(
            "nested txn",
            r.kv.Txn,
            txn(
                [],
                [
                    put(b"n1", b"outer"),
                    txn(
                        [cmp(b"n1", "VALUE", "EQUAL", b"outer")],
                        [put(b"n2", b"inner-success"), rng(b"n1")],
                        [put(b"n2", b"inner-failure")],
                    ),
                    rng(b"n2"),
                    txn([cmp(b"n2", "VERSION", "EQUAL", 7)], [], [txn([], [put(b"n3", b"deep")])]),
                ],
            ),
            expect=OK,
        )
        await r.call("after nested", r.kv.Range, rng(b"n", prefix_end(b"n")))
        await r.call(
            "read-only txn: header revision stays",
            r.kv.Txn,
            txn([cmp(b"x", "VERSION", "GREATER", 0)], [rng(b"x")], [rng(b"f")]),
        )
        await r.call("empty txn", r.kv.Txn, txn())
        await r.call("txn with only compares, failing", r.kv.Txn, txn([cmp(b"x", "VALUE", "EQUAL", b"no")]))
        await r.call("txn deleting nothing", r.kv.Txn, txn([], [delete(b"nothing")]))
        await r.call(
            "txn put+delete different keys",
            r.kv.Txn,
            txn([], [put(b"t1", b"a"), delete(b"x", prev_kv=True), put(b"t2", b"b")]),
        )
        await r.call(
            "txn delete then re-put same key", r.kv.Txn, txn([], [delete(b"t1"), put(b"t1", b"again")])
        )
        await r.call("final", r.kv.Range, rng(b"\0", b"\0"))

    await differential(pair, script)


# --------------------------------------------------------------------------- errors


async def test_errors_key_and_revision(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        await fill(r, [(b"a", b"1"), (b"a", b"2"), (b"a", b"3"), (b"b", b"1")])  # rev 5
        await r.call("put empty key", r.kv.Put, put(b"", b"x"), expect=ERR)
        await r.call("range empty key", r.kv.Range, rng(b""), expect=ERR)
        await r.call("delete empty key", r.kv.DeleteRange, delete(b""), expect=ERR)
        await r.call("txn put empty key", r.kv.Txn, txn([], [put(b"", b"x")]), expect=ERR)
        await r.call("txn compare empty key", r.kv.Txn, txn([C(key=b"", target=C.VERSION, version=0)]))
        await r.call("range future revision", r.kv.Range, rng(b"a", revision=6), expect=ERR)
        await r.call("range far future revision", r.kv.Range, rng(b"a", revision=1 << 40), expect=ERR)
        await r.call("txn range future revision", r.kv.Txn, txn([], [rng(b"a", revision=99)]), expect=ERR)
        await r.call("compact future revision", r.kv.Compact, P.CompactionRequest(revision=6), expect=ERR)
        await r.call("compact at 3", r.kv.Compact, P.CompactionRequest(revision=3), expect=OK)
        await r.call("range compacted revision", r.kv.Range, rng(b"a", revision=2), expect=ERR)
        await r.call("range at compact revision", r.kv.Range, rng(b"a", revision=3), expect=OK)
        await r.call("compact again at 3", r.kv.Compact, P.CompactionRequest(revision=3), expect=ERR)
        await r.call("compact at 2 (older)", r.kv.Compact, P.CompactionRequest(revision=2), expect=ERR)
        await r.call("txn range compacted", r.kv.Txn, txn([], [rng(b"a", revision=1)]), expect=ERR)
        await r.call("state unchanged", r.kv.Range, rng(b"\0", b"\0"))

    await differential(pair, script)


async def test_errors_put_options(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        await r.call("put unknown lease", r.kv.Put, put(b"k", b"v", lease=r.fixed_lease(123456)), expect=ERR)
        await r.call("txn put unknown lease", r.kv.Txn, txn([], [put(b"k", b"v", lease=123456)]), expect=ERR)
        await r.call("ignore_value on missing key", r.kv.Put, put(b"k", ignore_value=True), expect=ERR)
        await r.call("ignore_lease on missing key", r.kv.Put, put(b"k", b"v", ignore_lease=True), expect=ERR)
        await r.call("create k", r.kv.Put, put(b"k", b"v"), expect=OK)
        await r.call("ignore_value with a value", r.kv.Put, put(b"k", b"x", ignore_value=True), expect=ERR)
        await r.call(
            "ignore_lease with a lease",
            r.kv.Put,
            put(b"k", b"x", ignore_lease=True, lease=123456),
            expect=ERR,
        )
        await r.call(
            "ignore_value and ignore_lease",
            r.kv.Put,
            put(b"k", ignore_value=True, ignore_lease=True, prev_kv=True),
            expect=OK,
        )
        await r.call(
            "txn ignore_value on missing key",
            r.kv.Txn,
            txn([], [put(b"nope", ignore_value=True)]),
            expect=ERR,
        )
        await r.call("state", r.kv.Range, rng(b"\0", b"\0"))

    await differential(pair, script)


async def test_errors_txn_shape(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        many = [put(b"k%03d" % i, b"v") for i in range(129)]
        await r.call("129 ops in success", r.kv.Txn, txn([], many), expect=ERR)
        await r.call("129 ops in failure", r.kv.Txn, txn([], [], many), expect=ERR)
        await r.call("128 ops", r.kv.Txn, txn([], many[:128]), expect=OK)
        await r.call(
            "129 compares", r.kv.Txn, txn([cmp(b"k%03d" % i, "VERSION", "EQUAL", 1) for i in range(129)])
        )
        dup_cases: list[tuple[str, rpc_pb2.TxnRequest, Expect]] = [
            ("put+put same key", txn([], [put(b"d", b"1"), put(b"d", b"2")]), ERR),
            ("put+put same key in failure", txn([], [], [put(b"d", b"1"), put(b"d", b"2")]), ERR),
            ("put inside deleted range", txn([], [delete(b"a", b"z"), put(b"d", b"1")]), ERR),
            ("put then delete range over it", txn([], [put(b"d", b"1"), delete(b"a", b"z")]), ERR),
            ("delete+delete same key", txn([], [delete(b"d"), delete(b"d")]), ANY),
            ("put+range same key", txn([], [put(b"d", b"1"), rng(b"d")]), OK),
            ("same key in success and failure", txn([], [put(b"d", b"1")], [put(b"d", b"2")]), OK),
            ("nested put duplicates outer put", txn([], [put(b"d", b"1"), txn([], [put(b"d", b"2")])]), ERR),
            (
                "nested success and failure same key",
                txn([], [txn([], [put(b"d", b"1")], [put(b"d", b"2")])]),
                OK,
            ),
            (
                "two nested txns put same key",
                txn([], [txn([], [put(b"d", b"1")]), txn([], [put(b"d", b"2")])]),
                ERR,
            ),
            (
                "nested put inside outer deleted range",
                txn([], [delete(b"a", b"z"), txn([], [put(b"d", b"2")])]),
                ERR,
            ),
            (
                "nested delete range over outer put",
                txn([], [put(b"d", b"1"), txn([], [delete(b"a", b"z")])]),
                ERR,
            ),
        ]
        for label, t, expect in dup_cases:
            await r.call(label, r.kv.Txn, t, expect=expect)
        await r.call("state", r.kv.Range, rng(b"d"))

    await differential(pair, script)


async def test_errors_request_too_large(pair: ServerPair) -> None:
    # etcd 3.4 checks --max-request-bytes (1.5 MiB) itself: INVALID_ARGUMENT "etcdserver: request
    # is too large". Its gRPC server's receive limit is 1.5 MiB + 512 KiB = 2 MiB, so a 2 MiB
    # value is refused by grpc-go before etcd sees it: RESOURCE_EXHAUSTED "grpc: received message
    # larger than max (2097162 vs. 2097152)". Both answers are compared exactly.
    async def script(r: Run) -> None:
        await r.call(
            "put 2 MiB value (gRPC limit)", r.kv.Put, put(b"big", b"x" * (2 * 1024 * 1024)), expect=ERR
        )
        await r.call(
            "put 1.6 MiB value (etcd limit)", r.kv.Put, put(b"big", b"x" * (1600 * 1024)), expect=ERR
        )
        await r.call("txn 1.6 MiB", r.kv.Txn, txn([], [put(b"big", b"x" * (1600 * 1024))]), expect=ERR)
        await r.call("put 1 MiB value", r.kv.Put, put(b"big", b"y" * (1024 * 1024)), expect=OK)
        await r.call("get 1 MiB value", r.kv.Range, rng(b"big"), expect=OK)

    await differential(pair, script)


# --------------------------------------------------------------------------- leases


async def test_lease_grant_variants(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        await r.call(
            "grant explicit ID",
            r.lease.LeaseGrant,
            P.LeaseGrantRequest(TTL=30, ID=r.fixed_lease(1000)),
            expect=OK,
        )
        await r.call(
            "grant duplicate ID", r.lease.LeaseGrant, P.LeaseGrantRequest(TTL=30, ID=1000), expect=ERR
        )
        await r.call("grant server ID", r.lease.LeaseGrant, P.LeaseGrantRequest(TTL=20), expect=OK)
        await r.call(
            "grant TTL 1 (raised to minimum)", r.lease.LeaseGrant, P.LeaseGrantRequest(TTL=1), expect=OK
        )
        await r.call("grant TTL 0", r.lease.LeaseGrant, P.LeaseGrantRequest(TTL=0))
        await r.call("grant max TTL", r.lease.LeaseGrant, P.LeaseGrantRequest(TTL=9_000_000_000), expect=OK)
        await r.call(
            "grant too large TTL", r.lease.LeaseGrant, P.LeaseGrantRequest(TTL=9_000_000_001), expect=ERR
        )
        await r.call(
            "grant explicit ID 2",
            r.lease.LeaseGrant,
            P.LeaseGrantRequest(TTL=5, ID=r.fixed_lease(7)),
            expect=OK,
        )
        await r.call("leases", r.lease.LeaseLeases, P.LeaseLeasesRequest())
        await r.call("ttl explicit", r.lease.LeaseTimeToLive, P.LeaseTimeToLiveRequest(ID=1000, keys=True))
        await r.call(
            "ttl unknown",
            r.lease.LeaseTimeToLive,
            P.LeaseTimeToLiveRequest(ID=r.fixed_lease(424242), keys=True),
        )
        await r.call("ttl unknown, no keys", r.lease.LeaseTimeToLive, P.LeaseTimeToLiveRequest(ID=424242))
        await r.call("revoke unknown", r.lease.LeaseRevoke, P.LeaseRevokeRequest(ID=424242), expect=ERR)
        await r.call("revoke explicit", r.lease.LeaseRevoke, P.LeaseRevokeRequest(ID=1000), expect=OK)
        await r.call("revoke again", r.lease.LeaseRevoke, P.LeaseRevokeRequest(ID=1000), expect=ERR)
        await r.call("leases after revoke", r.lease.LeaseLeases, P.LeaseLeasesRequest())
        await r.call(
            "re-grant revoked ID", r.lease.LeaseGrant, P.LeaseGrantRequest(TTL=30, ID=1000), expect=OK
        )

    await differential(pair, script)


async def test_lease_keys_revoke_and_watch(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        g = await r.call("grant", r.lease.LeaseGrant, P.LeaseGrantRequest(TTL=60), expect=OK)
        g2 = await r.call("grant other", r.lease.LeaseGrant, P.LeaseGrantRequest(TTL=60), expect=OK)
        lid, lid2 = (g.ID if g else 0), (g2.ID if g2 else 0)
        w = WatchStream(r)
        w.create(key=b"\0", range_end=b"\0", prev_kv=True)
        await w.wait_responses(1)
        for k in (b"l/c", b"l/a", b"l/b"):
            await r.call(f"put {k!r} with lease", r.kv.Put, put(k, b"v", lease=lid), expect=OK)
        await r.call("put other-lease key", r.kv.Put, put(b"l/z", b"v", lease=lid2), expect=OK)
        await r.call("put plain key", r.kv.Put, put(b"plain", b"v"))
        await r.call(
            "ignore_lease keeps the lease", r.kv.Put, put(b"l/b", b"v2", ignore_lease=True), expect=OK
        )
        await r.call("put moves l/z to first lease", r.kv.Put, put(b"l/z", b"v3", lease=lid), expect=OK)
        await r.call("put without lease detaches l/c", r.kv.Put, put(b"l/c", b"v4"))
        await r.call("ttl with keys", r.lease.LeaseTimeToLive, P.LeaseTimeToLiveRequest(ID=lid, keys=True))
        await r.call(
            "ttl other with keys", r.lease.LeaseTimeToLive, P.LeaseTimeToLiveRequest(ID=lid2, keys=True)
        )
        await r.call("get all", r.kv.Range, rng(b"\0", b"\0"))
        await r.call("txn compare lease", r.kv.Txn, txn([cmp(b"l/a", "LEASE", "EQUAL", lid)], [rng(b"l/a")]))
        await r.call("revoke", r.lease.LeaseRevoke, P.LeaseRevokeRequest(ID=lid), expect=OK)
        await r.call("get all after revoke", r.kv.Range, rng(b"\0", b"\0"))
        await r.call("ttl after revoke", r.lease.LeaseTimeToLive, P.LeaseTimeToLiveRequest(ID=lid, keys=True))
        await r.call("put with revoked lease", r.kv.Put, put(b"l/x", b"v", lease=lid), expect=ERR)
        await w.wait_events(11)
        await w.settle(0.2)
        r.record("watch", w.flatten())
        await w.close()

    await differential(pair, script)


async def test_lease_keepalive(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        g = await r.call("grant", r.lease.LeaseGrant, P.LeaseGrantRequest(TTL=30), expect=OK)
        lid = g.ID if g else 0
        unknown = r.fixed_lease(777777)
        queue: asyncio.Queue[rpc_pb2.LeaseKeepAliveRequest | None] = asyncio.Queue()

        async def requests() -> Any:
            while (req := await queue.get()) is not None:
                yield req

        call = r.lease.LeaseKeepAlive(requests())
        got: list[Any] = []
        try:
            for lease_id in (lid, unknown, lid):
                queue.put_nowait(P.LeaseKeepAliveRequest(ID=lease_id))
                got.append(r.msg(await asyncio.wait_for(call.read(), 5)))
        except Exception as e:  # recorded: a candidate that hangs or fails shows in the diff
            got.append(f"<keepalive failed: {type(e).__name__}: {e}>")
        finally:
            queue.put_nowait(None)
            call.cancel()
        r.record("keepalive responses", got)
        await r.call("ttl after keepalive", r.lease.LeaseTimeToLive, P.LeaseTimeToLiveRequest(ID=lid))

    await differential(pair, script)


async def test_lease_expiry_deletes_keys(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        g = await r.call("grant 2s", r.lease.LeaseGrant, P.LeaseGrantRequest(TTL=2), expect=OK)
        lid = g.ID if g else 0
        await r.call("keeper lease", r.lease.LeaseGrant, P.LeaseGrantRequest(TTL=60), expect=OK)
        w = WatchStream(r)
        w.create(key=b"e/", range_end=prefix_end(b"e/"))
        await w.wait_responses(1)
        await r.call("put e/1", r.kv.Put, put(b"e/1", b"v", lease=lid), expect=OK)
        await r.call("put e/2", r.kv.Put, put(b"e/2", b"v", lease=lid), expect=OK)
        await r.call("put e/3 (no lease)", r.kv.Put, put(b"e/3", b"v"), expect=OK)
        await w.wait_events(5, timeout=10.0)  # 3 puts + 2 deletes on expiry
        await w.settle(0.3)
        r.record("watch", w.flatten())
        await w.close()
        await r.call("keys after expiry", r.kv.Range, rng(b"e/", prefix_end(b"e/")))
        await r.call("ttl after expiry", r.lease.LeaseTimeToLive, P.LeaseTimeToLiveRequest(ID=lid, keys=True))
        await r.call("leases after expiry", r.lease.LeaseLeases, P.LeaseLeasesRequest())

    await differential(pair, script)


# --------------------------------------------------------------------------- compaction and hashes


async def test_compaction_and_hashkv(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        await r.call("hashkv on empty store", r.client.maintenance.HashKV, P.HashKVRequest(revision=0))
        for i in range(10):
            await r.call(f"put #{i}", r.kv.Put, put(b"h/%d" % (i % 4), b"value-%d" % i))
        await r.call("delete h/1", r.kv.DeleteRange, delete(b"h/1"))
        await r.call("txn", r.kv.Txn, txn([], [put(b"h/9", b"t"), delete(b"h/2")]))  # rev 13
        for rev in (0, 5, 13):
            await r.call(f"hashkv at {rev}", r.client.maintenance.HashKV, P.HashKVRequest(revision=rev))
        await r.call("hashkv future", r.client.maintenance.HashKV, P.HashKVRequest(revision=14), expect=ERR)
        await r.call("compact at 6", r.kv.Compact, P.CompactionRequest(revision=6), expect=OK)
        await r.call(
            "read at 5 (compacted)", r.kv.Range, rng(b"h/", prefix_end(b"h/"), revision=5), expect=ERR
        )
        await r.call("read at 6", r.kv.Range, rng(b"h/", prefix_end(b"h/"), revision=6), expect=OK)
        await r.call("read current", r.kv.Range, rng(b"h/", prefix_end(b"h/")), expect=OK)
        await r.call(
            "hashkv at 5 (compacted)", r.client.maintenance.HashKV, P.HashKVRequest(revision=5), expect=ERR
        )
        for rev in (0, 6, 10, 13):
            await r.call(
                f"hashkv at {rev} after compaction",
                r.client.maintenance.HashKV,
                P.HashKVRequest(revision=rev),
            )
        await r.call(
            "physical compact at 10", r.kv.Compact, P.CompactionRequest(revision=10, physical=True), expect=OK
        )
        await r.call(
            "hashkv after physical compaction", r.client.maintenance.HashKV, P.HashKVRequest(revision=0)
        )
        await r.call("compact at current revision", r.kv.Compact, P.CompactionRequest(revision=13), expect=OK)
        await r.call("read current after full compaction", r.kv.Range, rng(b"\0", b"\0"), expect=OK)
        await r.call("put after compaction", r.kv.Put, put(b"h/new", b"n"), expect=OK)
        await r.call("hashkv final", r.client.maintenance.HashKV, P.HashKVRequest(revision=0))

    await differential(pair, script)


# --------------------------------------------------------------------------- maintenance and cluster


async def test_maintenance_and_cluster(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        await r.call("put", r.kv.Put, put(b"m", b"1"))
        m = r.client.maintenance
        status = await m.Status(P.StatusRequest(), timeout=5)
        r.record("status", r.msg(status))
        r.record(
            "status dbSize > 0, dbSizeInUse <= dbSize",
            (status.dbSize > 0, status.dbSizeInUse <= status.dbSize),
        )
        r.record("status leader is this member", status.leader == status.header.member_id != 0)
        await r.call("alarm list", m.Alarm, P.AlarmRequest(action=P.AlarmRequest.GET))
        await r.call("member list", r.client.cluster.MemberList, P.MemberListRequest(), expect=OK)
        await r.call(
            "member list linearizable", r.client.cluster.MemberList, P.MemberListRequest(linearizable=True)
        )
        await r.call("defragment", m.Defragment, P.DefragmentRequest(), expect=OK)
        after = await m.Status(P.StatusRequest(), timeout=5)
        r.record("status after defragment", r.msg(after))
        r.record("dbSize > 0 after defragment", after.dbSize > 0)
        h = await m.Hash(P.HashRequest(), timeout=5)
        r.record("hash answers", {"header": r.msg(h.header)})
        chunks = [c async for c in m.Snapshot(P.SnapshotRequest(), timeout=10)]
        r.record(
            "snapshot streamed bytes, last remaining_bytes 0",
            (sum(len(c.blob) for c in chunks) > 0, chunks[-1].remaining_bytes if chunks else None),
        )

    await differential(pair, script)


# --------------------------------------------------------------------------- lock and election services


async def test_lock_service(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        g = await r.call("grant", r.lease.LeaseGrant, P.LeaseGrantRequest(TTL=30), expect=OK)
        g2 = await r.call("grant 2", r.lease.LeaseGrant, P.LeaseGrantRequest(TTL=30), expect=OK)
        lid, lid2 = (g.ID if g else 0), (g2.ID if g2 else 0)
        first = await r.call(
            "lock", r.client.lock.Lock, v3lock_pb2.LockRequest(name=b"mylock", lease=lid), expect=OK
        )
        second = asyncio.ensure_future(
            r.client.lock.Lock(v3lock_pb2.LockRequest(name=b"mylock", lease=lid2), timeout=10)
        )
        await wait_count(r, b"mylock/", 2)  # the second locker has queued its key
        await asyncio.sleep(0.2)
        r.record("second locker waits", not second.done())
        await r.call("keys under lock", r.kv.Range, rng(b"mylock/", prefix_end(b"mylock/"), sort_target=P.RangeRequest.CREATE))
        await r.call(
            "unlock",
            r.client.lock.Unlock,
            v3lock_pb2.UnlockRequest(key=first.key if first else b""),
            expect=OK,
        )
        try:
            r.record("second locker acquires", r.msg(await asyncio.wait_for(second, 5)))
        except Exception as e:
            r.record("second locker acquires", f"<failed: {type(e).__name__}>")
        await r.call(
            "lock with unknown lease",
            r.client.lock.Lock,
            v3lock_pb2.LockRequest(name=b"l2", lease=r.fixed_lease(99999)),
            expect=ERR,
        )
        await r.call("unlock unknown key", r.client.lock.Unlock, v3lock_pb2.UnlockRequest(key=b"nope"))

    await differential(pair, script)


async def test_election_service(pair: ServerPair) -> None:
    E = v3election_pb2

    async def script(r: Run) -> None:
        el = r.client.election
        await r.call("leader with no candidates", el.Leader, E.LeaderRequest(name=b"el"), expect=ERR)
        g = await r.call("grant", r.lease.LeaseGrant, P.LeaseGrantRequest(TTL=30), expect=OK)
        g2 = await r.call("grant 2", r.lease.LeaseGrant, P.LeaseGrantRequest(TTL=30), expect=OK)
        lid, lid2 = (g.ID if g else 0), (g2.ID if g2 else 0)
        c1 = await r.call(
            "campaign 1", el.Campaign, E.CampaignRequest(name=b"el", lease=lid, value=b"p1"), expect=OK
        )
        second = asyncio.ensure_future(
            el.Campaign(E.CampaignRequest(name=b"el", lease=lid2, value=b"p2"), timeout=10)
        )
        await wait_count(r, b"el/", 2)  # the second candidate has queued its key
        await asyncio.sleep(0.2)
        r.record("second candidate waits", not second.done())
        await r.call("leader", el.Leader, E.LeaderRequest(name=b"el"), expect=OK)
        leader = c1.leader if c1 else E.LeaderKey()
        await r.call("proclaim", el.Proclaim, E.ProclaimRequest(leader=leader, value=b"p1-new"), expect=OK)
        await r.call("leader after proclaim", el.Leader, E.LeaderRequest(name=b"el"), expect=OK)
        await r.call(
            "proclaim not leader",
            el.Proclaim,
            E.ProclaimRequest(leader=E.LeaderKey(name=b"el", key=b"el/bogus", rev=1, lease=lid), value=b"x"),
            expect=ERR,
        )
        await r.call("resign", el.Resign, E.ResignRequest(leader=leader), expect=OK)
        try:
            r.record("second candidate elected", r.msg(await asyncio.wait_for(second, 5)))
        except Exception as e:
            r.record("second candidate elected", f"<failed: {type(e).__name__}>")
        await r.call("leader after resign", el.Leader, E.LeaderRequest(name=b"el"), expect=OK)

    await differential(pair, script)
