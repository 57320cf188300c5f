"""Resource limits for pods through cgroups, v1 (one hierarchy per controller) or v2.

`limit_files` is the rule table: which file of which controller gets which value
for a pod's Limits, with no I/O. `PodCgroup` is the thin shell that makes the
directories, writes those files, moves a process in, reads the OOM-kill counter
and removes the directories when the pod is gone.

Every pod gets a cgroup under `gifee/<pod id>` in the memory and pids
controllers (and cpu when it has a CPU limit), even without limits: it is how the runtime counts a pod's processes,
kills all of them at once, and tells an OOM kill from another SIGKILL.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from gifee.runtime.spec import Limits

CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpu")  # memory first: it is the one every pod has (see create)
CFS_PERIOD_US = 100_000


class CgroupError(OSError):
    pass


def limit_files(limits: Limits, version: int) -> list[tuple[str, str, str]]:
    """(controller, file, value) for each limit; the controller is "" under v2."""
    files: list[tuple[str, str, str]] = []
    if version == 1:
        if limits.cpu_millis is not None:
            files.append(("cpu", "cpu.cfs_period_us", str(CFS_PERIOD_US)))
            files.append(("cpu", "cpu.cfs_quota_us", str(limits.cpu_millis * CFS_PERIOD_US // 1000)))
        if limits.cpu_request_millis is not None:
            files.append(("cpu", "cpu.shares", str(cpu_shares(limits.cpu_request_millis))))
        if limits.memory_bytes is not None:
            files.append(("memory", "memory.limit_in_bytes", str(limits.memory_bytes)))
            # Without this the pod would swap instead of being held to its limit.
            files.append(("memory", "memory.swappiness", "0"))
        if limits.pids is not None:
            files.append(("pids", "pids.max", str(limits.pids)))
    else:
        if limits.cpu_millis is not None:
            files.append(("", "cpu.max", f"{limits.cpu_millis * CFS_PERIOD_US // 1000} {CFS_PERIOD_US}"))
        if limits.cpu_request_millis is not None:
            files.append(("", "cpu.weight", str(cpu_weight(cpu_shares(limits.cpu_request_millis)))))
        if limits.memory_bytes is not None:
            files.append(("", "memory.max", str(limits.memory_bytes)))
            files.append(("", "memory.swap.max", "0"))
        if limits.pids is not None:
            files.append(("", "pids.max", str(limits.pids)))
    return files


def cpu_shares(millis: int) -> int:
    """cpu.shares for a CPU request, as the kubelet computes it (1024 per core, at least 2)."""
    return max(2, millis * 1024 // 1000)


def cpu_weight(shares: int) -> int:
    """cgroup v2's cpu.weight (1..10000) for v1 shares (2..262144), the usual linear map."""
    return 1 + ((shares - 2) * 9999) // 262142


