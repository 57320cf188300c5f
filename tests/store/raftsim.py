"""A deterministic simulator for gifee's Raft core: several members, a simulated network and disk.

Everything — ticks, message delays, drops, duplicates, partitions, crashes
(with a random prefix of the last unsynced write surviving), restarts,
proposals, linearizable reads, leader transfers and membership changes — is
drawn from one `random.Random(seed)`, so a failing seed replays exactly:

    python -m tests.store.raftsim --seed 1234 --verbose
    python -m tests.store.raftsim --seeds 100000          # a long run

After every step the simulator checks Raft's safety properties:
- election safety: at most one leader per term;
- log matching: two logs holding an entry with the same index and term hold
  the same entry there and agree on the term of the entry before it (which,
  by induction, makes the whole prefixes equal);
- leader completeness: a new leader's log holds every entry committed before;
- state machine safety: every member applies the same entry at each index,
  and none applies an index twice or skips one;
- read safety: a ReadIndex answer covers every write acknowledged before the
  read was asked.
At the end it heals the network, restarts everyone, and requires progress:
a leader and a committed write on every member within a bounded time.
"""

from __future__ import annotations

import argparse
import pickle
import random
import sys
import time
from dataclasses import dataclass, field

from gifee.store.raft.core import Raft, RaftConfig, RestoredState, bootstrap_entries, decode_conf_change
from gifee.store.raft.types import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ProposalDropped,
    Role,
    Snapshot,
    SnapshotMeta,
)

MT = MessageType


class SafetyViolation(AssertionError):
    pass


@dataclass
class SimConfig:
    members: int = 3
    steps: int = 600
    drop: float = 0.05
    duplicate: float = 0.02
    max_delay: int = 3
    crash: float = 0.004
    restart: float = 0.05
    partition: float = 0.006
    heal: float = 0.05
    propose: float = 0.3
    read: float = 0.05
    transfer: float = 0.003
    conf_change: float = 0.006
    snapshot_every: int = 25
    torn_write: float = 0.02  # chance to crash in the middle of persisting a Ready
    liveness_steps: int = 400
    check_quorum: bool = True
    pre_vote: bool = True
    max_bytes_per_message: int = 1024 * 1024


