"""Raft behaviour as data: each file in raft_scenarios/ is a script of steps and expected states.

A script line is a command; `#` starts a comment. Members are numbered.

    cluster 1 2 3          bootstrap a new cluster with these voters
    tick 1 2 x12           tick members 1 and 2 twelve times (no `xN`: once); heartbeats
                           go every tick, elections time out after 19 ticks, leases last 10
    campaign 1             member 1 starts an election (pre-vote first, if on)
    propose 1 hello        member 1 proposes an entry with data "hello"
    read 2 r1              member 2 asks for a linearizable read with context "r1"
    transfer 1 3           ask leader 1 to hand leadership to member 3
    add 4 | learner 4 | remove 4
                           the leader proposes this membership change (`add` on a
                           learner promotes it); a new member starts with an empty disk
    deliver                deliver messages (and process every Ready) until none are left
    deliver 1              deliver only the messages that are in flight now (one round);
                           an APPEND carries one entry, so rounds control what arrives
    cut 1 2 | cut 1 *      drop messages from 1 to 2 (or from 1 to everyone); `cut * 1` too
    heal                   stop dropping
    crash 2 | restart 2    lose a member's memory (its synced disk survives), start it again
    compact 2              member 2 snapshots its applied state and compacts its log
    expect 1 role=LEADER term=2 leader=1 commit=7 applied=7 last=7 voters=1,2,3 learners=4
                           (also removed=, snapshot=, silent= ticks since it heard its leader)
    expect-values 1 hello world      the normal entries member 1 has applied, in order
    expect-reads 2 r1@7              reads answered at member 2, as context@index
    expect-dropped                   the previous command's proposal was refused

Every step also runs the simulator's safety checks.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import pytest

from gifee.store.raft.core import Raft, bootstrap_entries
from gifee.store.raft.types import (
    ConfChange,
    ConfChangeType,
    HardState,
    Message,
    ProposalDropped,
    Role,
    Snapshot,
    SnapshotMeta,
)
from tests.store.raftsim import Disk, Node, SimConfig, Simulation

SCENARIOS = sorted((Path(__file__).parent / "raft_scenarios").glob("*.txt"))


class LongestTimeout(random.Random):
    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:  # type: ignore[override]
        return (start if stop is None else stop) - 1


class Interaction(Simulation):
    """The simulator with its randomness taken out of the network: steps come from a script."""

    def __init__(self) -> None:
        # One entry per APPEND, so that a script can let some entries through and not others.
        quiet = SimConfig(
            members=0, drop=0.0, duplicate=0.0, max_delay=0, torn_write=0.0, max_bytes_per_message=1
        )
        super().__init__(0, quiet)
        self.queue: list[Message] = []
        self.reads_seen: dict[int, list[str]] = {}
        self.last_dropped = False

    def _send(self, m: Message) -> None:
        self.queue.append(m)

    def bootstrap(self, ids: list[int]) -> None:
        boot = bootstrap_entries([ConfChange(ConfChangeType.ADD_NODE, i) for i in ids])
        for i in ids:
            self.nodes[i] = Node(i, Disk(HardState(term=1, commit=len(boot)), None, list(boot)))
            self._start(self.nodes[i])
        self.next_id = max(ids) + 1
        self.settle()

    def _start(self, node: Node) -> None:
        super()._start(node)
        assert node.raft is not None
        # No chance in a script: every member's election timeout is the longest, 2 x 10 - 1 = 19 ticks.
        node.raft.rng = LongestTimeout()
        node.raft._reset_randomized_timeout()

    def _crash(self, node: Node) -> None:
        super()._crash(node)
        self.queue = [m for m in self.queue if m.to != node.id]

    def settle(self) -> None:
        for node in self.live():
            self._process_ready(node)

    def deliver(self, rounds: int | None) -> None:
        n = 0
        self.settle()
        while self.queue and (rounds is None or n < rounds):
            batch, self.queue = self.queue, []
            for m in batch:
                target = self.nodes.get(m.to)
                if target is None or target.raft is None or target.removed or (m.from_, m.to) in self.cut:
                    self._report_snapshot(m, failed=True)
                    continue
                try:
                    target.raft.step(m)
                except ProposalDropped:
                    pass
                self._report_snapshot(m, failed=False)
            self.settle()
            n += 1
            assert n < 10_000, "messages never stop"

    def _serve_reads(self, node: Node) -> None:
        for index, ctx in node.ready_reads:
            self.reads_seen.setdefault(node.id, []).append(f"{ctx.decode()}@{index}")
        super()._serve_reads(node)


def _ids(spec: str, sim: Interaction) -> list[int]:
    return sorted(sim.nodes) if spec == "*" else [int(spec)]


def run_script(path: Path) -> None:
    sim = Interaction()
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        cmd, *args = line.split()
        where = f"{path.name}:{lineno}: {line}"
        try:
            _run_command(sim, cmd, args)
        except AssertionError as e:
            raise AssertionError(f"{where}: {e}") from e


def _raft(sim: Interaction, member: str) -> Raft:
    raft = sim.nodes[int(member)].raft
    assert raft is not None, f"member {member} is not running"
    return raft


def _run_command(sim: Interaction, cmd: str, args: list[str]) -> None:
    if cmd == "cluster":
        sim.bootstrap([int(a) for a in args])
    elif cmd == "tick":
        times = 1
        if args and args[-1].startswith("x"):
            times = int(args.pop()[1:])
        for _ in range(times):
            for a in args:
                _raft(sim, a).tick()
            sim.settle()
    elif cmd == "campaign":
        _raft(sim, args[0]).campaign()
        sim.settle()
    elif cmd in ("propose", "read", "transfer", "add", "learner", "remove"):
        sim.last_dropped = False
        try:
            if cmd == "propose":
                _raft(sim, args[0]).propose([args[1].encode()])
            elif cmd == "read":
                sim.nodes[int(args[0])].reads[args[1].encode()] = sim.acked
                _raft(sim, args[0]).read_index(args[1].encode())
            elif cmd == "transfer":
                _raft(sim, args[0]).transfer_leader(int(args[1]))
            else:
                _conf_change(sim, cmd, int(args[0]))
        except ProposalDropped:
            sim.last_dropped = True
        sim.settle()
    elif cmd == "deliver":
        sim.deliver(int(args[0]) if args else None)
    elif cmd == "cut":
        src, dst = args
        sim.cut |= {(a, b) for a in _ids(src, sim) for b in _ids(dst, sim) if a != b}
    elif cmd == "heal":
        sim.cut.clear()
    elif cmd == "crash":
        sim._crash(sim.nodes[int(args[0])])
    elif cmd == "restart":
        sim._start(sim.nodes[int(args[0])])
        sim.settle()
    elif cmd == "compact":
        node = sim.nodes[int(args[0])]
        raft = _raft(sim, args[0])
        applied = node.app.applied_index
        term = raft.log.term(applied)
        assert term is not None
        snap = Snapshot(SnapshotMeta(applied, term, raft.conf), pickle.dumps(node.app))
        node.disk.write_snapshot(snap)
        raft.compact(snap)
    elif cmd == "expect":
        _expect(sim, args)
    elif cmd == "expect-values":
        values = [v.decode() for v in sim.nodes[int(args[0])].app.values]
        assert values == args[1:], f"member {args[0]} applied {values}"
    elif cmd == "expect-reads":
        seen = sim.reads_seen.get(int(args[0]), [])
        assert seen == args[1:], f"member {args[0]} answered reads {seen}"
    elif cmd == "expect-dropped":
        assert sim.last_dropped, "the proposal was accepted"
    elif cmd == "expect-accepted":
        assert not sim.last_dropped, "the proposal was dropped"
    else:
        raise AssertionError(f"unknown command {cmd}")


def _conf_change(sim: Interaction, cmd: str, node_id: int) -> None:
    leaders = [n for n in sim.live() if n.raft is not None and n.raft.role == Role.LEADER]
    assert leaders, "no leader to propose a membership change"
    kind = {
        "add": ConfChangeType.ADD_NODE,
        "learner": ConfChangeType.ADD_LEARNER,
        "remove": ConfChangeType.REMOVE_NODE,
    }
    if cmd != "remove" and node_id not in sim.nodes:
        sim.nodes[node_id] = Node(node_id, Disk())
        sim._start(sim.nodes[node_id])
    raft = leaders[0].raft
    assert raft is not None
    raft.propose_conf_change(ConfChange(kind[cmd], node_id))


def _expect(sim: Interaction, args: list[str]) -> None:
    member, *checks = args
    node = sim.nodes[int(member)]
    raft = _raft(sim, member)
    actual = {
        "role": raft.role.name,
        "term": str(raft.term),
        "leader": str(raft.leader),
        "commit": str(raft.log.committed),
        "applied": str(node.app.applied_index),
        "last": str(raft.log.last_index()),
        "voters": ",".join(str(v) for v in sorted(raft.conf.voters)),
        "learners": ",".join(str(v) for v in sorted(raft.conf.learners)),
        "removed": str(node.removed).lower(),
        "snapshot": str(raft.log.snapshot.index),
        "silent": str(raft.leader_silent_ticks()),
    }
    for check in checks:
        key, want = check.split("=", 1)
        assert key in actual, f"unknown field {key}"
        assert actual[key] == want, (
            f"member {member}: {key} is {actual[key]}, expected {want} (state {actual})"
        )


@pytest.mark.parametrize("script", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(script: Path) -> None:
    run_script(script)
