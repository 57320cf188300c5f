"""The values that flow in and out of the Raft core: entries, messages, snapshots, Ready.

Plain data, no behaviour. The core (`core.py`) consumes `Message`s and hands
back `Ready`s; the shell persists, sends and applies what a `Ready` holds. The
peer transport turns `Message` into bytes (`wire.py`); nothing here knows how.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class MessageType(IntEnum):
    # Local: made by the shell or by the core itself, never sent over the network.
    HUP = 0  # start an election now
    BEAT = 1  # leader: send heartbeats now
    PROPOSE = 2  # entries to append (forwarded to the leader by followers)
    CHECK_QUORUM = 3  # leader: step down unless a quorum was heard from recently
    UNREACHABLE = 4  # the transport failed to reach `from_`
    SNAPSHOT_STATUS = 5  # the transport finished sending a snapshot to `from_` (reject = failed)
    # Between members.
    APPEND = 10
    APPEND_RESPONSE = 11
    VOTE = 12
    VOTE_RESPONSE = 13
    PRE_VOTE = 14
    PRE_VOTE_RESPONSE = 15
    HEARTBEAT = 16
    HEARTBEAT_RESPONSE = 17
    SNAPSHOT = 18
    READ_INDEX = 19  # also local: a linearizable read asks for the commit index
    READ_INDEX_RESPONSE = 20
    TRANSFER_LEADER = 21  # also local: `from_` is the member that should lead
    TIMEOUT_NOW = 22  # leader to transferee: campaign now, skipping pre-vote and leases


LOCAL_MESSAGES = frozenset(
    {
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.CHECK_QUORUM,
        MessageType.UNREACHABLE,
        MessageType.SNAPSHOT_STATUS,
    }
)


class EntryType(IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


class ConfChangeType(IntEnum):
    ADD_NODE = 0  # a voter; on an existing learner: promotion
    REMOVE_NODE = 1
    UPDATE_NODE = 2  # no change to voting; the application updates the member's attributes
    ADD_LEARNER = 3


class Role(IntEnum):
    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


@dataclass(slots=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class ConfChange:
    type: ConfChangeType
    node_id: int
    context: bytes = b""  # the application's description of the member (name, URLs)


@dataclass(frozen=True, slots=True)
class ConfState:
    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int
    term: int
    conf: ConfState


@dataclass(slots=True)
class Snapshot:
    meta: SnapshotMeta
    data: bytes = b""  # the application's state at meta.index; opaque to the core


@dataclass(frozen=True, slots=True)
class HardState:
    term: int = 0
    vote: int = 0
    commit: int = 0


@dataclass(slots=True)
class Message:
    type: MessageType
    to: int = 0
    from_: int = 0
    term: int = 0
    log_term: int = 0  # APPEND: term of the entry before `entries`; votes: candidate's last term
    index: int = 0  # APPEND: index of that entry; votes: candidate's last index; responses: see core
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""  # READ_INDEX request id; b"transfer" on a vote forced by leader transfer


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the local applied index reaches `index`."""

    index: int
    context: bytes


@dataclass(frozen=True, slots=True)
class SoftState:
    leader: int
    role: Role


@dataclass(slots=True)
class Ready:
    """What the shell must do, in this order, before calling `advance`.

    1. Persist `snapshot` (if any), then `entries` (which replace any persisted
       entries from `entries[0].index` on), then `hard_state` (if any) — and sync.
    2. Send `messages`.
    3. Apply `committed` in order (a CONF_CHANGE entry's change is applied to the
       core by `advance`; the application updates its own member list).
    4. Serve the reads in `read_states` once applied reaches their index.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.soft_state is not None
            or self.hard_state is not None
            or self.snapshot is not None
            or self.entries
            or self.messages
            or self.committed
            or self.read_states
        )


class ProposalDropped(Exception):
    """The proposal was not appended (no leader known, leadership in transfer, or a conf change pending)."""
