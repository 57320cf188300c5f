"""Tests of the watch-stream checker: each guarantee broken by hand, and
streams made from random committed histories, correct ones and mutated ones."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gifee.verify.watch_history import (
    ALL_KEYS,
    Event,
    EventType,
    Property,
    Violation,
    WatcherLog,
    WatchResponse,
    check_watcher,
    check_watchers,
    in_range,
)


def put(revision: int, key: bytes, value: bytes) -> Event:
    return Event(revision, key, EventType.PUT, value)


def delete(revision: int, key: bytes) -> Event:
    return Event(revision, key, EventType.DELETE)


# Revision 4 is a transaction of two puts, revision 7 one of a put and a delete.
COMMITTED = [
    put(2, b"a", b"1"),
    put(3, b"b", b"1"),
    put(4, b"a", b"2"),
    put(4, b"c", b"1"),
    delete(5, b"a"),
    put(6, b"ab", b"1"),
    put(7, b"ab", b"2"),
    delete(7, b"c"),
    put(8, b"b", b"2"),
]


def responses(*groups: list[Event]) -> list[WatchResponse]:
    return [WatchResponse(tuple(group)) for group in groups]


def watcher(
    groups: list[list[Event]],
    *,
    key: bytes = b"a",
    range_end: bytes = ALL_KEYS,
    start: int = 1,
    progress_revision: int = 0,
) -> WatcherLog:
    return WatcherLog(
        key, range_end, start, responses(*groups), name="w", progress_revision=progress_revision
    )


def properties(violations: list[Violation]) -> set[Property]:
    return {v.property for v in violations}


def test_range_conventions() -> None:
    assert in_range(b"a", b"a", b"") and not in_range(b"ab", b"a", b"")
    assert in_range(b"zzz", b"a", ALL_KEYS) and not in_range(b"0", b"a", ALL_KEYS)
    assert in_range(b"ab", b"a", b"b") and not in_range(b"b", b"a", b"b")


def test_correct_streams_pass() -> None:
    every = COMMITTED
    # Each revision in a response of its own, or several revisions together.
    by_revision: dict[int, list[Event]] = {}
    for event in every:
        by_revision.setdefault(event.revision, []).append(event)
    assert check_watcher(COMMITTED, watcher(list(by_revision.values()))) == []
    assert check_watcher(COMMITTED, watcher([every[:4], every[4:]])) == []
    # A single key, from a later start.
    only_a = [[put(4, b"a", b"2")], [delete(5, b"a")]]
    assert check_watcher(COMMITTED, watcher(only_a, range_end=b"", start=3)) == []
    # A range [a, b): a, ab; the rest of revision 4 and 7 is outside it.
    in_a_b = [[put(2, b"a", b"1")], [put(4, b"a", b"2")], [delete(5, b"a"), put(6, b"ab", b"1")]]
    assert check_watcher(COMMITTED, watcher(in_a_b, range_end=b"b")) == []
    # No events yet, or none at all in the range.
    assert check_watcher(COMMITTED, watcher([])) == []
    assert check_watcher(COMMITTED, watcher([[]], key=b"x", range_end=b"")) == []


def test_ordered() -> None:
    swapped = [[put(3, b"b", b"1")], [put(2, b"a", b"1")]]
    violations = check_watcher(COMMITTED, watcher(swapped))
    assert Property.ORDERED in properties(violations)
    within = [[put(3, b"b", b"1"), put(2, b"a", b"1")]]
    assert Property.ORDERED in properties(check_watcher(COMMITTED, watcher(within)))


def test_unique() -> None:
    twice = [[put(2, b"a", b"1")], [put(2, b"a", b"1"), put(3, b"b", b"1")]]
    violations = check_watcher(COMMITTED, watcher(twice))
    assert properties(violations) == {Property.UNIQUE, Property.ATOMIC}
    assert "delivered twice: responses 0 and 1" in str(violations[0]) + str(violations[1])


def test_atomic() -> None:
    split = [[put(2, b"a", b"1"), put(3, b"b", b"1"), put(4, b"a", b"2")], [put(4, b"c", b"1")]]
    violations = check_watcher(COMMITTED, watcher(split))
    assert [(v.property, v.message) for v in violations] == [
        (Property.ATOMIC, "revision 4 split across responses [0, 1]")
    ]
    # A revision whose other events are outside the range is whole on its own.
    assert check_watcher(COMMITTED, watcher([[put(4, b"c", b"1")]], key=b"c", range_end=b"", start=4)) == []


def test_reliable_missing_event() -> None:
    gap = [[put(2, b"a", b"1")], [put(4, b"a", b"2"), put(4, b"c", b"1")]]
    violations = check_watcher(COMMITTED, watcher(gap))
    assert [str(v) for v in violations] == [
        "reliable: watcher w: PUT b'b' b'1' @3 was never delivered (seen up to 4)"
    ]
    # Half of a transaction is missing too.
    half = [[put(2, b"a", b"1"), put(3, b"b", b"1"), put(4, b"a", b"2")]]
    assert properties(check_watcher(COMMITTED, watcher(half))) == {Property.RELIABLE}


def test_reliable_up_to_a_known_progress_revision() -> None:
    first_two = [[put(2, b"a", b"1"), put(3, b"b", b"1")]]
    assert check_watcher(COMMITTED, watcher(first_two)) == []
    violations = check_watcher(COMMITTED, watcher(first_two, progress_revision=4))
    assert len(violations) == 2 and properties(violations) == {Property.RELIABLE}


def test_reliable_no_invented_or_foreign_events() -> None:
    wrong_value = [[put(2, b"a", b"9")]]
    violations = check_watcher(COMMITTED, watcher(wrong_value))
    assert [v.message for v in violations] == [
        "response 0: PUT b'a' b'9' @2 but the committed event is PUT b'a' b'1' @2"
    ]
    never = [[put(2, b"a", b"1")], [put(99, b"a", b"x")]]
    violations = check_watcher(COMMITTED, watcher(never))
    # The invented revision does not make every later commit "missing".
    assert [v.message for v in violations] == ["response 1: PUT b'a' b'x' @99 was never committed"]
    outside = [[put(2, b"a", b"1"), put(3, b"b", b"1")]]
    violations = check_watcher(COMMITTED, watcher(outside, range_end=b"b"))
    assert properties(violations) == {Property.RELIABLE}
    assert "outside the watched range" in violations[0].message


def test_resumable() -> None:
    # Start at 3: the first event must be revision 3's.
    late = [[put(4, b"a", b"2"), put(4, b"c", b"1")]]
    violations = check_watcher(COMMITTED, watcher(late, start=3))
    assert properties(violations) == {Property.RESUMABLE, Property.RELIABLE}
    assert "expected revision 3" in str([v for v in violations if v.property is Property.RESUMABLE][0])
    early = [[put(2, b"a", b"1"), put(3, b"b", b"1")]]
    violations = check_watcher(COMMITTED, watcher(early, start=3))
    assert properties(violations) == {Property.RESUMABLE}
    # An event for a watcher that has nothing committed to see.
    nothing = check_watcher(COMMITTED, watcher([[put(8, b"b", b"2")]], start=9))
    assert Property.RESUMABLE in properties(nothing)


def test_compacted_watcher() -> None:
    compacted = WatchResponse((), compact_revision=5)
    ok = WatcherLog(b"a", ALL_KEYS, 3, [compacted], name="w")
    assert check_watcher(COMMITTED, ok) == []
    # It may have been sent some events before the compaction caught it up.
    assert (
        check_watcher(
            COMMITTED, replace(ok, start_revision=2, responses=[*responses([COMMITTED[0]]), compacted])
        )
        == []
    )
    not_compacted = replace(ok, start_revision=5)
    assert "is not below it" in check_watcher(COMMITTED, not_compacted)[0].message
    with_events = replace(ok, responses=[WatchResponse((COMMITTED[1],), compact_revision=5)])
    assert "compact_revision with events" in [v.message for v in check_watcher(COMMITTED, with_events)][0]
    not_last = replace(ok, responses=[compacted, *responses([COMMITTED[1]])])
    messages = [v.message for v in check_watcher(COMMITTED, not_last)]
    assert "response 0: compact_revision cancels the watch, yet more responses follow" in messages


def test_several_watchers_are_named() -> None:
    good = WatcherLog(b"b", b"", 1, responses([put(3, b"b", b"1")]))
    bad = WatcherLog(b"b", b"", 1, responses([put(8, b"b", b"2")]), name="late")
    violations = check_watchers(COMMITTED, [good, bad, replace(bad, name="")])
    assert {v.watcher for v in violations} == {"late", "#2"}


def test_many_violations_are_summarised() -> None:
    committed = [put(revision, b"k", b"v") for revision in range(1, 40)]
    last_only = WatcherLog(b"k", b"", 1, responses([committed[-1]]), name="w")
    violations = [v for v in check_watcher(committed, last_only) if v.property is Property.RELIABLE]
    assert len(violations) == 11
    assert violations[-1].message == "... and 28 more violations like these"


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="not sorted"):
        check_watchers([put(3, b"a", b"1"), put(2, b"a", b"1")], [])
    with pytest.raises(ValueError, match="two events for one key"):
        check_watchers([put(3, b"a", b"1"), delete(3, b"a")], [])
    with pytest.raises(ValueError, match="start revision must be >= 1"):
        check_watcher(COMMITTED, watcher([], start=0))


# --- generated histories -----------------------------------------------------

KEYS = [b"a", b"ab", b"b", b"c"]
RANGES = [(b"a", b""), (b"a", b"b"), (b"a", ALL_KEYS), (b"b", ALL_KEYS), (b"\0", ALL_KEYS), (b"c", b"")]


@st.composite
def committed_histories(draw: st.DrawFn) -> list[Event]:
    """A store's changes: each revision one to three changes of distinct keys."""
    present: set[bytes] = set()
    events: list[Event] = []
    for revision in range(2, draw(st.integers(2, 25))):
        keys = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True))
        for key in keys:
            if key in present and draw(st.booleans()):
                events.append(delete(revision, key))
                present.discard(key)
            else:
                events.append(put(revision, key, b"v%d" % revision))
                present.add(key)
    return events


