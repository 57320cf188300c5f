"""The Linux system calls the runtime needs and Python 3.11's `os` lacks.

unshare, setns, mount, umount2, pivot_root, prctl and capset, called through libc
with ctypes. Every wrapper raises OSError with errno and a message naming the call
and its arguments, so a failure in a pod's set-up reads as what went wrong.
Nothing here decides policy; the callers (launch.py, enter) do.
"""

from __future__ import annotations

import ctypes
import os

# glibc by its soname: find_library would spawn ldconfig on every start.
_libc = ctypes.CDLL("libc.so.6", use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_STRICTATIME = 0x1000000

MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38

# pivot_root and capset have no libc wrapper; their numbers differ by architecture.
_SYSCALLS = {
    "x86_64": {"pivot_root": 155, "capset": 126, "open_tree": 428, "move_mount": 429, "mount_setattr": 442},
    "aarch64": {"pivot_root": 41, "capset": 91, "open_tree": 428, "move_mount": 429, "mount_setattr": 442},
}


def _check(result: int, what: str) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), f"setns({nstype:#x})")


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source} on {target} ({fstype or 'bind'}, {data or ''})",
    )


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount {target}")


def _syscall_number(name: str) -> int:
    machine = os.uname().machine
    try:
        return _SYSCALLS[machine][name]
    except KeyError:
        raise OSError(0, f"{name}: unsupported architecture {machine}") from None


def pivot_root(new_root: str, put_old: str) -> None:
    nr = _syscall_number("pivot_root")
    _check(_libc.syscall(ctypes.c_long(nr), new_root.encode(), put_old.encode()), f"pivot_root({new_root})")


def prctl(option: int, arg2: int = 0) -> None:
    _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(0),
                       ctypes.c_ulong(0), ctypes.c_ulong(0)), f"prctl({option})")


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_parent_death_signal(signum: int) -> None:
    prctl(PR_SET_PDEATHSIG, signum)


def last_capability() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def limit_capabilities(keep: frozenset[int]) -> None:
    """Drop every capability not in `keep` from the bounding set, then from the
    effective, permitted and inheritable sets: after exec, no process of the pod can
    regain them (the bounding set caps what setuid files could grant)."""
    for cap in range(last_capability() + 1):
        if cap not in keep:
            prctl(PR_CAPBSET_DROP, cap)
    mask = 0
    for cap in keep:
        mask |= 1 << cap
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        word = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = word
        data[i].permitted = word
        data[i].inheritable = 0
    nr = _syscall_number("capset")
    _check(_libc.syscall(ctypes.c_long(nr), ctypes.byref(header), ctypes.byref(data)), "capset")


SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
AF_INET = 2
SOCK_DGRAM = 2
SOCK_CLOEXEC = 0o2000000


class _IfReq(ctypes.Structure):  # struct ifreq, as SIOCGIFFLAGS/SIOCSIFFLAGS use it
    _fields_ = [("name", ctypes.c_char * 16), ("flags", ctypes.c_short), ("pad", ctypes.c_char * 22)]


def set_link_up(name: str) -> None:
    """Bring an interface of the current network namespace up (for `lo`: no CNI
    plugin process needed for a pod that has no other network). Through libc, not the
    socket module: this runs in the pod's first process, which must not import."""
    fd = _check(_libc.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), "socket(AF_INET)")
    try:
        request = _IfReq(name.encode(), 0)
        _check(_libc.ioctl(fd, ctypes.c_ulong(SIOCGIFFLAGS), ctypes.byref(request)), f"SIOCGIFFLAGS {name}")
        request.flags |= IFF_UP
        _check(_libc.ioctl(fd, ctypes.c_ulong(SIOCSIFFLAGS), ctypes.byref(request)), f"SIOCSIFFLAGS {name}")
    finally:
        os.close(fd)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), f"sethostname({name})")


AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x00100000


def idmapped_bind(source: str, target: str, userns_fd: int) -> None:
    """Bind `source` on `target` with its owners seen through the user namespace's
    mapping (an idmapped mount): files of host root appear as the namespace's root,
    so a pod in a user namespace owns its image's files without a chown of the layers."""
    import struct

    tree = _check(_libc.syscall(ctypes.c_long(_syscall_number("open_tree")), ctypes.c_int(AT_FDCWD),
                                source.encode(), ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)),
                  f"open_tree({source})")
    try:
        attr = ctypes.create_string_buffer(struct.pack("QQQQ", MOUNT_ATTR_IDMAP, 0, 0, userns_fd), 32)
        _check(_libc.syscall(ctypes.c_long(_syscall_number("mount_setattr")), ctypes.c_int(tree), b"",
                             ctypes.c_uint(AT_EMPTY_PATH), attr, ctypes.c_size_t(32)),
               f"mount_setattr(idmap {source})")
        _check(_libc.syscall(ctypes.c_long(_syscall_number("move_mount")), ctypes.c_int(tree), b"",
                             ctypes.c_int(AT_FDCWD), target.encode(), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)),
               f"move_mount({source} -> {target})")
    finally:
        os.close(tree)


def new_user_namespace(uid_base: int, count: int) -> int:
    """A user namespace mapping 0..count-1 inside to uid_base.. on the host (uids and
    gids alike); returns a descriptor of it. A short-lived child creates it, the
    parent (root on the host) writes its maps, and the descriptor keeps it alive."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(ready_r)
            os.close(done_w)
            unshare(CLONE_NEWUSER)
            os.write(ready_w, b"1")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError(1, "unshare(CLONE_NEWUSER) failed in the helper process")
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{child}/{name}", "w") as f:
                f.write(f"0 {uid_base} {count}\n")
        return os.open(f"/proc/{child}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.write(done_w, b"1")
        os.close(done_w)
        os.close(ready_r)
        os.waitpid(child, 0)


def become_namespace_root() -> None:
    """After setns into a user namespace: be its uid and gid 0 (the host's base uid)."""
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
