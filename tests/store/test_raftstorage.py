"""Raft's log on the WAL: what is written comes back, cut-off suffixes stay cut off, compaction keeps the rest."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gifee.store.membership import Member, Membership, describe
from gifee.store.raft.types import ConfChange, ConfChangeType, Entry, EntryType, HardState
from gifee.store.raftstorage import RaftStorage
from gifee.store.wal import WalCorruptError


def entries(first: int, last: int, term: int) -> list[Entry]:
    return [Entry(term, i, EntryType.NORMAL, b"e%d-t%d" % (i, term)) for i in range(first, last + 1)]


def reopen(path: Path, snapshot_index: int = 0) -> tuple[RaftStorage, HardState, list[Entry]]:
    return RaftStorage.open(path, snapshot_index)


def test_round_trip_and_last_hard_state_wins(tmp_path: Path) -> None:
    s, hs, es = reopen(tmp_path)
    assert hs == HardState() and es == []
    s.save(HardState(1, 1, 0), entries(1, 3, 1))
    s.save(HardState(2, 2, 3), entries(4, 5, 2))
    s.sync()
    s.close()
    s, hs, es = reopen(tmp_path)
    assert hs == HardState(2, 2, 3)
    assert es == entries(1, 3, 1) + entries(4, 5, 2)
    s.close()


def test_a_conflicting_suffix_stays_replaced(tmp_path: Path) -> None:
    s, _, _ = reopen(tmp_path)
    s.save(HardState(1, 0, 0), entries(1, 6, 1))
    s.save(HardState(2, 0, 2), entries(3, 4, 2))  # a new leader cut 3..6 off and wrote 3..4
    s.sync()
    s.close()
    s, _, es = reopen(tmp_path)
    assert es == entries(1, 2, 1) + entries(3, 4, 2)
    s.save(None, entries(5, 5, 2))
    s.sync()
    s.close()
    _, _, es = reopen(tmp_path)
    assert [e.index for e in es] == [1, 2, 3, 4, 5] and es[-1].term == 2


def test_a_hole_is_corruption(tmp_path: Path) -> None:
    s, _, _ = reopen(tmp_path)
    s.save(None, entries(1, 2, 1))
    s.save(None, entries(4, 4, 1))  # nothing at 3: no writer does this
    s.sync()
    s.close()
    with pytest.raises(WalCorruptError, match="hole"):
        reopen(tmp_path)


def test_commit_beyond_the_entries_is_corruption(tmp_path: Path) -> None:
    s, _, _ = reopen(tmp_path)
    s.save(HardState(1, 0, 5), entries(1, 2, 1))
    s.sync()
    s.close()
    with pytest.raises(WalCorruptError, match="commit index"):
        reopen(tmp_path)


def test_compaction_keeps_what_follows_and_the_hard_state(tmp_path: Path) -> None:
    s, _, _ = reopen(tmp_path)
    for start in range(1, 400, 10):
        s.save(HardState(1, 1, start - 1), entries(start, start + 9, 1))
    s.sync()
    s.compact(300, HardState(1, 1, 400))
    s.close()
    s, hs, es = reopen(tmp_path, snapshot_index=300)
    assert hs == HardState(1, 1, 400)
    assert [e.index for e in es] == list(range(301, 401))
    s.close()


def test_reset_drops_everything_but_the_hard_state(tmp_path: Path) -> None:
    s, _, _ = reopen(tmp_path)
    s.save(HardState(3, 2, 10), entries(1, 10, 3))
    s.sync()
    s.reset(HardState(4, 0, 50))
    s.save(None, entries(51, 52, 4))
    s.sync()
    s.close()
    _, hs, es = reopen(tmp_path, snapshot_index=50)
    assert hs == HardState(4, 0, 50) and [e.index for e in es] == [51, 52]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 30), st.integers(1, 5)), min_size=1, max_size=25))
def test_replay_equals_the_log_a_raft_member_would_hold(
    tmp_path_factory: pytest.TempPathFactory, writes: list[tuple[int, int]]
) -> None:
    """Any sequence of appends (each possibly cutting off a suffix) replays to the same log."""
    path = tmp_path_factory.mktemp("wal")
    s, _, _ = reopen(path)
    model: list[Entry] = []
    term = 1
    for first, count in writes:
        first = min(first, len(model) + 1)  # appends never leave a hole
        term += 1
        batch = entries(first, first + count - 1, term)
        s.save(None, batch)
        model = model[: first - 1] + batch
    s.sync()
    s.close()
    _, _, es = reopen(path)
    assert es == model


def test_membership_follows_conf_changes() -> None:
    m = Membership()
    a = Member(1, "a", ["http://a:2380"])
    b = Member(2, "", ["http://b:2380"], is_learner=True)
    m.apply_conf_change(ConfChange(ConfChangeType.ADD_NODE, 1, describe(a)))
    m.apply_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 2, describe(b)))
    assert m.members[2].is_learner and m.members[1].peer_urls == ["http://a:2380"]
    m.publish(2, "b", ["http://b:2379"])
    m.apply_conf_change(ConfChange(ConfChangeType.ADD_NODE, 2, describe(b)))  # promotion
    assert not m.members[2].is_learner and m.members[2].name == "b"
    m.apply_conf_change(
        ConfChange(ConfChangeType.UPDATE_NODE, 1, describe(Member(1, "a", ["http://a2:2380"])))
    )
    assert m.members[1].peer_urls == ["http://a2:2380"]
    m.apply_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 1))
    assert 1 not in m.members and 1 in m.removed
    again = Membership.from_plain(m.to_plain())
    assert again.to_plain() == m.to_plain()


def test_a_deferred_commit_goes_out_with_the_next_write_or_at_close(tmp_path: Path) -> None:
    s, _, _ = reopen(tmp_path)
    s.save(HardState(1, 1, 0), entries(1, 3, 1))
    s.sync()
    s.defer(HardState(1, 1, 3))
    records = s.wal.last_index
    s.defer(HardState(1, 1, 3))
    assert s.wal.last_index == records  # nothing written for it yet
    s.save(None, entries(4, 4, 1))
    s.sync()
    s.close()
    s, hs, es = reopen(tmp_path)
    assert hs == HardState(1, 1, 3) and es == entries(1, 4, 1)
    s.defer(HardState(1, 1, 4))
    s.close()  # a clean stop writes it
    s, hs, _ = reopen(tmp_path)
    assert hs == HardState(1, 1, 4)
    s.close()
