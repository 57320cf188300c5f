"""Stopping a daemon on SIGTERM or SIGINT, without its forked children stopping it too.

asyncio's signal handlers work through a wakeup descriptor: the C-level handler writes the
signal's number into a socket that the event loop reads. A process forked from the daemon
(pyroute2's network-namespace helper, a pod launcher before it execs) inherits both the
handler and the socket, so a SIGTERM meant for the child, e.g. pyroute2 ending its helper,
was read by the daemon's loop as its own and stopped the whole node. Every child forked
after `stop_on_signals` therefore starts as a fresh Python program would (SIGTERM's default
action, SIGINT raising KeyboardInterrupt) and without the wakeup descriptor.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_fork_hook_registered = False


def _forget_handlers_in_child() -> None:
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own: KeyboardInterrupt


def stop_on_signals(loop: asyncio.AbstractEventLoop, stop: Callable[[], object]) -> None:
    """Call `stop` in `loop` on SIGTERM or SIGINT to this process (and only to this process)."""
    global _fork_hook_registered
    if not _fork_hook_registered:
        os.register_at_fork(after_in_child=_forget_handlers_in_child)
        _fork_hook_registered = True
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop)
