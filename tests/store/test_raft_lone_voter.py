"""A lone voter commits a proposal in the Ready that carries it; with anyone else to tell, it waits for its disk.

The shell (`raftnode.RaftNode`) syncs a Ready's entries before it applies that Ready's
committed entries, so a member that is the whole quorum and has no one to send its log
to may count its own unsynced entries; a leader with followers or learners counts them
only in `advance` (followers could otherwise learn a commit index that a crash undoes).
"""

from __future__ import annotations

import random

from gifee.store.raft.core import Raft, RaftConfig, Ready, RestoredState, bootstrap_entries
from gifee.store.raft.types import ConfChange, ConfChangeType, HardState, Message, MessageType, Role


def _leader(ids: list[int], learners: tuple[int, ...] = ()) -> Raft:
    changes = [ConfChange(ConfChangeType.ADD_NODE, i) for i in ids]
    changes += [ConfChange(ConfChangeType.ADD_LEARNER, i) for i in learners]
    boot = bootstrap_entries(changes)
    raft = Raft(
        RaftConfig(id=1),
        RestoredState(HardState(term=1, commit=len(boot)), None, list(boot)),
        random.Random(1),
    )
    _drain(raft)
    raft.campaign()
    _drain(raft)
    if raft.role != Role.LEADER:  # with other voters, their votes are needed
        for voter in ids[1:]:
            raft.step(_vote_from(raft, voter))
        _drain(raft)
    assert raft.role == Role.LEADER
    return raft


def _vote_from(raft: Raft, voter: int) -> Message:
    return Message(MessageType.VOTE_RESP, to=raft.id, from_=voter, term=raft.term)


def _drain(raft: Raft) -> list[Ready]:
    readies = []
    while raft.has_ready():
        rd = raft.ready()
        readies.append(rd)
        raft.advance(rd)
    return readies


def test_lone_voter_commits_a_proposal_in_its_first_ready() -> None:
    raft = _leader([1])
    raft.propose([b"a", b"b"])
    rd = raft.ready()
    assert [e.data for e in rd.entries] == [b"a", b"b"]
    assert [e.data for e in rd.committed] == [b"a", b"b"]
    assert rd.hard_state is not None and rd.hard_state.commit == rd.entries[-1].index
    raft.advance(rd)
    assert not raft.has_ready()
    assert raft.log.applied == rd.entries[-1].index


def test_leader_with_a_learner_commits_only_after_its_disk() -> None:
    raft = _leader([1], learners=(2,))
    raft.propose([b"a"])
    first = raft.ready()
    assert [e.data for e in first.entries] == [b"a"]
    assert first.committed == []
    raft.advance(first)
    second = raft.ready()
    assert [e.data for e in second.committed] == [b"a"]
