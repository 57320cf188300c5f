"""Linearizability checking of recorded client histories. No I/O.

Rules:
- A history is a list of `Operation`s, one per client call: what was asked
  (input), what came back (output), when the call was made and when its answer
  arrived. All times come from one clock shared by every client of the test.
- An operation whose outcome is unknown (timeout, lost connection, crashed
  server) has return_time None. It may have taken effect at any moment after
  its call, or never: the checker may leave it out, and when it puts it in, the
  model sees output None, which means "any output".
- Operation A precedes B in real time only if A returned strictly before B was
  called; equal times count as overlapping.
- A history is linearizable if some total order of all operations with a known
  outcome, plus any subset of those without, respects real-time precedence and
  is accepted by the model, step by step with the recorded outputs, from the
  model's initial state.
- The model may split a history into independent partitions (a key-value store:
  one per key). Linearizability is local (Herlihy & Wing): the history is
  linearizable if and only if every partition is, so each is checked alone.
- The verdict is deterministic for given inputs unless the timeout strikes.

Theory of operation: the search of Wing & Gong with Lowe's cache, as in
porcupine. A partition's calls and returns, sorted by time, form a doubly linked
list of entries. The search walks the list from its head: at a call entry it asks
the model whether that operation can take effect next; if so, and if the pair
(set of operations linearized so far, model state) has not been seen before, it
"lifts" the operation (unlinks its call and return entries), pushes it on a
stack and starts again from the head. Reaching a return entry means that
operation had to be linearized before anything later, and was not: the search
pops the last lifted operation, relinks it, and tries the entries after it. An
empty list, or a first return entry at +infinity (unknown outcomes only), is
success; an empty stack at a return entry is failure. The set of linearized
operations is an int used as a bitset so that cache keys are cheap to build and
hash. The search is a loop with an explicit stack, never recursion, so that
histories of thousands of operations do not hit Python's recursion limit.

Three refinements keep the tree small; none changes the verdict:
- An operation the model calls read-only (`Model.is_read_only`: a get, a failed
  CAS) that may come next is lifted at once and alone: in any valid
  continuation it could be moved to the front. With many readers this is most
  of the pruning.
- Calls with a known outcome are tried before those without: an unknown
  outcome never has to be linearized, so it is tried last.
- The model may say that the operation whose return comes first cannot be
  accepted whatever the calls before that return do
  (`Model.could_accept_after`); the branch is then abandoned at once instead of
  after trying every subset of those calls.
The cost grows with the number of operations in flight at once, not much with
the length of the history: 5,000 operations on one key take about 0.2 s of CPU
with 10 clients, 1 s with 16 and 10 s with 20 (more with unknown outcomes).

Nothing here does I/O or reads a clock except time.monotonic for the timeout.
"""

from __future__ import annotations

import enum
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

StateT = TypeVar("StateT", bound=Hashable)
InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")

# The clock is read once every this many lifts and backtracks, not at each.
_DEADLINE_CHECK_INTERVAL = 256
# The search tries the entries that may come next in passes: read-only ones
# alone, then those with a known outcome, then those without.
_PASS_READ_ONLY = 0
_PASS_KNOWN = 1
_PASS_UNKNOWN = 2
# How many operations of the longest linearizable prefix explain() shows.
_PREFIX_LINES_SHOWN = 12


@dataclass(frozen=True, slots=True)
class Operation(Generic[InputT, OutputT]):
    """One client call. return_time None = outcome unknown (output is then ignored)."""

    client_id: int
    input: InputT
    output: OutputT | None
    call_time: float
    return_time: float | None

    @property
    def outcome_known(self) -> bool:
        return self.return_time is not None


@dataclass(frozen=True, slots=True)
class Partition(Generic[InputT, OutputT]):
    """A sub-history checked on its own; label names it in reports (e.g. the key)."""

    label: str
    operations: Sequence[Operation[InputT, OutputT]]


class Model(ABC, Generic[StateT, InputT, OutputT]):
    """A sequential specification. States must be hashable and compare by value."""

    @abstractmethod
    def init(self) -> StateT:
        """The state of every partition before any operation."""

    @abstractmethod
    def step(self, state: StateT, input: InputT, output: OutputT | None) -> tuple[bool, StateT]:
        """Whether input may produce output in state, and the state after it.

        output None means the outcome is unknown: accept any output and return
        the state after the operation took effect. Must not mutate state."""

    def partition(self, history: Sequence[Operation[InputT, OutputT]]) -> list[Partition[InputT, OutputT]]:
        """Independent sub-histories; the default is the whole history as one."""
        return [Partition("all", history)]

    def is_read_only(self, input: InputT, output: OutputT | None) -> bool:
        """Whether step leaves the state unchanged in every state where it accepts (input, output).

        output is None for an unknown outcome. The search linearizes such an
        operation as soon as it may come next, without trying alternatives.
        Saying False is always correct, only slower."""
        return False

    def could_accept_after(
        self,
        state: StateT,
        input: InputT,
        output: OutputT | None,
        available: Sequence[tuple[InputT, OutputT | None]],
    ) -> bool:
        """False only if no sequence of some of the available (input, output)
        pairs, each used at most once, in any order, leads from state to a state
        in which step accepts (input, output).

        The search asks this about the operation that must take effect next,
        with the operations that may come before it, and gives up on the branch
        on False. Saying True is always correct, only slower."""
        return True

    def describe_operation(self, input: InputT, output: OutputT | None) -> str:
        return f"{input!r} -> {'?' if output is None else repr(output)}"

    def describe_state(self, state: StateT) -> str:
        return repr(state)