@dataclass(frozen=True)
class WatchCase:
    committed: list[Event]
    log: WatcherLog


@st.composite
def correct_watches(draw: st.DrawFn) -> WatchCase:
    """A committed history and a stream a correct server could have sent: the
    matching events from the start revision on, whole revisions per response,
    up to some revision the watcher had got to."""
    committed = draw(committed_histories())
    key, range_end = draw(st.sampled_from(RANGES))
    last_revision = committed[-1].revision if committed else 1
    start = draw(st.integers(1, last_revision + 1))
    seen_up_to = draw(st.integers(start - 1, last_revision))
    matching = [e for e in committed if start <= e.revision <= seen_up_to and in_range(e.key, key, range_end)]
    revisions: list[list[Event]] = []
    for event in matching:
        if revisions and revisions[-1][0].revision == event.revision:
            revisions[-1].append(event)
        else:
            revisions.append([event])
    groups: list[list[Event]] = []
    for revision_events in revisions:
        if not groups or draw(st.booleans()):
            groups.append([])
        groups[-1].extend(revision_events)
    return WatchCase(committed, WatcherLog(key, range_end, start, responses(*groups), name="w"))


@settings(max_examples=200, deadline=None)
@given(correct_watches())
def test_correct_watch_streams_always_pass(case: WatchCase) -> None:
    assert check_watcher(case.committed, case.log) == []


