"""The watch cache's decisions: the window of recent events and which watcher
sees which event as what.

Rules:
- A resource's events arrive in revision order from one store watch; the
  window keeps the last `capacity` of them. `since(rev)` gives every event
  after rev if the window still covers rev (all events > oldest are kept),
  else None: the caller must go to the store or answer 410 Expired.
- A watcher has a filter (namespace, name, label and field selectors). For a
  modification: matched before and after -> MODIFIED; only after -> ADDED;
  only before -> DELETED (so a watcher's view stays a consistent set); neither
  -> nothing. ADDED/DELETED go through when the object matches.
Pure: no I/O, no clocks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from gifee.api.selectors import FieldRequirement, Selector, fields_match, labels_match

Obj = dict[str, Any]


@dataclass(frozen=True)
class Event:
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj  # for DELETED: the last state, resourceVersion = the deletion's revision
    prev: Obj | None
    revision: int


@dataclass(frozen=True)
class WatchFilter:
    namespace: str = ""
    name: str = ""
    label_selector: Selector = ()
    field_selector: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: Obj) -> bool:
        meta = obj.get("metadata", {})
        if self.namespace and meta.get("namespace") != self.namespace:
            return False
        if self.name and meta.get("name") != self.name:
            return False
        return labels_match(self.label_selector, meta.get("labels")) and fields_match(self.field_selector, obj)


def decide(f: WatchFilter, ev: Event) -> tuple[str, Obj] | None:
    if ev.type == "DELETED":
        return ("DELETED", ev.obj) if f.matches(ev.obj) else None
    now = f.matches(ev.obj)
    if ev.type == "ADDED":
        return ("ADDED", ev.obj) if now else None
    before = ev.prev is not None and f.matches(ev.prev)
    if now and before:
        return ("MODIFIED", ev.obj)
    if now:
        return ("ADDED", ev.obj)
    if before:
        return ("DELETED", ev.obj)
    return None


class EventWindow:
    def __init__(self, capacity: int, start_revision: int) -> None:
        self.capacity = capacity
        self.events: deque[Event] = deque()
        self.oldest = start_revision  # every event with revision > oldest is in the window
        self.latest = start_revision

    def append(self, ev: Event) -> None:
        if len(self.events) >= self.capacity:
            self.oldest = self.events.popleft().revision
        self.events.append(ev)
        self.latest = max(self.latest, ev.revision)

    def since(self, revision: int) -> list[Event] | None:
        if revision < self.oldest:
            return None
        return [e for e in self.events if e.revision > revision]
