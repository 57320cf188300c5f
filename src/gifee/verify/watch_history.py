"""Checks of recorded watch streams against the store's committed history. No I/O.

Rules (etcd's watch guarantees, as etcd's robustness tests name them):
- ordered: revisions never go down, within a response or from one response
  to the next.
- unique: no event, identified by (revision, key), is delivered twice.
- atomic: the events of one revision (a transaction) that match the watched
  range arrive together in one response, never split across responses.
- reliable: from the start revision up to the last revision the watcher saw
  (or a later revision it is known to have caught up to, `progress_revision`),
  every committed event in the range was delivered; every delivered event is
  a committed one, equal in type and value, and in the range.
- resumable: the first event delivered is at the revision of the first matching
  committed event at or after the start revision, and nothing is delivered from
  before it. A watcher whose start revision was compacted instead gets a
  response with compact_revision > start revision, as its last response, with
  no events; for it the first-event rule does not apply.

Conventions: a watcher's range is etcd's (key, range_end): range_end empty =
the single key, b"\\0" = every key >= key, otherwise [key, range_end). The
start revision is the first revision the watcher wants; a recorder whose client
asked for 0 ("from now on") records the creation response's header revision + 1.
Responses of a fragmented watch (fragment=true) must be merged back into one
before checking, as etcd's clients do. Events carry no prev_kv: the committed
history does not say what the client asked for.

Theory of operation: the committed history is indexed once by (revision, key);
each watcher's responses are then walked once for the per-response rules and
compared with the committed events of its range for the others. The range
rule is written here again rather than imported from the store so that a bug
in the store's rule cannot hide itself.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

ALL_KEYS = b"\0"
# More violations of one property by one watcher are summarised in one line.
_MAX_REPORTS_PER_PROPERTY = 10


class EventType(enum.Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class Event:
    revision: int
    key: bytes
    type: EventType
    value: bytes = b""  # b"" for a DELETE


@dataclass(frozen=True, slots=True)
class WatchResponse:
    events: Sequence[Event] = ()
    compact_revision: int = 0  # non-zero: the watch was cancelled, its start was compacted


@dataclass(frozen=True, slots=True)
class WatcherLog:
    """What one watcher asked for and what it received, in order of arrival."""

    key: bytes
    range_end: bytes
    start_revision: int
    responses: Sequence[WatchResponse]
    name: str = ""  # for reports; defaults to the watcher's position in the list
    # A revision the watcher is known to be up to date with (e.g. a progress
    # notification's header revision); 0 if none. Extends the "reliable" check.
    progress_revision: int = 0


class Property(enum.Enum):
    ORDERED = "ordered"
    UNIQUE = "unique"
    ATOMIC = "atomic"
    RELIABLE = "reliable"
    RESUMABLE = "resumable"


@dataclass(frozen=True, slots=True)
class Violation:
    watcher: str
    property: Property
    message: str

    def __str__(self) -> str:
        return f"{self.property.value}: watcher {self.watcher}: {self.message}"


def in_range(key: bytes, start: bytes, range_end: bytes) -> bool:
    """Whether key is in etcd's range (start, range_end)."""
    if not range_end:
        return key == start
    if range_end == ALL_KEYS:
        return key >= start
    return start <= key < range_end


def describe_event(event: Event) -> str:
    value = f" {event.value!r}" if event.type is EventType.PUT else ""
    return f"{event.type.value} {event.key!r}{value} @{event.revision}"


def check_watchers(committed: Sequence[Event], watchers: Sequence[WatcherLog]) -> list[Violation]:
    """Every violation of the watch guarantees by any of the watchers; empty = all fine.

    committed: every event the store committed, sorted by revision (events of one
    transaction share a revision, in the transaction's order)."""
    index = _CommittedIndex(committed)
    violations: list[Violation] = []
    for position, watcher in enumerate(watchers):
        violations += _WatcherCheck(index, watcher, watcher.name or f"#{position}").run()
    return violations


def check_watcher(committed: Sequence[Event], watcher: WatcherLog) -> list[Violation]:
    """check_watchers for one watcher."""
    return check_watchers(committed, [watcher])


class _CommittedIndex:
    def __init__(self, committed: Sequence[Event]) -> None:
        self.events = list(committed)
        self.by_id: dict[tuple[int, bytes], Event] = {}
        previous_revision = 0
        for event in self.events:
            if event.revision < previous_revision:
                raise ValueError(f"committed history not sorted by revision at {describe_event(event)}")
            previous_revision = event.revision
            event_id = (event.revision, event.key)
            if event_id in self.by_id:
                raise ValueError(f"committed history has two events for one key in one revision: {event_id}")
            self.by_id[event_id] = event


