"""The store as an asyncio object: the embedded API that the gRPC server, the
HTTP gateway and in-process users all call.

This is the shell around the pure cores. It owns the clock (lease expiry,
auto-compaction) and the order of writes. A write is proposed to Raft as a log
entry; `raftnode.RaftNode` appends it to the WAL with one fsync shared by every
write that arrived meanwhile (group commit), replicates it, and once a quorum
holds it hands it back committed; it is then applied to the state machine and
only then answered — so a reader never sees a write that a crash could lose,
and an acknowledged write survives `kill -9` of a minority.

Reads: a linearizable read first asks the leader for its commit index
(ReadIndex, batched: one round for every read that arrived together) and waits
until this member has applied that far; a serializable read is served from
the local state at once. A lone member that leads answers every read from its
applied state, which already holds every acknowledged write.

Only the leader expires leases; a keepalive that reaches a follower is
replicated as a log entry so that the leader sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import random
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.message import Message

from gifee.store import errors, snapshot
from gifee.store.errors import StoreError
from gifee.store.membership import Member, describe, request_id_of
from gifee.store.mvcc import Change
from gifee.store.proto import internal_pb2, rpc_pb2
from gifee.store.raft.core import Raft, RaftConfig, RestoredState, bootstrap_entries, decode_conf_change
from gifee.store.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    EntryType,
    HardState,
    MessageType,
    ProposalDropped,
    ReadState,
    Role,
    SnapshotMeta,
    SoftState,
)
from gifee.store.raft.types import Entry as RaftEntry
from gifee.store.raft.types import Message as RaftMessage
from gifee.store.raft.types import Snapshot as RaftSnapshot
from gifee.store.raftnode import RaftNode
from gifee.store.raftstorage import PREALLOCATE_BYTES, RaftStorage
from gifee.store.statemachine import (
    Applied,
    StateMachine,
    check_delete,
    check_put,
    check_range,
    check_txn,
    is_txn_readonly,
    txn_has_put,
)
from gifee.store.watch import Watcher, WatchHub, fragments

if TYPE_CHECKING:
    from gifee.store.peer import PeerTransport

log = logging.getLogger("gifee.store")

R = TypeVar("R", bound=Message)

ETCD_VERSION = "3.4.0"  # the etcd API level gifee speaks; clients gate features on it
MAX_REQUEST_BYTES = int(1.5 * 1024 * 1024)
DEFAULT_QUOTA_BYTES = 2 * 1024**3
WATCH_BATCH_REVISIONS = 1000
# A follower that has not heard from its leader for this many ticks (the leader sends a heartbeat
# every tick) holds new proposals instead of forwarding them. The leader is probably gone, and a
# proposal forwarded to a dead leader is lost: its client waits out its whole deadline. A held one
# goes to the next leader the moment it is known, or back to the same leader when it is heard
# again. Three ticks is two heartbeats missed in a row, which the jitter of a live leader's timer
# does not cause; no election starts before the election timeout (ten ticks with etcd's defaults).
HOLD_PROPOSALS_AFTER_SILENT_TICKS = 3


@dataclass
class StoreConfig:
    name: str = "default"
    data_dir: str = "default.etcd"
    client_urls: list[str] = field(default_factory=lambda: ["http://localhost:2379"])
    peer_urls: list[str] = field(default_factory=lambda: ["http://localhost:2380"])  # advertised
    listen_peer_urls: list[str] = field(default_factory=list)
    initial_cluster: dict[str, list[str]] | None = None  # name -> peer URLs; None: this member alone
    initial_cluster_state: str = "new"
    cluster_token: str = "etcd-cluster"
    heartbeat_ms: int = 100
    election_ms: int = 1000
    quota_bytes: int = DEFAULT_QUOTA_BYTES
    max_request_bytes: int = MAX_REQUEST_BYTES
    snapshot_count: int = 100_000
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: float = 0.0  # hours (periodic) or revisions (revision); 0 = off
    progress_notify_interval: float = 600.0
    lease_check_interval: float = 0.5
    peer_server_ssl: ssl.SSLContext | None = None
    peer_client_ssl: ssl.SSLContext | None = None

    @property
    def request_timeout(self) -> float:
        # etcd's: 5 s plus two election timeouts.
        return 5.0 + 2 * self.election_ms / 1000


def member_id_for(peer_urls: list[str], token: str, now: float | None = None) -> int:
    """etcd's member ID: SHA-1 of the sorted peer URLs and the cluster token (and a time, for added members)."""
    b = "".join(sorted(peer_urls)).encode() + token.encode()
    if now is not None:
        b += str(int(now)).encode()
    return int.from_bytes(hashlib.sha1(b).digest()[:8], "big") or 1


def cluster_id_of(members: list[Member]) -> int:
    """etcd's cluster ID: SHA-1 of the initial members' IDs, in order."""
    b = b"".join(m.id.to_bytes(8, "big") for m in sorted(members, key=lambda m: m.id))
    return int.from_bytes(hashlib.sha1(b).digest()[:8], "big") or 1


def initial_members(cfg: StoreConfig) -> list[Member]:
    cluster = cfg.initial_cluster or {cfg.name: list(cfg.peer_urls)}
    return [
        Member(member_id_for(urls, cfg.cluster_token), name, list(urls)) for name, urls in cluster.items()
    ]


@dataclass
class _Proposal:
    id: int
    data: bytes
    future: asyncio.Future[Applied]
    deadline: float


