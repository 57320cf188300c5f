"""The sequential model of etcd keys for the linearizability checker. No I/O.

Rules (etcd's, as a client of one key observes them):
- A key is absent or holds a value; its version counts the puts since it was
  created: a put on an absent key makes version 1, each later put adds one,
  a delete makes it absent again (version 0). Every key starts absent.
- Inputs and the outputs recorded for them:
    Get(key)                        -> (value, version), (None, 0) when absent
    Put(key, value)                 -> True
    Delete(key)                     -> number of keys deleted, 0 or 1
    Cas(key, expected, new_value)   -> whether it put new_value: a txn that
                                       compares the value with expected (None =
                                       "the key is absent", i.e. version == 0)
                                       and puts on success
  An operation with an unknown outcome has output None (the checker passes
  None anyway); it may or may not have taken effect.
- A call that failed definitely (the server answered that nothing was done)
  is left out of the history: it is the same as an operation with no effect.
- Revisions are not part of the model: they are global, so they cannot be
  checked one key at a time. The watch checker looks at them instead.

Theory of operation: operations on different keys commute, so the history is
partitioned by key and each key is checked alone, with state (value or None,
version). Gets with an unknown outcome are dropped before the search: they
change nothing and constrain nothing, and the search would only try them in
and out. Gets, failed CASes and deletes of nothing are read-only for the
search; `could_accept_after` counts what the calls in flight can still do to
the version (puts add one, a delete resets it) and which values they can write,
which settles most dead ends at once.

Tip for recorders: give every put a value of its own. A read then says exactly
which write it saw, and the search has far fewer orders to try.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gifee.verify.linearizability import Model, Operation, Partition


@dataclass(frozen=True, slots=True)
class Get:
    key: bytes


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Delete:
    key: bytes


@dataclass(frozen=True, slots=True)
class Cas:
    key: bytes
    expected: bytes | None  # None: succeed only if the key is absent
    new_value: bytes


KvInput = Get | Put | Delete | Cas
# (value, version) for Get; True for Put; deleted count for Delete; succeeded for Cas.
KvOutput = tuple[bytes | None, int] | bool | int
# (value, version); (None, 0) for an absent key.
KvState = tuple[bytes | None, int]
KvOperation = Operation[KvInput, KvOutput]

ABSENT: KvState = (None, 0)


class KvModel(Model[KvState, KvInput, KvOutput]):
    def init(self) -> KvState:
        return ABSENT

    def step(self, state: KvState, input: KvInput, output: KvOutput | None) -> tuple[bool, KvState]:
        value, version = state
        if isinstance(input, Get):
            return (output is None or output == state), state
        if isinstance(input, Put):
            return (output is None or output is True), (input.value, version + 1)
        if isinstance(input, Delete):
            deleted = 0 if value is None else 1
            return (output is None or output == deleted), ABSENT
        succeeded = value == input.expected
        after = (input.new_value, version + 1) if succeeded else state
        return (output is None or output == succeeded), after

    def is_read_only(self, input: KvInput, output: KvOutput | None) -> bool:
        # A delete that deleted nothing and a CAS that failed are accepted only
        # in states they leave alone; a get never changes anything.
        if isinstance(input, Get):
            return True
        if isinstance(input, Delete):
            return output == 0
        if isinstance(input, Cas):
            return output is False
        return False

    def could_accept_after(
        self,
        state: KvState,
        input: KvInput,
        output: KvOutput | None,
        available: Sequence[tuple[KvInput, KvOutput | None]],
    ) -> bool:
        if output is None or self.step(state, input, output)[0]:
            return True
        # What the available operations can do at most: add to the version
        # (a put, a CAS that may succeed), write certain values, delete.
        increments = 0
        written: set[bytes] = set()
        can_delete = False
        for other, other_output in available:
            if isinstance(other, Put):
                increments += 1
                written.add(other.value)
            elif isinstance(other, Cas) and other_output is not False:
                increments += 1
                written.add(other.new_value)
            elif isinstance(other, Delete) and other_output != 0:
                can_delete = True
        value, version = state
        if isinstance(input, Get) and isinstance(output, tuple):
            wanted_value, wanted_version = output
            if wanted_value is None:
                return can_delete
            # Any change of version ends with a write, so it takes a writer of
            # the value; versions count up from now, or from 0 after a delete.
            if wanted_value not in written:
                return False
            return version < wanted_version <= version + increments or (
                can_delete and 1 <= wanted_version <= increments
            )
        if isinstance(input, Delete):
            # Refused: deleted 1 on an absent key, or 0 on a present one.
            return increments > 0 if output else can_delete
        if isinstance(input, Cas) and output is True:
            return can_delete if input.expected is None else input.expected in written
        return True

    def partition(self, history: Sequence[KvOperation]) -> list[Partition[KvInput, KvOutput]]:
        by_key: dict[bytes, list[KvOperation]] = {}
        for op in history:
            if op.return_time is None and isinstance(op.input, Get):
                continue
            if op.return_time is not None and op.output is None:
                # Would silently mean "any output": a recording bug, not a history.
                raise ValueError(f"operation with a known outcome has no output: {op!r}")
            by_key.setdefault(op.input.key, []).append(op)
        return [Partition(f"key {key!r}", ops) for key, ops in sorted(by_key.items())]

    def describe_operation(self, input: KvInput, output: KvOutput | None) -> str:
        if isinstance(input, Get):
            call = f"get({input.key!r})"
        elif isinstance(input, Put):
            call = f"put({input.key!r}, {input.value!r})"
        elif isinstance(input, Delete):
            call = f"delete({input.key!r})"
        else:
            expected = "absent" if input.expected is None else repr(input.expected)
            call = f"cas({input.key!r}, {expected} -> {input.new_value!r})"
        if output is None:
            return f"{call} -> ? (outcome unknown)"
        if isinstance(input, Get) and isinstance(output, tuple):
            return f"{call} -> {self.describe_state(output)}"
        return f"{call} -> {output!r}"

    def describe_state(self, state: KvState) -> str:
        value, version = state
        return "absent" if value is None else f"{value!r} (version {version})"
