"""Jepsen-style fault tests: clusters in network namespaces, concurrent clients, a nemesis, then checkers.

Each test starts a gifee cluster whose members live in network namespaces of their own
(`tests/store/cluster.py`; root only, else skipped), runs concurrent asyncio gRPC clients that
record every call -- invocation and return time on one clock, outcome ok / failed definitely /
unknown (timeout, lost connection) -- doing puts, linearizable gets, deletes and compare-and-swap
txns on a few keys, plus watchers that follow every key and reconnect from the revision after the
last one they saw. Meanwhile a nemesis injects faults for a bounded time: SIGKILL and restart,
SIGSTOP/SIGCONT, partitions (minority, majority, leader isolated, bridge, one-way), member removal
and re-adding, a slow disk. Then everything is healed and the test checks:

* the KV history is linearizable (`gifee.verify.linearizability` with the etcd KV model);
* every member's full watch history from revision 1 is the same (the committed history), and
  every watcher's stream is ordered, unique, atomic, reliable and resumable against it
  (`gifee.verify.watch_history`);
* the committed history agrees with the clients: every acknowledged write is in it at the revision
  its response named, and nothing is in it that no client wrote;
* every member converged (same applied index, revision and HashKV) and lists the same members;
* progress: writes succeeded, also after the faults were healed.

`test_checkers_catch_anomalies` shows these checks are not vacuous here: serializable reads from
an isolated member (a deliberately broken client configuration) make the same checker report a
stale read, and a stale read / lost watch event injected into a real recorded history is caught.

GIFEE_FAULT_SEED picks the nemesis's random choices (default: fresh, printed on failure);
GIFEE_FAULT_SECONDS the fault phase of each test (default 30).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import grpc
import pytest

from gifee.store.proto import kv_pb2, rpc_pb2, rpc_pb2_grpc
from gifee.verify.kv_model import Cas, Delete, Get, KvInput, KvModel, KvOperation, KvOutput, Put
from gifee.verify.linearizability import Operation, Verdict, check
from gifee.verify.watch_history import (
    Event,
    EventType,
    Property,
    WatcherLog,
    WatchResponse,
    check_watchers,
)
from tests.store.cluster import (
    GRPC_OPTIONS,
    NETNS_PREFIX,
    Cluster,
    Host,
    Member,
    NamespaceNetwork,
    cleanup_stale,
    make_clusters,
    netns_unavailable,
    run,
    wait_for,
)

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(netns_unavailable() is not None, reason=netns_unavailable() or ""),
]

SEED = int(os.environ.get("GIFEE_FAULT_SEED", "0")) or random.randrange(1, 2**31)
FAULT_SECONDS = float(os.environ.get("GIFEE_FAULT_SECONDS", "30"))
KEYS = [b"k%d" % i for i in range(5)]
WATCH_KEY, WATCH_END = b"k", b"l"  # every workload key
OP_TIMEOUT = 2.5
WATCH_IDLE = 5.0  # a watch stream silent this long is abandoned for another member
CHECK_TIMEOUT = 120.0
MAX_CALLS = 40_000  # per test, during the faults: bounds the checkers' work whatever the machine's speed
CALLS_AFTER_HEALING = 3_000  # and this many more once healed, so that progress after the faults shows

MakeCluster = Callable[..., Cluster]


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[MakeCluster]:
    with make_clusters(tmp_path) as make:
        yield make


# --------------------------------------------------------------------------- recording clients

OK, FAILED, UNKNOWN = "ok", "failed", "unknown"


@dataclasses.dataclass
class Call:
    """One client call as recorded: what, where, when, and how it ended."""

    client: int
    input: KvInput
    member: str
    call_time: float
    return_time: float | None = None
    output: KvOutput | None = None
    outcome: str = "pending"
    revision: int = 0  # the response header's revision (ok writes)
    error: str = ""


def definitely_failed(e: grpc.aio.AioRpcError) -> bool:
    """True only when the request never left the client: no member can have applied it."""
    return e.code() == grpc.StatusCode.UNAVAILABLE and "failed to connect to all addresses" in (
        e.details() or ""
    )


class Workload:
    """Concurrent clients and watchers against a cluster; every call and every watch response recorded."""

    def __init__(self, cluster: Cluster, rng: random.Random, *, clients: int, watchers: int) -> None:
        self.cluster = cluster
        self.rng = rng
        self.n_clients = clients
        self.n_watchers = watchers
        self.calls: list[Call] = []
        self.watchers: list[WatcherRecord] = []
        self.stop = asyncio.Event()
        self.channels: dict[str, grpc.aio.Channel] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.values = 0
        self.limit = MAX_CALLS  # no new calls once this many were made
        self.serializable_clients: dict[int, Member] = {}  # client id -> the member it reads from

    def channel(self, endpoint: str) -> grpc.aio.Channel:
        ch = self.channels.get(endpoint)
        if ch is None:
            ch = grpc.aio.insecure_channel(endpoint, options=GRPC_OPTIONS)
            self.channels[endpoint] = ch
        return ch

    def endpoints(self) -> list[tuple[str, str]]:
        return [(m.name, m.endpoint) for m in list(self.cluster.active)]

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for cid in range(self.n_clients):
            self.tasks.append(loop.create_task(self.client(cid), name=f"client-{cid}"))
        for wid in range(self.n_watchers):
            record = WatcherRecord(f"w{wid}")
            self.watchers.append(record)
            self.tasks.append(loop.create_task(self.watch(record, wid), name=f"watcher-{wid}"))

    def add_serializable_reader(self, cid: int, member: Member) -> None:
        """A client that only reads, serializably, from one member (a deliberately unsafe reader)."""
        self.serializable_clients[cid] = member
        self.tasks.append(asyncio.get_running_loop().create_task(self.client(cid), name=f"client-{cid}"))

    async def stop_clients(self) -> None:
        self.stop.set()
        client_tasks = [t for t in self.tasks if t.get_name().startswith("client")]
        await asyncio.wait(client_tasks, timeout=OP_TIMEOUT + 5)
        self.raise_task_errors()

    def raise_task_errors(self) -> None:
        """A client or watcher that died of something else than an RPC error is a bug of the test."""
        for t in self.tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                raise AssertionError(f"task {t.get_name()} failed") from t.exception()

    async def close(self) -> None:
        self.stop.set()
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(BaseException):
                await t
        for ch in self.channels.values():
            await ch.close()

    # -- KV clients
    def next_input(self, known: dict[bytes, bytes | None]) -> KvInput:
        rng = self.rng
        key = rng.choice(KEYS)
        self.values += 1
        value = b"v%d" % self.values
        roll = rng.random()
        if roll < 0.35:
            return Get(key)
        if roll < 0.65:
            return Put(key, value)
        if roll < 0.75:
            return Delete(key)
        expected = (
            known.get(key)
            if rng.random() < 0.7
            else rng.choice([None, b"v%d" % rng.randrange(1, self.values + 1)])
        )
        return Cas(key, expected, value)

    async def client(self, cid: int) -> None:
        pinned = self.serializable_clients.get(cid)
        known: dict[bytes, bytes | None] = {}
        position = cid
        while not self.stop.is_set():
            if len(self.calls) >= self.limit:
                await asyncio.sleep(0.1)
                continue
            targets = self.endpoints()
            if pinned is not None:
                name, endpoint = pinned.name, pinned.endpoint
                op: KvInput = Get(self.rng.choice(KEYS))
            else:
                name, endpoint = targets[position % len(targets)]
                op = self.next_input(known)
            call = Call(cid, op, name, time.monotonic())
            self.calls.append(call)
            try:
                call.output, call.revision = await execute(
                    rpc_pb2_grpc.KVStub(self.channel(endpoint)), op, serializable=pinned is not None
                )
                call.return_time = time.monotonic()
                call.outcome = OK
                remember(known, op, call.output)
            except grpc.aio.AioRpcError as e:
                call.error = f"{e.code().name}: {e.details()}"
                call.outcome = FAILED if isinstance(op, Get) or definitely_failed(e) else UNKNOWN
                position += 1 + self.rng.randrange(len(targets))  # try another member
                await asyncio.sleep(0.05 + 0.1 * self.rng.random())

    # -- watchers
    async def watch(self, record: WatcherRecord, wid: int) -> None:
        position = wid
        while not self.stop.is_set() or not record.done:
            targets = self.endpoints()
            name, endpoint = targets[position % len(targets)]
            position += 1
            try:
                await record.session(self.channel(endpoint), name)
            except (grpc.aio.AioRpcError, TimeoutError) as e:
                record.errors[type(e).__name__ if isinstance(e, TimeoutError) else e.code().name] += 1
            await asyncio.sleep(0.1)


def remember(known: dict[bytes, bytes | None], op: KvInput, output: KvOutput | None) -> None:
    """A client's idea of each key's value, for CAS calls that are likely to succeed."""
    if isinstance(op, Get) and isinstance(output, tuple):
        known[op.key] = output[0]
    elif isinstance(op, Put) or (isinstance(op, Cas) and output is True):
        known[op.key] = op.value if isinstance(op, Put) else op.new_value
    elif isinstance(op, Delete):
        known[op.key] = None


async def execute(
    kv: rpc_pb2_grpc.KVStub, op: KvInput, *, serializable: bool = False
) -> tuple[KvOutput, int]:
    """One call; returns (output for the model, response revision)."""
    if isinstance(op, Get):
        rr = await kv.Range(rpc_pb2.RangeRequest(key=op.key, serializable=serializable), timeout=OP_TIMEOUT)
        out: KvOutput = (rr.kvs[0].value, int(rr.kvs[0].version)) if rr.kvs else (None, 0)
        return out, int(rr.header.revision)
    if isinstance(op, Put):
        pr = await kv.Put(rpc_pb2.PutRequest(key=op.key, value=op.value), timeout=OP_TIMEOUT)
        return True, int(pr.header.revision)
    if isinstance(op, Delete):
        dr = await kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=op.key), timeout=OP_TIMEOUT)
        return int(dr.deleted), int(dr.header.revision)
    if op.expected is None:
        cmp = rpc_pb2.Compare(
            key=op.key, target=rpc_pb2.Compare.VERSION, result=rpc_pb2.Compare.EQUAL, version=0
        )
    else:
        cmp = rpc_pb2.Compare(
            key=op.key, target=rpc_pb2.Compare.VALUE, result=rpc_pb2.Compare.EQUAL, value=op.expected
        )
    txn = rpc_pb2.TxnRequest(
        compare=[cmp],
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=op.key, value=op.new_value))],
    )
    tr = await kv.Txn(txn, timeout=OP_TIMEOUT)
    return bool(tr.succeeded), int(tr.header.revision)


def to_event(ev: kv_pb2.Event) -> Event:
    if ev.type == kv_pb2.Event.DELETE:
        return Event(int(ev.kv.mod_revision), ev.kv.key, EventType.DELETE)
    return Event(int(ev.kv.mod_revision), ev.kv.key, EventType.PUT, ev.kv.value)


@dataclasses.dataclass
class WatcherRecord:
    """One logical watcher: its sessions' responses in order; each session resumes after the last event."""

    name: str
    responses: list[WatchResponse] = dataclasses.field(default_factory=list)
    last_seen: int = 0
    sessions: int = 0
    target: int = 0  # once set (after the faults), the revision to reach before stopping
    errors: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    members: list[str] = dataclasses.field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.target > 0 and self.last_seen >= self.target

    async def session(self, channel: grpc.aio.Channel, member: str) -> None:
        self.sessions += 1
        self.members.append(member)
        call = rpc_pb2_grpc.WatchStub(channel).Watch()
        try:
            create = rpc_pb2.WatchCreateRequest(
                key=WATCH_KEY, range_end=WATCH_END, start_revision=self.last_seen + 1
            )
            await call.write(rpc_pb2.WatchRequest(create_request=create))
            while not self.done:
                resp = await asyncio.wait_for(call.read(), WATCH_IDLE)
                if resp is grpc.aio.EOF:
                    self.errors["eof"] += 1
                    return
                assert isinstance(resp, rpc_pb2.WatchResponse)
                if resp.compact_revision:
                    self.responses.append(WatchResponse((), int(resp.compact_revision)))
                    self.errors["compacted"] += 1
                    return
                if resp.canceled:
                    self.errors["canceled: " + resp.cancel_reason] += 1
                    return
                if resp.events:
                    events = [to_event(e) for e in resp.events]
                    self.responses.append(WatchResponse(tuple(events)))
                    self.last_seen = max(self.last_seen, max(e.revision for e in events))
        finally:
            call.cancel()

    def log(self) -> WatcherLog:
        return WatcherLog(WATCH_KEY, WATCH_END, 1, list(self.responses), name=self.name)