class WatchStream:
    """One client's watch stream: its watchers and its queue of responses.

    A client that reads slower than the store changes does not make the queue
    grow without bound: past `max_queued` responses its watchers are paused
    (taken out of the hub, remembering the first revision they have not been
    sent) and, once the client has read the queue down to `resume_below`,
    caught up from the store's change log, as etcd does with its "victim"
    watchers. If compaction removed what they missed meanwhile, they end with
    the compaction revision, as a watch from a compacted revision does.
    """

    max_queued = 1024
    max_queued_bytes = 16 * 1024 * 1024
    resume_below = 64

    def __init__(self, store: Store) -> None:
        self._store = store
        self._paused: dict[int, Watcher] = {}
        self._queued_bytes = 0
        self._watchers: dict[int, Watcher] = {}
        self._next_id = 0
        self.queue: asyncio.Queue[rpc_pb2.WatchResponse | None] = asyncio.Queue()
        self._progress_task: asyncio.Task[None] | None = None

    def create(self, req: rpc_pb2.WatchCreateRequest) -> None:
        store = self._store
        sm = store.sm
        # Refused before an ID is taken, as etcd does.
        if req.range_end and req.range_end != b"\0" and req.key >= req.range_end:
            self._refuse(errors.WATCH_RANGE_EMPTY)
            return
        watch_id = req.watch_id
        if watch_id == 0:
            while self._next_id in self._watchers:
                self._next_id += 1
            watch_id = self._next_id
            self._next_id += 1
        elif watch_id in self._watchers:
            self._refuse(errors.WATCH_DUPLICATE_ID)
            return
        start = req.start_revision if req.start_revision > 0 else sm.mvcc.revision + 1
        watcher = Watcher(watch_id, req, start, self)
        self._enqueue(rpc_pb2.WatchResponse(header=sm.header(), watch_id=watch_id, created=True))
        try:
            backlog = store.watch_hub.add(watcher, sm.mvcc)
        except StoreError:
            self._enqueue(
                rpc_pb2.WatchResponse(
                    header=sm.header(),
                    watch_id=watch_id,
                    canceled=True,
                    compact_revision=sm.mvcc.compact_revision,
                )
            )
            return
        self._watchers[watch_id] = watcher
        self._send_backlog(watcher, backlog)
        if req.progress_notify and self._progress_task is None:
            self._progress_task = asyncio.get_running_loop().create_task(self._progress_loop())

    def _refuse(self, reason: str) -> None:
        """A create request etcd refuses: created and canceled at once, with no watch ID."""
        header = self._store.sm.header()
        self._enqueue(
            rpc_pb2.WatchResponse(header=header, watch_id=-1, created=True, canceled=True, cancel_reason=reason)
        )

    def _enqueue(self, resp: rpc_pb2.WatchResponse) -> None:
        self._queued_bytes += resp.ByteSize()
        self.queue.put_nowait(resp)

    def _send_backlog(self, watcher: Watcher, backlog: list[Change]) -> None:
        """At most WATCH_BATCH_REVISIONS revisions per response, never splitting one revision."""
        revision = self._store.sm.mvcc.revision
        batch: list[Change] = []
        revisions = 0
        for change in backlog:
            if not batch or change.record.mod != batch[-1].record.mod:
                if revisions == WATCH_BATCH_REVISIONS:
                    self.deliver(watcher, batch, revision)
                    if watcher.id in self._paused:
                        return
                    batch, revisions = [], 0
                revisions += 1
            batch.append(change)
        if batch:
            self.deliver(watcher, batch, revision)

    def deliver(self, watcher: Watcher, changes: list[Change], revision: int) -> None:
        if watcher.id in self._paused:
            return
        if self.queue.qsize() >= self.max_queued or self._queued_bytes >= self.max_queued_bytes:
            self._store.watch_hub.remove(watcher)
            watcher.next_rev = changes[0].record.mod  # the first revision it has not been sent
            self._paused[watcher.id] = watcher
            return
        events = watcher.events(changes)
        if events:
            resp = rpc_pb2.WatchResponse(header=self._store.sm.header(revision), watch_id=watcher.id)
            resp.events.extend(events)
            if watcher.fragment:
                for part in fragments(resp, self._store.config.max_request_bytes):
                    self._enqueue(part)
            else:
                self._enqueue(resp)

    def _resume(self) -> None:
        paused, self._paused = self._paused, {}
        sm = self._store.sm
        for watch_id, watcher in sorted(paused.items()):
            if self._watchers.get(watch_id) is not watcher:
                continue  # cancelled while paused
            try:
                backlog = self._store.watch_hub.add(watcher, sm.mvcc)
            except StoreError:
                del self._watchers[watch_id]
                self._enqueue(
                    rpc_pb2.WatchResponse(
                        header=sm.header(),
                        watch_id=watch_id,
                        canceled=True,
                        compact_revision=sm.mvcc.compact_revision,
                    )
                )
                continue
            self._send_backlog(watcher, backlog)

    def cancel(self, watch_id: int) -> None:
        self._paused.pop(watch_id, None)
        watcher = self._watchers.pop(watch_id, None)
        if watcher is None:
            return
        self._store.watch_hub.remove(watcher)
        self._enqueue(rpc_pb2.WatchResponse(header=self._store.sm.header(), watch_id=watch_id, canceled=True))

    def progress(self) -> None:
        self._enqueue(rpc_pb2.WatchResponse(header=self._store.sm.header(), watch_id=-1))

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(self._store.config.progress_notify_interval)
            for w in list(self._watchers.values()):
                if w.progress_notify:
                    self._enqueue(rpc_pb2.WatchResponse(header=self._store.sm.header(), watch_id=w.id))

    def close(self) -> None:
        for watcher in self._watchers.values():
            self._store.watch_hub.remove(watcher)
        self._watchers.clear()
        self._paused.clear()
        if self._progress_task is not None:
            self._progress_task.cancel()
        self._store._streams.discard(self)
        self.queue.put_nowait(None)

    async def responses(self) -> AsyncIterator[rpc_pb2.WatchResponse]:
        while True:
            resp = await self.queue.get()
            if resp is None:
                return
            self._queued_bytes -= resp.ByteSize()
            yield resp
            if (
                self._paused
                and self.queue.qsize() < self.resume_below
                and self._queued_bytes < self.max_queued_bytes // 4
            ):
                self._resume()