def parse_oom_kills(text: str) -> int:
    """The `oom_kill` counter of memory.oom_control (v1) or memory.events (v2)."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return 0


def cgroup_version() -> int:
    return 2 if (CGROUP_ROOT / "cgroup.controllers").exists() else 1


def _v1_mounts() -> dict[str, Path]:
    """Controller name -> mount point of its v1 hierarchy, from mountinfo."""
    mounts: dict[str, Path] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, options = fields[sep + 1], fields[sep + 3]
            if fstype != "cgroup":
                continue
            for option in options.split(","):
                if option in CONTROLLERS:
                    mounts.setdefault(option, Path(fields[4]))
    return mounts


class PodCgroup:
    """The cgroup directories of one pod."""

    def __init__(self, pod_id: str, version: int | None = None) -> None:
        self.pod_id = pod_id
        self.version = version or cgroup_version()
        if self.version == 1:
            mounts = _v1_mounts()
            missing = [c for c in CONTROLLERS if c not in mounts]
            if missing:
                raise CgroupError(errno.ENOENT, f"cgroup v1 controllers not mounted: {', '.join(missing)}")
            self.dirs = {c: mounts[c] / "gifee" / pod_id for c in CONTROLLERS}
        else:
            self.dirs = {"": CGROUP_ROOT / "gifee" / pod_id}

    def create(self, limits: Limits) -> None:
        if self.version == 2:
            self._enable_v2_controllers()
        for controller, path in self.dirs.items():
            # Under v1 each hierarchy costs a task migration (milliseconds, on the start
            # path of every pod): the cpu one only when there is a CPU limit to enforce.
            if controller == "cpu" and limits.cpu_millis is None and limits.cpu_request_millis is None:
                continue
            path.mkdir(parents=True, exist_ok=True)
        for controller, name, value in limit_files(limits, self.version):
            target = self.dirs[controller] / name
            if name == "memory.swap.max" and not target.exists():
                continue  # no swap accounting on this kernel: nothing to turn off
            try:
                target.write_text(value)
            except OSError as e:
                raise CgroupError(e.errno, f"cannot set {target} to {value}: {e.strerror}") from None

    def _enable_v2_controllers(self) -> None:
        parent = CGROUP_ROOT / "gifee"
        parent.mkdir(exist_ok=True)
        wanted = " ".join(f"+{c}" for c in CONTROLLERS)
        for path in (CGROUP_ROOT, parent):
            with contextlib.suppress(OSError):
                (path / "cgroup.subtree_control").write_text(wanted)

    def add_process(self, pid: int) -> None:
        for path in self.dirs.values():
            if path.is_dir():
                (path / "cgroup.procs").write_text(str(pid))

    def join_files(self) -> list[str]:
        """The files to which a single-threaded process writes "0" to move itself into this
        cgroup (see join). Under v1 that is each hierarchy's `tasks`: moving the calling
        thread alone skips the system-wide lock a write of a PID to cgroup.procs takes,
        whose RCU grace period costs 5-15 ms (more on a loaded machine) on every pod's
        start. A process whose only thread has moved has moved whole."""
        name = "tasks" if self.version == 1 else "cgroup.procs"
        return [str(path / name) for path in self.dirs.values() if path.is_dir()]

    def pids(self) -> list[int]:
        path = next(iter(self.dirs.values())) / "cgroup.procs"
        try:
            return [int(p) for p in path.read_text().split()]
        except FileNotFoundError:
            return []

    def oom_kill_file(self) -> Path:
        if self.version == 1:
            return self.dirs["memory"] / "memory.oom_control"
        return self.dirs[""] / "memory.events"

    def oom_kills(self) -> int:
        try:
            return parse_oom_kills(self.oom_kill_file().read_text())
        except FileNotFoundError:
            return 0

    def memory_usage(self) -> int:
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        directory = self.dirs["memory" if self.version == 1 else ""]
        try:
            return int((directory / name).read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def signal(self, pid: int, signum: int) -> bool:
        """Send `signum` to `pid` only if that process is in this pod's cgroup. A PID is a
        name that the kernel hands out again once its process is gone (quickly, on a busy
        machine), so the process is pinned with a pidfd first and then checked: the signal
        can only reach the pod's own process, never an unrelated one that got the number."""
        try:
            fd = os.pidfd_open(pid)
        except (ProcessLookupError, OSError):
            return False
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                member = f"/gifee/{self.pod_id}" in f.read()
            if member:  # the pidfd still names the process we checked (or a dead one)
                signal.pidfd_send_signal(fd, signum)
            return member
        except (ProcessLookupError, FileNotFoundError):
            return False
        finally:
            os.close(fd)

    def kill_all(self) -> None:
        for pid in self.pids():
            self.signal(pid, signal.SIGKILL)

    def exists(self) -> bool:
        return any(path.exists() for path in self.dirs.values())

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left and remove the directories (a cgroup can only be
        removed once its last process has been reaped)."""
        deadline = time.monotonic() + timeout
        for path in self.dirs.values():
            while path.exists():
                try:
                    path.rmdir()
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise CgroupError(e.errno, f"cannot remove {path}: {e.strerror}") from None
                    self.kill_all()
                    time.sleep(0.02)


def all_pod_cgroups() -> Iterator[str]:
    """Pod ids that have a cgroup, whatever state their directories are in."""
    version = cgroup_version()
    if version == 1:
        bases = [m / "gifee" for c, m in _v1_mounts().items()]
    else:
        bases = [CGROUP_ROOT / "gifee"]
    seen: set[str] = set()
    for base in bases:
        if base.is_dir():
            for child in base.iterdir():
                if child.is_dir() and child.name not in seen:
                    seen.add(child.name)
                    yield child.name


def join(files: Sequence[str]) -> None:
    """Move the calling process (single-threaded: just forked) into a pod's cgroup, given
    PodCgroup.join_files. Called in the pod's first process before anything of the pod
    runs, so that every process of the pod starts inside it."""
    for name in files:
        fd = os.open(name, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
