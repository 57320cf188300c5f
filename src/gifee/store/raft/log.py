"""A member's Raft log in memory: what is persisted, what is not yet, what is committed and applied.

Rules kept here:
- Indexes start at 1. Everything at or below `snapshot.index` is compacted:
  only its last index and term are remembered.
- `stable` is the last index the shell has persisted; entries past it are
  handed out in the next Ready. An entry that conflicts with a new leader's
  entry is cut off, persisted or not, and `stable` falls back with it.
- `committed` only rises; it never passes the last index. `applied` never
  passes `committed`, nor the entries already persisted or being persisted.
- Entries are never changed in place; a conflicting suffix is replaced whole.

The log never touches a disk: the shell persists what `unstable()` returns
and reports it with `stable_to`.
"""

from __future__ import annotations

from gifee.store.raft.types import ConfState, Entry, SnapshotMeta


class RaftLog:
    def __init__(self, snapshot: SnapshotMeta | None = None, entries: list[Entry] | None = None) -> None:
        self.snapshot = snapshot or SnapshotMeta(0, 0, ConfState())
        self.entries: list[Entry] = list(entries or [])  # entries[0].index == snapshot.index + 1
        if self.entries:
            assert self.entries[0].index == self.snapshot.index + 1, "log must continue its snapshot"
        self.stable = self.last_index()
        self.committed = self.snapshot.index
        self.applied = self.snapshot.index
        self.unstable_snapshot: SnapshotMeta | None = None

    # ------------------------------------------------------------ lookups

    def first_index(self) -> int:
        return self.snapshot.index + 1

    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snapshot.index

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot.term

    def term(self, index: int) -> int | None:
        """The term of the entry at `index`, or None if compacted or not present."""
        if index == self.snapshot.index:
            return self.snapshot.term
        offset = index - self.snapshot.index - 1
        if offset < 0 or offset >= len(self.entries):
            return None
        return self.entries[offset].term

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft's election restriction: is a candidate's log at least as complete as ours?"""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_bytes: int = 0) -> list[Entry]:
        """Entries [lo, hi); at least one entry if any, then up to `max_bytes` of data (0 = no limit)."""
        start = lo - self.snapshot.index - 1
        assert start >= 0, "slice below the compacted prefix"
        out = self.entries[start : hi - self.snapshot.index - 1]
        if max_bytes and len(out) > 1:
            size = 0
            for n, e in enumerate(out):
                size += len(e.data) + 16
                if size > max_bytes and n > 0:
                    return out[:n]
        return out

    def unstable(self) -> list[Entry]:
        return self.entries[self.stable - self.snapshot.index :]

    # ------------------------------------------------------------ changes

    def append(self, entries: list[Entry]) -> int:
        """Append after truncating anything from entries[0].index on; returns the new last index."""
        if not entries:
            return self.last_index()
        first = entries[0].index
        assert first > self.committed, (
            f"cannot overwrite committed entry {first} (committed {self.committed})"
        )
        keep = first - self.snapshot.index - 1
        assert 0 <= keep <= len(self.entries), "appended entries must follow the log"
        del self.entries[keep:]
        self.entries.extend(entries)
        self.stable = min(self.stable, first - 1)
        return self.last_index()

    def maybe_append(
        self, prev_index: int, prev_term: int, committed: int, entries: list[Entry]
    ) -> int | None:
        """A leader's APPEND: None if our log does not hold (prev_index, prev_term), else the last new index."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self._find_conflict(entries)
        if conflict:
            self.append(entries[conflict - entries[0].index :])
        self.commit_to(min(committed, last_new))
        return last_new

    def _find_conflict(self, entries: list[Entry]) -> int:
        """The first index whose entry differs from ours (or that we lack); 0 if all match."""
        for e in entries:
            if e.index <= self.snapshot.index:
                continue  # already compacted, hence committed, hence equal
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            assert index <= self.last_index(), f"commit {index} beyond last index {self.last_index()}"
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Leader: commit up to `index` only if that entry is from the current term (Raft §5.4.2)."""
        if index > self.committed and self.term(index) == term:
            self.commit_to(index)
            return True
        return False

    def applied_to(self, index: int) -> None:
        assert self.applied <= index <= self.committed, (
            f"applied {index} outside ({self.applied}, {self.committed}]"
        )
        self.applied = index

    def stable_to(self, index: int, term: int) -> None:
        # Only if the entry is still the one that was persisted (not cut off meanwhile).
        if self.match_term(index, term) and index > self.stable:
            self.stable = index

    def restore(self, snapshot: SnapshotMeta) -> None:
        """Replace the whole log by a leader's snapshot."""
        self.snapshot = snapshot
        self.entries = []
        self.committed = snapshot.index
        self.applied = snapshot.index
        self.stable = snapshot.index
        self.unstable_snapshot = snapshot

    def compact(self, snapshot: SnapshotMeta) -> None:
        """The application has saved its state at snapshot.index: forget the entries up to it."""
        assert snapshot.index <= self.applied, "cannot compact entries that are not applied"
        if snapshot.index <= self.snapshot.index:
            return
        term = self.term(snapshot.index)
        assert term == snapshot.term, "snapshot term does not match the log"
        del self.entries[: snapshot.index - self.snapshot.index]
        self.snapshot = snapshot
