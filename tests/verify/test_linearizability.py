"""Tests of the linearizability checker and the etcd key model.

Valid histories come from simulated clients running against a plain dict, an
atomic store by construction: each call takes effect at one random moment
between its call and its return, so every history it makes is linearizable.
Invalid ones are written by hand (the classic anomalies) or made by corrupting
a valid one. On small histories the checker is compared with a brute-force
search over every order of the operations, written independently of it.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gifee.verify.kv_model import Cas, Delete, Get, KvInput, KvModel, KvOperation, KvOutput, Put
from gifee.verify.linearizability import Model, Operation, Verdict, check

K = b"k"

# --- the simulated store and clients -----------------------------------------

# key -> (value, version), present keys only.
Store = dict[bytes, tuple[bytes, int]]


def apply(store: Store, op: KvInput) -> KvOutput:
    """Runs op on store in place and returns what a client would get back."""
    current = store.get(op.key)
    if isinstance(op, Get):
        return (None, 0) if current is None else current
    if isinstance(op, Put):
        store[op.key] = (op.value, 1 if current is None else current[1] + 1)
        return True
    if isinstance(op, Delete):
        return 0 if store.pop(op.key, None) is None else 1
    current_value = None if current is None else current[0]
    if current_value != op.expected:
        return False
    store[op.key] = (op.new_value, 1 if current is None else current[1] + 1)
    return True


@dataclass
class _Call:
    input: KvInput
    call_time: int
    output: KvOutput | None = None
    took_effect: bool = False


def simulate(
    rng: random.Random,
    *,
    clients: int,
    operations: int,
    keys: Sequence[bytes] = (K,),
    unknown_rate: float = 0.0,
    few_values: bool = False,
) -> list[KvOperation]:
    """A linearizable history of `operations` calls by `clients` concurrent clients.

    unknown_rate: the share of calls whose outcome the client never learns;
    half of those took effect before the client lost track of them, the other
    half are still "in the network" and take effect at some later moment or
    never. few_values: puts write one of three values instead of a fresh one
    each, which leaves the checker fewer clues."""
    store: Store = {}
    history: list[KvOperation] = []
    in_flight: dict[int, _Call] = {}
    lost_in_network: list[_Call] = []
    started = 0
    now = 0
    while started < operations or in_flight:
        # Equal times now and then: the checker must treat them as overlapping.
        now += rng.choice((0, 1, 1, 1))
        if lost_in_network and rng.random() < 0.05:
            apply(store, lost_in_network.pop(rng.randrange(len(lost_in_network))).input)
        client = rng.randrange(clients)
        call = in_flight.get(client)
        if call is None:
            if started < operations:
                started += 1
                in_flight[client] = _Call(_random_input(rng, store, keys, started, few_values), now)
        elif not call.took_effect and rng.random() < unknown_rate / 2:
            history.append(Operation(client, call.input, None, call.call_time, None))
            lost_in_network.append(call)
            del in_flight[client]
        elif not call.took_effect:
            call.output = apply(store, call.input)
            call.took_effect = True
        else:
            if rng.random() < unknown_rate / 2:
                history.append(Operation(client, call.input, None, call.call_time, None))
            else:
                history.append(Operation(client, call.input, call.output, call.call_time, now))
            del in_flight[client]
    return history


def _random_input(
    rng: random.Random, store: Store, keys: Sequence[bytes], serial: int, few_values: bool
) -> KvInput:
    key = rng.choice(keys)
    value = rng.choice((b"a", b"b", b"c")) if few_values else b"v%d" % serial
    roll = rng.random()
    if roll < 0.4:
        return Get(key)
    if roll < 0.7:
        return Put(key, value)
    if roll < 0.8:
        return Delete(key)
    # Mostly the value the key holds now, so that many CAS calls race to succeed.
    current = store.get(key)
    if rng.random() < 0.6:
        expected = None if current is None else current[0]
    else:
        expected = rng.choice((None, b"a", b"b", b"v%d" % rng.randrange(1, serial + 1)))
    return Cas(key, expected, value)


def brute_force_linearizable(history: Sequence[KvOperation]) -> bool:
    """Tries every order of the operations (and every subset of those with an
    unknown outcome) against the simulated store. For a handful of operations."""
    count = len(history)
    known = [o.return_time is not None for o in history]
    return_times = [math.inf if o.return_time is None else o.return_time for o in history]
    # predecessors[i]: the operations that returned before operation i was called.
    predecessors = [[j for j in range(count) if return_times[j] < o.call_time] for o in history]

    @functools.cache
    def search(placed: frozenset[int], store_items: tuple[tuple[bytes, tuple[bytes, int]], ...]) -> bool:
        if all(i in placed for i in range(count) if known[i]):
            return True
        for i, candidate in enumerate(history):
            if i in placed or any(j not in placed for j in predecessors[i]):
                continue
            store = dict(store_items)
            output = apply(store, candidate.input)
            if known[i] and output != candidate.output:
                continue
            if search(placed | {i}, tuple(sorted(store.items()))):
                return True
        return False

    return search(frozenset(), ())


def op(client: int, input: KvInput, output: KvOutput | None, call: float, ret: float | None) -> KvOperation:
    return Operation(client, input, output, call, ret)


def is_linearizable(history: Sequence[KvOperation]) -> bool:
    return check(KvModel(), history).ok


# --- the classic anomalies, by hand ------------------------------------------


def test_empty_history_is_linearizable() -> None:
    result = check(KvModel(), [])
    assert result.verdict is Verdict.OK
    assert result.partitions_total == 0


def test_sequential_history_with_every_operation() -> None:
    history = [
        op(0, Get(K), (None, 0), 0, 1),
        op(0, Put(K, b"a"), True, 2, 3),
        op(1, Put(K, b"b"), True, 4, 5),
        op(0, Get(K), (b"b", 2), 6, 7),
        op(1, Cas(K, b"a", b"x"), False, 8, 9),
        op(1, Cas(K, b"b", b"c"), True, 10, 11),
        op(0, Get(K), (b"c", 3), 12, 13),
        op(0, Delete(K), 1, 14, 15),
        op(1, Delete(K), 0, 16, 17),
        op(0, Cas(K, None, b"d"), True, 18, 19),
        op(1, Get(K), (b"d", 1), 20, 21),
    ]
    assert is_linearizable(history)


def test_concurrent_read_may_see_either_side_of_a_write() -> None:
    put = op(0, Put(K, b"a"), True, 0, 10)
    assert is_linearizable([put, op(1, Get(K), (None, 0), 1, 2)])
    assert is_linearizable([put, op(1, Get(K), (b"a", 1), 1, 2)])
    # ... but not go back once it has seen the write.
    assert not is_linearizable([put, op(1, Get(K), (b"a", 1), 1, 2), op(1, Get(K), (None, 0), 3, 4)])


def test_equal_times_count_as_overlapping() -> None:
    assert is_linearizable([op(0, Put(K, b"a"), True, 0, 5), op(1, Get(K), (None, 0), 5, 6)])
    assert not is_linearizable([op(0, Put(K, b"a"), True, 0, 5), op(1, Get(K), (None, 0), 5.5, 6)])


def test_stale_read_after_completed_write_is_rejected() -> None:
    history = [
        op(0, Put(K, b"a"), True, 0, 1),
        op(0, Put(K, b"b"), True, 2, 3),
        op(1, Get(K), (b"a", 1), 4, 5),
    ]
    result = check(KvModel(), history)
    assert result.verdict is Verdict.ILLEGAL
    failure = result.failure
    assert failure is not None
    assert failure.partition == "key b'k'"
    assert [o.input for o in failure.longest_prefix] == [Put(K, b"a"), Put(K, b"b")]
    assert failure.state_after_prefix == (b"b", 2)
    assert failure.blocking == history[2]
    assert [(c.operation, c.accepted_by_model) for c in failure.candidates] == [(history[2], False)]
    assert failure.not_linearized == (history[2],)
    report = result.explain()
    assert "partition key b'k'" in report
    assert "get(b'k') -> b'a' (version 1)" in report
    assert "b'b' (version 2)" in report


def test_lost_write_is_rejected() -> None:
    # Both puts completed, yet the read counts only one of them.
    history = [
        op(0, Put(K, b"a"), True, 0, 1),
        op(1, Put(K, b"b"), True, 0, 1),
        op(2, Get(K), (b"b", 1), 2, 3),
    ]
    assert not is_linearizable(history)
    assert is_linearizable([*history[:2], op(2, Get(K), (b"b", 2), 2, 3)])


def test_read_of_a_value_never_written_is_rejected() -> None:
    history = [op(0, Put(K, b"a"), True, 0, 10), op(1, Get(K), (b"z", 1), 1, 2)]
    assert not is_linearizable(history)


def test_two_cas_from_the_same_value_cannot_both_succeed() -> None:
    setup = op(0, Put(K, b"a"), True, 0, 1)
    first = op(1, Cas(K, b"a", b"b"), True, 2, 5)
    second = op(2, Cas(K, b"a", b"c"), True, 2, 5)
    assert not is_linearizable([setup, first, second])
    assert is_linearizable([setup, first, replace(second, output=False)])
    # From "absent" too: two creators of one key.
    assert not is_linearizable([op(1, Cas(K, None, b"b"), True, 0, 5), op(2, Cas(K, None, b"c"), True, 0, 5)])


def test_version_cannot_go_backwards() -> None:
    history = [
        op(0, Put(K, b"a"), True, 0, 1),
        op(1, Put(K, b"a"), True, 0, 1),
        op(2, Get(K), (b"a", 2), 2, 3),
        op(2, Get(K), (b"a", 1), 4, 5),
    ]
    assert not is_linearizable(history)
    assert is_linearizable(history[:3])


def test_read_of_a_write_that_then_unhappens_is_rejected() -> None:
    for put_return in (None, 100.0):  # unknown outcome, or still running
        history = [
            op(0, Put(K, b"a"), True, 0, put_return),
            op(1, Get(K), (b"a", 1), 1, 2),
            op(1, Get(K), (None, 0), 3, 4),
        ]
        assert not is_linearizable(history), put_return


def test_unknown_write_may_have_happened_or_not() -> None:
    put = op(0, Put(K, b"a"), None, 0, None)
    assert is_linearizable([put, op(1, Get(K), (None, 0), 1, 2)])
    assert is_linearizable([put, op(1, Get(K), (b"a", 1), 1, 2)])
    # Not yet, then yes: it took effect late.
    assert is_linearizable([put, op(1, Get(K), (None, 0), 1, 2), op(1, Get(K), (b"a", 1), 50, 51)])
    # It cannot take effect before it was called.
    assert not is_linearizable([op(1, Get(K), (b"a", 1), 0, 1), replace(put, call_time=2)])
    # Or twice.
    assert not is_linearizable([put, op(1, Get(K), (b"a", 2), 1, 2)])


def test_unknown_outcome_ignores_the_recorded_output() -> None:
    setup = op(0, Put(K, b"a"), True, 0, 1)
    # The client wrote down False, but with no return the outcome is unknown:
    # the CAS may have succeeded.
    cas = op(1, Cas(K, b"a", b"b"), False, 2, None)
    assert is_linearizable([setup, cas, op(2, Get(K), (b"b", 2), 3, 4)])


def test_unknown_delete_and_cas_may_have_happened_or_not() -> None:
    setup = op(0, Put(K, b"a"), True, 0, 1)
    delete = op(1, Delete(K), None, 2, None)
    cas = op(1, Cas(K, b"a", b"b"), None, 2, None)
    for unknown, after in ((delete, (None, 0)), (cas, (b"b", 2))):
        assert is_linearizable([setup, unknown, op(2, Get(K), (b"a", 1), 3, 4)])
        assert is_linearizable([setup, unknown, op(2, Get(K), after, 3, 4)])
        assert is_linearizable([setup, unknown, op(2, Get(K), (b"a", 1), 3, 4), op(2, Get(K), after, 5, 6)])
        assert not is_linearizable(
            [setup, unknown, op(2, Get(K), after, 3, 4), op(2, Get(K), (b"a", 1), 5, 6)]
        )


def test_keys_are_checked_independently_and_the_failing_one_is_named() -> None:
    history = [
        op(0, Put(b"a", b"1"), True, 0, 1),
        op(0, Put(b"b", b"1"), True, 2, 3),
        op(1, Get(b"a"), (b"1", 1), 4, 5),
        op(1, Get(b"b"), (None, 0), 6, 7),
    ]
    result = check(KvModel(), history)
    assert result.verdict is Verdict.ILLEGAL
    assert result.failure is not None and result.failure.partition == "key b'b'"
    assert result.partitions_checked == 1 and result.partitions_total == 2


def test_unknown_gets_are_left_out() -> None:
    history = [op(0, Get(K), (b"never", 7), 0, None), op(1, Put(K, b"a"), True, 0, 1)]
    assert is_linearizable(history)
    assert [len(p.operations) for p in KvModel().partition(history)] == [1]


def test_bad_histories_raise() -> None:
    with pytest.raises(ValueError, match="returns before it is called"):
        check(KvModel(), [op(0, Get(K), (None, 0), 2, 1)])
    with pytest.raises(ValueError, match="has no output"):
        check(KvModel(), [op(0, Get(K), None, 0, 1)])


def test_result_does_not_depend_on_the_order_of_the_input() -> None:
    rng = random.Random(7)
    history = simulate(rng, clients=4, operations=60, keys=(b"a", b"b"), unknown_rate=0.1)
    history.append(op(9, Get(b"a"), (b"never", 1), 10_000, 10_001))
    reports = set()
    for _ in range(5):
        rng.shuffle(history)
        reports.add(check(KvModel(), history).explain())
    assert len(reports) == 1


# --- a model that is not the key-value one ------------------------------------


@dataclass(frozen=True)
class Push:
    value: int


@dataclass(frozen=True)
class Pop:
    pass


class StackModel(Model[tuple[int, ...], Push | Pop, int | None]):
    """A stack; Pop returns the top or None when empty (not an unknown outcome
    here: the tests give pops a return time). No partitioning: one history."""

    def init(self) -> tuple[int, ...]:
        return ()

    def step(
        self, state: tuple[int, ...], input: Push | Pop, output: int | None
    ) -> tuple[bool, tuple[int, ...]]:
        if isinstance(input, Push):
            return True, (*state, input.value)
        top = state[-1] if state else None
        return output == top, state[:-1]


def test_the_core_works_with_any_model() -> None:
    model = StackModel()
    history: list[Operation[Push | Pop, int | None]] = [
        Operation(0, Push(1), None, 0, 1),
        Operation(1, Push(2), None, 0, 1),
        Operation(0, Pop(), 1, 2, 3),
        Operation(1, Pop(), 2, 2, 3),
    ]
    assert check(model, history).ok
    history.append(Operation(0, Pop(), 2, 4, 5))
    result = check(model, history)
    assert result.verdict is Verdict.ILLEGAL
    assert result.failure is not None and result.failure.partition == "all"
    assert "Pop() -> 2" in result.explain()


# --- the timeout -------------------------------------------------------------


def hopeless_history(writers: int) -> list[KvOperation]:
    """Many concurrent puts, then a read no order of them explains: the search
    has to try every subset of the puts before it can say so."""
    puts = [op(i, Put(K, b"%d" % i), True, 0, 10) for i in range(writers)]
    return [*puts, op(writers, Get(K), (b"0", writers + 5), 11, 12)]


def test_timeout_gives_unknown() -> None:
    started = time.monotonic()
    result = check(KvModel(), hopeless_history(22), timeout=0.2)
    assert time.monotonic() - started < 5
    assert result.verdict is Verdict.UNKNOWN
    assert result.timed_out_partition == "key b'k'"
    assert "timed out in partition key b'k'" in result.explain()
    # With fewer writers the same shape is found illegal in time.
    assert check(KvModel(), hopeless_history(6), timeout=None).verdict is Verdict.ILLEGAL


def test_timeout_between_partitions() -> None:
    history = [op(0, Put(b"%d" % i, b"x"), True, 0, 1) for i in range(3)]
    result = check(KvModel(), history, timeout=-1)
    assert result.verdict is Verdict.UNKNOWN
    assert result.partitions_checked == 0


# --- generated histories -----------------------------------------------------


@dataclass(frozen=True)
class Simulation:
    seed: int
    clients: int
    operations: int
    keys: tuple[bytes, ...]
    unknown_rate: float
    few_values: bool

    def run(self) -> list[KvOperation]:
        return simulate(
            random.Random(self.seed),
            clients=self.clients,
            operations=self.operations,
            keys=self.keys,
            unknown_rate=self.unknown_rate,
            few_values=self.few_values,
        )


simulations = st.builds(
    Simulation,
    seed=st.integers(0, 2**32 - 1),
    clients=st.integers(1, 8),
    operations=st.integers(0, 80),
    keys=st.sampled_from([(K,), (b"a", b"b"), (b"a", b"b", b"c")]),
    unknown_rate=st.sampled_from([0.0, 0.05, 0.3]),
    few_values=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(simulations)
def test_histories_of_an_atomic_store_are_linearizable(simulation: Simulation) -> None:
    history = simulation.run()
    result = check(KvModel(), history)
    assert result.ok, result.explain()


@settings(max_examples=100, deadline=None)
@given(simulations, st.randoms(use_true_random=False))
def test_forgetting_outcomes_keeps_a_history_linearizable(simulation: Simulation, rng: random.Random) -> None:
    history = [o if rng.random() < 0.7 else replace(o, return_time=None) for o in simulation.run()]
    assert is_linearizable(history)


def corrupt_output(rng: random.Random, history: list[KvOperation]) -> list[KvOperation] | None:
    """history with one known output changed to another plausible one."""
    known = [i for i, o in enumerate(history) if o.return_time is not None and not isinstance(o.input, Put)]
    if not known:
        return None
    index = rng.choice(known)
    target = history[index]
    output: KvOutput
    if isinstance(target.input, Get):
        value = rng.choice((None, b"a", b"b", b"v1", b"v2", b"v3"))
        output = (None, 0) if value is None else (value, rng.randrange(1, 4))
    elif isinstance(target.input, Delete):
        output = 0 if target.output else 1
    else:
        output = not target.output
    corrupted = list(history)
    corrupted[index] = replace(target, output=output)
    return corrupted


@settings(max_examples=400, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    clients=st.integers(1, 4),
    operations=st.integers(1, 8),
    unknown_rate=st.sampled_from([0.0, 0.3]),
    few_values=st.booleans(),
    corruptions=st.integers(0, 2),
)
def test_small_histories_agree_with_brute_force(
    seed: int, clients: int, operations: int, unknown_rate: float, few_values: bool, corruptions: int
) -> None:
    rng = random.Random(seed)
    history = simulate(
        rng,
        clients=clients,
        operations=operations,
        keys=(b"a", b"b"),
        unknown_rate=unknown_rate,
        few_values=few_values,
    )
    for _ in range(corruptions):
        history = corrupt_output(rng, history) or history
    expected = brute_force_linearizable(history)
    result = check(KvModel(), history)
    assert result.ok is expected, result.explain()
    if not expected:
        # The explanation is consistent: the prefix replays in the model.
        failure = result.failure
        assert failure is not None
        model, state = KvModel(), KvModel().init()
        for o in failure.longest_prefix:
            accepted, state = model.step(state, o.input, o.output if o.return_time is not None else None)
            assert accepted
        assert state == failure.state_after_prefix
        assert failure.blocking in failure.not_linearized


@settings(max_examples=100, deadline=None)
@given(simulations, st.randoms(use_true_random=False))
def test_corruptions_that_must_be_caught_are_caught(simulation: Simulation, rng: random.Random) -> None:
    history = simulation.run()
    gets = [i for i, o in enumerate(history) if isinstance(o.input, Get) and o.return_time is not None]
    if not gets:
        return
    index = rng.choice(gets)
    target = history[index]
    writes = sum(isinstance(o.input, Put | Cas) for o in history if o.input.key == target.input.key)
    # A value nobody wrote; a version higher than the number of writes.
    for output in ((b"never written", 1), (b"a", writes + 1)):
        corrupted = list(history)
        corrupted[index] = replace(target, output=output)
        assert not is_linearizable(corrupted)
    # A write dropped from the record although a completed read saw it.
    observed = {o.output[0] for o in history if isinstance(o.input, Get) and isinstance(o.output, tuple)}
    if not simulation.few_values:
        for i, o in enumerate(history):
            if isinstance(o.input, Put) and o.input.value in observed:
                assert not is_linearizable(history[:i] + history[i + 1 :])
                break


# --- size --------------------------------------------------------------------


def test_five_thousand_operations_on_one_key_with_many_clients() -> None:
    rng = random.Random(2024)
    history = simulate(rng, clients=12, operations=5000, unknown_rate=0.01)
    started = time.process_time()
    result = check(KvModel(), history, timeout=60)
    assert result.ok, result.explain()
    assert time.process_time() - started < 10
