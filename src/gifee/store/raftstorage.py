"""Raft's persistent state on the write-ahead log: entries and hard states, in the order written.

Rules:
- The WAL's record numbers are only a write order. Each record is either an
  entry (raft index, term, type, data) or a hard state (term, vote, commit).
- Replaying the records rebuilds the log: an entry at raft index i replaces
  every entry from i on (that is how a follower's conflicting suffix is cut
  off); an entry that would leave a hole is corruption. The last hard state
  wins. Entries at or below the snapshot's index are skipped.
- Compaction deletes whole WAL segments whose records all precede the first
  entry kept; the current hard state is written again first, so it is never
  among what is deleted.
- Nothing is durable until `sync`; the shell syncs before it sends anything
  the records promise (a vote, an acknowledgement).
"""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

from gifee.store.raft.types import Entry, EntryType, HardState
from gifee.store.wal import WalCorruptError, WriteAheadLog

ENTRY = 1
HARD_STATE = 2
# How far a member's WAL file is reserved ahead of its records: an fdatasync then commits only data, not a
# new file size (about half the time on ext4), once per batch of writes. Reserved in steps, not one
# segment's 64 MiB at once, so that an idle member (or a test's) takes little space.
PREALLOCATE_BYTES = 16 * 2**20
_ENTRY_HEAD = struct.Struct("<BQQB")  # kind, index, term, type
_HARD_STATE = struct.Struct("<BQQQ")  # kind, term, vote, commit


def encode_entry(e: Entry) -> bytes:
    return _ENTRY_HEAD.pack(ENTRY, e.index, e.term, e.type) + e.data


def encode_hard_state(hs: HardState) -> bytes:
    return _HARD_STATE.pack(HARD_STATE, hs.term, hs.vote, hs.commit)


class RaftStorage:
    def __init__(self, wal: WriteAheadLog, positions: dict[int, int]) -> None:
        self.wal = wal
        self._position = positions  # raft index -> WAL record number of the entry kept for it
        self._last_entry = max(positions, default=0)
        self._deferred: HardState | None = None  # a commit-only hard state not yet written

    @classmethod
    def open(
        cls, directory: Path, snapshot_index: int, preallocate_bytes: int = 0
    ) -> tuple[RaftStorage, HardState, list[Entry]]:
        """Open the WAL in directory; return the storage, the last hard state, and the entries after the snapshot."""
        wal, records = WriteAheadLog.open(directory, preallocate_bytes=preallocate_bytes)
        hard = HardState()
        entries: list[Entry] = []
        positions: dict[int, int] = {}
        for seq, payload in records:
            if not payload:
                raise WalCorruptError(f"{directory}: empty record {seq}")
            kind = payload[0]
            if kind == HARD_STATE:
                _, term, vote, commit = _HARD_STATE.unpack_from(payload)
                hard = HardState(term, vote, commit)
            elif kind == ENTRY:
                _, index, term, etype = _ENTRY_HEAD.unpack_from(payload)
                if index <= snapshot_index:
                    continue
                first = entries[0].index if entries else snapshot_index + 1
                if index > (entries[-1].index + 1 if entries else snapshot_index + 1):
                    raise WalCorruptError(
                        f"{directory}: entry {index} leaves a hole after {first - 1 + len(entries)}"
                    )
                del entries[index - first :]
                entries.append(Entry(term, index, EntryType(etype), payload[_ENTRY_HEAD.size :]))
                positions[index] = seq
            else:
                raise WalCorruptError(f"{directory}: record {seq} has unknown kind {kind}")
        if hard.commit > (entries[-1].index if entries else snapshot_index):
            # The hard state is written after the entries it commits, so this means lost entries.
            raise WalCorruptError(f"{directory}: commit index {hard.commit} is past the last entry")
        return cls(wal, positions), hard, entries

    def defer(self, hard_state: HardState) -> None:
        """A hard state that only moves the commit index: written with the next `save` (or at close).

        A commit index need not be durable (a member learns it again from the leader; a lone
        member commits its log again once it leads), so it costs no write of its own: on a lone
        member every batch of writes would otherwise take two WAL writes, its entries and then
        the commit that the fsync made possible.
        """
        self._deferred = hard_state

    def save(self, hard_state: HardState | None, entries: list[Entry]) -> None:
        """Append (not yet durable): entries first, then the hard state that may commit them."""
        if hard_state is None:
            hard_state = self._deferred
        self._deferred = None
        next_seq = self.wal.last_index + 1
        records: list[tuple[int, bytes]] = []
        if entries and entries[0].index <= self._last_entry:
            # A conflicting suffix is replaced: forget where the cut-off entries were.
            for stale in range(entries[-1].index + 1, self._last_entry + 1):
                self._position.pop(stale, None)
        for e in entries:
            records.append((next_seq, encode_entry(e)))
            self._position[e.index] = next_seq
            next_seq += 1
        if entries:
            self._last_entry = entries[-1].index
        if hard_state is not None:
            records.append((next_seq, encode_hard_state(hard_state)))
        self.wal.append(records)

    def sync(self) -> None:
        self.wal.sync()

    def compact(self, index: int, hard_state: HardState) -> None:
        """Forget entries up to index (they are in a snapshot now)."""
        self.save(hard_state, [])
        self.wal.sync()
        keep_from = self._position.get(index + 1, self.wal.last_index)
        for old in [i for i in self._position if i <= index]:
            del self._position[old]
        self.wal.release_before(keep_from)

    def reset(self, hard_state: HardState) -> None:
        """Drop the whole log (a leader's snapshot replaced it) and record the hard state."""
        self.wal.reset_to(self.wal.last_index + 1)
        self._position.clear()
        self._last_entry = 0
        self.save(hard_state, [])
        self.wal.sync()

    def size_bytes(self) -> int:
        return self.wal.size_bytes()

    def close(self) -> None:
        if self._deferred is not None:
            with contextlib.suppress(Exception):  # a failed log is closed as it is
                self.save(None, [])
        self.wal.close()
