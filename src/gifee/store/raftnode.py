"""The asyncio shell around the Raft core: the clock, the disk and the network.

It ticks the core on a timer, steps it with the peers' messages, and turns
every `Ready` into actions in the order Raft's safety needs: install a
received snapshot, append entries and the hard state to the WAL and fsync
once (group commit: everything proposed in one event-loop turn shares the
fsync), then send the messages, then hand the committed entries to the
application, then `advance`. Processing runs in a `call_soon` callback, so
everything that arrived in one loop iteration lands in one Ready.

What never happens here: deciding anything Raft decides (that is `raft/core.py`)
or interpreting entries (that is the application's `apply`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from gifee.store.raft.core import Raft
from gifee.store.raft.types import (
    Entry,
    Message,
    MessageType,
    ProposalDropped,
    ReadState,
    Role,
    Snapshot,
    SoftState,
)
from gifee.store.raftstorage import RaftStorage

log = logging.getLogger("gifee.store.raft")


class Application(Protocol):
    def apply_committed(self, entries: list[Entry]) -> None: ...
    def install_snapshot(self, snapshot: Snapshot) -> None: ...
    def on_read_states(self, states: list[ReadState]) -> None: ...
    def on_soft_state(self, soft: SoftState) -> None: ...
    def after_ready(self) -> None: ...


class Transport(Protocol):
    def send(self, messages: list[Message], immediate: bool = False) -> None: ...


class RaftNode:
    def __init__(
        self,
        raft: Raft,
        storage: RaftStorage,
        app: Application,
        tick_seconds: float,
        snapshot_file: Path,
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        self.raft = raft
        self.storage = storage
        self.app = app
        self.transport: Transport | None = None
        self.tick_seconds = tick_seconds
        self.snapshot_file = snapshot_file
        self.on_fatal = on_fatal
        self.failed: BaseException | None = None
        self._scheduled = False
        self._synced_vote = (raft.term, raft.vote)
        self._ticker: asyncio.Task[None] | None = None
        self.metrics: dict[str, float] = {"wal_fsyncs": 0, "wal_fsync_seconds": 0.0, "messages_sent": 0}

    def start(self) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self._tick_loop())
        self.schedule()

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            try:
                await self._ticker
            except asyncio.CancelledError:
                pass

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_seconds)
            if self.failed is None:
                self.raft.tick()
                self.schedule()

    def step(self, messages: list[Message]) -> None:
        """Messages from a peer (or the transport's reports)."""
        if self.failed is not None:
            return
        for m in messages:
            try:
                self.raft.step(m)
            except ProposalDropped:
                pass  # a forwarded proposal with nowhere to go: its proposer times out and retries
        self.schedule()

    def schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.process)

    def process(self) -> None:
        self._scheduled = False
        if self.failed is not None:
            return
        try:
            self._process()
        except Exception as e:
            self.failed = e
            log.critical("raft shell failed, refusing further work: %s", e, exc_info=e)
            self.on_fatal(e)

    def _process(self) -> None:
        raft = self.raft
        while raft.has_ready():
            rd = raft.ready()
            if rd.soft_state is not None:
                self.app.on_soft_state(rd.soft_state)
            if rd.snapshot is not None:
                self.app.install_snapshot(rd.snapshot)
                self.storage.reset(raft.hard_state())
            hs = rd.hard_state
            vote_changed = hs is not None and (hs.term, hs.vote) != self._synced_vote
            # A leader may send before its own disk has the entries (Raft thesis §10.2.1): it counts
            # itself toward a quorum only after `advance`. Its term and vote were synced when it
            # campaigned; if they changed in this Ready, they go to disk first.
            early = raft.role == Role.LEADER and not vote_changed and self.transport is not None
            if early and rd.messages:
                self._send(rd.messages, immediate=True)
            if rd.entries or vote_changed:
                self.storage.save(hs, rd.entries)
                started = time.monotonic()
                self.storage.sync()
                self.metrics["wal_fsyncs"] += 1
                self.metrics["wal_fsync_seconds"] += time.monotonic() - started
                self._synced_vote = (raft.term, raft.vote)
            elif hs is not None:
                # A commit index alone need not be durable (it is learned again from the leader, or
                # recomputed by a lone member): no fsync, and no write until the next batch's.
                self.storage.defer(hs)
            if rd.messages and not early:
                self._send(rd.messages)
            if rd.committed:
                self.app.apply_committed(rd.committed)
            if rd.read_states:
                self.app.on_read_states(rd.read_states)
            raft.advance(rd)
        self.app.after_ready()

    def _send(self, messages: list[Message], immediate: bool = False) -> None:
        if self.transport is not None:
            self._attach_snapshot_data(messages)
            self.transport.send(messages, immediate)
            self.metrics["messages_sent"] += len(messages)

    def _attach_snapshot_data(self, messages: list[Message]) -> None:
        # The core knows a snapshot by its position only; its bytes are in the snapshot file.
        for m in messages:
            if m.type == MessageType.SNAPSHOT and m.snapshot is not None and not m.snapshot.data:
                try:
                    data = self.snapshot_file.read_bytes()
                except OSError as e:
                    log.warning("cannot read snapshot for member %x: %s", m.to, e)
                    continue
                m.snapshot = Snapshot(m.snapshot.meta, data)
