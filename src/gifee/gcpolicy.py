"""Garbage collection for the control plane's long-running processes (API server, scheduler,
controller manager, hollow nodes).

Why: each of them keeps every object of the cluster decoded in memory (watch caches, informers:
30,000 pods are about half a million container objects per process) and replaces an object on every
change of it. CPython runs a full collection whenever a quarter of its oldest generation is new since
the last one, and a full collection traverses every cached object: at 30,000 pods it stops the process
for about half a second, every several seconds under load. controlplane_bench at full size, one run
each: API p99 94-134 ms (max 280 ms) without automatic full collections against 171-306 ms (max 961 ms)
with them, and 157 against 167 CPU seconds in all.

What: young collections stay as they are (cyclic garbage, which is short-lived here, is found by
them); the oldest generation is never collected automatically, but fully every `FULL_EVERY` seconds
from a daemon thread, which bounds what a long-lived cycle can hold. JSON objects are acyclic and are
freed by reference counting whenever they are replaced, collected or not.
"""

from __future__ import annotations

import gc
import threading

FULL_EVERY = 300.0
_NEVER = 1_000_000_000  # collections of the middle generation before an automatic full one


def install(full_every: float = FULL_EVERY) -> None:
    """Turn off automatic full collections in this process and start the periodic one (idempotent)."""
    t0, t1, t2 = gc.get_threshold()
    if t2 == _NEVER:
        return
    gc.set_threshold(t0, t1, _NEVER)

    def collect() -> None:
        stop = threading.Event()
        while not stop.wait(full_every):
            gc.collect()

    threading.Thread(target=collect, name="gifee-gc", daemon=True).start()