@dataclass
class Disk:
    hard: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    def restored(self) -> RestoredState:
        return RestoredState(self.hard, self.snapshot, list(self.entries))

    def write_snapshot(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.entries = [e for e in self.entries if e.index > snap.meta.index]
        if self.entries and self.entries[0].index != snap.meta.index + 1:
            self.entries = []  # a received snapshot replaces a log that does not continue it

    def write_entries(self, entries: list[Entry]) -> None:
        first = entries[0].index
        base = self.snapshot.meta.index if self.snapshot else 0
        self.entries = self.entries[: max(0, first - base - 1)] + list(entries)


@dataclass
class AppState:
    """The replicated application: an append-only list of applied normal entries (by index)."""

    applied_index: int = 0
    values: list[bytes] = field(default_factory=list)
    members: set[int] = field(default_factory=set)


@dataclass
class Node:
    id: int
    disk: Disk
    raft: Raft | None = None
    app: AppState = field(default_factory=AppState)
    removed: bool = False
    reads: dict[bytes, int] = field(default_factory=dict)  # context -> highest acked index when asked
    ready_reads: list[tuple[int, bytes]] = field(default_factory=list)


class Simulation:
    def __init__(self, seed: int, config: SimConfig | None = None, verbose: bool = False) -> None:
        self.seed = seed
        self.cfg = config or SimConfig()
        self.rng = random.Random(seed)
        self.verbose = verbose
        self.now = 0
        self.nodes: dict[int, Node] = {}
        self.in_flight: list[tuple[int, int, Message]] = []  # (deliver_at, order, message)
        self.order = 0
        self.cut: set[tuple[int, int]] = set()  # (from, to) pairs whose messages are dropped
        self.leaders: dict[int, int] = {}  # term -> leader
        self.entries_seen: dict[
            tuple[int, int], tuple[bytes, int, int]
        ] = {}  # (index, term) -> (data, type, prev term)
        self.applied_at: dict[int, bytes] = {}  # index -> data applied there (by anyone)
        self.committed: dict[int, int] = {}  # index -> term of every entry known committed
        self.acked = 0  # highest index of a write whose proposer saw it applied
        self.next_id = 1
        self.next_value = 1
        self.stats: dict[str, int] = {"elections": 0, "snapshots_sent": 0, "reads": 0, "conf_changes": 0}
        members = [ConfChange(ConfChangeType.ADD_NODE, i) for i in range(1, self.cfg.members + 1)]
        boot = bootstrap_entries(members)
        for i in range(1, self.cfg.members + 1):
            disk = Disk(HardState(term=1, commit=len(boot)), None, list(boot))
            self.nodes[i] = Node(i, disk)
            self._start(self.nodes[i])
        self.next_id = self.cfg.members + 1

    # ------------------------------------------------------------ plumbing

    def log(self, text: str) -> None:
        if self.verbose:
            print(f"[{self.now:5d}] {text}")

    def _start(self, node: Node) -> None:
        rng = random.Random(self.rng.getrandbits(64))
        config = RaftConfig(
            id=node.id,
            election_ticks=10,
            max_inflight=8,
            check_quorum=self.cfg.check_quorum,
            pre_vote=self.cfg.pre_vote,
            max_bytes_per_message=self.cfg.max_bytes_per_message,
        )
        node.raft = Raft(config, node.disk.restored(), rng)
        node.app = AppState()
        if node.disk.snapshot is not None:
            node.app = pickle.loads(node.disk.snapshot.data)
        node.reads = {}
        node.ready_reads = []

    def live(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.raft is not None and not n.removed]

    def _send(self, m: Message) -> None:
        if self.rng.random() < self.cfg.drop or (m.from_, m.to) in self.cut:
            self._report_snapshot(m, failed=True)
            return
        copies = 2 if self.rng.random() < self.cfg.duplicate else 1
        for _ in range(copies):
            self.order += 1
            self.in_flight.append((self.now + self.rng.randint(0, self.cfg.max_delay), self.order, m))

    def _report_snapshot(self, m: Message, failed: bool) -> None:
        # The transport tells the leader how a snapshot send ended, as etcd's does.
        if m.type != MT.SNAPSHOT:
            return
        sender = self.nodes.get(m.from_)
        if sender is not None and sender.raft is not None:
            sender.raft.step(Message(MT.SNAPSHOT_STATUS, from_=m.to, reject=failed))

    def _deliver_due(self) -> None:
        due = [x for x in self.in_flight if x[0] <= self.now]
        self.in_flight = [x for x in self.in_flight if x[0] > self.now]
        self.rng.shuffle(due)  # reordering
        for _, _, m in due:
            target = self.nodes.get(m.to)
            if target is None or target.raft is None or target.removed or (m.from_, m.to) in self.cut:
                self._report_snapshot(m, failed=True)
                continue
            if m.type == MT.SNAPSHOT:
                self.stats["snapshots_sent"] += 1
            try:
                target.raft.step(m)
            except ProposalDropped:
                pass
            self._report_snapshot(m, failed=False)

    def _process_ready(self, node: Node) -> None:
        raft = node.raft
        assert raft is not None
        while raft.has_ready():
            rd = raft.ready()
            if rd.soft_state is not None and rd.soft_state.role == Role.LEADER:
                self._check_new_leader(node)
            # Persist: snapshot, entries, hard state — a crash may keep any prefix of them.
            records: list[object] = []
            if rd.snapshot is not None:
                records.append(rd.snapshot)
            records.extend(rd.entries)
            if rd.hard_state is not None:
                records.append(rd.hard_state)
            torn = self.rng.random() < self.cfg.torn_write and records
            keep = self.rng.randint(0, len(records)) if torn else len(records)
            for rec in records[:keep]:
                if isinstance(rec, Snapshot):
                    node.disk.write_snapshot(rec)
                elif isinstance(rec, Entry):
                    node.disk.write_entries([rec])
                else:
                    assert isinstance(rec, HardState)
                    node.disk.hard = rec
            if torn:
                self.log(f"node {node.id} crashed while persisting (kept {keep}/{len(records)} records)")
                self._crash(node)
                return
            self._check_entries(node, rd.entries)
            if rd.snapshot is not None:
                node.app = pickle.loads(rd.snapshot.data)
            for m in rd.messages:
                self._send(m)
            for e in rd.committed:
                self._apply(node, e)
            for rs in rd.read_states:
                node.ready_reads.append((rs.index, rs.context))
            raft.advance(rd)
            if node.raft is None:
                return
            self._serve_reads(node)
            self._maybe_snapshot(node)

    def _apply(self, node: Node, e: Entry) -> None:
        app = node.app
        if e.index <= app.applied_index:
            return
        if e.index != app.applied_index + 1:
            raise SafetyViolation(f"node {node.id} applies {e.index} after {app.applied_index}")
        seen = self.applied_at.setdefault(e.index, e.data)
        if seen != e.data:
            raise SafetyViolation(f"node {node.id} applied {e.data!r} at {e.index}, another member {seen!r}")
        self.committed.setdefault(e.index, e.term)
        app.applied_index = e.index
        if e.type == EntryType.CONF_CHANGE:
            cc = decode_conf_change(e.data)
            if cc.type in (ConfChangeType.ADD_NODE, ConfChangeType.ADD_LEARNER):
                app.members.add(cc.node_id)
            elif cc.type == ConfChangeType.REMOVE_NODE:
                app.members.discard(cc.node_id)
                if cc.node_id == node.id:
                    node.removed = True  # the shell stops a removed member
        elif e.data:
            app.values.append(e.data)
            self.acked = max(self.acked, e.index)

    def _serve_reads(self, node: Node) -> None:
        waiting = []
        for index, ctx in node.ready_reads:
            if node.app.applied_index < index:
                waiting.append((index, ctx))
                continue
            asked_after = node.reads.pop(ctx, None)
            if asked_after is not None and index < asked_after:
                raise SafetyViolation(
                    f"node {node.id}: read {ctx!r} got index {index} but index {asked_after} was acknowledged before"
                )
            self.stats["reads"] += 1
        node.ready_reads = waiting

    def _maybe_snapshot(self, node: Node) -> None:
        raft = node.raft
        assert raft is not None
        applied = node.app.applied_index
        if applied - raft.log.snapshot.index < self.cfg.snapshot_every:
            return
        term = raft.log.term(applied)
        assert term is not None
        snap = Snapshot(SnapshotMeta(applied, term, raft.conf), pickle.dumps(node.app))
        node.disk.write_snapshot(snap)
        raft.compact(snap)

    # ------------------------------------------------------------ checks

    def _check_entries(self, node: Node, entries: list[Entry]) -> None:
        raft = node.raft
        assert raft is not None
        for e in entries:
            prev = raft.log.term(e.index - 1)
            prev_term = prev if prev is not None else -1
            key = (e.index, e.term)
            seen = self.entries_seen.get(key)
            if seen is None:
                self.entries_seen[key] = (e.data, e.type, prev_term)
                continue
            data, etype, seen_prev = seen
            if data != e.data or etype != e.type:
                raise SafetyViolation(f"log matching: two different entries at index {e.index} term {e.term}")
            if prev_term != -1 and seen_prev != -1 and prev_term != seen_prev:
                raise SafetyViolation(
                    f"log matching: entries before {key} differ ({prev_term} vs {seen_prev})"
                )

    def _check_new_leader(self, node: Node) -> None:
        raft = node.raft
        assert raft is not None
        self.stats["elections"] += 1
        other = self.leaders.setdefault(raft.term, node.id)
        if other != node.id:
            raise SafetyViolation(f"two leaders in term {raft.term}: {other} and {node.id}")
        for index, term in self.committed.items():
            if index <= raft.log.snapshot.index:
                continue
            if raft.log.term(index) != term:
                raise SafetyViolation(f"leader {node.id} (term {raft.term}) lacks committed entry {index}")
        self.log(f"node {node.id} leads term {raft.term}")

    # ------------------------------------------------------------ faults and requests

    def _crash(self, node: Node) -> None:
        node.raft = None
        for x in self.in_flight:
            if x[2].to == node.id:
                self._report_snapshot(x[2], failed=True)  # the sender's connection breaks
        self.in_flight = [x for x in self.in_flight if x[2].to != node.id]

    def _random_fault(self) -> None:
        r = self.rng.random
        live = self.live()
        if live and r() < self.cfg.crash:
            node = self.rng.choice(live)
            self.log(f"crash {node.id}")
            self._crash(node)
        down = [n for n in self.nodes.values() if n.raft is None and not n.removed]
        if down and r() < self.cfg.restart:
            node = self.rng.choice(down)
            self.log(f"restart {node.id}")
            self._start(node)
        if r() < self.cfg.partition:
            ids = list(self.nodes)
            kind = self.rng.choice(["split", "isolate", "oneway"])
            if kind == "split":
                side = set(self.rng.sample(ids, self.rng.randint(1, len(ids) // 2)))
                self.cut |= {(a, b) for a in ids for b in ids if (a in side) != (b in side)}
            elif kind == "isolate":
                lone = self.rng.choice(ids)
                self.cut |= {(a, b) for a in ids for b in ids if a != b and lone in (a, b)}
            else:
                a, b = self.rng.sample(ids, 2)
                self.cut.add((a, b))
            self.log(f"partition {kind}: {sorted(self.cut)}")
        if self.cut and r() < self.cfg.heal:
            self.cut.clear()
            self.log("heal")

    def _random_request(self) -> None:
        live = self.live()
        if not live:
            return
        r = self.rng.random
        if r() < self.cfg.propose:
            node = self.rng.choice(live)
            assert node.raft is not None
            value = f"v{self.next_value}".encode()
            self.next_value += 1
            try:
                node.raft.propose([value])
            except ProposalDropped:
                pass
        if r() < self.cfg.read:
            node = self.rng.choice(live)
            assert node.raft is not None
            ctx = f"r{self.next_value}".encode()
            self.next_value += 1
            try:
                node.raft.read_index(ctx)
                node.reads[ctx] = self.acked
            except ProposalDropped:
                pass
        if r() < self.cfg.transfer:
            node = self.rng.choice(live)
            assert node.raft is not None
            if node.raft.role == Role.LEADER:
                target = self.rng.choice(sorted(node.raft.conf.voters))
                self.log(f"transfer leadership {node.id} -> {target}")
                node.raft.transfer_leader(target)
        if r() < self.cfg.conf_change:
            self._random_conf_change()

    def _random_conf_change(self) -> None:
        leaders = [n for n in self.live() if n.raft is not None and n.raft.role == Role.LEADER]
        if not leaders:
            return
        leader = leaders[0]
        raft = leader.raft
        assert raft is not None
        conf = raft.conf
        choice = self.rng.random()
        if conf.learners and choice < 0.3:
            cc = ConfChange(ConfChangeType.ADD_NODE, self.rng.choice(sorted(conf.learners)))
        elif choice < 0.55 and len(conf.voters) + len(conf.learners) < 7:
            new_id = self.next_id
            self.next_id += 1
            cc = ConfChange(self.rng.choice([ConfChangeType.ADD_LEARNER, ConfChangeType.ADD_NODE]), new_id)
            # A joining member starts empty and learns everything from the leader.
            self.nodes[new_id] = Node(new_id, Disk())
            self._start(self.nodes[new_id])
        elif len(conf.voters) > 2:
            cc = ConfChange(ConfChangeType.REMOVE_NODE, self.rng.choice(sorted(conf.voters | conf.learners)))
        else:
            return
        try:
            raft.propose_conf_change(cc)
            self.stats["conf_changes"] += 1
            self.log(f"leader {leader.id} proposes {cc.type.name} {cc.node_id}")
        except ProposalDropped:
            pass

    # ------------------------------------------------------------ running

    def step(self, faults: bool = True) -> None:
        self.now += 1
        for node in self.live():
            if self.rng.random() < 0.9:  # clocks drift: not every member ticks every step
                assert node.raft is not None
                node.raft.tick()
        self._deliver_due()
        if faults:
            self._random_fault()
            self._random_request()
        order = self.live()
        self.rng.shuffle(order)
        for node in order:
            if node.raft is not None:
                self._process_ready(node)

    def run(self) -> None:
        for _ in range(self.cfg.steps):
            self.step()
        self.check_liveness()

    def check_liveness(self) -> None:
        """With the faults over, the cluster must elect a leader and commit a write everywhere."""
        self.cut.clear()
        for node in self.nodes.values():
            if node.raft is None and not node.removed:
                self._start(node)
        saved = (self.cfg.drop, self.cfg.duplicate, self.cfg.torn_write)
        self.cfg.drop, self.cfg.duplicate, self.cfg.torn_write = 0.0, 0.0, 0.0
        marker = b"final-" + str(self.seed).encode()
        proposed = False
        try:
            for n in range(self.cfg.liveness_steps):
                self.step(faults=False)
                leaders = [n for n in self.live() if n.raft is not None and n.raft.role == Role.LEADER]
                # Propose again now and then: a proposal can be lost with a leader change, as a client's can.
                if leaders and (not proposed or n % 50 == 0) and marker not in self.applied_at.values():
                    try:
                        assert leaders[0].raft is not None
                        leaders[0].raft.propose([marker])
                        proposed = True
                    except ProposalDropped:
                        pass
                members = self._current_members()
                if proposed and all(
                    marker in self.nodes[m].app.values
                    for m in members
                    if m in self.nodes and not self.nodes[m].removed
                ):
                    return
        finally:
            self.cfg.drop, self.cfg.duplicate, self.cfg.torn_write = saved
        state = {n.id: (n.raft.role.name, n.raft.term, n.raft.log.committed) for n in self.live() if n.raft}
        raise SafetyViolation(f"no progress after healing: proposed={proposed}, members={state}")

    def _current_members(self) -> set[int]:
        best = max(self.live(), key=lambda n: n.app.applied_index)
        return best.app.members


def run_seed(seed: int, config: SimConfig | None = None, verbose: bool = False) -> Simulation:
    sim = Simulation(seed, config, verbose)
    try:
        sim.run()
    except AssertionError as e:
        raise SafetyViolation(f"seed {seed}: {e}") from e
    return sim


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, help="replay one seed")
    parser.add_argument("--seeds", type=int, default=1000, help="how many seeds to run")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    cfg = SimConfig(members=args.members, steps=args.steps)
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)
    started = time.monotonic()
    failures = 0
    totals: dict[str, int] = {}
    for seed in seeds:
        try:
            sim = run_seed(seed, SimConfig(**vars(cfg)), args.verbose)
            for k, v in sim.stats.items():
                totals[k] = totals.get(k, 0) + v
        except SafetyViolation as e:
            failures += 1
            print(f"FAIL {e}", file=sys.stderr)
    elapsed = time.monotonic() - started
    print(f"{len(seeds)} seeds, {failures} failures, {elapsed:.1f}s; totals {totals}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

