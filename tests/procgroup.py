"""Stopping a server that leads its own process group (started with start_new_session), safely.

A process group is addressed by its leader's PID, and PIDs are handed out again: once the
leader has been reaped, `killpg(pid)` can reach whatever group a new process with that number
leads (on a busy machine PIDs wrap within minutes: another test's or benchmark's servers).
So the group is signalled only while its leader is unreaped (alive, or a zombie, which keeps
the number reserved), and the leader is reaped last.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time


def _exited_unreaped(pid: int) -> bool:
    """True once `pid` (our child) has exited, without reaping it."""
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return info is not None


def stop_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str], grace: float = 10.0,
               first: signal.Signals = signal.SIGTERM) -> None:
    """`first` to the group, up to `grace` seconds for the leader to exit, then SIGKILL to the group
    (stragglers such as forked workers), then reap the leader. If the leader was already reaped
    (someone called poll() or wait()), the group can no longer be addressed safely: nothing is sent."""
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, first)
        deadline = time.monotonic() + grace
        while not _exited_unreaped(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, ChildProcessError):
        pass
    proc.wait()
