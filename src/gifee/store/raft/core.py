"""The Raft consensus core: one member's state machine, driven by ticks and messages. No I/O.

Every rule of the protocol lives in this module (with the log's own rules in
`log.py` and replication pacing in `progress.py`): elections with PreVote and
CheckQuorum, log replication with pipelining, commitment, ReadIndex reads,
leader transfer, learners, one-at-a-time membership changes, and snapshots.

Theory of operation. The shell calls `tick()` on a timer, `step(message)` for
every message from a peer and for local requests (proposals, reads, leader
transfer), and then, whenever `has_ready()`, takes `ready()`, does what it
says (persist, send, apply — see `Ready`) and calls `advance(ready)`. The
core never reads a clock, a socket or a file, and its only randomness comes
from the `random.Random` it is given, so the same inputs give the same
outputs: the simulator in the test suite replays any run from its seed.

Safety rules worth stating (they are why the code looks as it does):
- A vote (and the term) is persisted before the vote is sent: messages in a
  Ready are sent only after its hard state is persisted.
- A leader counts its own log toward a quorum only once the shell has
  persisted it (`advance`), so a commit never rests on an unsynced disk.
- A leader commits only entries of its own term by counting (§5.4.2); it
  appends an empty entry on election so that older entries commit too.
- A membership change takes effect when it is applied; a leader accepts a
  new one only after the previous one is applied, so two configurations
  that differ by more than one member never both have a quorum.
- A follower that heard from a leader within the election timeout ignores
  (pre-)vote requests (CheckQuorum's lease), unless a leader transfer forces it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gifee.store.raft.log import RaftLog
from gifee.store.raft.progress import Progress, ProgressState, has_quorum, quorum_index
from gifee.store.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ProposalDropped,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SoftState,
)

MT = MessageType
TRANSFER = b"transfer"
NONE = 0
# Sent to the leader without a term, and stepped there as if local: they are requests, not Raft traffic.
FORWARDED = frozenset({MT.PROPOSE, MT.READ_INDEX, MT.TRANSFER_LEADER})
# What a leader owes a member when the next Ready is taken (`_appends_due`): one APPEND, empty if need be
# (new entries or a new commit index), and/or as many non-empty ones as its in-flight window takes.
_DUE_ONE = 1
_DUE_FILL = 2


@dataclass(frozen=True)
class RaftConfig:
    id: int
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_bytes_per_message: int = 1024 * 1024
    max_inflight: int = 256
    max_committed_bytes: int = 64 * 1024 * 1024  # per Ready


@dataclass
class RestoredState:
    """What the shell read back from disk; empty for a member that has never run."""

    hard_state: HardState
    snapshot: Snapshot | None
    entries: list[Entry]


@dataclass
class _ReadRequest:
    index: int
    context: bytes
    requester: int  # NONE = local
    acks: set[int]


def bootstrap_entries(members: list[ConfChange]) -> list[Entry]:
    """The first entries of a new cluster's log: one ADD_NODE per initial member, all at term 1.

    Every initial member writes the same entries, so they are committed from the start,
    and a member that joins later learns the whole membership by replaying the log.
    """
    return [
        Entry(term=1, index=i + 1, type=EntryType.CONF_CHANGE, data=encode_conf_change(cc))
        for i, cc in enumerate(members)
    ]


def encode_conf_change(cc: ConfChange) -> bytes:
    return bytes([cc.type]) + cc.node_id.to_bytes(8, "big") + cc.context


def decode_conf_change(data: bytes) -> ConfChange:
    if len(data) < 9:
        raise ValueError("conf change entry too short")
    return ConfChange(ConfChangeType(data[0]), int.from_bytes(data[1:9], "big"), data[9:])


class Raft:
    def __init__(self, config: RaftConfig, restored: RestoredState, rng: random.Random) -> None:
        self.config = config
        self.id = config.id
        self.rng = rng
        snap = restored.snapshot
        self.log = RaftLog(snap.meta if snap else None, restored.entries)
        hs = restored.hard_state
        self.term = hs.term
        self.vote = hs.vote
        self.log.commit_to(hs.commit)
        self.conf = snap.meta.conf if snap else ConfState()
        self.progress: dict[int, Progress] = {}
        self.role = Role.FOLLOWER
        self.leader = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_ticks = config.election_ticks
        self.votes: dict[int, bool] = {}
        self.msgs: list[Message] = []
        # Appends a leader owes its members, sent when the Ready is taken rather than at every proposal
        # and every acknowledgement: under load one step batch holds many of each, and sending at each
        # made a member's APPENDs as many as them (about one per entry), each to encode, decode, step
        # and answer, where one APPEND per member per Ready carries the same entries and commit index.
        self._appends_due: dict[int, int] = {}
        self.read_states: list[ReadState] = []
        self.reads: list[_ReadRequest] = []
        self.pending_reads: list[Message] = []  # held until the leader commits in its term
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.removed = False
        self._snapshot_data = b""  # data of a snapshot received from the leader, until persisted
        self._latest_snapshot: Snapshot | None = snap  # what we send to members that lag behind it
        self._prev_soft = SoftState(NONE, Role.FOLLOWER)
        self._prev_hard = hs
        self._ready_committed_to = self.log.applied
        self._reset_progress()
        self._reset_randomized_timeout()

    # ------------------------------------------------------------ queries

    @property
    def voters(self) -> frozenset[int]:
        return self.conf.voters

    def promotable(self) -> bool:
        return self.id in self.conf.voters

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(self.leader, self.role)

    def leader_silent_ticks(self) -> int:
        """Ticks since this follower last heard from the leader it knows; 0 for a leader or with none known.

        Every message from the leader (append, heartbeat, snapshot) resets the follower's election
        timer, and nothing else does while that leader is known, so the timer is this count.
        """
        if self.role != Role.FOLLOWER or self.leader == NONE:
            return 0
        return self.election_elapsed

    # ------------------------------------------------------------ the shell's entry points

    def tick(self) -> None:
        if self.role == Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def propose(self, data_list: list[bytes]) -> None:
        """Append normal entries (through the leader). Raises ProposalDropped if that cannot happen now."""
        self.step(
            Message(MT.PROPOSE, from_=self.id, entries=[Entry(0, 0, EntryType.NORMAL, d) for d in data_list])
        )

    def propose_conf_change(self, cc: ConfChange) -> None:
        self.step(
            Message(
                MT.PROPOSE,
                from_=self.id,
                entries=[Entry(0, 0, EntryType.CONF_CHANGE, encode_conf_change(cc))],
            )
        )

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read; answered by a ReadState carrying `context`."""
        self.step(Message(MT.READ_INDEX, from_=self.id, entries=[Entry(0, 0, data=context)]))

    def transfer_leader(self, transferee: int) -> None:
        self.step(Message(MT.TRANSFER_LEADER, from_=transferee))

    def campaign(self) -> None:
        self.step(Message(MT.HUP, from_=self.id))

    def has_ready(self) -> bool:
        return bool(
            self.msgs
            or self._appends_due
            or self.read_states
            or self.log.unstable()
            or self.log.unstable_snapshot is not None
            or self.hard_state() != self._prev_hard
            or self.soft_state() != self._prev_soft
            or self.log.committed > self._ready_committed_to
        )

    def ready(self) -> Ready:
        if self._appends_due:
            self._send_due_appends()
        rd = Ready()
        soft = self.soft_state()
        if soft != self._prev_soft:
            rd.soft_state = soft
        hard = self.hard_state()
        if hard != self._prev_hard:
            rd.hard_state = hard
        if self.log.unstable_snapshot is not None:
            rd.snapshot = Snapshot(self.log.unstable_snapshot, self._snapshot_data)
        rd.entries = list(self.log.unstable())
        if self.log.committed > self._ready_committed_to:
            rd.committed = self.log.slice(
                self._ready_committed_to + 1, self.log.committed + 1, self.config.max_committed_bytes
            )
        rd.messages, self.msgs = self.msgs, []
        rd.read_states, self.read_states = self.read_states, []
        if rd.committed:
            self._ready_committed_to = rd.committed[-1].index
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        return rd

    def advance(self, rd: Ready) -> None:
        """The shell has persisted, sent and applied what `rd` held."""
        if rd.snapshot is not None and self.log.unstable_snapshot == rd.snapshot.meta:
            self.log.unstable_snapshot = None
            self._snapshot_data = b""
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
            if self.role == Role.LEADER and self.id in self.progress:
                # Our own log counts toward a quorum only once it is on our disk.
                if self.progress[self.id].maybe_update(self.log.stable) and self._maybe_commit():
                    self._defer_broadcast_append()
        for e in rd.committed:
            if e.index <= self.log.applied:
                continue  # a snapshot overtook it
            self.log.applied_to(e.index)
            if e.type == EntryType.CONF_CHANGE:
                self._apply_conf_change(decode_conf_change(e.data))
        if self.role == Role.LEADER and self.pending_reads and self._committed_in_term():
            held, self.pending_reads = self.pending_reads, []
            for m in held:
                self._leader_read_index(m)

    def compact(self, snapshot: Snapshot) -> None:
        """The application saved its state at snapshot.meta.index: drop the log before it.

        The core keeps the snapshot to send to members whose next entry it no longer has.
        """
        if snapshot.meta.index <= self.log.snapshot.index:
            return
        self.log.compact(snapshot.meta)
        self._latest_snapshot = snapshot

    # ------------------------------------------------------------ stepping

    def step(self, m: Message) -> None:
        if m.term == 0:
            pass  # local, or forwarded as if local (proposals, reads, leader transfer)
        elif m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                forced = m.context == TRANSFER
                in_lease = (
                    self.config.check_quorum
                    and self.leader != NONE
                    and self.election_elapsed < self.config.election_ticks
                )
                if not forced and in_lease:
                    return  # we heard from a live leader: a disruptive candidate must not depose it
            if m.type == MT.PRE_VOTE:
                pass  # a pre-vote never changes our term
            elif m.type == MT.PRE_VOTE_RESPONSE and not m.reject:
                pass  # granted pre-votes carry the term we are about to campaign in
            else:
                lead = m.from_ if m.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT) else NONE
                self._become_follower(m.term, lead)
        elif m.term < self.term:
            if (self.config.check_quorum or self.config.pre_vote) and m.type in (MT.HEARTBEAT, MT.APPEND):
                # A deposed leader (or one cut off by a partition) learns our term and steps down.
                self._send(Message(MT.APPEND_RESPONSE, to=m.from_))
            elif m.type == MT.PRE_VOTE:
                self._send(Message(MT.PRE_VOTE_RESPONSE, to=m.from_, term=self.term, reject=True))
            return

        if m.type == MT.HUP:
            self._hup(transfer=False)
        elif m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (
            self.vote == m.from_
            or (self.vote == NONE and self.leader == NONE)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        resp_type = MT.VOTE_RESPONSE if m.type == MT.VOTE else MT.PRE_VOTE_RESPONSE
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # A pre-vote answer carries the candidate's future term, so it is not ignored as stale.
            self._send(Message(resp_type, to=m.from_, term=m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.from_
        else:
            self._send(Message(resp_type, to=m.from_, term=self.term, reject=True))

    # ------------------------------------------------------------ roles

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.leader = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self.votes = {}
        self.lead_transferee = NONE
        self.reads = []
        self.pending_reads = []
        self._appends_due = {}
        self._reset_progress()

    def _reset_progress(self) -> None:
        last = self.log.last_index()
        old = self.progress
        self.progress = {}
        for node in self.conf.voters | self.conf.learners:
            pr = Progress(
                next=last + 1, learner=node in self.conf.learners, max_inflight=self.config.max_inflight
            )
            if node == self.id:
                pr.match = self.log.stable
            pr.recent_active = old[node].recent_active if node in old else False
            self.progress[node] = pr

    def _reset_randomized_timeout(self) -> None:
        e = self.config.election_ticks
        self.randomized_election_ticks = e + self.rng.randrange(e)

    def _become_follower(self, term: int, leader: int) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader

    def _become_pre_candidate(self) -> None:
        assert self.role != Role.LEADER
        # Not a real candidacy: term and vote stay, so a failed pre-vote disturbs nobody.
        self.votes = {}
        self.role = Role.PRE_CANDIDATE
        self.leader = NONE

    def _become_candidate(self) -> None:
        assert self.role != Role.LEADER
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        assert self.role == Role.CANDIDATE
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        for pr in self.progress.values():
            pr.recent_active = True
        # No membership change until every older one is applied: they may still be pending.
        self.pending_conf_index = self.log.last_index()
        self._append([Entry(0, 0)])  # commits the previous terms' entries (§5.4.2)

    def _hup(self, transfer: bool) -> None:
        if self.role == Role.LEADER or not self.promotable():
            return
        if self._unapplied_conf_change():
            return  # our idea of the membership may be about to change
        if self.config.pre_vote and not transfer:
            self._campaign(pre=True, transfer=False)
        else:
            self._campaign(pre=False, transfer=transfer)

    def _unapplied_conf_change(self) -> bool:
        if self.log.committed <= self.log.applied:
            return False
        lo = max(self.log.applied + 1, self.log.first_index())
        return any(e.type == EntryType.CONF_CHANGE for e in self.log.slice(lo, self.log.committed + 1))

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self._become_pre_candidate()
            term, kind = self.term + 1, MT.PRE_VOTE
        else:
            self._become_candidate()
            term, kind = self.term, MT.VOTE
        self.votes[self.id] = True
        if self._tally() == "won":
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self._become_leader()
            return
        for node in sorted(self.conf.voters):
            if node == self.id:
                continue
            self._send(
                Message(
                    kind,
                    to=node,
                    term=term,
                    index=self.log.last_index(),
                    log_term=self.log.last_term(),
                    context=TRANSFER if transfer else b"",
                )
            )

    def _tally(self) -> str:
        granted = {n for n, v in self.votes.items() if v}
        rejected = {n for n, v in self.votes.items() if not v}
        if has_quorum(self.conf.voters, granted):
            return "won"
        quorum = len(self.conf.voters) // 2 + 1
        if len(rejected & self.conf.voters) > len(self.conf.voters) - quorum:
            return "lost"
        return "pending"

    # ------------------------------------------------------------ timers

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_ticks:
            self.election_elapsed = 0
            self.step(Message(MT.HUP, from_=self.id))

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_ticks:
            self.election_elapsed = 0
            if self.config.check_quorum:
                self.step(Message(MT.CHECK_QUORUM, from_=self.id))
            if self.role == Role.LEADER and self.lead_transferee != NONE:
                self.lead_transferee = NONE  # the transfer did not finish in an election timeout: give up
        if self.role != Role.LEADER:
            return
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self.step(Message(MT.BEAT, from_=self.id))

    # ------------------------------------------------------------ leader

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.BEAT:
            self._broadcast_heartbeat()
            return
        if t == MT.CHECK_QUORUM:
            active = {n for n, p in self.progress.items() if p.recent_active or n == self.id}
            if not has_quorum(self.conf.voters, active):
                self._become_follower(self.term, NONE)
                return
            for n, p in self.progress.items():
                if n != self.id:
                    p.recent_active = False
            return
        if t == MT.PROPOSE:
            self._leader_propose(m)
            return
        if t == MT.READ_INDEX:
            if not self._committed_in_term():
                self.pending_reads.append(m)  # our commit index may lag the previous leader's
                return
            self._leader_read_index(m)
            return
        if t == MT.TRANSFER_LEADER:
            self._leader_transfer(m.from_)
            return
        pr = self.progress.get(m.from_)
        if pr is None:
            return
        if t == MT.APPEND_RESPONSE:
            pr.recent_active = True
            if m.reject:
                if pr.maybe_decrease(m.index, m.reject_hint):
                    if pr.state == ProgressState.REPLICATE:
                        pr.become_probe()
                    self._send_append(m.from_)
                return
            old_paused = pr.is_paused()
            if pr.maybe_update(m.index):
                if pr.state == ProgressState.PROBE:
                    pr.become_replicate()
                elif pr.state == ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
                    pr.become_probe()
                    pr.become_replicate()
                if self._maybe_commit():
                    self._defer_broadcast_append()
                elif old_paused:
                    self._appends_due[m.from_] = self._appends_due.get(m.from_, 0) | _DUE_ONE
                # Acknowledgements free in-flight slots: fill them (size-limited messages).
                self._appends_due[m.from_] = self._appends_due.get(m.from_, 0) | _DUE_FILL
                if m.from_ == self.lead_transferee and pr.match == self.log.last_index():
                    self._send(Message(MT.TIMEOUT_NOW, to=m.from_))
            return
        if t == MT.HEARTBEAT_RESPONSE:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and pr.is_paused():
                # The member is alive but our window is full: an APPEND was probably lost. Free a
                # slot so the next one goes out; if it leaves a gap, the rejection sends us probing.
                pr.inflights.popleft()
            if pr.match < self.log.last_index() or pr.state == ProgressState.SNAPSHOT:
                self._send_append(m.from_)
            if m.context:
                self._read_ack(m.context, m.from_)
            return
        if t == MT.SNAPSHOT_STATUS:
            if pr.state != ProgressState.SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            pr.probe_sent = True  # wait for the member's answer (or a heartbeat) before probing again
            return
        if t == MT.UNREACHABLE:
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
            return

    def _leader_propose(self, m: Message) -> None:
        if self.id not in self.progress:
            raise ProposalDropped("this member was removed from the cluster")
        if self.lead_transferee != NONE:
            raise ProposalDropped("leadership is being transferred")
        for e in m.entries:
            if e.type == EntryType.CONF_CHANGE:
                if self.pending_conf_index > self.log.applied:
                    raise ProposalDropped("a membership change is still being applied")
                self._check_conf_change(decode_conf_change(e.data))
        entries = [Entry(0, 0, e.type, e.data) for e in m.entries]
        self._append(entries)
        for e in entries:
            if e.type == EntryType.CONF_CHANGE:
                self.pending_conf_index = e.index
        self._defer_broadcast_append()

    def _check_conf_change(self, cc: ConfChange) -> None:
        members = self.conf.voters | self.conf.learners
        if cc.type == ConfChangeType.REMOVE_NODE and cc.node_id not in members:
            raise ProposalDropped("no such member")
        if cc.type == ConfChangeType.ADD_LEARNER and cc.node_id in self.conf.voters:
            raise ProposalDropped("a voter cannot become a learner")
        if cc.type == ConfChangeType.REMOVE_NODE and self.conf.voters == {cc.node_id}:
            raise ProposalDropped("cannot remove the last voter")

    def _append(self, entries: list[Entry]) -> None:
        last = self.log.last_index()
        for i, e in enumerate(entries):
            e.term = self.term
            e.index = last + 1 + i
        self.log.append(entries)
        # Our own progress moves in `advance`, once the shell has persisted these; except for a lone
        # voter with no learners. Nothing of its log leaves the member before the shell has synced
        # the Ready that carries these entries (a Ready's entries are on disk before its committed
        # entries are applied), so they may be committed in that same Ready, as etcd's raft does:
        # one Ready per proposal instead of two.
        if len(self.progress) == 1 and self.role == Role.LEADER:
            pr = self.progress.get(self.id)
            if pr is not None and pr.maybe_update(self.log.last_index()):
                self._maybe_commit()

    def _maybe_commit(self) -> bool:
        matches = [self.progress[n].match for n in self.conf.voters if n in self.progress]
        return self.log.maybe_commit(quorum_index(matches), self.term)

    def _committed_in_term(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    def _broadcast_append(self) -> None:
        for node in self.progress:
            if node != self.id:
                self._send_append(node)

    def _defer_broadcast_append(self) -> None:
        """`_broadcast_append` when the Ready is taken (see `_appends_due`)."""
        due = self._appends_due
        for node in self.progress:
            if node != self.id:
                due[node] = due.get(node, 0) | _DUE_ONE

    def _send_due_appends(self) -> None:
        due, self._appends_due = self._appends_due, {}
        if self.role != Role.LEADER:
            return
        for to, what in due.items():
            if to not in self.progress:
                continue  # removed meanwhile
            if what & _DUE_ONE:
                self._send_append(to)
            if what & _DUE_FILL:
                while self._send_append(to, allow_empty=False):
                    pass

    def _send_append(self, to: int, allow_empty: bool = True) -> bool:
        pr = self.progress[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        prev_term = self.log.term(prev_index)
        if prev_term is None or pr.next < self.log.first_index():
            return self._send_snapshot(to, pr)
        entries = self.log.slice(pr.next, self.log.last_index() + 1, self.config.max_bytes_per_message)
        if not entries and not allow_empty:
            return False
        self._send(
            Message(
                MT.APPEND,
                to=to,
                index=prev_index,
                log_term=prev_term,
                entries=entries,
                commit=self.log.committed,
            )
        )
        pr.sent(entries[-1].index if entries else prev_index, len(entries))
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # do not ship a whole snapshot to a member we have not heard from
        snap = self._latest_snapshot
        if snap is None:
            return False
        self._send(Message(MT.SNAPSHOT, to=to, snapshot=snap))
        pr.become_snapshot(snap.meta.index)
        return True

    def _broadcast_heartbeat(self, context: bytes = b"") -> None:
        if not context and self.reads:
            context = self.reads[-1].context
        for node, pr in self.progress.items():
            if node == self.id:
                continue
            # Never tell a member to commit past what it is known to hold.
            self._send(
                Message(MT.HEARTBEAT, to=node, commit=min(pr.match, self.log.committed), context=context)
            )

    def _leader_read_index(self, m: Message) -> None:
        context = m.entries[0].data if m.entries else b""
        index = self.log.committed
        if len(self.conf.voters) == 1:
            self._answer_read(index, context, m.from_)
            return
        self.reads.append(_ReadRequest(index, context, m.from_, {self.id}))
        self._broadcast_heartbeat(context)

    def _read_ack(self, context: bytes, node: int) -> None:
        for pos, req in enumerate(self.reads):
            if req.context != context:
                continue
            req.acks.add(node)
            if has_quorum(self.conf.voters, req.acks):
                # A quorum still follows us as of this request, hence as of every earlier one.
                done, self.reads = self.reads[: pos + 1], self.reads[pos + 1 :]
                for r in done:
                    self._answer_read(r.index, r.context, r.requester)
            return

    def _answer_read(self, index: int, context: bytes, requester: int) -> None:
        if requester in (NONE, self.id):
            self.read_states.append(ReadState(index, context))
        else:
            self._send(
                Message(
                    MT.READ_INDEX_RESPONSE, to=requester, index=index, entries=[Entry(0, 0, data=context)]
                )
            )

    def _leader_transfer(self, transferee: int) -> None:
        pr = self.progress.get(transferee)
        if pr is None or pr.learner or transferee == self.id:
            return
        if self.lead_transferee == transferee:
            return
        self.lead_transferee = transferee
        self.election_elapsed = 0  # the transfer has one election timeout to finish
        if pr.match == self.log.last_index():
            self._send(Message(MT.TIMEOUT_NOW, to=transferee))
        else:
            self._send_append(transferee)

    # ------------------------------------------------------------ candidate

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t == MT.PROPOSE:
            raise ProposalDropped("no leader")
        if t in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
            # Someone won this term (m.term == our term, or higher and we already stepped down).
            self._become_follower(m.term, m.from_)
            self._step_follower(m)
            return
        expected = MT.PRE_VOTE_RESPONSE if self.role == Role.PRE_CANDIDATE else MT.VOTE_RESPONSE
        if t != expected:
            return
        self.votes.setdefault(m.from_, not m.reject)
        outcome = self._tally()
        if outcome == "won":
            if self.role == Role.PRE_CANDIDATE:
                self._campaign(pre=False, transfer=False)
            else:
                self._become_leader()
                self._broadcast_append()
        elif outcome == "lost":
            self._become_follower(self.term, NONE)

    # ------------------------------------------------------------ follower

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MT.PROPOSE:
            if self.leader == NONE:
                raise ProposalDropped("no leader")
            self._send(Message(MT.PROPOSE, to=self.leader, entries=m.entries))
            return
        if t == MT.APPEND:
            self.election_elapsed = 0
            self.leader = m.from_
            self._handle_append(m)
            return
        if t == MT.HEARTBEAT:
            self.election_elapsed = 0
            self.leader = m.from_
            self.log.commit_to(min(m.commit, self.log.last_index()))
            self._send(Message(MT.HEARTBEAT_RESPONSE, to=m.from_, context=m.context))
            return
        if t == MT.SNAPSHOT:
            self.election_elapsed = 0
            self.leader = m.from_
            self._handle_snapshot(m)
            return
        if t == MT.TRANSFER_LEADER:
            if self.leader != NONE:
                self._send(Message(MT.TRANSFER_LEADER, to=self.leader, from_=m.from_))
            return
        if t == MT.TIMEOUT_NOW:
            if self.promotable():
                self._hup(transfer=True)
            return
        if t == MT.READ_INDEX:
            if self.leader == NONE:
                raise ProposalDropped("no leader")
            self._send(Message(MT.READ_INDEX, to=self.leader, entries=m.entries))
            return
        if t == MT.READ_INDEX_RESPONSE:
            if m.entries:
                self.read_states.append(ReadState(m.index, m.entries[0].data))
            return

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(Message(MT.APPEND_RESPONSE, to=m.from_, index=self.log.committed))
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(Message(MT.APPEND_RESPONSE, to=m.from_, index=last_new))
        else:
            # Skip back past every entry of a term newer than the leader's entry there: none of them
            # can match, so the leader need not probe them one by one.
            hint = min(m.index, self.log.last_index())
            while hint > self.log.snapshot.index and (self.log.term(hint) or 0) > m.log_term:
                hint -= 1
            self._send(Message(MT.APPEND_RESPONSE, to=m.from_, index=m.index, reject=True, reject_hint=hint))

    def _handle_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None
        meta = m.snapshot.meta
        if meta.index <= self.log.committed:
            self._send(Message(MT.APPEND_RESPONSE, to=m.from_, index=self.log.committed))
            return
        if self.log.match_term(meta.index, meta.term):
            # We already hold that entry: keep our log, just commit up to it.
            self.log.commit_to(meta.index)
            self._send(Message(MT.APPEND_RESPONSE, to=m.from_, index=self.log.last_index()))
            return
        self.log.restore(meta)
        self._snapshot_data = m.snapshot.data
        self._latest_snapshot = m.snapshot  # our log starts after it now: it is what we would send
        self._ready_committed_to = meta.index
        self.conf = meta.conf
        self._reset_progress()
        self._send(Message(MT.APPEND_RESPONSE, to=m.from_, index=self.log.last_index()))

    # ------------------------------------------------------------ membership

    def _apply_conf_change(self, cc: ConfChange) -> None:
        voters, learners = set(self.conf.voters), set(self.conf.learners)
        if cc.type == ConfChangeType.ADD_NODE:
            learners.discard(cc.node_id)
            voters.add(cc.node_id)
        elif cc.type == ConfChangeType.ADD_LEARNER:
            if cc.node_id not in voters:
                learners.add(cc.node_id)
        elif cc.type == ConfChangeType.REMOVE_NODE:
            voters.discard(cc.node_id)
            learners.discard(cc.node_id)
        else:
            return  # UPDATE_NODE changes nothing that Raft sees
        self.conf = ConfState(frozenset(voters), frozenset(learners))
        if cc.node_id == self.id and cc.type == ConfChangeType.REMOVE_NODE:
            self.removed = True
        last = self.log.last_index()
        for node in voters | learners:
            pr = self.progress.get(node)
            if pr is None:
                pr = Progress(next=last + 1, max_inflight=self.config.max_inflight, recent_active=True)
                self.progress[node] = pr
            pr.learner = node in learners
        for node in list(self.progress):
            if node not in voters and node not in learners:
                del self.progress[node]
        if self.role != Role.LEADER:
            return
        if not self.conf.voters or self.id not in self.conf.voters:
            # A removed (or demoted) leader steps down; the others elect a new one.
            self._become_follower(self.term, NONE)
            return
        if self.lead_transferee not in self.progress:
            self.lead_transferee = NONE
        if self._maybe_commit():
            self._broadcast_append()
        else:
            for node in self.progress:
                if node != self.id and self.progress[node].match == 0:
                    self._send_append(node)

    # ------------------------------------------------------------ output

    def _send(self, m: Message) -> None:
        if m.type != MT.TRANSFER_LEADER:
            m.from_ = self.id  # a forwarded transfer names the transferee in from_
        if m.type in (MT.VOTE, MT.PRE_VOTE, MT.VOTE_RESPONSE, MT.PRE_VOTE_RESPONSE):
            assert m.term != 0, "vote messages carry their term explicitly"
        elif m.type not in FORWARDED:
            m.term = self.term
        self.msgs.append(m)
