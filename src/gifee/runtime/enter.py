"""`gifee enter`: run a command inside a running pod's namespaces, root and cgroup,
with the pod's capability set: the way `rkt enter` and `nsenter` work, by setns(2)
into each namespace of the pod's first process and chroot into its root."""

from __future__ import annotations

import os
from collections.abc import Sequence

from gifee.runtime import linux
from gifee.runtime.cgroups import PodCgroup
from gifee.runtime.spec import PodSpec

# Order matters: the user namespace first (it grants the rights to join the others), the
# mount namespace last (after it /proc/<pid> of the host is gone).
NAMESPACES = ("user", "ipc", "uts", "net", "pid", "mnt")


def enter(pod_id: str, first_pid: int, spec: PodSpec, argv: Sequence[str], *, interactive: bool) -> int:
    ns_fds = {}
    for ns in NAMESPACES:
        path = f"/proc/{first_pid}/ns/{ns}"
        if os.readlink(path) != os.readlink(f"/proc/self/ns/{ns}"):
            ns_fds[ns] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    root_fd = os.open(f"/proc/{first_pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    cwd = os.readlink(f"/proc/{first_pid}/cwd")
    env = dict(spec.env)
    child = os.fork()
    if child == 0:
        try:
            PodCgroup(pod_id).add_process(os.getpid())
            for ns, fd in ns_fds.items():
                linux.setns(fd)
                if ns == "user":
                    linux.become_namespace_root()
            os.fchdir(root_fd)
            os.chroot(".")
            try:
                os.chdir(cwd)
            except OSError:
                os.chdir("/")
            # A process only enters a PID namespace through fork: the command runs as our child.
            grandchild = os.fork()
            if grandchild != 0:
                _, status = os.waitpid(grandchild, 0)
                os._exit(_shell_code(status))
            linux.limit_capabilities(spec.capabilities)
            linux.set_no_new_privs()
            if not interactive:
                null = os.open("/dev/null", os.O_RDONLY)
                os.dup2(null, 0)
            os.execvpe(argv[0], list(argv), env)
        except BaseException as e:
            os.write(2, f"gifee enter: {e}\n".encode())
            os._exit(126 if not isinstance(e, FileNotFoundError) else 127)
    for fd in (*ns_fds.values(), root_fd):
        os.close(fd)
    _, status = os.waitpid(child, 0)
    return _shell_code(status)


def _shell_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code
