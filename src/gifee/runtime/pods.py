"""Pods on disk: one directory per pod, its state told by where it lives and who locks it.

There is no daemon. A pod's directory moves between state directories by
rename(2), which is atomic, and the pod's lock is an flock on the directory itself,
held first by the launcher and then by the pod's shim for as long as the pod runs.
A crashed launcher or shim drops its lock with its last descriptor, so any later
command sees the truth from the filesystem alone:

    prepare/        locked: being set up          unlocked: abandoned (launcher died)
    run/            locked: running                unlocked: exited
    exited-garbage/ exited, marked for collection by `gifee gc`
    garbage/        being removed

`TRANSITIONS` and `pod_state` are the rules; the `Pods` class is the shell that
applies them to directories. A pod directory holds `pod.json` (its PodSpec),
`pid` (its first process, in the host's PID namespace), `exit` (written by the
shim), `log`, `net.json`, the overlay's `upper/` and `work/`, and `rootfs/`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

STATE_DIRS = ("prepare", "run", "exited-garbage", "garbage")

# (from directory, to directory): who makes the move.
TRANSITIONS: dict[tuple[str, str], str] = {
    ("prepare", "run"): "the launcher, once the pod's command has started",
    ("prepare", "garbage"): "the launcher on a failed start, or gc for an abandoned prepare",
    ("run", "exited-garbage"): "gc, for a pod whose shim has released the lock",
    ("run", "garbage"): "rm, for an exited pod",
    ("exited-garbage", "garbage"): "gc after the grace period, or rm",
}


def pod_state(directory: str, locked: bool) -> str:
    """What a pod is, from its state directory and whether its lock is held."""
    if directory == "prepare":
        return "preparing" if locked else "abandoned"
    if directory == "run":
        return "running" if locked else "exited"
    if directory == "exited-garbage":
        return "exited-garbage"
    return "garbage"


class PodError(Exception):
    pass


class PodNotFound(PodError):
    pass


def new_uuid() -> str:
    """A random (version 4) UUID, as uuid.uuid4() makes it; the uuid module costs more to
    import (it loads platform) than all of this."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Readers see the old content or the new, never a part (rename). `durable` also
    makes the content survive a crash of the machine (fsync before the rename), which
    costs a disk flush: a record nothing needs after a reboot can go without."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.rename(tmp, path)


class Pod(NamedTuple):
    """A pod directory: where it is (its state directory) tells half its state. A value
    (a move makes a new one); a named tuple, cheaper to define than a dataclass."""

    uuid: str
    path: Path
    directory: str

    @property
    def short_id(self) -> str:
        return self.uuid[:8]

    def is_locked(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return True
            raise
        finally:
            os.close(fd)
        return False

    def wait_unlocked(self, timeout: float | None = None) -> bool:
        """Block until the lock is released (the pod has exited); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not self.is_locked():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    @property
    def state(self) -> str:
        return pod_state(self.directory, self.is_locked())

    def read_json(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.path / name).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def write_json(self, name: str, data: dict[str, Any], durable: bool = True) -> None:
        write_atomic(self.path / name, json.dumps(data, indent=1, sort_keys=True).encode(), durable)

    @property
    def pid(self) -> int | None:
        try:
            return int((self.path / "pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def mtime(self, name: str) -> float | None:
        try:
            return (self.path / name).stat().st_mtime
        except FileNotFoundError:
            return None


class Pods:
    """The pod directories under DIR/pods."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure(self) -> None:
        for name in STATE_DIRS:
            (self.root / name).mkdir(parents=True, exist_ok=True)

    def create(self) -> tuple[Pod, int]:
        """A new pod in prepare/, and the descriptor that holds its lock (inheritable,
        so the shim can keep holding it after the launcher is gone)."""
        self.ensure()
        pod_id = new_uuid()
        path = self.root / "prepare" / pod_id
        path.mkdir(mode=0o700)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return Pod(pod_id, path, "prepare"), fd

    def move(self, pod: Pod, to: str) -> Pod:
        if (pod.directory, to) not in TRANSITIONS:
            raise PodError(f"pod {pod.uuid}: no move from {pod.directory} to {to}")
        target = self.root / to / pod.uuid
        os.rename(pod.path, target)
        return Pod(pod.uuid, target, to)

    def all(self) -> Iterator[Pod]:
        for directory in STATE_DIRS:
            base = self.root / directory
            if not base.is_dir():
                continue
            for child in sorted(base.iterdir()):
                if child.is_dir() and not child.name.startswith("."):
                    yield Pod(child.name, child, directory)

    def find(self, prefix: str) -> Pod:
        """A pod by its UUID or a unique prefix of it."""
        if not prefix:
            raise PodNotFound("no pod UUID given")
        matches = {pod.uuid: pod for pod in self.all() if pod.uuid.startswith(prefix)}
        if not matches:
            raise PodNotFound(f"no pod matches {prefix!r}")
        if len(matches) > 1:
            raise PodNotFound(f"{prefix!r} matches {len(matches)} pods; give more of the UUID")
        uuid_ = next(iter(matches))
        # A pod can move between listing and use; look it up again where it is now.
        for directory in STATE_DIRS:
            path = self.root / directory / uuid_
            if path.is_dir():
                return Pod(uuid_, path, directory)
        raise PodNotFound(f"pod {uuid_} disappeared")

    def remove_tree(self, pod: Pod) -> None:
        import shutil

        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(pod.path)
