"""Host uid ranges for pods in user namespaces (`gifee run --private-users`).

Each such pod gets its own range of 65536 host uids and gids, so root in one pod is
an unprivileged, different user on the host and in every other pod. Ranges are
slots above 2^20 (clear of the ranges /etc/subuid usually hands to users); a slot
is taken by creating DIR/userns/<slot> exclusively (O_EXCL: no two pods get one
slot, and no lock is needed) holding the pod's UUID, and freed when the pod is
removed.
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path

RANGE_SIZE = 65536
FIRST_BASE = 1 << 20
SLOTS = 4000  # keeps the last range below 2^32 - 2^16


class NoFreeRange(Exception):
    pass


def base_of(slot: int) -> int:
    return FIRST_BASE + slot * RANGE_SIZE


def allocate(directory: Path, pod_uuid: str) -> int:
    """A free slot's uid base, now held for the pod."""
    directory.mkdir(parents=True, exist_ok=True)
    start = random.randrange(SLOTS)  # spread pods over the space: a stale slot is then rarely in the way
    for i in range(SLOTS):
        slot = (start + i) % SLOTS
        try:
            fd = os.open(directory / str(slot), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as f:
            f.write(pod_uuid)
        return base_of(slot)
    raise NoFreeRange(f"all {SLOTS} user-namespace uid ranges under {directory} are in use")


def release(directory: Path, base: int, pod_uuid: str) -> None:
    """Free the pod's slot (only if it is still the pod's: a rerun clean-up is harmless)."""
    slot = (base - FIRST_BASE) // RANGE_SIZE
    path = directory / str(slot)
    with contextlib.suppress(FileNotFoundError):
        if path.read_text() == pod_uuid:
            path.unlink()
