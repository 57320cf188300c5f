"""The launcher: from a PodSpec and unpacked image layers to a running pod.

Process tree, and why (no daemon, no Python process left beside a pod):

    gifee run (launcher) --fork--> child --unshare, fork--> pod's first process (PID 1 inside)
                                   child --exec--> gifee-shim (waits, records the exit)

The launcher makes the pod directory (holding its lock), the cgroup, and the pipes;
the child detaches into a new session when the pod is detached, unshares the
namespaces and forks the pod's first process (stage2.py), then becomes the shim.
The first process moves itself into the cgroup (the launcher moves it for a pod in a
user namespace, where it may not write the host's cgroup files); the launcher pins
and attaches the pod's network, tells the first process to go, and learns from the error pipe whether the command started. Detached, it
then exits; in the foreground, it waits for the shim and returns the pod's exit code.

A launcher that dies half-way leaves a pod in prepare/ whose lock is held only if
the shim is alive; the first process waits for the launcher's go and gives up when
the launcher's end of the pipe closes, so nothing runs half set up.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gifee.runtime import linux, stage2  # stage2 loaded before any fork: a forked child must not import
from gifee.runtime.cgroups import PodCgroup
from gifee.runtime.pods import Pod, Pods
from gifee.runtime.shimbin import shim_binary
from gifee.runtime.spec import PodSpec, joined_pod


class LaunchError(Exception):
    pass


def namespace_flags(spec: PodSpec) -> int:
    """The namespaces the child unshares before forking the pod's first process. Not the
    mount namespace: the first process makes its own, so that its pivot_root never
    moves the shim's root (the shim reads the host's cgroup files)."""
    flags = linux.CLONE_NEWPID
    if joined_pod(spec.net):
        return flags  # network, UTS and IPC are the joined pod's (setns before this)
    flags |= linux.CLONE_NEWIPC
    if spec.net != "host":
        flags |= linux.CLONE_NEWNET | linux.CLONE_NEWUTS
    return flags


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _close(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


class Launcher:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.pods = Pods(data_dir / "pods")

    def network(self) -> Any:
        """The default pod network; DIR/net.d/default.conf (JSON: "bridge", "subnet")
        overrides its bridge and subnet, as rkt read its networks from net.d."""
        from gifee.runtime.network import NetworkError, PodNetwork

        options: dict[str, Any] = {}
        conf = self.data_dir / "net.d" / "default.conf"
        if conf.exists():
            try:
                data = json.loads(conf.read_text())
            except json.JSONDecodeError as e:
                raise NetworkError(f"{conf}: not valid JSON: {e}") from None
            options = {k: str(data[k]) for k in ("bridge", "subnet") if k in data}
        return PodNetwork(state_dir=self.data_dir / "net", **options)

    def launch(self, spec: PodSpec, layers: Sequence[Path], *, detach: bool,
               on_started: Any = None) -> tuple[Pod, int | None]:
        """Start the pod; returns it and, in the foreground, its exit code."""
        shim = shim_binary(self.data_dir / "lib")
        pod, lock_fd = self.pods.create()
        cgroup = PodCgroup(pod.uuid)
        started = False
        fds: list[int] = []
        userns_fd = -1
        join_fds: list[int] = []
        try:
            record: dict[str, Any] = {"uuid": pod.uuid, "created": time.time(), "spec": spec.to_json(),
                                      "layers": [str(p) for p in layers]}
            for name in ("upper", "work", "rootfs"):
                (pod.path / name).mkdir()
            if spec.private_users:
                userns_fd = self._prepare_user_namespace(pod, record, len(layers))
                fds.append(userns_fd)
            if joined_pod(spec.net):
                join_fds = self._joined_namespaces(spec, record)
                fds.extend(join_fds)
            # After a crash of the machine gc needs the record only to release what outlives
            # a reboot outside the pod's directory: the network's address lease and port
            # reservations, a user namespace's uid range. Without those, no disk flush.
            pod.write_json("pod.json", record, durable=spec.net == "default" or spec.private_users)
            cgroup.create(spec.limits)
            pid_r, pid_w = os.pipe()
            go_r, go_w = os.pipe()
            err_r, err_w = os.pipe()
            fds += [pid_r, pid_w, go_r, go_w, err_r, err_w]
            os.set_inheritable(lock_fd, True)
            restart_fd = -1
            if spec.restart != "no":  # the supervising PID 1 appends a line per restart
                restart_fd = os.open(pod.path / "restarts", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                                     0o644)
                fds.append(restart_fd)
            if spec.interactive:
                stdio = (0, 1, 2)
                out_r = out_w = errout_r = errout_w = log_fd = -1
            else:
                out_r, out_w = os.pipe()
                errout_r, errout_w = os.pipe()
                log_fd = os.open(pod.path / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
                null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
                stdio = (null, out_w, errout_w)
                fds += [out_r, out_w, errout_r, errout_w, log_fd, null]
            child = os.fork()
            if child == 0:
                self._child(spec, pod, layers, cgroup, shim, detach=detach, lock_fd=lock_fd,
                            pid_w=pid_w, go_r=go_r, go_w=go_w, err_r=err_r, err_w=err_w, stdio=stdio,
                            out_r=out_r, errout_r=errout_r, log_fd=log_fd, pid_r=pid_r, userns_fd=userns_fd,
                            join_fds=join_fds, restart_fd=restart_fd)
            # The child's ends, each closed exactly once: stdio holds out_w and errout_w too, and a
            # second close could hit a descriptor that another thread (the agent's event loop,
            # another launch) has opened under the same number meanwhile.
            _close(*{pid_w, go_r, err_w, out_w, errout_w, out_r, errout_r, log_fd, restart_fd,
                     *[fd for fd in stdio if fd > 2]})
            fds = [pid_r, go_w, err_r, userns_fd, *join_fds]
            data = _read_all(pid_r)
            if not data:
                reason = _read_all(err_r).decode(errors="replace").strip()
                raise LaunchError(reason or "the pod's launcher child failed before starting the pod")
            first_pid = int(data)
            (pod.path / "pid").write_text(str(first_pid))
            # Only the pod's own processes go into its cgroup: never the shim, which must
            # outlive an OOM kill or a kill of the whole cgroup to record it. The first
            # process joins it itself (stage2), except inside a user namespace.
            if spec.private_users:
                cgroup.add_process(first_pid)
            try:
                pod_ip = self._attach_network(pod, spec, first_pid)
            except Exception as e:
                # The first process may have failed first, taking its namespace with it:
                # its own error says more than the network's.
                fds.remove(go_w)
                _close(go_w)
                raise LaunchError(_read_all(err_r).decode(errors="replace").strip() or str(e)) from None
            os.write(go_w, (pod_ip or record.get("joined_ip") or "-").encode())
            fds.remove(go_w)  # closed exactly once: another thread may get the number next
            _close(go_w)
            error = _read_all(err_r).decode(errors="replace")
            if error:
                os.waitpid(child, 0)
                raise LaunchError(error.strip())
            pod = self.pods.move(pod, "run")
            started = True
            pod.write_json("started", {"started": time.time()}, durable=False)  # only shown by status
            if on_started is not None:
                on_started(pod)
            if detach:
                return pod, None
            return pod, self._wait_foreground(pod, child, first_pid, cgroup)
        except BaseException:
            if not started:
                self._discard(pod, cgroup)
            raise
        finally:
            _close(lock_fd, *fds)

    def _joined_namespaces(self, spec: PodSpec, record: dict[str, Any]) -> list[int]:
        """Descriptors of the network, UTS and IPC namespaces of the pod that --net=pod:UUID
        names, which must be running; its address and host name become this pod's."""
        target = self.pods.find(joined_pod(spec.net) or "")
        if target.state != "running" or target.pid is None:
            raise LaunchError(f"--net=pod:{target.uuid}: that pod is not running")
        record["joined"] = target.uuid
        net = target.read_json("net.json")
        if net is not None:
            record["joined_ip"] = net.get("ip")
        fds = []
        try:
            for ns in ("net", "uts", "ipc"):
                fds.append(os.open(f"/proc/{target.pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC))
        except OSError as e:
            _close(*fds)
            raise LaunchError(f"--net=pod:{target.uuid}: cannot open its namespaces: {e}") from None
        return fds

    def _prepare_user_namespace(self, pod: Pod, record: dict[str, Any], layer_count: int) -> int:
        """A uid range and a user namespace for the pod; the pod's own directories are
        owned by the range's root, and the image's layers will be idmapped into it."""
        from gifee.runtime import userns

        blocked = [str(d) for d in pod.path.parents if d.stat().st_mode & 0o001 == 0]
        if blocked:
            raise LaunchError(f"--private-users: the pod's own uids must be able to reach {pod.path}, but "
                              f"{blocked[0]} is not searchable by others (chmod o+x it, or use another --dir)")
        base = userns.allocate(self.data_dir / "userns", pod.uuid)
        record["userns_base"] = base
        fd = linux.new_user_namespace(base, userns.RANGE_SIZE)
        os.chmod(pod.path, 0o711)  # the pod's root (a host uid of the range) passes through
        for name in ("upper", "work", "rootfs"):
            os.chown(pod.path / name, base, base)
        for i in range(layer_count):
            (pod.path / "lower" / str(i)).mkdir(parents=True)
        return fd

    def _child(self, spec: PodSpec, pod: Pod, layers: Sequence[Path], cgroup: PodCgroup, shim: Path, *,
               detach: bool, lock_fd: int, pid_w: int, go_r: int, go_w: int, err_r: int, err_w: int,
               stdio: tuple[int, int, int], out_r: int, errout_r: int, log_fd: int, pid_r: int,
               userns_fd: int, join_fds: Sequence[int], restart_fd: int = -1) -> None:
        """In the forked child; ends in exec of the shim or os._exit.

        Without a user namespace the child forks the pod's first process itself. With
        one, it idmaps the layers in a private mount namespace (as host root), then forks
        a relay that enters the user namespace, forks the first process there (so that
        the PID, network and mount namespaces belong to the user namespace) and becomes
        a relaying shim; the child itself stays host root to write the pod directory."""
        try:
            # The launching process may be an asyncio program (an agent) whose signal
            # handlers write to its event loop's wakeup descriptor: none of that may run here.
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            # Launches from several threads of one process (an agent) must not hold each
            # other's pipes: keep only this pod's descriptors.
            keep = {0, 1, 2, lock_fd, pid_w, go_r, err_w, out_r, errout_r, log_fd, userns_fd, restart_fd, *stdio,
                    *join_fds}
            supervisor = shim if restart_fd >= 0 else None
            _close_all_but(keep)
            if detach:
                os.setsid()
                # Before any fork: nothing left beside a detached pod may hold the
                # launcher's stdout or stderr (a caller reading them to EOF would hang).
                null = os.open("/dev/null", os.O_RDWR)
                for target in (0, 1, 2):
                    os.dup2(null, target)
                os.close(null)
            own = (lock_fd, out_r, errout_r, log_fd)
            for fd in join_fds:
                linux.setns(fd)
            if userns_fd < 0:
                cgroup_files = cgroup.join_files()
                watched = self._fork_first(spec, pod, layers, pid_w=pid_w, go_r=go_r, err_w=err_w,
                                           stdio=stdio, close_in_first=own, cgroup_files=cgroup_files,
                                           supervisor=supervisor, restart_fd=restart_fd)
            else:
                # Everything the pod's first process imports must be loaded now: inside the
                # user namespace this process is an unprivileged uid that may not read the
                # Python installation (e.g. under /root).
                import traceback  # noqa: F401

                linux.unshare(linux.CLONE_NEWNS)
                linux.mount("", "/", None, linux.MS_REC | linux.MS_PRIVATE)
                lowers = []
                for i, layer in enumerate(layers):
                    lower = pod.path / "lower" / str(i)
                    linux.idmapped_bind(str(layer), str(lower), userns_fd)
                    lowers.append(lower)
                watched = os.fork()
                if watched == 0:
                    _close(*own)
                    linux.set_parent_death_signal(signal.SIGKILL)
                    linux.setns(userns_fd, linux.CLONE_NEWUSER)
                    linux.become_namespace_root()
                    first = self._fork_first(spec, pod, lowers, pid_w=pid_w, go_r=go_r, err_w=err_w,
                                             stdio=stdio, close_in_first=(), supervisor=supervisor,
                                             restart_fd=restart_fd)
                    os.execv(str(shim), [str(shim), "-1", str(first), "-", "-1", "-1", "-1", "0"])
                _close(pid_w, go_r, err_w, *[fd for fd in stdio if fd > 2])
            for fd in own:
                if fd >= 0:
                    os.set_inheritable(fd, True)
            oom = str(cgroup.oom_kill_file())
            os.execv(str(shim), [str(shim), str(lock_fd), str(watched), oom, str(log_fd), str(out_r),
                                 str(errout_r), "0" if detach or spec.interactive else "1"])
        except BaseException as e:
            for fd in (err_w, 2):  # the launcher reads err_w; stderr may be /dev/null by now
                with contextlib.suppress(OSError):
                    os.write(fd, f"starting the pod failed: {e}\n".encode())
            os._exit(125)

    def _fork_first(self, spec: PodSpec, pod: Pod, layers: Sequence[Path], *, pid_w: int, go_r: int,
                    err_w: int, stdio: tuple[int, int, int], close_in_first: Sequence[int],
                    cgroup_files: Sequence[str] = (), supervisor: Path | None = None, restart_fd: int = -1) -> int:
        """Unshare the pod's namespaces and fork its first process (PID 1 inside), whose
        host PID goes to the launcher through pid_w."""
        linux.unshare(namespace_flags(spec))
        first = os.fork()
        if first == 0:
            _close(pid_w, *close_in_first)
            os.set_blocking(err_w, True)
            fcntl_cloexec(err_w)
            stage2.run(spec, rootfs=pod.path / "rootfs", layers=layers, upper=pod.path / "upper",
                       work=pod.path / "work", go_fd=go_r, error_fd=err_w, stdio=stdio, cgroup_files=cgroup_files,
                       supervisor=supervisor, restart_fd=restart_fd)
            os._exit(126)
        os.write(pid_w, str(first).encode())
        _close(pid_w, go_r, err_w, *[fd for fd in stdio if fd > 2])
        return first

    def _attach_network(self, pod: Pod, spec: PodSpec, first_pid: int) -> str | None:
        if spec.net != "default":  # host: the host's; none: only lo, which the pod brings up itself
            return None
        from gifee.runtime.network import PortMapping, pin_netns

        netns = pod.path / "netns"
        pin_netns(first_pid, netns)
        net = self.network()
        ports = [PortMapping(host_port=p.host_port, pod_port=p.pod_port, protocol=p.protocol, host_ip=p.host_ip)
                 for p in spec.ports]
        status = net.attach(pod.uuid, netns, ports=ports)
        pod.write_json("net.json", status.to_dict())
        return str(status.ip)

    def _wait_foreground(self, pod: Pod, shim_pid: int, first_pid: int, cgroup: PodCgroup) -> int:
        def forward(signum: int, _frame: Any) -> None:
            cgroup.signal(first_pid, signal.SIGKILL if signum == signal.SIGQUIT else signal.SIGTERM)

        old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            while True:
                try:
                    _, status = os.waitpid(shim_pid, 0)
                    break
                except InterruptedError:
                    continue
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
        record = pod.read_json("exit")
        if record is not None:
            return exit_code(record)
        return os.waitstatus_to_exitcode(status) if status else 0

    def _discard(self, pod: Pod, cgroup: PodCgroup) -> None:
        """Undo a start that failed: nothing of the pod may stay behind."""
        with contextlib.suppress(Exception):
            cgroup.kill_all()
        cleanup_pod(self, pod, cgroup)


def _close_all_but(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def fcntl_cloexec(fd: int) -> None:
    os.set_inheritable(fd, False)


def exit_code(record: dict[str, Any]) -> int:
    if record.get("signal"):
        return 128 + int(record["signal"])
    return int(record.get("exit_code") or 0)


def cleanup_pod(launcher: Launcher, pod: Pod, cgroup: PodCgroup | None = None) -> None:
    """Release everything a pod holds outside its directory, then remove it:
    network (address, port rules), pinned namespace, cgroup. Each step tolerates
    having been done before, so an interrupted clean-up can simply run again."""
    cgroup = cgroup or PodCgroup(pod.uuid)
    errors: list[str] = []
    netns = pod.path / "netns"
    record = pod.read_json("pod.json") or {}
    spec_data = record.get("spec") or {}
    try:
        from gifee.runtime.network import PortMapping, unpin_netns

        if spec_data.get("net") == "default":
            ports = [PortMapping(host_port=p["host_port"], pod_port=p["pod_port"], protocol=p["protocol"],
                                 host_ip=p["host_ip"]) for p in spec_data.get("ports", [])]
            launcher.network().detach(pod.uuid, netns, ports)
        if netns.exists():
            unpin_netns(netns)
    except Exception as e:
        errors.append(f"network: {e}")
    try:
        cgroup.remove()
    except OSError as e:
        errors.append(f"cgroup: {e}")
    if record.get("userns_base") is not None:
        from gifee.runtime import userns

        userns.release(launcher.data_dir / "userns", int(record["userns_base"]), pod.uuid)
    # The overlay was mounted in the pod's own mount namespace, gone with its processes.
    launcher.pods.remove_tree(pod)
    if errors:
        print(f"gifee: pod {pod.uuid}: clean-up incomplete: {'; '.join(errors)}", file=sys.stderr)


def describe(pod: Pod) -> dict[str, Any]:
    """What `gifee status` and `gifee list` show of a pod."""
    record = pod.read_json("pod.json") or {}
    spec = record.get("spec") or {}
    info: dict[str, Any] = {
        "uuid": pod.uuid,
        "state": pod.state,
        "image": spec.get("image_name", ""),
        "image_digest": spec.get("image_digest", ""),
        "created": record.get("created"),
        "pid": pod.pid,
    }
    started = pod.read_json("started")
    if started:
        info["started"] = started.get("started")
    net = pod.read_json("net.json")
    if net:
        info["networks"] = {"default": net}
    elif record.get("joined"):
        info["joined"] = record["joined"]
        if record.get("joined_ip"):
            info["networks"] = {"default": {"ip": record["joined_ip"], "joined": record["joined"]}}
    exit_record = pod.read_json("exit")
    info["exited"] = info["state"] not in ("running", "preparing")
    if exit_record is not None:
        info["exit_code"] = exit_code(exit_record)
        info["signal"] = exit_record.get("signal")
        info["oom_killed"] = int(exit_record.get("oom_kills") or 0) > 0
        info["finished"] = exit_record.get("finished_at")
    if spec.get("restart", "no") != "no":
        try:
            lines = (pod.path / "restarts").read_text().splitlines()
        except FileNotFoundError:
            lines = []
        info["restarts"] = len(lines)
        if lines:
            with contextlib.suppress(ValueError):
                info["last_restart"] = json.loads(lines[-1])
    return info


def dumps(info: dict[str, Any]) -> str:
    return json.dumps(info, indent=2, sort_keys=True)
