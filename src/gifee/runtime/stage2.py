"""Inside the pod: the first process builds the pod's root and becomes its command.

This runs in a process forked by the launcher after it entered fresh UTS, IPC,
network and PID namespaces (it is PID 1 of the pod). In order it:
  0. moves itself into the pod's cgroup (unless the launcher does, for a pod in a
     user namespace), so that everything the pod runs is counted and limited;
  1. enters its own mount namespace and makes every mount private, so nothing here
     propagates to the host;
  2. mounts an overlay of the image's read-only layers with the pod's upper dir;
  3. gives the root a fresh /proc, a minimal /dev (tmpfs with null, zero, full,
     random, urandom, tty; devpts; shm), a read-only /sys, and the volumes;
  4. writes /etc/hostname, /etc/hosts and /etc/resolv.conf;
  5. pivots into the root and detaches the host's tree;
  6. waits for the launcher's go (the network is attached by then);
  7. drops capabilities to the pod's set, sets no_new_privs, switches user,
     and execs the command (with a restart policy: gifee-shim's supervise mode,
     which runs the command and runs it again, see shim.c).
Any failure is written to the error pipe, which the launcher reports; exec closes
that pipe (close-on-exec), which is how the launcher learns the command started.
Nothing here returns: the process ends in exec or os._exit.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from gifee.runtime import linux
from gifee.runtime.cgroups import join as join_cgroup
from gifee.runtime.rootfs import make_dirs_in_root, resolve_in_root
from gifee.runtime.spec import PodSpec

DEVICES = (  # name, major, minor
    ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0),
)


def _mount_overlay(rootfs: Path, layers: Sequence[Path], upper: Path, work: Path) -> None:
    lower = ":".join(str(p) for p in reversed(layers))  # overlayfs lists the top layer first
    if len(layers) == 0:
        linux.mount("tmpfs", str(rootfs), "tmpfs", 0, "mode=755")
        return
    linux.mount("overlay", str(rootfs), "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}")


def _mount_dev(rootfs: Path, in_user_namespace: bool) -> None:
    dev = make_dirs_in_root(rootfs, "/dev")
    linux.mount("tmpfs", str(dev), "tmpfs", linux.MS_NOSUID | linux.MS_STRICTATIME, "mode=755,size=65536k")
    for name, major, minor in DEVICES:
        path = dev / name
        if in_user_namespace:  # no mknod there: bind the host's device nodes instead
            path.touch()
            linux.mount(f"/dev/{name}", str(path), None, linux.MS_BIND)
            continue
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(path, 0o666)  # mknod's mode is filtered by the umask
    (dev / "pts").mkdir()
    linux.mount("devpts", str(dev / "pts"), "devpts", linux.MS_NOSUID | linux.MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=0620")
    os.symlink("pts/ptmx", dev / "ptmx")
    (dev / "shm").mkdir()
    linux.mount("shm", str(dev / "shm"), "tmpfs", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC,
                "mode=1777,size=65536k")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, dev / name)


def _mount_proc_sys(rootfs: Path, own_network: bool) -> None:
    proc = make_dirs_in_root(rootfs, "/proc")
    linux.mount("proc", str(proc), "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    sys_dir = make_dirs_in_root(rootfs, "/sys")
    flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC | linux.MS_RDONLY
    if own_network:
        linux.mount("sysfs", str(sys_dir), "sysfs", flags)
    else:  # sysfs shows the network namespace of its mounter: bind the host's, read-only
        linux.mount("/sys", str(sys_dir), None, linux.MS_BIND | linux.MS_REC)
        linux.mount("/sys", str(sys_dir), None, linux.MS_BIND | linux.MS_REMOUNT | flags)


def _mount_volumes(rootfs: Path, spec: PodSpec) -> None:
    for volume in spec.volumes:
        source = Path(volume.host_path)
        if not source.exists():
            raise FileNotFoundError(2, f"--volume {volume.host_path}: no such file or directory")
        if source.is_dir():
            target = make_dirs_in_root(rootfs, volume.pod_path)
        else:
            parent = make_dirs_in_root(rootfs, os.path.dirname(volume.pod_path))
            target = resolve_in_root(rootfs, volume.pod_path)
            if target.parent != parent:
                raise OSError(22, f"--volume target {volume.pod_path} resolves outside its directory")
            if not target.exists():
                target.touch()
        linux.mount(str(source), str(target), None, linux.MS_BIND | linux.MS_REC)
        if volume.read_only:
            linux.mount(str(source), str(target), None,
                        linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV)


def _write_etc(rootfs: Path, spec: PodSpec, pod_ip: str | None) -> None:
    etc = make_dirs_in_root(rootfs, "/etc")
    hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    if pod_ip:
        hosts += f"{pod_ip}\t{spec.hostname}\n"
    elif spec.net == "host":
        hosts = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else hosts
    else:
        hosts += f"127.0.1.1\t{spec.hostname}\n"
    for address, names in spec.hosts_entries:
        hosts += f"{address}\t{names}\n"
    files = {"hostname": spec.hostname + "\n", "hosts": hosts}
    if spec.dns is not None:
        files["resolv.conf"] = spec.dns.resolv_conf()
    elif Path("/etc/resolv.conf").exists():
        files["resolv.conf"] = Path("/etc/resolv.conf").read_text()
    mounted = {v.pod_path for v in spec.volumes}
    for name, content in files.items():
        if f"/etc/{name}" in mounted or "/etc" in mounted:
            continue  # a volume provides it (as Kubernetes mounts its own resolv.conf and hosts)
        target = resolve_in_root(rootfs, f"/etc/{name}")
        if target.parent != etc:
            raise OSError(22, f"/etc/{name} in the image resolves outside /etc")
        if target.is_symlink() or target.exists():
            target.unlink()
        target.write_text(content)


def _pivot(rootfs: Path) -> None:
    os.chdir(rootfs)
    linux.pivot_root(".", ".")  # the old root is stacked under the new one ...
    linux.umount(".", linux.MNT_DETACH)  # ... and detached, leaving no path to the host
    os.chdir("/")


def _passwd_entry(key: str, by_uid: bool) -> list[str] | None:
    try:
        with open("/etc/passwd") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 4 and fields[2 if by_uid else 0] == key:
                    return fields
    except OSError:
        pass
    return None


def _group_id(group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        with open("/etc/group") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 3 and fields[0] == group:
                    return int(fields[2])
    except OSError:
        pass
    raise KeyError(f"group {group!r} not found in the image's /etc/group")


def _user_ids(user: str) -> tuple[int, int]:
    """uid and gid for the image's User ("uid", "uid:gid", "name" or "name:group"),
    looked up in the pod's own /etc/passwd; a bare uid unknown there gets gid 0."""
    name, _, group = user.partition(":")
    name = name or "0"
    entry = _passwd_entry(name, by_uid=name.isdigit())
    if name.isdigit():
        uid = int(name)
    elif entry is None:
        raise KeyError(f"user {name!r} not found in the image's /etc/passwd")
    else:
        uid = int(entry[2])
    if group:
        return uid, _group_id(group)
    return uid, int(entry[3]) if entry else 0