@dataclass
class _WatcherCheck:
    index: _CommittedIndex
    watcher: WatcherLog
    name: str
    violations: dict[Property, list[str]] = field(default_factory=dict)

    def report(self, prop: Property, message: str) -> None:
        self.violations.setdefault(prop, []).append(message)

    def run(self) -> list[Violation]:
        watcher = self.watcher
        if watcher.start_revision < 1:
            raise ValueError(
                f"watcher {self.name}: start revision must be >= 1, got {watcher.start_revision}"
            )
        self.check_order_uniqueness_atomicity()
        last_seen = self.check_delivered_events()
        compacted = self.check_compaction()
        self.check_completeness(max(last_seen, watcher.progress_revision))
        if not compacted:
            self.check_first_event()
        out: list[Violation] = []
        for prop in Property:  # a fixed order, so that reports are deterministic
            messages = self.violations.get(prop, [])
            out += [Violation(self.name, prop, m) for m in messages[:_MAX_REPORTS_PER_PROPERTY]]
            if len(messages) > _MAX_REPORTS_PER_PROPERTY:
                more = len(messages) - _MAX_REPORTS_PER_PROPERTY
                out.append(Violation(self.name, prop, f"... and {more} more violations like these"))
        return out

    def delivered(self) -> list[tuple[int, Event]]:
        """(response number, event) for every delivered event, in order of arrival."""
        return [
            (number, event) for number, resp in enumerate(self.watcher.responses) for event in resp.events
        ]

    def check_order_uniqueness_atomicity(self) -> None:
        previous: tuple[int, Event] | None = None
        first_delivery: dict[tuple[int, bytes], int] = {}
        responses_of_revision: dict[int, list[int]] = {}
        for number, event in self.delivered():
            if previous is not None and event.revision < previous[1].revision:
                self.report(
                    Property.ORDERED,
                    f"response {number}: {describe_event(event)} after "
                    f"{describe_event(previous[1])} (response {previous[0]})",
                )
            previous = (number, event)
            event_id = (event.revision, event.key)
            if event_id in first_delivery:
                self.report(
                    Property.UNIQUE,
                    f"{describe_event(event)} delivered twice: responses {first_delivery[event_id]} and {number}",
                )
            else:
                first_delivery[event_id] = number
            responses = responses_of_revision.setdefault(event.revision, [])
            if number not in responses:
                responses.append(number)
        for revision, responses in responses_of_revision.items():
            if len(responses) > 1:
                self.report(Property.ATOMIC, f"revision {revision} split across responses {responses}")

    def check_delivered_events(self) -> int:
        """Reports delivered events that should not exist; returns the last committed revision seen."""
        watcher = self.watcher
        last_seen = 0
        for number, event in self.delivered():
            committed = self.index.by_id.get((event.revision, event.key))
            if committed is None:
                self.report(
                    Property.RELIABLE, f"response {number}: {describe_event(event)} was never committed"
                )
            elif committed != event:
                self.report(
                    Property.RELIABLE,
                    f"response {number}: {describe_event(event)} but the committed event is "
                    f"{describe_event(committed)}",
                )
            else:
                # Only real events count as seen: a bogus far-future revision
                # would otherwise make every later committed event "missing".
                last_seen = max(last_seen, event.revision)
            if not in_range(event.key, watcher.key, watcher.range_end):
                self.report(
                    Property.RELIABLE,
                    f"response {number}: {describe_event(event)} is outside the watched range "
                    f"[{watcher.key!r}, {watcher.range_end!r})",
                )
            if event.revision < watcher.start_revision:
                self.report(
                    Property.RESUMABLE,
                    f"response {number}: {describe_event(event)} is before the start revision "
                    f"{watcher.start_revision}",
                )
        return last_seen

    def check_compaction(self) -> bool:
        """Checks responses that report a compaction; returns whether there was one."""
        watcher = self.watcher
        compacted = False
        for number, resp in enumerate(watcher.responses):
            if not resp.compact_revision:
                continue
            compacted = True
            if resp.compact_revision <= watcher.start_revision:
                self.report(
                    Property.RESUMABLE,
                    f"response {number}: compact_revision {resp.compact_revision} but the start revision "
                    f"{watcher.start_revision} is not below it",
                )
            if resp.events:
                self.report(Property.RESUMABLE, f"response {number}: compact_revision with events")
            if number != len(watcher.responses) - 1:
                self.report(
                    Property.RESUMABLE,
                    f"response {number}: compact_revision cancels the watch, yet more responses follow",
                )
        return compacted

    def check_completeness(self, up_to: int) -> None:
        watcher = self.watcher
        delivered_ids = {(event.revision, event.key) for _, event in self.delivered()}
        for event in self.index.events:
            if event.revision > up_to:
                break
            if (
                event.revision >= watcher.start_revision
                and in_range(event.key, watcher.key, watcher.range_end)
                and (event.revision, event.key) not in delivered_ids
            ):
                self.report(
                    Property.RELIABLE, f"{describe_event(event)} was never delivered (seen up to {up_to})"
                )

    def check_first_event(self) -> None:
        delivered = self.delivered()
        if not delivered:
            return
        watcher = self.watcher
        first_number, first = delivered[0]
        expected = next(
            (
                event
                for event in self.index.events
                if event.revision >= watcher.start_revision
                and in_range(event.key, watcher.key, watcher.range_end)
            ),
            None,
        )
        if expected is None:
            self.report(
                Property.RESUMABLE,
                f"response {first_number}: first event {describe_event(first)}, but nothing in the range "
                f"was committed at or after the start revision {watcher.start_revision}",
            )
        elif first.revision != expected.revision:
            self.report(
                Property.RESUMABLE,
                f"response {first_number}: first event {describe_event(first)}, expected revision "
                f"{expected.revision} ({describe_event(expected)}) for start revision {watcher.start_revision}",
            )
