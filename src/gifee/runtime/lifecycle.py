"""Stopping, removing and collecting pods: the moves of pods.TRANSITIONS that belong
to `gifee stop`, `gifee rm` and `gifee gc`.

`gc_actions` decides, without I/O, what each pod needs from its state and age;
`collect` carries the actions out. A pod is cleaned up (network, cgroup, directory)
only once its lock is free, so nothing is pulled from under a running pod, and
every clean-up step can run again after an interruption.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

from gifee.runtime.cgroups import PodCgroup
from gifee.runtime.launch import Launcher, cleanup_pod
from gifee.runtime.pods import Pod, PodError


def stop_pod(pod: Pod, *, force: bool, grace: float) -> None:
    """SIGTERM to the pod's first process (its PID 1: ending it ends the pod), then
    SIGKILL to every process of its cgroup if it has not exited after `grace`."""
    if pod.state != "running" or pod.pid is None:
        return
    cgroup = PodCgroup(pod.uuid)
    if not force:
        cgroup.signal(pod.pid, signal.SIGTERM)
        if pod.wait_unlocked(grace):
            return
    cgroup.signal(pod.pid, signal.SIGKILL)
    cgroup.kill_all()
    pod.wait_unlocked(10.0)


def remove_pod(launcher: Launcher, pod: Pod) -> None:
    state = pod.state
    if state in ("running", "preparing"):
        raise PodError(f"pod {pod.uuid} is {state}: stop it first")
    if pod.directory != "garbage":
        pod = launcher.pods.move(pod, "garbage")
    cleanup_pod(launcher, pod)


def gc_action(state: str, age: float, grace: float) -> str | None:
    """What gc does with a pod in `state` whose state began `age` seconds ago."""
    if state == "exited":
        return "mark"  # run/ -> exited-garbage/; removed after the grace period
    if state == "exited-garbage" and age >= grace:
        return "remove"
    if state in ("abandoned", "garbage"):
        return "remove"  # a launcher or a remover died half-way: finish its work
    return None


def collect(launcher: Launcher, grace: float) -> Iterator[str]:
    now = time.time()
    for pod in list(launcher.pods.all()):
        state = pod.state
        try:
            age = now - os.stat(pod.path).st_ctime  # the rename into this state set ctime
        except FileNotFoundError:
            continue
        action = gc_action(state, age, grace)
        try:
            if action == "mark":
                pod = launcher.pods.move(pod, "exited-garbage")
                yield f"Moving pod {pod.uuid} to garbage"
                if grace <= 0:
                    action = "remove"
            if action == "remove":
                if pod.directory != "garbage":
                    pod = launcher.pods.move(pod, "garbage")
                cleanup_pod(launcher, pod)
                yield f"Garbage collecting pod {pod.uuid}"
        except (OSError, PodError) as e:
            yield f"Pod {pod.uuid}: {e}"