class Verdict(enum.Enum):
    OK = "ok"
    ILLEGAL = "illegal"
    UNKNOWN = "unknown"  # the timeout struck before an answer


@dataclass(frozen=True, slots=True)
class Candidate(Generic[InputT, OutputT]):
    """An operation that could have come next after the longest linearizable prefix."""

    operation: Operation[InputT, OutputT]
    # False: the model refused it in the state after the prefix. True: the model
    # took it, but no continuation from there linearizes the rest.
    accepted_by_model: bool


@dataclass(frozen=True, slots=True)
class Failure(Generic[StateT, InputT, OutputT]):
    """Why a partition is not linearizable, as far as the search can tell."""

    partition: str
    operation_count: int
    # The longest sequence of operations the search could linearize, in order.
    longest_prefix: tuple[Operation[InputT, OutputT], ...]
    state_after_prefix: StateT
    # The operation outside the prefix that returned first: it has to take effect
    # before anything called after its return, and no candidate led there.
    blocking: Operation[InputT, OutputT]
    candidates: tuple[Candidate[InputT, OutputT], ...]
    # Operations with a known outcome outside the prefix, by call time.
    not_linearized: tuple[Operation[InputT, OutputT], ...]
    # The human-readable report, written with the model's descriptions.
    report: str


@dataclass(frozen=True, slots=True)
class CheckResult(Generic[StateT, InputT, OutputT]):
    verdict: Verdict
    partitions_checked: int  # how many were found linearizable before the verdict
    partitions_total: int
    failure: Failure[StateT, InputT, OutputT] | None = None
    # Label of the partition being searched when the timeout struck.
    timed_out_partition: str | None = None

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    def explain(self) -> str:
        if self.verdict is Verdict.OK:
            return f"linearizable ({self.partitions_total} partitions)"
        if self.verdict is Verdict.UNKNOWN:
            return (
                f"unknown: timed out in partition {self.timed_out_partition} after "
                f"{self.partitions_checked} of {self.partitions_total} partitions were found linearizable"
            )
        assert self.failure is not None
        return self.failure.report