async def read_history(endpoint: str, upto: int, timeout: float = 30.0) -> list[Event]:
    """Every event on the workload keys from revision 1 to upto, as one member serves them."""
    events: list[Event] = []
    async with grpc.aio.insecure_channel(endpoint, options=GRPC_OPTIONS) as ch:
        call = rpc_pb2_grpc.WatchStub(ch).Watch()
        create = rpc_pb2.WatchCreateRequest(key=WATCH_KEY, range_end=WATCH_END, start_revision=1)
        await call.write(rpc_pb2.WatchRequest(create_request=create))
        try:
            async with asyncio.timeout(timeout):
                while not events or events[-1].revision < upto:
                    resp = await call.read()
                    assert resp is not grpc.aio.EOF, f"watch from {endpoint} ended"
                    assert isinstance(resp, rpc_pb2.WatchResponse)
                    assert not resp.canceled, resp
                    events.extend(to_event(e) for e in resp.events)
        finally:
            call.cancel()
    return events


# --------------------------------------------------------------------------- the nemesis


Fault = str | Callable[["Nemesis"], None]


class Nemesis:
    """Faults, one at a time, each healed before the next; runs in a thread (the harness blocks)."""

    def __init__(self, cluster: Cluster, rng: random.Random) -> None:
        self.cluster = cluster
        self.rng = rng
        self.log: list[str] = []
        self.started = time.monotonic()
        self.counts: collections.Counter[str] = collections.Counter()
        self.stop = threading.Event()

    def note(self, text: str) -> None:
        self.log.append(f"{time.monotonic() - self.started:7.2f}s {text}")

    def hold(self, seconds: float) -> None:
        self.stop.wait(seconds)

    def leader(self, timeout: float = 15.0) -> Member:
        """The leader most serving members name (random member if none is agreed in time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.cluster.states()
            named = collections.Counter(s.leader for s in states if s.leader)
            for lid, _ in named.most_common():
                for s in states:
                    if s.id == lid and s.leader == lid:
                        return s.member
            time.sleep(0.2)
        self.note("no agreed leader; picking a random member")
        return self.rng.choice(self.cluster.serving)

    def others(self, member: Member) -> list[Member]:
        return [m for m in self.cluster.active if m is not member]

    def run(self, faults: Sequence[Fault], budget: float, settle: float = 1.5) -> None:
        """Run the faults in the given order (cycling) until budget seconds have passed.

        A fault is the name of a fault_* method or a function of the nemesis."""
        deadline = time.monotonic() + budget
        i = 0
        while time.monotonic() < deadline and not self.stop.is_set():
            fault = faults[i % len(faults)]
            i += 1
            name = fault if isinstance(fault, str) else fault.__name__
            self.note(f"fault {name}")
            if isinstance(fault, str):
                getattr(self, "fault_" + fault)()
            else:
                fault(self)
            self.counts[name] += 1
            self.heal()
            self.hold(settle)
        self.note("faults over")

    def heal(self) -> None:
        c = self.cluster
        c.heal()
        for m in c.active:
            c.fast_disk(m)
            if m.paused:
                m.resume()
        for m in c.active:
            if not m.running:
                self.note(f"restart {m.name}")
                m.restart()

    # -- process faults
    def fault_kill_leader(self) -> None:
        victim = self.leader()
        self.note(f"SIGKILL leader {victim.name}")
        victim.crash()
        self.hold(self.rng.uniform(1.0, 3.0))
        self.note(f"restart {victim.name}")
        victim.restart()

    def fault_kill_follower(self) -> None:
        victim = self.rng.choice(self.others(self.leader()))
        self.note(f"SIGKILL follower {victim.name}")
        victim.crash()
        self.hold(self.rng.uniform(0.5, 2.0))
        victim.restart()

    def fault_kill_majority(self) -> None:
        members = list(self.cluster.active)
        victims = self.rng.sample(members, len(members) // 2 + 1)
        self.note(f"SIGKILL majority {[m.name for m in victims]}")
        for m in victims:
            m.crash()
        self.hold(self.rng.uniform(1.0, 2.5))
        for m in victims:
            m.launch()
        for m in victims:
            m.wait_ready()

    def fault_pause_leader(self) -> None:
        victim = self.leader()
        self.note(f"SIGSTOP leader {victim.name}")
        victim.pause()
        self.hold(self.rng.uniform(2.0, 4.0))
        self.note(f"SIGCONT {victim.name}")
        victim.resume()

    def fault_pause_some(self) -> None:
        members = list(self.cluster.active)
        victims = self.rng.sample(members, self.rng.randint(1, (len(members) - 1) // 2 + 1))
        self.note(f"SIGSTOP {[m.name for m in victims]}")
        for m in victims:
            m.pause()
        self.hold(self.rng.uniform(1.5, 3.5))
        for m in victims:
            m.resume()

    # -- network faults
    def fault_isolate_leader(self) -> None:
        victim = self.leader()
        self.note(f"isolate leader {victim.name}")
        self.cluster.isolate(victim)
        self.hold(self.rng.uniform(3.0, 5.0))

    def fault_partition_minority(self) -> None:
        members = list(self.cluster.active)
        minority = self.rng.sample(members, (len(members) - 1) // 2)
        self.note(f"partition minority {[m.name for m in minority]}")
        self.cluster.partition(minority)
        self.hold(self.rng.uniform(3.0, 5.0))

    def fault_partition_leader_in_minority(self) -> None:
        leader = self.leader()
        members = list(self.cluster.active)
        size = (len(members) - 1) // 2
        minority = [leader, *self.rng.sample(self.others(leader), size - 1)]
        self.note(f"partition, leader {leader.name} in minority {[m.name for m in minority]}")
        self.cluster.partition(minority)
        self.hold(self.rng.uniform(3.0, 5.0))

    def fault_bridge(self) -> None:
        """Two halves that cannot talk, and one member that talks to both (Jepsen's bridge)."""
        members = list(self.cluster.active)
        self.rng.shuffle(members)
        half = (len(members) - 1) // 2
        a, bridge, b = members[:half], members[half], members[half + 1 :]
        self.note(f"bridge {[m.name for m in a]} <- {bridge.name} -> {[m.name for m in b]}")
        self.cluster.cut((x, y) for x in a for y in b)
        self.hold(self.rng.uniform(3.0, 5.0))

    def fault_one_way(self) -> None:
        leader = self.leader()
        follower = self.rng.choice(self.others(leader))
        if self.rng.random() < 0.5:
            self.note(f"one-way: {leader.name} (leader) -> {follower.name} lost")
            self.cluster.one_way(leader, follower)
        else:
            self.note(f"one-way: {follower.name} -> {leader.name} (leader) lost")
            self.cluster.one_way(follower, leader)
        self.hold(self.rng.uniform(3.0, 5.0))

    def fault_slow_disk(self) -> None:
        if self.cluster.slow_disk_unavailable():
            self.note(f"slow disk unavailable: {self.cluster.slow_disk_unavailable()}")
            return
        victim = self.leader()
        self.note(f"slow disk (5 write IOPS) on leader {victim.name}")
        self.cluster.slow_disk(victim, 5)
        self.hold(self.rng.uniform(3.0, 5.0))
        self.cluster.fast_disk(victim)

    # -- membership
    def fault_remove_and_readd(self) -> None:
        c = self.cluster
        victim = self.rng.choice(self.others(self.leader()))
        self.note(f"member remove {victim.name} ({victim.member_id:x})")
        c.remove_member(victim)
        code = victim.wait_exit(30)
        self.note(f"{victim.name} exited with {code}")
        new = c.new_member(host=victim.host)
        c.add_member(new)
        self.note(f"member add {new.name} ({new.member_id:x}) on {new.peer_url}")
        new.start()
        self.note(f"{new.name} started")


# --------------------------------------------------------------------------- checks


def kv_history(calls: Sequence[Call]) -> list[KvOperation]:
    out: list[KvOperation] = []
    for c in calls:
        if c.outcome == OK:
            out.append(Operation(c.client, c.input, c.output, c.call_time, c.return_time))
        elif c.outcome in (UNKNOWN, "pending") and not isinstance(c.input, Get):
            out.append(Operation(c.client, c.input, None, c.call_time, None))
    return out


def summary(calls: Sequence[Call]) -> str:
    counts: collections.Counter[tuple[str, str]] = collections.Counter(
        (type(c.input).__name__, c.outcome) for c in calls
    )
    errors = collections.Counter(c.error.split(":")[0] + ": " + c.error[-60:] for c in calls if c.error)
    lines = [f"{k} {o}: {n}" for (k, o), n in sorted(counts.items())]
    lines += [f"  {n} x {e}" for e, n in errors.most_common(8)]
    return "\n".join(lines)


def check_committed_against_clients(committed: Sequence[Event], calls: Sequence[Call]) -> list[str]:
    """Acknowledged writes are committed where their responses said; nothing committed that nobody wrote."""
    problems = []
    by_id = {(e.revision, e.key): e for e in committed}
    written: dict[bytes, set[bytes]] = collections.defaultdict(set)
    for c in calls:
        op = c.input
        if isinstance(op, Put):
            written[op.key].add(op.value)
        elif isinstance(op, Cas):
            written[op.key].add(op.new_value)
        if c.outcome != OK:
            continue
        if isinstance(op, Put) or (isinstance(op, Cas) and c.output is True):
            value = op.value if isinstance(op, Put) else op.new_value
            e = by_id.get((c.revision, op.key))
            if e is None or e.type is not EventType.PUT or e.value != value:
                problems.append(f"acknowledged {op} at revision {c.revision} but committed: {e}")
        elif isinstance(op, Delete) and c.output == 1:
            e = by_id.get((c.revision, op.key))
            if e is None or e.type is not EventType.DELETE:
                problems.append(f"acknowledged {op} at revision {c.revision} but committed: {e}")
    seen: set[tuple[bytes, bytes]] = set()
    for e in committed:
        if e.type is EventType.PUT:
            if e.value not in written[e.key]:
                problems.append(f"committed {e} was never written by a client")
            if (e.key, e.value) in seen:
                problems.append(f"committed {e}: the value was put twice")
            seen.add((e.key, e.value))
    return problems


@dataclasses.dataclass
class Outcome:
    calls: list[Call]
    committed: list[Event]
    watchers: list[WatcherRecord]
    nemesis: Nemesis
    healed_at: float
    revision: int

    def report(self, cluster: Cluster) -> str:
        return (
            f"seed {SEED}\n--- nemesis ---\n" + "\n".join(self.nemesis.log) + "\n--- calls ---\n"
            f"{summary(self.calls)}\n--- watchers ---\n"
            + "\n".join(
                f"{w.name}: {len(w.responses)} responses, {w.sessions} sessions on {w.members[-6:]}, "
                f"last seen {w.last_seen}, {dict(w.errors)}"
                for w in self.watchers
            )
            + "\n--- snapshots installed ---\n"
            + ", ".join(f"{m.name}: {m.log_text().count('installed snapshot')}" for m in cluster.members)
            + "\n"
            + cluster.logs(12)
        )


async def run_workload(
    cluster: Cluster,
    faults: Sequence[Fault],
    *,
    clients: int,
    watchers: int,
    budget: float = FAULT_SECONDS,
    warmup: float = 2.0,
    after: float = 3.0,
    setup: Callable[[Workload], None] | None = None,
) -> Outcome:
    """Workload + nemesis, then heal, let the cluster work again, collect everything."""
    rng = random.Random(SEED)
    nemesis = Nemesis(cluster, random.Random(SEED + 1))
    work = Workload(cluster, rng, clients=clients, watchers=watchers)
    work.start()
    if setup is not None:
        setup(work)
    try:
        await asyncio.sleep(warmup)
        try:
            await asyncio.to_thread(nemesis.run, faults, budget)
        finally:
            nemesis.stop.set()
            await asyncio.to_thread(nemesis.heal)
        await asyncio.to_thread(cluster.leader, None, 60.0)
        healed_at = time.monotonic()
        work.limit = len(work.calls) + CALLS_AFTER_HEALING
        nemesis.note(f"healed, leader agreed; {len(work.calls)} calls so far")
        await asyncio.sleep(after)
        await work.stop_clients()
        revision = await asyncio.to_thread(cluster.wait_converged, None, 60.0)
        nemesis.note(f"converged at revision {revision}")
        # Final reads on every member, part of the checked history.
        for m in cluster.active:
            kv = rpc_pb2_grpc.KVStub(work.channel(m.endpoint))
            for key in KEYS:
                for _ in range(5):
                    call = Call(1000, Get(key), m.name, time.monotonic())
                    work.calls.append(call)
                    try:
                        call.output, call.revision = await execute(kv, call.input)
                        call.return_time, call.outcome = time.monotonic(), OK
                        break
                    except grpc.aio.AioRpcError as e:
                        call.outcome, call.error = FAILED, f"{e.code().name}: {e.details()}"
                        await asyncio.sleep(0.5)
        for w in work.watchers:
            w.target = revision

        def caught_up() -> bool:
            work.raise_task_errors()
            return all(w.done for w in work.watchers)

        await wait_async("the watchers to catch up", caught_up, 40)
        histories = [await read_history(m.endpoint, revision) for m in cluster.active]
        for m, h in zip(cluster.active, histories, strict=True):
            assert h == histories[0], f"{m.name}'s history differs from {cluster.active[0].name}'s"
        return Outcome(work.calls, histories[0], work.watchers, nemesis, healed_at, revision)
    except BaseException:
        print(
            f"seed {SEED}\n--- nemesis ---\n"
            + "\n".join(nemesis.log)
            + "\n--- calls ---\n"
            + summary(work.calls)
        )
        print(cluster.logs(20))
        raise
    finally:
        await work.close()


async def wait_async(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.2)


def assert_all_good(cluster: Cluster, out: Outcome) -> None:
    report = out.report(cluster)
    print(report)
    # Progress: writes went through, also once the faults were healed.
    ok_writes = [c for c in out.calls if c.outcome == OK and not isinstance(c.input, Get)]
    assert len(ok_writes) >= 50, f"too little progress\n{report}"
    assert any(c.call_time >= out.healed_at for c in ok_writes), f"no write succeeded after healing\n{report}"
    # The KV history is linearizable.
    history = kv_history(out.calls)
    started = time.monotonic()
    result = check(KvModel(), history, timeout=CHECK_TIMEOUT)
    print(
        f"linearizability: {result.explain()}, {len(history)} operations, {time.monotonic() - started:.1f}s"
    )
    assert result.verdict is Verdict.OK, f"{result.explain()}\n{report}"
    # Watches.
    started = time.monotonic()
    violations = check_watchers(out.committed, [w.log() for w in out.watchers])
    print(
        f"watches: {len(violations)} violations, {len(out.committed)} events, {time.monotonic() - started:.1f}s"
    )
    assert not violations, "\n".join(map(str, violations)) + "\n" + report
    assert all(w.last_seen == out.revision for w in out.watchers)
    problems = check_committed_against_clients(out.committed, out.calls)
    assert not problems, "\n".join(problems[:20]) + "\n" + report
    # The members agree on data and membership.
    active = cluster.active
    assert all(m.running for m in active)
    cluster.wait_converged(active)
    expected = sorted(m.member_id for m in active)
    for m in active:
        assert sorted(int(x.ID) for x in cluster.member_list(m)) == expected, m


# --------------------------------------------------------------------------- tests


async def test_three_members_process_faults(clusters: MakeCluster) -> None:
    # Frequent snapshots: members that fell behind or were re-added catch up from one.
    c = clusters(3, network="netns", snapshot_count=300)
    c.start()
    out = await run_workload(
        c,
        ["kill_leader", "pause_leader", "remove_and_readd", "kill_follower", "pause_some", "kill_majority"],
        clients=6,
        watchers=3,
    )
    assert_all_good(c, out)


async def test_three_members_network_faults(clusters: MakeCluster) -> None:
    c = clusters(3, network="netns")
    c.start()
    out = await run_workload(
        c,
        ["isolate_leader", "one_way", "partition_minority", "slow_disk", "one_way", "kill_leader"],
        clients=6,
        watchers=3,
    )
    assert_all_good(c, out)


async def test_five_members_mixed_faults(clusters: MakeCluster) -> None:
    c = clusters(5, network="netns")
    c.start()
    out = await run_workload(
        c,
        ["partition_leader_in_minority", "bridge", "pause_some", "remove_and_readd", "isolate_leader", "one_way",
         "kill_majority"],
        clients=8,
        watchers=3,
    )  # fmt: skip
    assert_all_good(c, out)


async def test_checkers_catch_anomalies(clusters: MakeCluster) -> None:
    """The same harness and checkers, fed real anomalies, say so: "zero anomalies" above means something."""
    c = clusters(3, network="netns")
    c.start()
    leader = c.leader()
    stale = c.followers(leader)[0]
    reader = 100

    def setup(work: Workload) -> None:
        # A deliberately broken client: serializable reads, always from the member that gets isolated.
        work.add_serializable_reader(reader, stale)

    def isolate_stale(nemesis: Nemesis) -> None:
        nemesis.note(f"isolate {stale.name} (serializable reads keep going to it)")
        nemesis.cluster.isolate(stale)
        nemesis.hold(5.0)

    out = await run_workload(c, [isolate_stale], clients=4, watchers=2, budget=1.0, setup=setup)
    report = out.report(c)

    # 1. The broken configuration: the checker finds the stale reads.
    history = kv_history(out.calls)
    stale_reads = [op for op in history if op.client_id == reader]
    assert len(stale_reads) > 20, report
    result = check(KvModel(), history, timeout=CHECK_TIMEOUT)
    assert result.verdict is Verdict.ILLEGAL, f"serializable reads from an isolated member passed\n{report}"
    assert result.failure is not None
    print(result.explain())

    # 2. Without that client, the very same run is linearizable.
    honest = [op for op in history if op.client_id != reader]
    result = check(KvModel(), honest, timeout=CHECK_TIMEOUT)
    assert result.verdict is Verdict.OK, f"{result.explain()}\n{report}"

    # 3. One stale read injected into the honest history is caught.
    injected = inject_stale_read(honest)
    result = check(KvModel(), injected, timeout=CHECK_TIMEOUT)
    assert result.verdict is Verdict.ILLEGAL, "an injected stale read passed"

    # 4. The watch checker: the real streams pass; one lost event, one duplicated response and one
    # changed value are each caught.
    logs = [w.log() for w in out.watchers]
    assert not check_watchers(out.committed, logs), report
    real = logs[0]
    assert len(real.responses) > 3
    middle = len(real.responses) // 2
    lost = dataclasses.replace(real, responses=[r for i, r in enumerate(real.responses) if i != middle])
    assert Property.RELIABLE in {v.property for v in check_watchers(out.committed, [lost])}
    duplicated = dataclasses.replace(real, responses=[*real.responses, real.responses[-1]])
    assert Property.UNIQUE in {v.property for v in check_watchers(out.committed, [duplicated])}
    first = real.responses[0]
    changed_event = dataclasses.replace(first.events[0], value=b"never-written", type=EventType.PUT)
    changed = dataclasses.replace(
        real, responses=[WatchResponse((changed_event, *first.events[1:])), *real.responses[1:]]
    )
    assert Property.RELIABLE in {v.property for v in check_watchers(out.committed, [changed])}
    # And the committed history's cross-check with the clients catches a forged event.
    forged = [*out.committed, Event(out.revision + 1, KEYS[0], EventType.PUT, b"forged")]
    assert check_committed_against_clients(forged, out.calls)


def inject_stale_read(history: Sequence[KvOperation]) -> list[KvOperation]:
    """history plus, after everything in it, a put of a fresh value and then a get that returns an
    older value of the same key (one some real get returned)."""
    end = max(op.return_time or op.call_time for op in history)
    for op in history:
        if op.outcome_known and isinstance(op.input, Get) and isinstance(op.output, tuple) and op.output[0]:
            key = op.input.key
            fresh: KvOperation = Operation(998, Put(key, b"fresh-value"), True, end + 0.1, end + 0.2)
            probe: KvOperation = Operation(999, Get(key), op.output, end + 1.0, end + 1.1)
            return [*history, fresh, probe]
    raise AssertionError("no get that returned a value")


# --------------------------------------------------------------------------- the harness itself

ECHO_SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 9000))
s.listen()
while True:
    c, _ = s.accept()
    c.settimeout(5)
    try:
        c.sendall(c.recv(16))
    except OSError:
        pass
    c.close()
