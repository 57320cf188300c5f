"""The Raft core under the deterministic simulator: thousands of seeds, and proof the checks bite.

A failing seed is replayed with `python -m tests.store.raftsim --seed N --verbose`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from gifee.store.raft import core
from gifee.store.raft.log import RaftLog
from tests.fromsource import rerun_from_source
from tests.store.raftsim import SafetyViolation, SimConfig, Simulation, run_seed
from tests.store.test_raft_scenarios import run_script

SCENARIOS = Path(__file__).parent / "raft_scenarios"

THREE = SimConfig(members=3, steps=400)
FIVE = SimConfig(members=5, steps=400)


def _run_range(first: int, count: int, cfg: SimConfig) -> None:
    failures = []
    for seed in range(first, first + count):
        try:
            run_seed(seed, SimConfig(**vars(cfg)))
        except SafetyViolation as e:
            failures.append(str(e))
    assert not failures, f"{len(failures)} failing seeds, first: {failures[:3]}"


@pytest.mark.parametrize("block", range(6))
def test_three_members_many_seeds(block: int) -> None:
    _run_range(block * 250, 250, THREE)


@pytest.mark.parametrize("block", range(4))
def test_five_members_many_seeds(block: int) -> None:
    _run_range(100_000 + block * 125, 125, FIVE)


def test_long_run_without_snapshots_or_membership() -> None:
    cfg = SimConfig(members=5, steps=4000, conf_change=0.0, snapshot_every=10**9)
    run_seed(7, cfg)


def test_a_seed_replays_exactly() -> None:
    a = Simulation(4242, SimConfig(**vars(THREE)))
    a.run()
    b = Simulation(4242, SimConfig(**vars(THREE)))
    b.run()
    assert a.applied_at == b.applied_at
    assert a.leaders == b.leaders
    assert a.stats == b.stats


def test_the_simulation_exercises_every_feature() -> None:
    totals: dict[str, int] = {}
    for seed in range(40):
        sim = run_seed(seed, SimConfig(**vars(FIVE)))
        for k, v in sim.stats.items():
            totals[k] = totals.get(k, 0) + v
        totals["applied"] = totals.get("applied", 0) + len(sim.applied_at)
    assert totals["elections"] > 100
    assert totals["snapshots_sent"] > 20
    assert totals["reads"] > 100
    assert totals["conf_changes"] > 20
    assert totals["applied"] > 2000


# ---------------------------------------------------------------- the checks catch real bugs


@contextmanager
def patched(target: Any, name: str, value: Any) -> Iterator[None]:
    saved = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, saved)


def _first_failure(cfg: SimConfig, seeds: int) -> str | None:
    for seed in range(seeds):
        try:
            run_seed(seed, SimConfig(**vars(cfg)))
        except SafetyViolation as e:
            return str(e)
    return None


def test_catches_votes_for_out_of_date_logs(request: pytest.FixtureRequest) -> None:
    if rerun_from_source(request, core.__name__):
        return
    with patched(RaftLog, "is_up_to_date", lambda self, last_index, last_term: True):
        failure = _first_failure(SimConfig(members=3, steps=400), 300)
    assert failure is not None


def test_catches_committing_old_terms_by_counting(request: pytest.FixtureRequest) -> None:
    if rerun_from_source(request, core.__name__):
        return
    # Raft's figure 8: a leader must not count replicas of an older term's entry.
    def maybe_commit(self: RaftLog, index: int, term: int) -> bool:
        if index > self.committed:
            self.commit_to(index)
            return True
        return False

    # Random runs rarely line up the five steps it takes; the scenario does it on purpose.
    with patched(RaftLog, "maybe_commit", maybe_commit), pytest.raises(AssertionError, match="figure8.txt"):
        run_script(SCENARIOS / "figure8.txt")


def test_catches_reads_served_without_a_quorum(request: pytest.FixtureRequest) -> None:
    if rerun_from_source(request, core.__name__):
        return
    def read_without_quorum(self: core.Raft, m: Any) -> None:
        context = m.entries[0].data if m.entries else b""
        self._answer_read(self.log.committed, context, m.from_)

    # Without CheckQuorum a leader cut off from the others keeps believing it leads; only
    # ReadIndex's heartbeat round stops it from answering reads that miss newer writes.
    stale_leaders = SimConfig(members=3, steps=600, partition=0.03, read=0.3, check_quorum=False)
    _run_range(0, 100, stale_leaders)
    with patched(core.Raft, "_leader_read_index", read_without_quorum):
        failure = _first_failure(stale_leaders, 500)
    assert failure is not None and "read" in failure


def test_catches_a_vote_that_was_not_persisted(request: pytest.FixtureRequest) -> None:
    if rerun_from_source(request, core.__name__):
        return
    # A member that forgets its vote on restart can vote twice in one term.
    def hard_state(self: core.Raft) -> core.HardState:
        return core.HardState(self.term, 0, self.log.committed)

    with patched(core.Raft, "hard_state", hard_state):
        failure = _first_failure(SimConfig(members=3, steps=600, crash=0.05, restart=0.3), 1000)
    assert failure is not None
