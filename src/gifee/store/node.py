"""The store as an asyncio object: the embedded API that the gRPC server, the
HTTP gateway and in-process users all call.

This is the shell around the pure cores. It owns the clock (lease expiry,
auto-compaction), the disk (write-ahead log, snapshots) and the order of
writes. A write is proposed as a log entry, appended to the WAL, made durable
by an fsync shared with every other write that arrived meanwhile (group
commit), then applied to the state machine, and only then answered — so a
reader never sees a write that a crash could lose, and an acknowledged write
survives `kill -9`. Raft (part 2) replaces `_flush`'s "append and sync
locally" with "replicate to a quorum"; the state machine and everything above
this module stay as they are.

Reads are served from the applied state directly: with one member, every
acknowledged write is already applied, so that is linearizable.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from google.protobuf.message import Message

from gifee.store import errors, snapshot
from gifee.store.errors import StoreError
from gifee.store.mvcc import Change
from gifee.store.proto import internal_pb2, rpc_pb2
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
from gifee.store.wal import WriteAheadLog
from gifee.store.watch import Watcher, WatchHub, fragments

log = logging.getLogger("gifee.store")

R = TypeVar("R", bound=Message)

ETCD_VERSION = "3.4.0"  # the etcd API level gifee speaks; clients gate features on it
MAX_REQUEST_BYTES = int(1.5 * 1024 * 1024)
DEFAULT_QUOTA_BYTES = 2 * 1024**3
WATCH_BATCH_REVISIONS = 1000


@dataclass
class StoreConfig:
    name: str = "default"
    data_dir: str = "default.etcd"
    client_urls: list[str] = field(default_factory=lambda: ["http://localhost:2379"])
    peer_urls: list[str] = field(default_factory=lambda: ["http://localhost:2380"])
    cluster_token: str = "etcd-cluster"
    quota_bytes: int = DEFAULT_QUOTA_BYTES
    max_request_bytes: int = MAX_REQUEST_BYTES
    snapshot_count: int = 100_000
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: float = 0.0  # hours (periodic) or revisions (revision); 0 = off
    progress_notify_interval: float = 600.0
    lease_check_interval: float = 0.5


def _member_id(name: str, peer_urls: list[str], token: str) -> int:
    # etcd derives the member ID from its peer URLs and the cluster token; any
    # stable 64-bit number will do for clients, as long as it is never 0.
    digest = hashlib.sha1("".join(sorted(peer_urls)).encode() + token.encode() + name.encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


@dataclass
class _Proposal:
    entry: internal_pb2.Entry
    data: bytes
    future: asyncio.Future[Applied]


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
            self._enqueue(
                rpc_pb2.WatchResponse(
                    header=sm.header(), watch_id=-1, created=True, canceled=True,
                    cancel_reason=errors.WATCH_RANGE_EMPTY,
                )
            )
            return
        watch_id = req.watch_id
        if watch_id == 0:
            while self._next_id in self._watchers:
                self._next_id += 1
            watch_id = self._next_id
            self._next_id += 1
        elif watch_id in self._watchers:
            self._enqueue(
                rpc_pb2.WatchResponse(
                    header=sm.header(),
                    watch_id=-1,
                    created=True,
                    canceled=True,
                    cancel_reason=errors.WATCH_DUPLICATE_ID,
                )
            )
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
                        header=sm.header(), watch_id=watch_id, canceled=True,
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
    """A single-member etcd-compatible store backed by a data directory."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.sm = StateMachine()
        self.watch_hub = WatchHub()
        self._streams: set[WatchStream] = set()
        self._wal: WriteAheadLog | None = None
        self._pending: list[_Proposal] = []
        self._flush_scheduled = False
        self._tasks: list[asyncio.Task[None]] = []
        self._lease_expiry: dict[int, float] = {}
        self._revoking: set[int] = set()
        self._defrag_waiters: list[asyncio.Future[None]] = []  # served by the next snapshot
        self._entries_since_snapshot = 0
        self._snapshot_size = 0
        self._closed = False
        self._lock_fd: int | None = None
        self._inflight: list[_Proposal] = []
        self.failed: BaseException | None = None
        # Called once if the disk fails; the server shell ends the process.
        self.on_fatal: Callable[[BaseException], None] | None = None
        self._member_dir = Path(config.data_dir) / "member"
        self._snap_path = self._member_dir / "snap" / "db.snap"
        self.started_at = time.time()
        self.metrics: dict[str, float] = {
            "proposals_committed": 0,
            "proposals_failed": 0,
            "wal_fsyncs": 0,
            "wal_fsync_seconds": 0.0,
        }

    # ------------------------------------------------------------ lifecycle

    @property
    def member_id(self) -> int:
        return self.sm.member_id

    @property
    def cluster_id(self) -> int:
        return self.sm.cluster_id

    async def start(self) -> None:
        cfg = self.config
        (self._member_dir / "snap").mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        meta_path = self._member_dir / "meta.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
        else:
            member_id = _member_id(cfg.name, cfg.peer_urls, cfg.cluster_token)
            cluster_digest = hashlib.sha1(member_id.to_bytes(8, "big") + cfg.cluster_token.encode()).digest()
            meta = {
                "member_id": member_id,
                "cluster_id": int.from_bytes(cluster_digest[:8], "big") or 1,
                "name": cfg.name,
                "term": 1,
            }
        meta["term"] = int(meta.get("term", 1)) + 1  # one election per start, as a lone etcd member does
        snapshot.save(meta_path, json.dumps(meta).encode())
        self.sm.member_id = meta["member_id"]
        self.sm.cluster_id = meta["cluster_id"]
        self.sm.raft_term = meta["term"]
        snapshot.load(self._snap_path, self.sm)
        self._snapshot_size = self._snap_path.stat().st_size if self._snap_path.exists() else 0
        self._wal, records = WriteAheadLog.open(self._member_dir / "wal")
        replayed = 0
        for index, data in records:
            if index <= self.sm.applied_index:
                continue
            entry = internal_pb2.Entry()
            entry.ParseFromString(data)
            self.sm.apply(index, entry)
            replayed += 1
        self._entries_since_snapshot = replayed
        if self._wal.last_index < self.sm.applied_index:
            self._wal.reset_to(self.sm.applied_index + 1)
        now = time.monotonic()
        # Expiry times are not replicated state: after a restart every lease gets its full TTL again.
        self._lease_expiry = {lid: now + lease.ttl for lid, lease in self.sm.leases.items()}
        log.info(
            "store %s started: revision %d, applied index %d (%d replayed), %d leases",
            cfg.name,
            self.sm.mvcc.revision,
            self.sm.applied_index,
            replayed,
            len(self.sm.leases),
        )
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._lease_loop())]
        if cfg.auto_compaction_retention > 0:
            self._tasks.append(loop.create_task(self._auto_compaction_loop()))

    def _lock_data_dir(self) -> None:
        """One process per data directory, as etcd's WAL file lock ensures."""
        fd = os.open(self._member_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"data directory {self.config.data_dir} is in use by another process") from None
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
        for p in self._pending:
            if not p.future.done():
                p.future.set_exception(errors.STOPPED)
        self._pending.clear()
        if self._wal is not None:
            self._wal.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------ the log

    async def _propose(self, entry: internal_pb2.Entry) -> Applied:
        if self._closed:
            raise errors.STOPPED
        if self.failed is not None:
            raise errors.TIMEOUT
        data = entry.SerializeToString()
        if len(data) > self.config.max_request_bytes:
            raise errors.REQUEST_TOO_LARGE
        fut: asyncio.Future[Applied] = asyncio.get_running_loop().create_future()
        self._pending.append(_Proposal(entry, data, fut))
        self._schedule_flush()
        applied = await fut
        if applied.error is not None:
            raise applied.error
        return applied

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # Runs after the handlers already queued in this loop iteration, so
            # every request that arrived together shares one fsync.
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Append pending entries, fsync once, apply them in order and answer their proposers.

        The fsync runs on the event loop thread on purpose: handing it to a worker
        thread costs more (two thread switches and GIL hand-overs per batch) than
        the loop loses by waiting, and gRPC's own threads keep receiving meanwhile.
        """
        self._flush_scheduled = False
        if self.failed is not None:
            self._fail_waiters()
            return
        wal = self._wal
        assert wal is not None
        try:
            if self._pending:
                batch, self._pending = self._pending, []
                self._inflight = batch
                first = wal.last_index + 1
                wal.append([(first + i, p.data) for i, p in enumerate(batch)])
                started = time.monotonic()
                wal.sync()
                self.metrics["wal_fsyncs"] += 1
                self.metrics["wal_fsync_seconds"] += time.monotonic() - started
                for i, p in enumerate(batch):
                    applied = self._apply(first + i, p.entry)
                    if not p.future.done():
                        p.future.set_result(applied)
                self._inflight = []
                self._entries_since_snapshot += len(batch)
            if self._entries_since_snapshot >= self.config.snapshot_count or self._defrag_waiters:
                self._write_snapshot(reset_wal=bool(self._defrag_waiters))
        except Exception as e:
            self._fatal(e)

    def _fatal(self, exc: BaseException) -> None:
        """Stop serving writes after the disk failed us, as etcd stops on a WAL error.

        The failed batch may or may not be on disk, so its proposers get an
        indeterminate answer (a timeout), never a definite failure; the state in
        memory no longer matches the disk, so no later write is accepted. The
        server shell ends the process (`on_fatal`); a restart replays the disk.
        """
        log.critical("storage failed, refusing further writes: %s", exc, exc_info=exc)
        self.failed = exc
        self._fail_waiters()
        if self.on_fatal is not None:
            self.on_fatal(exc)

    def _fail_waiters(self) -> None:
        waiting = self._inflight + self._pending
        self._inflight, self._pending = [], []
        for p in waiting:
            if not p.future.done():
                p.future.set_exception(errors.TIMEOUT)
        maintenance, self._defrag_waiters = self._defrag_waiters, []
        for fut in maintenance:
            if not fut.done():
                fut.set_exception(errors.TIMEOUT)

    def _apply(self, index: int, entry: internal_pb2.Entry) -> Applied:
        applied = self.sm.apply(index, entry)
        if applied.error is not None:
            self.metrics["proposals_failed"] += 1
            return applied
        self.metrics["proposals_committed"] += 1
        kind = entry.WhichOneof("request")
        if kind == "lease_grant":
            self._lease_expiry[entry.lease_grant.ID] = time.monotonic() + self.sm.leases[entry.lease_grant.ID].ttl
        elif kind == "lease_revoke":
            self._lease_expiry.pop(entry.lease_revoke.ID, None)
            self._revoking.discard(entry.lease_revoke.ID)
        if applied.changes:
            for watcher, changes in self.watch_hub.match(applied.changes).items():
                stream = watcher.sink
                assert isinstance(stream, WatchStream)
                stream.deliver(watcher, changes, applied.revision)
        return applied

    def _write_snapshot(self, reset_wal: bool) -> None:
        """Snapshot the applied state; runs between commit batches, so nothing is half-applied."""
        assert self._wal is not None
        data = snapshot.encode(self.sm)
        applied_index = self.sm.applied_index
        snapshot.save(self._snap_path, data)
        self._snapshot_size = len(data)
        self._entries_since_snapshot = 0
        if reset_wal and self._wal.last_index == applied_index:
            self._wal.reset_to(applied_index + 1)
        else:
            self._wal.release_before(applied_index + 1)
        waiting, self._defrag_waiters = self._defrag_waiters, []
        for fut in waiting:
            if not fut.done():
                fut.set_result(None)

    # ------------------------------------------------------------ sizes

    def db_size(self) -> int:
        wal_size = self._wal.size_bytes() if self._wal is not None else 0
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

    # ------------------------------------------------------------ KV

    async def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        check_range(req)
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
        return await self._write(internal_pb2.Entry(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=req.ID)), rpc_pb2.LeaseRevokeResponse)

    def lease_keepalive(self, lease_id: int) -> rpc_pb2.LeaseKeepAliveResponse:
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

    async def lease_time_to_live(self, req: rpc_pb2.LeaseTimeToLiveRequest) -> rpc_pb2.LeaseTimeToLiveResponse:
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
        resp = rpc_pb2.StatusResponse(
            header=self.sm.header(),
            version=ETCD_VERSION,
            dbSize=self.db_size(),
            dbSizeInUse=self.db_size_in_use(),
            leader=self.member_id,
            raftIndex=self.sm.applied_index,
            raftTerm=self.sm.raft_term,
            raftAppliedIndex=self.sm.applied_index,
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
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._defrag_waiters.append(fut)
        self._schedule_flush()
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

    async def member_list(self) -> rpc_pb2.MemberListResponse:
        resp = rpc_pb2.MemberListResponse(header=self.sm.header())
        resp.members.add(
            ID=self.member_id,
            name=self.config.name,
            peerURLs=self.config.peer_urls,
            clientURLs=self.config.client_urls,
        )
        return resp

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
