"""Differential watch tests: the same watch scripts on Debian's etcd 3.4 and on gifee.

Compared: the flattened event sequence (type, key, value, create/mod revision, version,
lease, prev_kv) and the control responses (created / canceled / compact_revision /
cancel_reason / watch_id / header revision). Not compared: how events are batched into
responses, and the interleaving of different watchers on one stream (grouped per watch).
"""

from __future__ import annotations

from typing import Any

import pytest

from gifee.store.proto import rpc_pb2
from tests.store.reference import Expect, Run, ServerPair, WatchStream, differential

pytestmark = [pytest.mark.reference, pytest.mark.timeout(90)]

P = rpc_pb2
NOPUT = rpc_pb2.WatchCreateRequest.NOPUT
NODELETE = rpc_pb2.WatchCreateRequest.NODELETE
OK = Expect.OK


def prefix_end(prefix: bytes) -> bytes:
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


async def put(r: Run, key: bytes, value: bytes = b"v", **kw: Any) -> None:
    await r.call(f"put {key!r}={value!r}", r.kv.Put, P.PutRequest(key=key, value=value, **kw), expect=OK)


async def delete(r: Run, key: bytes, range_end: bytes = b"") -> None:
    await r.call(
        f"delete {key!r}..{range_end!r}",
        r.kv.DeleteRange,
        P.DeleteRangeRequest(key=key, range_end=range_end),
        expect=OK,
    )


def count_control(rs: list[rpc_pb2.WatchResponse]) -> int:
    return sum(1 for x in rs if not x.events)


async def finish(r: Run, w: WatchStream, label: str = "watch", events: int = 0, quiet: float = 0.3) -> None:
    """Wait for `events` events, then for quiet, record the flattened stream and close it."""
    if events:
        await w.wait_events(events)
    await w.settle(quiet)
    r.record(label, w.flatten())
    await w.close()