def check(
    model: Model[StateT, InputT, OutputT],
    history: Sequence[Operation[InputT, OutputT]],
    timeout: float | None = None,
) -> CheckResult[StateT, InputT, OutputT]:
    """Whether history is linearizable under model; timeout in seconds (None = no limit).

    Partitions are checked in the model's order and the first one that fails is reported."""
    for op in history:
        if op.return_time is not None and op.return_time < op.call_time:
            raise ValueError(f"operation returns before it is called: {op!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    partitions = model.partition(history)
    for checked, part in enumerate(partitions):
        if deadline is not None and time.monotonic() > deadline:
            return CheckResult(Verdict.UNKNOWN, checked, len(partitions), timed_out_partition=part.label)
        search = _Search(model, part.operations)
        linearizable = search.run(deadline)
        if linearizable is None:
            return CheckResult(Verdict.UNKNOWN, checked, len(partitions), timed_out_partition=part.label)
        if not linearizable:
            failure = _explain_failure(model, part, search)
            return CheckResult(Verdict.ILLEGAL, checked, len(partitions), failure=failure)
    return CheckResult(Verdict.OK, len(partitions), len(partitions))


def _model_output(op: Operation[InputT, OutputT]) -> OutputT | None:
    """What the model sees as op's output: None, i.e. anything, when the outcome is unknown."""
    return op.output if op.return_time is not None else None


class _Search(Generic[StateT, InputT, OutputT]):
    """The depth-first search over one partition (see the module docstring)."""

    def __init__(
        self, model: Model[StateT, InputT, OutputT], operations: Sequence[Operation[InputT, OutputT]]
    ) -> None:
        self.model = model
        self.operations = operations
        count = len(operations)
        # (time, kind, index): kind 0 = call, 1 = return, so that at equal times
        # calls come first and the two operations overlap; index breaks the
        # remaining ties so that the order, and hence the search, is deterministic.
        entries: list[tuple[float, int, int]] = []
        for index, op in enumerate(operations):
            entries.append((op.call_time, 0, index))
            entries.append((math.inf if op.return_time is None else op.return_time, 1, index))
        entries.sort()
        self.entries = entries

        # Node 0 is the head sentinel, nodes 1..2*count the entries in time
        # order, node 2*count+1 the tail sentinel.
        tail = 2 * count + 1
        self.next_node = list(range(1, tail + 2))
        self.prev_node = list(range(-1, tail))
        self.is_call = [False] * (tail + 1)
        # True for the nodes where reaching them means success: the tail, and
        # returns at +infinity (everything before them, i.e. every operation
        # with a known outcome, has been linearized).
        self.ends_search = [False] * (tail + 1)
        self.ends_search[tail] = True
        self.op_of_node = [0] * (tail + 1)
        self.return_node_of_call = [0] * (tail + 1)
        call_node_of_op = [0] * count
        for node, (_, kind, index) in enumerate(entries, start=1):
            self.op_of_node[node] = index
            if kind == 0:
                self.is_call[node] = True
                call_node_of_op[index] = node
            else:
                self.return_node_of_call[call_node_of_op[index]] = node
                self.ends_search[node] = operations[index].return_time is None

        self.best_prefix_calls: list[int] = []  # call nodes of the longest linearized sequence
        self.best_state: StateT = model.init()

    def run(self, deadline: float | None) -> bool | None:
        """True = linearizable, False = not, None = the deadline passed."""
        # Everything the loop touches is a local: this loop is the checker's cost.
        model = self.model
        step = model.step
        could_accept_after = model.could_accept_after
        use_lookahead = type(model).could_accept_after is not Model.could_accept_after
        next_node, prev_node = self.next_node, self.prev_node
        is_call, ends_search = self.is_call, self.ends_search
        op_of_node, return_node_of_call = self.op_of_node, self.return_node_of_call
        inputs = [op.input for op in self.operations]
        # Unknown outcomes reach the model as None whatever was recorded.
        outputs = [_model_output(op) for op in self.operations]
        known = [op.return_time is not None for op in self.operations]
        read_only = [model.is_read_only(i, o) for i, o in zip(inputs, outputs, strict=True)]

        state = model.init()
        linearized = 0
        seen: set[tuple[int, StateT]] = {(linearized, state)}
        # The stack of lifted calls: the call node, the state before it, and
        # how it was chosen: READ_ONLY (the only choice tried at its level),
        # or in the scan of KNOWN or of UNKNOWN outcomes.
        lifted_calls: list[int] = []
        states_before: list[StateT] = []
        lifted_how: list[int] = []
        read_only_lift, known_scan, unknown_scan = _PASS_READ_ONLY, _PASS_KNOWN, _PASS_UNKNOWN
        best_length = 0
        rounds = 0
        node = next_node[0]
        scanning_known = True
        just_lifted = True
        while True:
            rounds += 1
            if (
                deadline is not None
                and rounds % _DEADLINE_CHECK_INTERVAL == 0
                and time.monotonic() > deadline
            ):
                return None
            how = -1
            dead_end = False
            if just_lifted:
                just_lifted = False
                # A read-only operation that may come next can always be
                # linearized right now: moving it to the front of any valid
                # continuation keeps that continuation valid. So it is lifted
                # as the only choice, and if nothing follows from there,
                # nothing follows from here either. With many concurrent
                # readers this prunes most of the tree.
                probe = node
                while is_call[probe]:
                    index = op_of_node[probe]
                    if read_only[index] and step(state, inputs[index], outputs[index])[0]:
                        break
                    probe = next_node[probe]
                if is_call[probe]:
                    node, new_state, how = probe, state, read_only_lift
                    new_linearized = linearized | (1 << index)
                    dead_end = (new_linearized, new_state) in seen
                elif use_lookahead and not ends_search[probe]:
                    # probe is the first return: its operation must take effect
                    # before anything called after it returned, so only the
                    # calls before it can help it. If the model says none can,
                    # exploring their combinations would be wasted.
                    blocking = op_of_node[probe]
                    available: list[tuple[InputT, OutputT | None]] = []
                    other = node
                    while other != probe:
                        index = op_of_node[other]
                        if index != blocking:
                            available.append((inputs[index], outputs[index]))
                        other = next_node[other]
                    dead_end = not could_accept_after(state, inputs[blocking], outputs[blocking], available)
            if how < 0 and not dead_end:
                # Scan for the next call the model accepts into an unseen
                # configuration. Calls with a known outcome are tried before
                # those without: the latter need never be linearized, so
                # putting them off is the better guess.
                while is_call[node]:
                    index = op_of_node[node]
                    if known[index] is scanning_known:
                        accepted, new_state = step(state, inputs[index], outputs[index])
                        if accepted:
                            new_linearized = linearized | (1 << index)
                            if (new_linearized, new_state) not in seen:
                                how = known_scan if scanning_known else unknown_scan
                                break
                    node = next_node[node]
                else:
                    if ends_search[node]:
                        return True
                    if scanning_known:
                        scanning_known = False
                        node = next_node[0]
                        continue
            if how >= 0 and not dead_end:
                seen.add((new_linearized, new_state))
                lifted_calls.append(node)
                states_before.append(state)
                lifted_how.append(how)
                state, linearized = new_state, new_linearized
                # Lift: unlink the call entry, then its return entry.
                ret = return_node_of_call[node]
                before, after = prev_node[node], next_node[node]
                next_node[before], prev_node[after] = after, before
                before, after = prev_node[ret], next_node[ret]
                next_node[before], prev_node[after] = after, before
                if len(lifted_calls) > best_length:
                    best_length = len(lifted_calls)
                    # A C-level copy: this runs each time the record grows.
                    self.best_prefix_calls = lifted_calls.copy()
                    self.best_state = state
                node = next_node[0]
                scanning_known = True
                just_lifted = True
                continue
            # Backtrack: undo the last choice, and the read-only lifts that
            # were the only choice at their level, then go on scanning after
            # the undone call.
            while True:
                if not lifted_calls:
                    return False
                node = lifted_calls.pop()
                state = states_before.pop()
                how = lifted_how.pop()
                linearized ^= 1 << op_of_node[node]
                # Unlift: relink in the reverse order of unlinking; the
                # unlinked entries kept their own links, as in dancing links.
                ret = return_node_of_call[node]
                next_node[prev_node[ret]] = ret
                prev_node[next_node[ret]] = ret
                next_node[prev_node[node]] = node
                prev_node[next_node[node]] = node
                if how != read_only_lift:
                    break
            scanning_known = how == known_scan
            node = next_node[node]


def _explain_failure(
    model: Model[StateT, InputT, OutputT],
    part: Partition[InputT, OutputT],
    search: _Search[StateT, InputT, OutputT],
) -> Failure[StateT, InputT, OutputT]:
    operations = part.operations
    prefix_indices = [search.op_of_node[node] for node in search.best_prefix_calls]
    in_prefix = set(prefix_indices)
    # Rebuild the entry list as it was after the longest prefix: the calls
    # before its first return are what could come next, and that return's
    # operation is the one that had to.
    next_calls: list[int] = []
    blocking_index = -1
    for _, kind, index in search.entries:
        if index in in_prefix:
            continue
        if kind == 0:
            next_calls.append(index)
        else:
            blocking_index = index
            break
    # A failed search always stops at a return with a known outcome.
    assert blocking_index >= 0 and operations[blocking_index].return_time is not None
    state = search.best_state

    def model_accepts(op: Operation[InputT, OutputT]) -> bool:
        return model.step(state, op.input, _model_output(op))[0]

    candidates = tuple(Candidate(operations[i], model_accepts(operations[i])) for i in next_calls)
    prefix = tuple(operations[i] for i in prefix_indices)
    outside = [op for i, op in enumerate(operations) if i not in in_prefix and op.return_time is not None]
    not_linearized = tuple(sorted(outside, key=lambda op: op.call_time))
    blocking = operations[blocking_index]

    def describe(op: Operation[InputT, OutputT]) -> str:
        returned = "unknown" if op.return_time is None else f"{op.return_time}"
        return (
            f"client {op.client_id}: {model.describe_operation(op.input, _model_output(op))}"
            f"  [called {op.call_time}, returned {returned}]"
        )

    lines = [
        f"not linearizable: partition {part.label} ({len(operations)} operations)",
        f"longest linearizable prefix: {len(prefix)} operations, ending in state {model.describe_state(state)}",
    ]
    if len(prefix) > _PREFIX_LINES_SHOWN:
        lines.append(f"  ... {len(prefix) - _PREFIX_LINES_SHOWN} earlier operations")
    lines += [f"  {describe(op)}" for op in prefix[-_PREFIX_LINES_SHOWN:]]
    lines.append(f"must take effect next (returned first of the rest): {describe(blocking)}")
    lines.append("candidates to come next after the prefix:")
    for candidate in candidates:
        why = (
            "model accepts it, but no linearization of the rest follows"
            if candidate.accepted_by_model
            else "model refuses it in this state"
        )
        lines.append(f"  {describe(candidate.operation)}: {why}")
    lines.append(f"{len(not_linearized)} operations with a known outcome are outside the prefix")
    return Failure(
        partition=part.label,
        operation_count=len(operations),
        longest_prefix=prefix,
        state_after_prefix=state,
        blocking=blocking,
        candidates=candidates,
        not_linearized=not_linearized,
        report="\n".join(lines),
    )
