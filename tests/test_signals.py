"""A daemon's stop signals stay its own: a child it forks (as pyroute2 does for its
network-namespace helper, from a worker thread) and then SIGTERMs must die of it, and
the daemon must not take that signal for its own."""

from __future__ import annotations

import subprocess
import sys

DAEMON = r"""
import asyncio, os, signal, sys, time
from gifee.signals import stop_on_signals

async def main() -> None:
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    if sys.argv[1] == "gifee":
        stop_on_signals(loop, stopped.set)
    else:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopped.set)

    def fork_and_end_child(signum: int) -> int:
        pid = os.fork()
        if pid == 0:
            try:
                time.sleep(3)
            except KeyboardInterrupt:  # SIGINT as Python has it by default
                os._exit(130)
            os._exit(0)
        time.sleep(0.3)
        os.kill(pid, signum)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    codes = [await asyncio.to_thread(fork_and_end_child, s) for s in (signal.SIGTERM, signal.SIGINT)]
    await asyncio.sleep(0.3)
    print(codes, stopped.is_set())
    os.kill(os.getpid(), signal.SIGTERM)  # the daemon's own stop signal still works
    await asyncio.wait_for(stopped.wait(), 5)
    print("stopped")

asyncio.run(main())
"""


def run(mode: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", DAEMON, mode], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_a_forked_childs_sigterm_is_not_the_daemons() -> None:
    assert run("gifee") == ["[-15, 130] False", "stopped"]


def test_plain_asyncio_handlers_leak_into_forked_children() -> None:
    """Why the module exists: with asyncio's handlers alone the child survives SIGTERM and the
    daemon stops (if this starts failing, Python fixed it and stop_on_signals can go)."""
    assert run("asyncio")[0] == "[0, 0] True"