async def test_watch_put_delete_prev_kv(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        w = WatchStream(r)
        w.create(key=b"a", prev_kv=True)
        w.create(key=b"a")
        await w.wait_responses(2)
        await put(r, b"a", b"1")
        await put(r, b"b", b"ignored")
        await put(r, b"a", b"2")
        await delete(r, b"a")
        await delete(r, b"a")  # deleting nothing: no event
        await put(r, b"a", b"3")
        await put(r, b"ab", b"not-a")
        await finish(r, w, events=8)

    await differential(pair, script)


async def test_watch_txn_several_ops_one_revision(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        await put(r, b"t/0", b"old")
        await put(r, b"t/5", b"old")
        w = WatchStream(r)
        w.create(key=b"t/", range_end=prefix_end(b"t/"), prev_kv=True)
        await w.wait_responses(1)
        ops = [
            P.RequestOp(request_put=P.PutRequest(key=b"t/2", value=b"x")),
            P.RequestOp(request_delete_range=P.DeleteRangeRequest(key=b"t/0")),
            P.RequestOp(request_put=P.PutRequest(key=b"t/1", value=b"y")),
            P.RequestOp(request_put=P.PutRequest(key=b"u/1", value=b"outside")),
            P.RequestOp(request_put=P.PutRequest(key=b"t/5", value=b"new")),
            P.RequestOp(request_range=P.RangeRequest(key=b"t/1")),
        ]
        await r.call("txn", r.kv.Txn, P.TxnRequest(success=ops), expect=OK)
        await r.call(
            "txn delete range",
            r.kv.Txn,
            P.TxnRequest(
                success=[
                    P.RequestOp(
                        request_delete_range=P.DeleteRangeRequest(key=b"t/", range_end=prefix_end(b"t/"))
                    )
                ]
            ),
            expect=OK,
        )
        await finish(r, w, events=4 + 3)

    await differential(pair, script)


async def test_watch_filters(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        w = WatchStream(r)
        w.create(key=b"f", filters=[NOPUT])
        w.create(key=b"f", filters=[NODELETE], prev_kv=True)
        w.create(key=b"f", filters=[NOPUT, NODELETE])
        await w.wait_responses(3)
        await put(r, b"f", b"1")
        await put(r, b"f", b"2")
        await delete(r, b"f")
        await put(r, b"f", b"3")
        await delete(r, b"f")
        await finish(r, w, events=5)

    await differential(pair, script)


async def test_watch_prefix_and_ranges(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        w = WatchStream(r)
        w.create(key=b"p/", range_end=prefix_end(b"p/"))  # 0: prefix
        w.create(key=b"b", range_end=b"d")  # 1: [b, d)
        w.create(key=b"c", range_end=b"\0")  # 2: from c
        w.create(key=b"\0", range_end=b"\0")  # 3: everything
        w.create(key=b"\xff", range_end=prefix_end(b"\xff"))  # 4: prefix \xff
        await w.wait_responses(5)
        for k in (b"a", b"b", b"bz", b"c", b"d", b"p", b"p/", b"p/x", b"q", b"\xff\x01"):
            await put(r, k, b"v-" + k)
        await delete(r, b"b", b"p/0")
        await finish(r, w, events=23 + 14)

    await differential(pair, script)


async def test_watch_start_revision_catch_up(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        await put(r, b"c", b"1")  # 2
        await put(r, b"c", b"2")  # 3
        await put(r, b"d", b"1")  # 4
        await delete(r, b"c")  # 5
        await put(r, b"c", b"3")  # 6
        w = WatchStream(r)
        w.create(key=b"c", start_revision=2, prev_kv=True)  # 0: full history of c
        w.create(key=b"\0", range_end=b"\0", start_revision=4)  # 1: from 4
        w.create(key=b"c", start_revision=6)  # 2: current revision
        w.create(key=b"c", start_revision=7)  # 3: next revision
        w.create(key=b"c", start_revision=9)  # 4: future revision
        w.create(key=b"c", start_revision=1)  # 5: from the very beginning
        await w.wait_responses(6)
        await w.wait_events(12)
        await put(r, b"c", b"4")  # 7
        await put(r, b"c", b"5")  # 8
        await put(r, b"c", b"6")  # 9
        await finish(r, w, events=12 + 16)

    await differential(pair, script)


async def test_watch_compacted_start_revision(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        for i in range(6):
            await put(r, b"k", b"%d" % i)  # revisions 2..7
        await r.call("compact at 5", r.kv.Compact, P.CompactionRequest(revision=5), expect=OK)
        w = WatchStream(r)
        w.create(key=b"k", start_revision=3)  # compacted
        await w.wait_for(lambda rs: any(x.canceled for x in rs))
        await w.settle(0.2)
        r.record("compacted watch", w.flatten())
        w.create(key=b"k", start_revision=5)  # exactly the compact revision: allowed
        w.create(key=b"k", start_revision=6, prev_kv=True)
        await w.wait_events(3 + 2)
        await put(r, b"k", b"after")
        await finish(r, w, events=3 + 2 + 2)

    await differential(pair, script)


async def test_watch_cancel(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        w = WatchStream(r)
        w.create(key=b"x")
        w.create(key=b"x", prev_kv=True)
        await w.wait_responses(2)
        await put(r, b"x", b"1")
        await w.wait_events(2)
        w.cancel(0)
        await w.wait_for(lambda rs: any(x.canceled for x in rs))
        await put(r, b"x", b"2")  # only watch 1 sees it
        await w.wait_events(3)
        w.cancel(42)  # unknown id
        w.cancel(0)  # already canceled
        await w.settle(0.4)
        w.cancel(1)
        await w.wait_for(lambda rs: sum(x.canceled for x in rs) >= 2)
        await put(r, b"x", b"3")  # nobody sees it
        await finish(r, w, quiet=0.4)

    await differential(pair, script)


async def test_watch_progress_request(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        await put(r, b"other", b"1")
        w = WatchStream(r)
        w.create(key=b"pr")
        await w.wait_responses(1)
        await put(r, b"unwatched", b"1")
        await put(r, b"unwatched", b"2")
        w.progress()
        await w.wait_responses(2)
        await put(r, b"pr", b"x")
        await w.wait_events(1)
        w.progress()
        await finish(r, w, quiet=0.4)
        empty = WatchStream(r)  # a progress request on a stream without watchers
        empty.progress()
        await finish(r, empty, "progress on a stream without watchers", quiet=0.4)

    await differential(pair, script)


async def test_watch_client_chosen_and_duplicate_ids(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        w = WatchStream(r)
        w.create(key=b"i", watch_id=7)
        await w.wait_responses(1)
        w.create(key=b"i")  # server picks an id
        await w.wait_responses(2)
        w.create(key=b"i", watch_id=7)  # duplicate
        await w.wait_responses(3)
        w.create(key=b"i", watch_id=1)
        await w.wait_responses(4)
        w.create(key=b"i")  # server picks the next free id
        await w.wait_responses(5)
        await put(r, b"i", b"1")
        await finish(r, w, events=4)

    await differential(pair, script)


async def test_watch_two_streams_and_many_events(pair: ServerPair) -> None:
    async def script(r: Run) -> None:
        w1, w2 = WatchStream(r), WatchStream(r)
        w1.create(key=b"m/", range_end=prefix_end(b"m/"))
        w2.create(key=b"m/5")
        await w1.wait_responses(1)
        await w2.wait_responses(1)
        ops = [P.RequestOp(request_put=P.PutRequest(key=b"m/%d" % i, value=b"x" * i)) for i in range(20)]
        await r.call("txn with 20 puts", r.kv.Txn, P.TxnRequest(success=ops), expect=OK)
        for i in range(30):
            await put(r, b"m/%d" % (i % 7), b"round-%d" % i)
        await r.call(
            "delete all m/",
            r.kv.DeleteRange,
            P.DeleteRangeRequest(key=b"m/", range_end=prefix_end(b"m/")),
            expect=OK,
        )
        await finish(r, w1, "stream 1", events=20 + 30 + 20)
        await finish(r, w2, "stream 2", events=6)

    await differential(pair, script)


async def test_watch_survives_client_half_close(pair: ServerPair) -> None:
    """A client that closes its sending side keeps its watches (etcd waits for the stream to end)."""

    async def script(r: Run) -> None:
        w = WatchStream(r)
        w.create(key=b"hc/", range_end=prefix_end(b"hc/"))
        await w.wait_responses(1)
        w.requests.put_nowait(None)  # half-close: no more requests from this client
        await put(r, b"hc/1", b"after-half-close")
        await delete(r, b"hc/1")
        await finish(r, w, events=2)
        r.record("stream error", None if w.error is None else w.error.code())

    await differential(pair, script)
