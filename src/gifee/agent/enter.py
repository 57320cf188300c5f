"""Running a command in a running container for exec, exec probes and preStop hooks,
as `gifee enter` does it (the container's namespaces, root, working directory,
cgroup, capability set, no_new_privs and user), but with the caller's pipes or
terminal as stdio and without a thread per command.

    agent --fork--> relay: setsid (and the terminal), into the pod's cgroup, setns into
                    IPC, UTS, net, PID and mount namespaces, chroot into the root
                    --fork--> command (inside the PID namespace): the container's
                    capabilities, no_new_privs, its uid/gid; exec
    the relay waits and exits with the command's status; the command dies with it.

`Entered` has the part of asyncio.subprocess.Process the agent uses (stdin, stdout,
stderr streams, wait, kill); its exit is noticed through a pidfd in the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence

from gifee.runtime import linux
from gifee.runtime.cgroups import PodCgroup
from gifee.runtime.spec import PodSpec

NAMESPACES = ("ipc", "uts", "net", "pid", "mnt")  # the mount namespace last: /proc/<pid> goes with it


def _ids(user: str) -> tuple[int, int]:
    """Numeric uid and gid of the container's user (names count as root here)."""
    uid, _, gid = user.partition(":")
    u = int(uid) if uid.isdigit() else 0
    return u, int(gid) if gid.isdigit() else (0 if not uid.isdigit() else u)


def fork_entered(uuid: str, first_pid: int, spec: PodSpec, argv: Sequence[str], env: dict[str, str],
                 stdio: tuple[int, int, int], *, tty: bool) -> int:
    """Fork the relay (see the module's doc); returns its pid. The stdio descriptors are
    the caller's to close afterwards."""
    ns_fds: list[int] = []
    try:
        for ns in NAMESPACES:
            path = f"/proc/{first_pid}/ns/{ns}"
            if os.readlink(path) != os.readlink(f"/proc/self/ns/{ns}"):
                ns_fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        root_fd = os.open(f"/proc/{first_pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        ns_fds.append(root_fd)
        cwd = os.readlink(f"/proc/{first_pid}/cwd")
    except BaseException:
        for fd in ns_fds:
            os.close(fd)
        raise
    cgroup = PodCgroup(uuid)
    uid, gid = _ids(spec.user)
    pid = os.fork()
    if pid == 0:  # the relay
        try:
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)
            os.setsid()
            if tty:
                import fcntl
                import termios

                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            with contextlib.suppress(OSError):
                cgroup.add_process(os.getpid())
            for fd in ns_fds[:-1]:
                linux.setns(fd)
            os.fchdir(root_fd)
            os.chroot(".")
            try:
                os.chdir(cwd)
            except OSError:
                os.chdir("/")
            command = os.fork()  # only a child enters the PID namespace
            if command != 0:
                os.closerange(3, 65536)
                while True:
                    try:
                        _, status = os.waitpid(command, 0)
                        break
                    except InterruptedError:
                        continue
                code = os.waitstatus_to_exitcode(status)
                os._exit(128 - code if code < 0 else code)
            linux.set_parent_death_signal(signal.SIGKILL)
            linux.limit_capabilities(spec.capabilities)
            if uid != 0 or gid != 0:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
            linux.set_no_new_privs()
            os.closerange(3, 65536)
            os.execvpe(argv[0], list(argv), env)
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.write(2, f"exec {argv[0] if argv else ''}: {e}\n".encode())
            os._exit(127 if isinstance(e, FileNotFoundError) else 126)
    for fd in ns_fds:
        os.close(fd)
    return pid


class Entered:
    """A relay process as asyncio sees it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdin: asyncio.StreamWriter | None = None
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None
        self._done = asyncio.get_running_loop().create_future()
        self._pidfd = os.pidfd_open(pid)
        asyncio.get_running_loop().add_reader(self._pidfd, self._exited)

    def _exited(self) -> None:
        try:
            done, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            done, status = self.pid, 0
        if done == 0:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self.returncode = os.waitstatus_to_exitcode(status)
        if not self._done.done():
            self._done.set_result(self.returncode)

    async def wait(self) -> int:
        code: int = await asyncio.shield(self._done)
        return code

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


async def _reader(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0))
    return reader


async def _writer(fd: int) -> asyncio.StreamWriter:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, os.fdopen(fd, "wb", 0))
    return asyncio.StreamWriter(transport, protocol, None, loop)


async def spawn(uuid: str, first_pid: int, spec: PodSpec, argv: Sequence[str], *, stdin: bool,
                capture: bool) -> Entered:
    """The command with pipes for stdin (if asked) and stdout/stderr (if capture), else /dev/null."""
    env = dict(spec.env)
    ours: list[int] = []
    theirs: list[int] = []
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    theirs.append(null)
    try:
        if stdin:
            r, w = os.pipe()
            ours.append(w)
            theirs.append(r)
            fd0 = r
        else:
            fd0 = null
        outs = []
        for _ in range(2):
            if capture:
                r, w = os.pipe()
                ours.append(r)
                theirs.append(w)
                outs.append(w)
            else:
                outs.append(null)
        pid = fork_entered(uuid, first_pid, spec, argv, env, (fd0, outs[0], outs[1]), tty=False)
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    proc = Entered(pid)
    i = 0
    if stdin:
        proc.stdin = await _writer(ours[i])
        i += 1
    if capture:
        proc.stdout = await _reader(ours[i])
        proc.stderr = await _reader(ours[i + 1])
    return proc


def container_pty(pid: int) -> tuple[int, int]:
    """A terminal from the container's own devpts (so that its name resolves inside the
    container), or from the host's when the container has none."""
    import fcntl
    import struct

    tiocsptlck, tiocgptn = 0x40045431, 0x80045430
    try:
        master = os.open(f"/proc/{pid}/root/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return os.openpty()
    try:
        fcntl.ioctl(master, tiocsptlck, struct.pack("i", 0))
        number = struct.unpack("I", fcntl.ioctl(master, tiocgptn, struct.pack("I", 0)))[0]
        slave = os.open(f"/proc/{pid}/root/dev/pts/{number}", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        os.close(master)
        return os.openpty()
    return master, slave


def spawn_tty(uuid: str, first_pid: int, spec: PodSpec, argv: Sequence[str]) -> tuple[Entered, int]:
    """The command on a new terminal of the container's; (process, the terminal's master)."""
    master, slave = container_pty(first_pid)
    try:
        pid = fork_entered(uuid, first_pid, spec, argv, {**dict(spec.env), "TERM": "xterm"}, (slave, slave, slave),
                           tty=True)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return Entered(pid), master
