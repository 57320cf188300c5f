"""What a leader knows about each member's log, and how it paces replication to it.

A member is in one of three states, as in etcd's raft:
- PROBE: we do not know where its log ends; send one APPEND at a time and
  wait for the answer (or a heartbeat response) before sending the next.
- REPLICATE: its log matches ours up to `match`; stream APPENDs optimistically
  (pipelining), at most `max_inflight` unacknowledged messages at once.
- SNAPSHOT: it needs a snapshot; send nothing else until the transport says
  the snapshot was delivered or failed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


@dataclass(slots=True)
class Progress:
    match: int = 0
    next: int = 1
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False
    pending_snapshot: int = 0
    recent_active: bool = False
    learner: bool = False
    max_inflight: int = 256
    inflights: deque[int] = field(default_factory=deque)  # last index of each unacknowledged APPEND

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            # The snapshot may or may not have arrived; probe from after it either way.
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.clear()

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.probe_sent = False
        self.inflights.clear()

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to `index`; False if it tells us nothing new."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        while self.inflights and self.inflights[0] <= index:
            self.inflights.popleft()
        return updated

    def maybe_decrease(self, rejected: int, hint: int) -> bool:
        """A rejection of the APPEND after `rejected`; False if it is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False  # answers an older probe
        self.next = max(min(rejected, hint + 1), 1)
        self.probe_sent = False
        return True

    def sent(self, last_index: int, count: int) -> None:
        if self.state == ProgressState.REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflights.append(last_index)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return len(self.inflights) >= self.max_inflight
        return True


def quorum_index(matches: list[int]) -> int:
    """The highest index that a majority of `matches` has reached."""
    if not matches:
        return 0
    ordered = sorted(matches, reverse=True)
    return ordered[len(ordered) // 2]


def has_quorum(voters: frozenset[int], granted: set[int]) -> bool:
    return len(granted & voters) > len(voters) // 2
