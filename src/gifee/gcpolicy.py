"""Garbage collection for the control plane's long-running processes (API server, scheduler,
controller manager, hollow nodes).

Why: each of them keeps every object of the cluster decoded in memory (watch caches, informers:
30,000 pods are about half a million container objects per process) and replaces an object on every
change of it. CPython runs a full collection whenever a quarter of its oldest generation is new since
the last one, and a full collection traverses every cached object: at 30,000 pods it stops the process
for about half a second, every several seconds under load. controlplane_bench at full size, one run
each: API p99 94-134 ms (max 280 ms) without automatic full collections against 171-306 ms (max 961 ms)
with them, and 157 against 167 CPU seconds in all.

What: the oldest generation is never collected automatically, but fully every `FULL_EVERY` seconds
from a daemon thread, which bounds what a long-lived cycle can hold. JSON objects are acyclic and are
freed by reference counting whenever they are replaced, collected or not. Young collections run every
`YOUNG_THRESHOLD` net allocations instead of CPython's 700: each young collection traverses every
container object still alive since the last one, and with 700 that was nearly every object a request
or an event handler keeps across an await (decoded bodies, watch events), traversed once young and
again in the middle generation before reference counting freed it; a system-wide perf profile of
controlplane_bench at full size had the collector (gc_collect_main, visit_decref, visit_reachable) at
about an eighth of the API server's CPU. With a larger threshold most of those die first; a young
collection then traverses more objects at once (tens of thousands: about a millisecond).
"""

from __future__ import annotations

import gc
import threading

FULL_EVERY = 300.0
_NEVER = 1_000_000_000  # collections of the middle generation before an automatic full one
YOUNG_THRESHOLD = 20_000  # net container allocations between young collections (CPython: 700)


def install(full_every: float = FULL_EVERY, young: int = YOUNG_THRESHOLD) -> None:
    """Turn off automatic full collections in this process, start the periodic one and make young
    collections rarer (idempotent)."""
    t0, t1, t2 = gc.get_threshold()
    if t2 == _NEVER:
        return
    gc.set_threshold(max(t0, young), t1, _NEVER)

    def collect() -> None:
        stop = threading.Event()
        while not stop.wait(full_every):
            gc.collect()

    threading.Thread(target=collect, name="gifee-gc", daemon=True).start()