def delivered(log: WatcherLog) -> list[tuple[int, int]]:
    """(response number, position) of every delivered event."""
    return [(n, i) for n, r in enumerate(log.responses) for i in range(len(r.events))]


def with_groups(log: WatcherLog, groups: list[list[Event]]) -> WatcherLog:
    return replace(log, responses=responses(*groups))


@settings(max_examples=200, deadline=None)
@given(correct_watches(), st.sampled_from(["drop", "duplicate", "reorder", "split"]), st.data())
def test_mutated_watch_streams_are_caught(case: WatchCase, mutation: str, data: st.DataObject) -> None:
    groups = [list(r.events) for r in case.log.responses]
    flat = [e for g in groups for e in g]
    if mutation == "drop":
        # Undetectable when it removes the whole of the last revision seen:
        # the stream then looks like one that has not got that far yet.
        slots = delivered(case.log)
        droppable = [
            (n, i)
            for position, (n, i) in enumerate(slots)
            if any(e.revision >= flat[position].revision for other, e in enumerate(flat) if other != position)
        ]
        if not droppable:
            return
        n, i = data.draw(st.sampled_from(droppable))
        del groups[n][i]
        expected = Property.RELIABLE
    elif mutation == "duplicate":
        if not flat:
            return
        n, i = data.draw(st.sampled_from(delivered(case.log)))
        target = n if n + 1 == len(groups) or data.draw(st.booleans()) else n + 1
        groups[target].append(groups[n][i])
        expected = Property.UNIQUE
    elif mutation == "reorder":
        slots = delivered(case.log)
        pairs = [
            (a, b)
            for a in slots
            for b in slots
            if a < b and groups[a[0]][a[1]].revision != groups[b[0]][b[1]].revision
        ]
        if not pairs:
            return
        (n1, i1), (n2, i2) = data.draw(st.sampled_from(pairs))
        groups[n1][i1], groups[n2][i2] = groups[n2][i2], groups[n1][i1]
        expected = Property.ORDERED
    else:
        cuts = [
            (n, i)
            for n, g in enumerate(groups)
            for i in range(1, len(g))
            if g[i - 1].revision == g[i].revision
        ]
        if not cuts:
            return
        n, i = data.draw(st.sampled_from(cuts))
        groups[n : n + 1] = [groups[n][:i], groups[n][i:]]
        expected = Property.ATOMIC
    violations = check_watcher(case.committed, with_groups(case.log, groups))
    assert expected in properties(violations), violations