def _become_user(spec: PodSpec) -> None:
    uid, gid = _user_ids(spec.user)
    linux.limit_capabilities(spec.capabilities)
    if uid != 0 or gid != 0:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)  # a non-root user keeps no capabilities, as after exec of any program
    linux.set_no_new_privs()


def run(
    spec: PodSpec,
    *,
    rootfs: Path,
    layers: Sequence[Path],
    upper: Path,
    work: Path,
    go_fd: int,
    error_fd: int,
    stdio: tuple[int, int, int],
    cgroup_files: Sequence[str] = (),
    supervisor: Path | None = None,
    restart_fd: int = -1,
) -> None:
    try:
        # The pod lives no longer than its shim (our parent, outside the PID namespace):
        # a pod nobody watches would show as exited while it ran on.
        linux.set_parent_death_signal(9)
        join_cgroup(cgroup_files)
        linux.unshare(linux.CLONE_NEWNS)
        if spec.net != "host":
            linux.set_link_up("lo")
        linux.mount("", "/", None, linux.MS_REC | linux.MS_PRIVATE)
        _mount_overlay(rootfs, layers, upper, work)
        _mount_proc_sys(rootfs, own_network=spec.net != "host")
        _mount_dev(rootfs, spec.private_users)
        _mount_volumes(rootfs, spec)
        make_dirs_in_root(rootfs, spec.cwd)
        # The launcher sends the pod's address (or nothing) once the network is up.
        go = os.read(go_fd, 256)
        if not go:
            raise RuntimeError("the launcher went away before the pod started")
        pod_ip = go.decode().strip() or None
        _write_etc(rootfs, spec, None if pod_ip == "-" else pod_ip)
        # A restart policy makes gifee-shim the pod's PID 1 (it runs the command again): opened
        # while the host's tree is still reachable, exec'd from the descriptor after the pivot.
        supervisor_fd = os.open(supervisor, os.O_RDONLY | os.O_CLOEXEC) if supervisor is not None else -1
        _pivot(rootfs)
        if spec.net != "host" and not spec.net.startswith("pod:"):  # a joined pod's UTS is shared
            linux.sethostname(spec.hostname)
        if spec.readonly_root:
            linux.mount("/", "/", None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY)
        os.chdir(spec.cwd)
        _become_user(spec)
        for target, fd in enumerate(stdio):
            if fd != target:
                os.dup2(fd, target)
        last = 2
        for fd in sorted({error_fd, supervisor_fd, restart_fd} - {-1}):
            os.closerange(last + 1, fd)
            last = fd
        os.closerange(last + 1, 65536)
        env = dict(spec.env)
        if supervisor_fd >= 0:
            os.set_inheritable(restart_fd, True)
            os.execve(supervisor_fd, ["gifee-shim", "supervise", spec.restart, str(spec.restart_max),
                                      str(restart_fd), "--", *spec.argv], env)
        os.execvpe(spec.argv[0], list(spec.argv), env)
    except BaseException as e:  # everything ends here: report it, never return into the launcher's code
        if isinstance(e, OSError | KeyError | RuntimeError):
            message = str(e)
        else:
            import traceback

            message = traceback.format_exc()
        try:
            os.write(error_fd, message.encode(errors="replace")[:4000])
        finally:
            os._exit(127 if isinstance(e, FileNotFoundError | PermissionError) else 126)
