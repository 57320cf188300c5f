"""The event loop gifee's servers run on: uvloop (libuv) unless the environment asks for asyncio's.

uvloop runs the same asyncio programs with its loop, transports and DNS in C. Measured on the
store (`benchmarks/ab_bench.py`, 64 clients putting): about 11 % more puts a second and 12 %
less CPU per request than asyncio's own loop; the bare gRPC server answers 15 % more puts.
`GIFEE_EVENT_LOOP=asyncio` selects asyncio's loop, for comparison or if uvloop misbehaves, and
it is used when uvloop cannot be imported.

Code that runs on both keeps to the asyncio API and does not assume asyncio's classes: a
uvloop transport is not an instance of `asyncio.Transport`, and uvloop refuses a Linux
abstract socket address (a leading NUL) in `create_unix_connection`; connect such a socket
with `sock_connect` and pass it in (`connect_unix`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
P = TypeVar("P", bound=asyncio.BaseProtocol)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor, or None for asyncio's (GIFEE_EVENT_LOOP=asyncio, or no uvloop)."""
    if os.environ.get("GIFEE_EVENT_LOOP", "uvloop") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on the selected loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


async def connect_unix(protocol_factory: Callable[[], P], address: str) -> tuple[asyncio.Transport, P]:
    """create_unix_connection that also takes abstract addresses ("\\0name") on uvloop."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    transport, protocol = await loop.create_unix_connection(protocol_factory, sock=sock)
    return transport, protocol


class BusyPoll:
    """Keeps the loop polling, not sleeping, for a moment after each `poke`.

    A loop with nothing to do blocks in epoll_wait, and the CPU it ran on may idle; the next
    request then waits for that CPU to wake (on these virtual machines about 0.1 ms of a lone
    client's 0.8 ms put). Go servers such as etcd avoid the wait by spinning for a while before
    they park. This does the same with the loop's own machinery: while the window is open a
    callback stays queued, so each iteration polls with a zero timeout, and it yields the CPU
    between polls (`sched_yield`) to whatever else is runnable. A busy loop never waits anyway;
    an idle one stops polling `window` seconds after the last poke.
    """

    def __init__(self, window: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._window = window
        self._until = 0.0
        self._polling = False

    def poke(self) -> None:
        self._until = time.monotonic() + self._window
        if not self._polling:
            self._polling = True
            self._loop.call_soon(self._poll)

    def _poll(self) -> None:
        if time.monotonic() < self._until:
            os.sched_yield()
            self._loop.call_soon(self._poll)
        else:
            self._polling = False