class Store:
    """An etcd-compatible store member: the state machine driven by a Raft log in a data directory."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.sm = StateMachine()
        self.watch_hub = WatchHub()
        self._streams: set[WatchStream] = set()
        self.raft_node: RaftNode | None = None
        self.transport: PeerTransport | None = None
        self._pending: list[_Proposal] = []  # not yet handed to Raft
        self._waiters: dict[int, _Proposal] = {}  # handed to Raft, by entry id
        self._conf_waiters: dict[int, asyncio.Future[None]] = {}  # membership changes, by request id
        self._conf_deadlines: dict[int, float] = {}
        self._flush_scheduled = False
        self._held_for_silent_leader = False  # _pending waits for the leader to be heard (again)
        self._next_entry_id = secrets.randbits(62) | 1
        self._reads: list[asyncio.Future[None]] = []  # waiting for the next ReadIndex round
        self._reads_sent: dict[bytes, tuple[float, list[asyncio.Future[None]]]] = {}
        self._reads_ready: list[tuple[int, list[asyncio.Future[None]]]] = []  # (index, futures)
        self._read_scheduled = False
        self._read_seq = 0
        self._read_prefix = secrets.token_bytes(16)
        self._tasks: list[asyncio.Task[None]] = []
        self._lease_expiry: dict[int, float] = {}
        self._revoking: set[int] = set()
        self._defrag_waiters: list[asyncio.Future[None]] = []  # served by the next snapshot
        self._entries_since_snapshot = 0
        self._snapshot_size = 0
        self._closed = False
        self._lock_fd: int | None = None
        self._published = False
        self.failed: BaseException | None = None
        # Called once if the disk fails or this member is removed; the server shell ends the process.
        self.on_fatal: Callable[[BaseException], None] | None = None
        self._member_dir = Path(config.data_dir) / "member"
        self._snap_path = self._member_dir / "snap" / "db.snap"
        self.started_at = time.time()
        self._metrics: dict[str, float] = {"proposals_committed": 0, "proposals_failed": 0}

    # ------------------------------------------------------------ lifecycle

    @property
    def member_id(self) -> int:
        return self.sm.member_id

    @property
    def cluster_id(self) -> int:
        return self.sm.cluster_id

    @property
    def raft(self) -> Raft:
        assert self.raft_node is not None, "store not started"
        return self.raft_node.raft

    @property
    def metrics(self) -> dict[str, float]:
        out = dict(self._metrics)
        if self.raft_node is not None:
            out.update(self.raft_node.metrics)
        return out

    def is_leader(self) -> bool:
        return self.raft_node is not None and self.raft.role == Role.LEADER

    async def start(self) -> None:
        cfg = self.config
        (self._member_dir / "snap").mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        meta_path = self._member_dir / "meta.json"
        joining: list[Member] | None = None
        initial = initial_members(cfg)
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
        elif cfg.initial_cluster_state == "existing":
            meta, joining = await self._join_existing()
        else:
            mine = [m for m in initial if m.name == cfg.name]
            if not mine:
                raise RuntimeError(
                    f"couldn't find local name {cfg.name!r} in the initial cluster configuration"
                )
            meta = {"member_id": mine[0].id, "cluster_id": cluster_id_of(initial), "name": cfg.name}
        snapshot.save(meta_path, json.dumps(meta).encode())
        self.sm.member_id = meta["member_id"]
        self.sm.cluster_id = meta["cluster_id"]
        loaded = snapshot.load(self._snap_path, self.sm)
        self._snapshot_size = len(loaded[1]) if loaded else 0
        if self.member_id in self.sm.membership.removed:
            raise RuntimeError("the member has been permanently removed from the cluster")
        storage, hard, entries = RaftStorage.open(
            self._member_dir / "wal", self.sm.applied_index, preallocate_bytes=PREALLOCATE_BYTES
        )
        fresh = loaded is None and not entries and hard == HardState()
        if fresh and joining is None:
            changes = [
                ConfChange(ConfChangeType.ADD_NODE, m.id, describe(m))
                for m in sorted(initial, key=lambda m: m.id)
            ]
            entries = bootstrap_entries(changes)
            hard = HardState(term=1, commit=len(entries))
            storage.save(hard, entries)
            storage.sync()
        restored_snap = None
        if loaded is not None:
            pos = loaded[0]
            conf = ConfState(frozenset(pos.voters), frozenset(pos.learners))
            restored_snap = RaftSnapshot(SnapshotMeta(self.sm.applied_index, pos.term, conf), b"")
        ticks = max(cfg.election_ms // max(cfg.heartbeat_ms, 1), 2)
        raft = Raft(
            RaftConfig(id=self.member_id, election_ticks=ticks, heartbeat_ticks=1),
            RestoredState(hard, restored_snap, entries),
            random.Random(secrets.randbits(64)),
        )
        self.raft_node = RaftNode(raft, storage, self, cfg.heartbeat_ms / 1000, self._snap_path, self._fatal)
        # Replay what the log already committed before serving anything.
        self.raft_node.process()
        if raft.conf.voters == {self.member_id}:
            # Alone: no one to wait for. Campaign now so writes (and the unapplied tail) go through at once.
            raft.campaign()
            self.raft_node.process()
        # Expiry times are not replicated state: after a restart every lease gets its full TTL again.
        self.renew_all_leases()
        peers = {m.id: m.peer_urls for m in self.sm.membership.members.values() if m.id != self.member_id}
        if joining is not None:
            peers.update({m.id: m.peer_urls for m in joining if m.id != self.member_id})
        if cfg.listen_peer_urls:
            await self._start_transport(peers)
        log.info(
            "store %s (member %x, cluster %x) started: revision %d, applied index %d, term %d, %d leases",
            cfg.name, self.member_id, self.cluster_id, self.sm.mvcc.revision, self.sm.applied_index,
            raft.term, len(self.sm.leases),
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        self.raft_node.start()
        self._tasks = [
            loop.create_task(self._lease_loop()),
            loop.create_task(self._deadline_loop()),
            loop.create_task(self._publish_loop()),
        ]
        if cfg.auto_compaction_retention > 0:
            self._tasks.append(loop.create_task(self._auto_compaction_loop()))

    async def _start_transport(self, peers: dict[int, list[str]]) -> None:
        from gifee.store.peer import PeerTransport

        transport = PeerTransport(
            self.member_id,
            self.cluster_id,
            on_messages=self._on_peer_messages,
            on_unreachable=lambda mid: self._report(MessageType.UNREACHABLE, mid, False),
            on_snapshot_status=lambda mid, ok: self._report(MessageType.SNAPSHOT_STATUS, mid, not ok),
            members_json=self._members_json,
            server_ssl=self.config.peer_server_ssl,
            client_ssl=self.config.peer_client_ssl,
            is_removed=lambda mid: mid in self.sm.membership.removed,
            on_removed=self._removed,
        )
        await transport.start(self.config.listen_peer_urls)
        for mid, urls in peers.items():
            transport.set_peer(mid, urls)
        self.transport = transport
        assert self.raft_node is not None
        self.raft_node.transport = transport

    def _on_peer_messages(self, sender: int, messages: list[RaftMessage]) -> None:
        if sender in self.sm.membership.removed or self.raft_node is None:
            return  # etcd refuses a removed member's traffic
        self.raft_node.step(messages)

    def _report(self, kind: MessageType, member: int, reject: bool) -> None:
        if self.raft_node is not None:
            self.raft_node.step([RaftMessage(kind, from_=member, reject=reject)])

    def _members_json(self) -> bytes:
        members = [
            {
                "id": m.id,
                "name": m.name,
                "peerURLs": m.peer_urls,
                "clientURLs": m.client_urls,
                "isLearner": m.is_learner,
            }
            for m in self.sm.membership.members.values()
        ]
        return json.dumps({"cluster_id": self.cluster_id, "members": members}).encode()

    async def _join_existing(self) -> tuple[dict[str, int | str], list[Member]]:
        """A new member of a running cluster: learn its ID (from MemberAdd) and the members from a peer."""
        from gifee.store.peer import fetch_members

        cfg = self.config
        urls = [u for name, us in (cfg.initial_cluster or {}).items() if name != cfg.name for u in us]
        if not urls:
            raise RuntimeError(
                "--initial-cluster-state=existing needs the other members in --initial-cluster"
            )
        info = json.loads(await fetch_members(urls, client_ssl=cfg.peer_client_ssl))
        members = [
            Member(int(m["id"]), m.get("name", ""), list(m["peerURLs"]), list(m.get("clientURLs", [])))
            for m in info["members"]
        ]
        mine = [m for m in members if sorted(m.peer_urls) == sorted(cfg.peer_urls)]
        if not mine:
            raise RuntimeError(
                f"member with peer URLs {','.join(cfg.peer_urls)} has not been added to the cluster (etcdctl member add)"
            )
        return {"member_id": mine[0].id, "cluster_id": int(info["cluster_id"]), "name": cfg.name}, members

    def _lock_data_dir(self) -> None:
        """One process per data directory, as etcd's WAL file lock ensures."""
        fd = os.open(self._member_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(
                f"data directory {self.config.data_dir} is in use by another process"
            ) from None
        self._lock_fd = fd

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for stream in list(self._streams):
            stream.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.raft_node is not None:
            await self.raft_node.stop()
        if self.transport is not None:
            await self.transport.close()
        self._fail_waiters(errors.STOPPED)
        if self.raft_node is not None:
            self.raft_node.storage.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------ proposals

    async def _propose(self, entry: internal_pb2.Entry) -> Applied:
        if self._closed:
            raise errors.STOPPED
        if self.failed is not None:
            raise errors.TIMEOUT
        entry.id = self._next_entry_id
        self._next_entry_id += 1
        data = entry.SerializeToString()
        if len(data) > self.config.max_request_bytes:
            raise errors.REQUEST_TOO_LARGE
        fut: asyncio.Future[Applied] = asyncio.get_running_loop().create_future()
        proposal = _Proposal(entry.id, data, fut, time.monotonic() + self.config.request_timeout)
        self._pending.append(proposal)
        self._schedule_flush()
        applied = await fut
        if applied.error is not None:
            raise applied.error
        return applied

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # Runs after the handlers already queued in this loop iteration, so
            # every request that arrived together goes into one Ready (one fsync).
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        node = self.raft_node
        if node is None or not self._pending:
            return
        if self.failed is not None:
            self._fail_waiters(errors.TIMEOUT)
            return
        # A caller that gave up (its client's deadline passed, or it cancelled) is not proposed, as etcd
        # never proposes a request whose context ended before Raft took it.
        batch = [p for p in self._pending if not p.future.done()]
        self._pending = []
        if not batch:
            return
        if node.raft.leader_silent_ticks() >= HOLD_PROPOSALS_AFTER_SILENT_TICKS:
            self._pending = batch
            self._held_for_silent_leader = True  # after_ready flushes once the leader is heard again
            return
        try:
            node.raft.propose([p.data for p in batch])
        except ProposalDropped:
            # No leader yet (an election is on): keep them until one is known or they time out.
            self._pending = batch + self._pending
            return
        for p in batch:
            self._waiters[p.id] = p
        node.process()

    def _fatal(self, exc: BaseException) -> None:
        """Stop serving writes after the disk failed us (or we were removed), as etcd stops.

        Proposals in flight may or may not be on disk, so they get an indeterminate
        answer (a timeout), never a definite failure. The server shell ends the process.
        """
        if self.failed is not None:
            return
        log.critical("store stopped: %s", exc)
        self.failed = exc
        self._fail_waiters(errors.TIMEOUT)
        if self.on_fatal is not None:
            self.on_fatal(exc)

    def _fail_waiters(self, error: StoreError) -> None:
        waiting = list(self._waiters.values()) + self._pending
        self._waiters, self._pending = {}, []
        for p in waiting:
            if not p.future.done():
                p.future.set_exception(error)
        futures: list[asyncio.Future[Any]] = [
            *self._defrag_waiters,
            *self._conf_waiters.values(),
            *self._reads,
        ]
        for _, batch in self._reads_sent.values():
            futures.extend(batch)
        for _, batch in self._reads_ready:
            futures.extend(batch)
        self._defrag_waiters, self._conf_waiters, self._reads = [], {}, []
        self._reads_sent, self._reads_ready = {}, []
        for fut in futures:
            if not fut.done():
                fut.set_exception(error)

    async def _deadline_loop(self) -> None:
        """Proposals and reads that got no answer in time fail with etcd's timeout."""
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            expired = [p for p in list(self._waiters.values()) + self._pending if p.deadline <= now]
            for p in expired:
                self._waiters.pop(p.id, None)
                if not p.future.done():
                    p.future.set_exception(errors.TIMEOUT)
            if expired:
                self._pending = [p for p in self._pending if p.deadline > now]
            for ctx, (deadline, batch) in list(self._reads_sent.items()):
                if deadline <= now:
                    del self._reads_sent[ctx]
                    for fut in batch:
                        if not fut.done():
                            fut.set_exception(errors.TIMEOUT)
            for rid, deadline in list(self._conf_deadlines.items()):
                if deadline <= now:
                    del self._conf_deadlines[rid]
                    conf_fut = self._conf_waiters.pop(rid, None)
                    if conf_fut is not None and not conf_fut.done():
                        conf_fut.set_exception(errors.TIMEOUT)

    # ------------------------------------------------------------ the Raft application

    def apply_committed(self, entries: list[RaftEntry]) -> None:
        sm = self.sm
        for e in entries:
            if e.index <= sm.applied_index:
                continue
            if e.type == EntryType.CONF_CHANGE:
                cc = decode_conf_change(e.data)
                sm.apply_conf_change(e.index, cc)
                self._membership_changed(cc)
                rid = request_id_of(cc)
                fut = self._conf_waiters.pop(rid, None)
                self._conf_deadlines.pop(rid, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            elif not e.data:
                sm.apply_empty(e.index)
            else:
                entry = internal_pb2.Entry()
                entry.ParseFromString(e.data)
                applied = self._apply(e.index, entry)
                p = self._waiters.pop(entry.id, None)
                if p is not None and not p.future.done():
                    p.future.set_result(applied)
            self._entries_since_snapshot += 1

    def install_snapshot(self, snap: RaftSnapshot) -> None:
        """A leader's snapshot replaces our state (we fell too far behind, or just joined)."""
        fresh = StateMachine(self.member_id, self.cluster_id)
        snapshot.decode(snap.data, fresh, "snapshot from the leader")
        snapshot.save(self._snap_path, snap.data)
        self._snapshot_size = len(snap.data)
        fresh.raft_term = self.sm.raft_term
        self.sm = fresh
        self._entries_since_snapshot = 0
        now = time.monotonic()
        self._lease_expiry = {lid: now + lease.ttl for lid, lease in fresh.leases.items()}
        if self.transport is not None:
            for m in fresh.membership.members.values():
                if m.id != self.member_id:
                    self.transport.set_peer(m.id, m.peer_urls)
        # Watchers cannot be told what the snapshot skipped over: end their streams so clients re-watch.
        for stream in list(self._streams):
            stream.close()
        log.info("installed snapshot at index %d (revision %d)", snap.meta.index, fresh.mvcc.revision)

    def on_read_states(self, states: list[ReadState]) -> None:
        for rs in states:
            sent = self._reads_sent.pop(rs.context, None)
            if sent is not None:
                self._reads_ready.append((rs.index, sent[1]))

    def renew_all_leases(self) -> None:
        """Every lease gets its full TTL from now (expiry times are not replicated state)."""
        now = time.monotonic()
        self._lease_expiry = {lid: now + lease.ttl for lid, lease in self.sm.leases.items()}

    def on_soft_state(self, soft: SoftState) -> None:
        if soft.role == Role.LEADER:
            # A new leader gives every lease a full TTL: it cannot know when the old leader last renewed them.
            self.renew_all_leases()
            log.info("member %x became leader at term %d", self.member_id, self.raft.term)
        if soft.leader != 0 and self._pending:
            self._schedule_flush()

    def after_ready(self) -> None:
        self.sm.raft_term = self.raft.term
        if (
            self._held_for_silent_leader
            and self.raft.leader_silent_ticks() < HOLD_PROPOSALS_AFTER_SILENT_TICKS
        ):
            # The leader was heard again, or a new one is known (a leader change also reaches
            # on_soft_state): hand over what was held.
            self._held_for_silent_leader = False
            if self._pending:
                self._schedule_flush()
        applied = self.sm.applied_index
        if self._reads_ready:
            still = []
            for index, batch in self._reads_ready:
                if index <= applied:
                    for fut in batch:
                        if not fut.done():
                            fut.set_result(None)
                else:
                    still.append((index, batch))
            self._reads_ready = still
        if self._entries_since_snapshot >= self.config.snapshot_count or self._defrag_waiters:
            self._write_snapshot(reset_wal=bool(self._defrag_waiters))
        if self.raft.removed and self.failed is None:
            self._removed()

    def _removed(self) -> None:
        """This member was removed: answer what is in flight, then stop, as etcd does."""
        if self.failed is None and not self._closed:
            log.warning("the member has been permanently removed from the cluster")
            exc = RuntimeError("the member has been permanently removed from the cluster")
            asyncio.get_running_loop().call_later(0.5, self._fatal, exc)

    def _membership_changed(self, cc: ConfChange) -> None:
        if self.transport is None or cc.node_id == self.member_id:
            return
        member = self.sm.membership.members.get(cc.node_id)
        if member is None:
            self.transport.remove_peer(cc.node_id)
        else:
            self.transport.set_peer(cc.node_id, member.peer_urls)

    def _apply(self, index: int, entry: internal_pb2.Entry) -> Applied:
        applied = self.sm.apply(index, entry)
        if applied.error is not None:
            self._metrics["proposals_failed"] += 1
            return applied
        self._metrics["proposals_committed"] += 1
        kind = entry.WhichOneof("request")
        if kind == "lease_grant":
            self._lease_expiry[entry.lease_grant.ID] = (
                time.monotonic() + self.sm.leases[entry.lease_grant.ID].ttl
            )
        elif kind == "lease_revoke":
            self._lease_expiry.pop(entry.lease_revoke.ID, None)
            self._revoking.discard(entry.lease_revoke.ID)
        elif kind == "lease_keepalive":
            lid = entry.lease_keepalive.ID
            self._lease_expiry[lid] = time.monotonic() + self.sm.leases[lid].ttl
        if applied.changes:
            for watcher, changes in self.watch_hub.match(applied.changes).items():
                stream = watcher.sink
                assert isinstance(stream, WatchStream)
                stream.deliver(watcher, changes, applied.revision)
        return applied

    def _write_snapshot(self, reset_wal: bool) -> None:
        """Snapshot the applied state and let Raft and the WAL forget what it covers."""
        raft = self.raft
        assert self.raft_node is not None
        applied_index = self.sm.applied_index
        term = raft.log.term(applied_index)
        if term is None:
            return  # already covered by the snapshot in place
        conf = raft.conf
        position = snapshot.RaftPosition(term, tuple(sorted(conf.voters)), tuple(sorted(conf.learners)))
        data = snapshot.encode(self.sm, position)
        snapshot.save(self._snap_path, data)
        self._snapshot_size = len(data)
        self._entries_since_snapshot = 0
        raft.compact(RaftSnapshot(SnapshotMeta(applied_index, term, conf), b""))
        storage = self.raft_node.storage
        if reset_wal and raft.log.last_index() == applied_index and raft.log.stable == applied_index:
            storage.reset(raft.hard_state())
        else:
            storage.compact(applied_index, raft.hard_state())
        waiting, self._defrag_waiters = self._defrag_waiters, []
        for fut in waiting:
            if not fut.done():
                fut.set_result(None)

    # ------------------------------------------------------------ reads

    async def _read_barrier(self) -> None:
        """Wait until this member has applied everything committed when the read arrived (ReadIndex)."""
        if self.failed is not None:
            raise errors.TIMEOUT
        raft = self.raft
        if raft.role == Role.LEADER and raft.conf.voters == {self.member_id}:
            return  # alone, every acknowledged write is already applied here
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reads.append(fut)
        if not self._read_scheduled:
            self._read_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_reads)
        await fut

    def _send_reads(self) -> None:
        """One ReadIndex round for every read that arrived in this loop iteration."""
        self._read_scheduled = False
        if not self._reads or self.raft_node is None:
            return
        batch, self._reads = self._reads, []
        self._read_seq += 1
        # Unique across members and restarts: the leader matches heartbeat answers to reads by it,
        # so a late answer to someone else's read must never confirm this one.
        ctx = self._read_prefix + self._read_seq.to_bytes(8, "big")
        try:
            self.raft.read_index(ctx)
        except ProposalDropped:
            for fut in batch:
                if not fut.done():
                    fut.set_exception(errors.NO_LEADER)
            return
        self._reads_sent[ctx] = (time.monotonic() + self.config.request_timeout, batch)
        self.raft_node.process()

    # ------------------------------------------------------------ sizes

    def db_size(self) -> int:
        wal_size = self.raft_node.storage.size_bytes() if self.raft_node is not None else 0
        return self._snapshot_size + wal_size

    def db_size_in_use(self) -> int:
        # An estimate of the live records' size; never more than what the disk holds.
        return min(self.sm.mvcc.live_bytes(), self.db_size())

    def _check_quota(self, cost: int) -> None:
        if self.sm.nospace:
            raise errors.NO_SPACE
        if self.config.quota_bytes > 0 and self.db_size() + cost > self.config.quota_bytes:
            # Like etcd: raise the alarm through the log so it survives restarts, then refuse.
            alarm = rpc_pb2.AlarmRequest(
                action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=self.member_id, alarm=rpc_pb2.NOSPACE
            )
            asyncio.get_running_loop().create_task(self._propose_quietly(internal_pb2.Entry(alarm=alarm)))
            raise errors.NO_SPACE

    async def _write(self, entry: internal_pb2.Entry, kind: type[R]) -> R:
        """Propose a write and return its response with the full header."""
        resp = (await self._propose(entry)).response
        assert isinstance(resp, kind)
        resp.header.MergeFrom(self.sm.header(resp.header.revision))
        return resp

    async def _propose_quietly(self, entry: internal_pb2.Entry) -> None:
        try:
            await self._propose(entry)
        except StoreError as e:
            log.warning("internal proposal failed: %s", e.message)

    async def _publish_loop(self) -> None:
        """Tell the cluster our name and client URLs once there is a leader (etcd's publish)."""
        cfg = self.config
        while not self._published:
            mine = self.sm.membership.members.get(self.member_id)
            if mine is not None and mine.name == cfg.name and mine.client_urls == list(cfg.client_urls):
                self._published = True
                return
            if self.raft_node is not None and self.raft.leader != 0:
                attrs = internal_pb2.MemberAttributes(
                    id=self.member_id, name=cfg.name, client_urls=cfg.client_urls
                )
                try:
                    await self._propose(internal_pb2.Entry(member_attributes=attrs))
                    continue
                except StoreError:
                    pass
            await asyncio.sleep(0.1)

    # ------------------------------------------------------------ KV

    async def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        check_range(req)
        if not req.serializable:
            await self._read_barrier()
        resp = self.sm.range(req)
        resp.header.MergeFrom(self.sm.header(resp.header.revision))
        return resp

    async def put(self, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        check_put(req)
        self._check_quota(len(req.key) + len(req.value) + 64)
        return await self._write(internal_pb2.Entry(put=req), rpc_pb2.PutResponse)

    async def delete_range(self, req: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
        check_delete(req)
        return await self._write(internal_pb2.Entry(delete_range=req), rpc_pb2.DeleteRangeResponse)

    async def txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        check_txn(req)
        if is_txn_readonly(req):
            # A read-only txn needs no log entry; applying it directly is the same as etcd's fast path.
            await self._read_barrier()
            applied = self.sm.apply(self.sm.applied_index, internal_pb2.Entry(txn=req))
            if applied.error is not None:
                raise applied.error
            resp = applied.response
            assert isinstance(resp, rpc_pb2.TxnResponse)
            resp.header.MergeFrom(self.sm.header(resp.header.revision))
            return resp
        if txn_has_put(req):
            self._check_quota(req.ByteSize())
        return await self._write(internal_pb2.Entry(txn=req), rpc_pb2.TxnResponse)

    async def compact(self, req: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        # Fail early without a log entry, as etcd's checks would.
        if req.revision > self.sm.mvcc.revision:
            raise errors.FUTURE_REV
        if req.revision <= self.sm.mvcc.compact_revision:
            raise errors.COMPACTED
        entry = internal_pb2.Entry(compaction=rpc_pb2.CompactionRequest(revision=req.revision))
        return await self._write(entry, rpc_pb2.CompactionResponse)

    # ------------------------------------------------------------ leases

    async def lease_grant(self, req: rpc_pb2.LeaseGrantRequest) -> rpc_pb2.LeaseGrantResponse:
        self._check_quota(64)
        if req.TTL > 9_000_000_000:
            raise errors.LEASE_TTL_TOO_LARGE
        grant = rpc_pb2.LeaseGrantRequest(TTL=req.TTL, ID=req.ID)
        if grant.ID == 0:
            while True:
                grant.ID = secrets.randbits(63) or 1
                if grant.ID not in self.sm.leases:
                    break
        return await self._write(internal_pb2.Entry(lease_grant=grant), rpc_pb2.LeaseGrantResponse)

    async def lease_revoke(self, req: rpc_pb2.LeaseRevokeRequest) -> rpc_pb2.LeaseRevokeResponse:
        if req.ID not in self.sm.leases:
            raise errors.LEASE_NOT_FOUND
        return await self._write(
            internal_pb2.Entry(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=req.ID)),
            rpc_pb2.LeaseRevokeResponse,
        )

    async def lease_keepalive(self, lease_id: int) -> rpc_pb2.LeaseKeepAliveResponse:
        if self.raft_node is not None and not self.is_leader():
            # Only the leader expires leases: tell it through the log.
            try:
                entry = internal_pb2.Entry(lease_keepalive=rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
                return await self._write(entry, rpc_pb2.LeaseKeepAliveResponse)
            except StoreError as e:
                if e != errors.LEASE_NOT_FOUND:
                    raise
                return rpc_pb2.LeaseKeepAliveResponse(header=self.sm.header(), ID=lease_id, TTL=0)
        lease = self.sm.leases.get(lease_id)
        if lease is None or lease_id in self._revoking:
            return rpc_pb2.LeaseKeepAliveResponse(header=self.sm.header(), ID=lease_id, TTL=0)
        now = time.monotonic()
        if self._lease_expiry.get(lease_id, now + 1) <= now:
            # Expired but not yet revoked: etcd never renews it; revoke it now.
            self._revoking.add(lease_id)
            asyncio.get_running_loop().create_task(self._expire(lease_id))
            return rpc_pb2.LeaseKeepAliveResponse(header=self.sm.header(), ID=lease_id, TTL=0)
        self._lease_expiry[lease_id] = now + lease.ttl
        return rpc_pb2.LeaseKeepAliveResponse(header=self.sm.header(), ID=lease_id, TTL=lease.ttl)

    async def lease_time_to_live(
        self, req: rpc_pb2.LeaseTimeToLiveRequest
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        lease = self.sm.leases.get(req.ID)
        if lease is None:
            return rpc_pb2.LeaseTimeToLiveResponse(header=self.sm.header(), ID=req.ID, TTL=-1)
        remaining = int(self._lease_expiry.get(req.ID, time.monotonic()) - time.monotonic())
        resp = rpc_pb2.LeaseTimeToLiveResponse(
            header=self.sm.header(), ID=req.ID, TTL=max(remaining, 0), grantedTTL=lease.ttl
        )
        if req.keys:
            resp.keys.extend(sorted(lease.keys))
        return resp

    async def lease_leases(self) -> rpc_pb2.LeaseLeasesResponse:
        resp = rpc_pb2.LeaseLeasesResponse(header=self.sm.header())
        for lid in self.sm.leases:
            resp.leases.add(ID=lid)
        return resp

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.lease_check_interval)
            if not self.is_leader():
                continue
            now = time.monotonic()
            for lid, expiry in list(self._lease_expiry.items()):
                if expiry <= now and lid not in self._revoking and lid in self.sm.leases:
                    self._revoking.add(lid)
                    asyncio.get_running_loop().create_task(self._expire(lid))

    async def _expire(self, lease_id: int) -> None:
        try:
            await self._propose(internal_pb2.Entry(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=lease_id)))
        except StoreError:
            pass
        finally:
            self._revoking.discard(lease_id)

    # ------------------------------------------------------------ watches

    def watch_stream(self) -> WatchStream:
        stream = WatchStream(self)
        self._streams.add(stream)
        return stream

    # ------------------------------------------------------------ maintenance

    async def status(self) -> rpc_pb2.StatusResponse:
        raft = self.raft
        resp = rpc_pb2.StatusResponse(
            header=self.sm.header(),
            version=ETCD_VERSION,
            dbSize=self.db_size(),
            dbSizeInUse=self.db_size_in_use(),
            leader=raft.leader,
            raftIndex=raft.log.committed,
            raftTerm=raft.term,
            raftAppliedIndex=self.sm.applied_index,
            isLearner=self.member_id in raft.conf.learners,
        )
        for member_id, alarm in sorted(self.sm.alarms):
            # etcd prints an alarm type it does not know by number.
            name = rpc_pb2.AlarmType.Name(alarm) if alarm in rpc_pb2.AlarmType.values() else str(alarm)
            resp.errors.append(f"memberID:{member_id} alarm:{name} ")
        return resp

    async def alarm(self, req: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        if req.action == rpc_pb2.AlarmRequest.GET:
            resp = rpc_pb2.AlarmResponse(header=self.sm.header())
            for member_id, alarm in sorted(self.sm.alarms):
                resp.alarms.add(memberID=member_id, alarm=alarm)
            return resp
        return await self._write(internal_pb2.Entry(alarm=req), rpc_pb2.AlarmResponse)

    async def defragment(self) -> rpc_pb2.DefragmentResponse:
        if self.failed is not None:
            raise errors.TIMEOUT
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._defrag_waiters.append(fut)
        assert self.raft_node is not None
        self.raft_node.process()  # the snapshot is written after the next Ready
        await fut
        return rpc_pb2.DefragmentResponse(header=self.sm.header())

    async def hash(self) -> rpc_pb2.HashResponse:
        h, _, _ = self.sm.mvcc.hash_kv(0)
        return rpc_pb2.HashResponse(header=self.sm.header(), hash=h)

    async def hash_kv(self, req: rpc_pb2.HashKVRequest) -> rpc_pb2.HashKVResponse:
        h, _, compact = self.sm.mvcc.hash_kv(req.revision)
        return rpc_pb2.HashKVResponse(header=self.sm.header(), hash=h, compact_revision=compact)

    async def snapshot(self, chunk: int = 32 * 1024) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        """Stream a consistent snapshot of the current state (our snapshot format, SHA-256 trailer)."""
        data = snapshot.encode(self.sm)
        header = self.sm.header()
        total = len(data)
        for off in range(0, total, chunk):
            blob = data[off : off + chunk]
            yield rpc_pb2.SnapshotResponse(header=header, remaining_bytes=total - off - len(blob), blob=blob)

    def _members_pb(self) -> list[rpc_pb2.Member]:
        return [
            rpc_pb2.Member(
                ID=m.id, name=m.name, peerURLs=m.peer_urls, clientURLs=m.client_urls, isLearner=m.is_learner
            )
            for m in sorted(self.sm.membership.members.values(), key=lambda m: m.id)
        ]

    async def member_list(self) -> rpc_pb2.MemberListResponse:
        resp = rpc_pb2.MemberListResponse(header=self.sm.header())
        resp.members.extend(self._members_pb())
        return resp

    async def _change_membership(self, cc_type: ConfChangeType, member: Member) -> None:
        """Propose one membership change and wait until it is applied here."""
        if self.failed is not None:
            raise errors.TIMEOUT
        rid = secrets.randbits(62) | 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._conf_waiters[rid] = fut
        self._conf_deadlines[rid] = time.monotonic() + self.config.request_timeout
        try:
            self.raft.propose_conf_change(ConfChange(cc_type, member.id, describe(member, rid)))
        except ProposalDropped as e:
            self._conf_waiters.pop(rid, None)
            self._conf_deadlines.pop(rid, None)
            if self.raft.leader == 0:
                raise errors.NO_LEADER from e
            # etcd refuses a second change while one is in progress, with this text.
            raise StoreError(errors.TIMEOUT.code, "etcdserver: unhealthy cluster") from e
        assert self.raft_node is not None
        self.raft_node.process()
        await fut

    def _check_quorum_after(self, delta: int, removing: int = 0) -> None:
        """etcd's strict reconfiguration check: a change must leave enough started voters for a quorum."""
        raft = self.raft
        if raft.role != Role.LEADER:
            return  # only the leader knows who is active; it checks again when it applies nothing wrong
        active = {
            n for n, p in raft.progress.items() if (p.recent_active or n == self.member_id) and not p.learner
        }
        active.discard(removing)
        voters = len(raft.conf.voters) + delta
        if len(active) < voters // 2 + 1:
            raise errors.NOT_ENOUGH_STARTED

    async def member_add(self, req: rpc_pb2.MemberAddRequest) -> rpc_pb2.MemberAddResponse:
        urls = list(req.peerURLs)
        for m in self.sm.membership.members.values():
            if set(m.peer_urls) & set(urls):
                raise errors.PEER_URL_EXIST
        if not req.isLearner:
            self._check_quorum_after(+1)
        member = Member(
            member_id_for(urls, self.config.cluster_token, time.time()), "", urls, [], req.isLearner
        )
        kind = ConfChangeType.ADD_LEARNER if req.isLearner else ConfChangeType.ADD_NODE
        await self._change_membership(kind, member)
        resp = rpc_pb2.MemberAddResponse(header=self.sm.header())
        resp.member.CopyFrom(rpc_pb2.Member(ID=member.id, peerURLs=urls, isLearner=req.isLearner))
        resp.members.extend(self._members_pb())
        return resp

    async def member_remove(self, req: rpc_pb2.MemberRemoveRequest) -> rpc_pb2.MemberRemoveResponse:
        member = self.sm.membership.members.get(req.ID)
        if member is None:
            raise errors.MEMBER_NOT_FOUND
        if not member.is_learner:
            self._check_quorum_after(-1, removing=req.ID)
        await self._change_membership(ConfChangeType.REMOVE_NODE, member)
        resp = rpc_pb2.MemberRemoveResponse(header=self.sm.header())
        resp.members.extend(self._members_pb())
        return resp

    async def member_update(self, req: rpc_pb2.MemberUpdateRequest) -> rpc_pb2.MemberUpdateResponse:
        member = self.sm.membership.members.get(req.ID)
        if member is None:
            raise errors.MEMBER_NOT_FOUND
        for m in self.sm.membership.members.values():
            if m.id != req.ID and set(m.peer_urls) & set(req.peerURLs):
                raise errors.PEER_URL_EXIST
        updated = Member(member.id, member.name, list(req.peerURLs), member.client_urls, member.is_learner)
        await self._change_membership(ConfChangeType.UPDATE_NODE, updated)
        resp = rpc_pb2.MemberUpdateResponse(header=self.sm.header())
        resp.members.extend(self._members_pb())
        return resp

    async def member_promote(self, req: rpc_pb2.MemberPromoteRequest) -> rpc_pb2.MemberPromoteResponse:
        member = self.sm.membership.members.get(req.ID)
        if member is None:
            raise errors.MEMBER_NOT_FOUND
        if not member.is_learner:
            raise errors.MEMBER_NOT_LEARNER
        raft = self.raft
        if raft.role == Role.LEADER:
            progress = raft.progress.get(req.ID)
            # etcd's rule: a learner is ready once its log is within 10% of the leader's.
            if progress is None or progress.match < raft.log.committed * 0.9:
                raise errors.LEARNER_NOT_READY
        promoted = Member(member.id, member.name, member.peer_urls, member.client_urls, False)
        await self._change_membership(ConfChangeType.ADD_NODE, promoted)
        resp = rpc_pb2.MemberPromoteResponse(header=self.sm.header())
        resp.members.extend(self._members_pb())
        return resp

    async def move_leader(self, req: rpc_pb2.MoveLeaderRequest) -> rpc_pb2.MoveLeaderResponse:
        raft = self.raft
        if raft.role != Role.LEADER:
            raise errors.NOT_LEADER
        if req.targetID == self.member_id:
            return rpc_pb2.MoveLeaderResponse(header=self.sm.header())
        if req.targetID not in raft.conf.voters:
            raise errors.BAD_LEADER_TRANSFEREE
        raft.transfer_leader(req.targetID)
        assert self.raft_node is not None
        self.raft_node.process()
        deadline = time.monotonic() + self.config.request_timeout
        while raft.leader != req.targetID:
            if time.monotonic() > deadline:
                raise errors.TIMEOUT_LEADER_TRANSFER
            await asyncio.sleep(0.01)
        return rpc_pb2.MoveLeaderResponse(header=self.sm.header())

    # ------------------------------------------------------------ compaction

    async def _auto_compaction_loop(self) -> None:
        cfg = self.config
        if cfg.auto_compaction_mode == "revision":
            keep = int(cfg.auto_compaction_retention)
            while True:
                await asyncio.sleep(300)
                target = self.sm.mvcc.revision - keep
                await self._auto_compact(target)
        else:
            retention = cfg.auto_compaction_retention * 3600.0
            interval = max(retention / 10, 1.0)
            samples: list[tuple[float, int]] = []
            while True:
                await asyncio.sleep(interval)
                now = time.monotonic()
                samples.append((now, self.sm.mvcc.revision))
                old = [rev for t, rev in samples if now - t >= retention]
                samples = [(t, rev) for t, rev in samples if now - t < retention]
                if old:
                    await self._auto_compact(old[-1])

    async def _auto_compact(self, target: int) -> None:
        if target > self.sm.mvcc.compact_revision and target <= self.sm.mvcc.revision:
            try:
                await self.compact(rpc_pb2.CompactionRequest(revision=target))
                log.info("auto-compacted to revision %d", target)
            except StoreError as e:
                log.warning("auto-compaction to %d failed: %s", target, e.message)