"""

ECHO_CLIENT = """
import errno, socket, sys
s = socket.socket()
s.settimeout(1.5)
stage = "connect"
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    stage = "echo"
    s.sendall(b"ping")
    sys.exit(0 if s.recv(16) == b"ping" else 1)
except OSError as e:
    print(stage, errno.errorcode.get(e.errno or 0, "timeout"))
    sys.exit(1)
"""


def test_namespace_network_isolates_partitions_and_cleans_up() -> None:
    # What a crashed run left behind (its pid is gone) is removed by the next one.
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = f"{NETNS_PREFIX}{gone.pid}-1-h1"
    run(["ip", "netns", "add", stale])
    assert f"netns {stale}" in cleanup_stale()
    assert stale not in run(["ip", "netns", "list"])

    net = NamespaceNetwork()
    server: subprocess.Popen[bytes] | None = None
    try:
        a, b, c = (net.add_host() for _ in range(3))
        server = subprocess.Popen(
            [*a.prefix(), sys.executable, "-c", ECHO_SERVER, a.ip], start_new_session=True
        )

        def talk(src: Host, ip: str = a.ip, port: int = 9000) -> tuple[bool, str]:
            proc = subprocess.run(
                [*src.prefix(), sys.executable, "-c", ECHO_CLIENT, ip, str(port)],
                capture_output=True,
                text=True,
            )
            return proc.returncode == 0, proc.stdout.strip()

        wait_for("the echo server", lambda: talk(b)[0], 10)
        assert talk(c)[0]
        with socket.create_connection((a.ip, 9000), timeout=2) as s:  # the test process reaches hosts
            s.sendall(b"ping")
            assert s.recv(16) == b"ping"
        # Nothing else is reachable from a host: no route, so not a packet leaves.
        assert talk(b, "192.0.2.1", 80) == (False, "connect ENETUNREACH")
        assert talk(b, "1.1.1.1", 443) == (False, "connect ENETUNREACH")

        # A cut between a and b: b cannot reach a, c still can.
        for x, y in ((a, b), (b, a)):
            x.drop_from.add(y.ip)
            x.drop_to.add(y.ip)
        net.apply(a)
        net.apply(b)
        assert talk(b) == (False, "connect timeout")
        assert talk(c)[0]
        for h in (a, b):
            h.drop_from.clear()
            h.drop_to.clear()
            net.apply(h)
        assert talk(b)[0]

        # One way: b's data to a is lost, yet b's connection is set up (SYN and ACKs pass).
        a.data_from.add(b.ip)
        net.apply(a)
        assert talk(c)[0]
        assert talk(b) == (False, "echo timeout")
        assert "10.77." in net.rules(a)
    finally:
        if server is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        net.close()
    names = run(["ip", "netns", "list"])
    assert net.tag not in names
    assert net.root_link not in run(["ip", "-o", "link", "show"])
    assert f"{net.subnet}." not in run(["ip", "-4", "route", "show"])


def test_slow_disk_slows_the_member_down(clusters: MakeCluster) -> None:
    c = clusters(3, network="netns")
    reason = c.slow_disk_unavailable()
    if reason:
        pytest.skip(reason)
    c.start()
    leader = c.leader()

    def put_latency(n: int = 6) -> float:
        times = []
        for i in range(n):
            started = time.monotonic()
            c.put(b"slow/%d" % i, b"x", member=leader)
            times.append(time.monotonic() - started)
        return sorted(times)[n // 2]

    normal = put_latency()
    c.slow_disk(leader, 5)  # 5 write operations per second: each put waits for its fsync
    slow = put_latency()
    c.fast_disk(leader)
    again = put_latency()
    assert slow > 0.15 and slow > 3 * normal, (normal, slow)
    assert again < slow / 3, (normal, slow, again)
    cgroups = list(c.cgroups.values())
    assert cgroups and all(p.exists() for p in cgroups)
    c.close()
    assert not any(p.exists() for p in cgroups)
