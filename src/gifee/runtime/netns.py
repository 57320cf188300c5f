"""Pinning network namespaces to files, so a pod's network outlives its processes.

Job: `pin_netns` bind-mounts /proc/<pid>/ns/net onto a file (as `ip netns add` does under
/run/netns), `unpin_netns` unmounts and deletes it, `is_netns` tells whether a path is a
live (mounted) network namespace. Rules: system calls through libc (no shelling out);
`unpin_netns` is idempotent; failures raise NetnsError (a NetworkError) with the path and the OS reason.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

MS_BIND = 0x1000
MNT_DETACH = 0x2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class NetworkError(Exception):
    """A pod network operation failed; the message says what and why."""


class NetnsError(NetworkError):
    """A namespace could not be pinned or unpinned."""


def is_netns(path: str | os.PathLike[str]) -> bool:
    """True if `path` is a network namespace file (nsfs), e.g. a pinned or /proc namespace.

    All nsfs files share one device, so comparing st_dev with our own namespace's is enough.
    """
    try:
        st = os.stat(path)
        own = os.stat("/proc/self/ns/net")
    except OSError:
        return False
    return st.st_dev == own.st_dev and not Path(path).is_dir()


def pin_netns(pid: int, path: str | os.PathLike[str]) -> None:
    """Bind-mount the network namespace of process `pid` onto `path` (created if missing)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise NetnsError(f"pin_netns: invalid pid {pid!r}")
    target = Path(path)
    source = f"/proc/{pid}/ns/net"
    if not os.path.exists(source):
        raise NetnsError(f"pin_netns: no process {pid} (cannot open {source})")
    if is_netns(target):
        raise NetnsError(f"pin_netns: {target} is already a pinned namespace")
    created = False
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
            os.close(fd)
            created = True
    except OSError as e:
        raise NetnsError(f"pin_netns: cannot create {target}: {e.strerror}") from e
    if _libc.mount(source.encode(), os.fsencode(target), None, MS_BIND, None) != 0:
        err = ctypes.get_errno()
        if created:
            target.unlink(missing_ok=True)
        raise NetnsError(f"pin_netns: bind mount of {source} onto {target} failed: {os.strerror(err)}")


def unpin_netns(path: str | os.PathLike[str]) -> None:
    """Unmount a pinned namespace file and delete it; nothing to do if it is already gone."""
    target = Path(path)
    # A file may have been pinned more than once; unmount until it is a plain file again.
    for _ in range(16):
        if _libc.umount2(os.fsencode(target), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOENT):
                break  # not a mount point (any more), or no such file
            raise NetnsError(f"unpin_netns: cannot unmount {target}: {os.strerror(err)}")
    try:
        target.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise NetnsError(f"unpin_netns: cannot delete {target}: {e.strerror}") from e
