"""eventloop.BusyPoll: the loop polls without sleeping for its window after a poke, then sleeps again."""

from __future__ import annotations

import asyncio

from gifee.eventloop import BusyPoll


class CountingBusyPoll(BusyPoll):
    def __init__(self, window: float) -> None:
        super().__init__(window)
        self.polls = 0

    def _poll(self) -> None:
        self.polls += 1
        super()._poll()


async def test_a_poke_keeps_the_loop_polling_for_its_window_only() -> None:
    poll = CountingBusyPoll(0.05)
    await asyncio.sleep(0.02)
    assert poll.polls == 0  # not poked: the loop sleeps
    poll.poke()
    await asyncio.sleep(0.03)  # the loop has nothing else to do meanwhile
    # Each loop iteration polled again instead of sleeping out the 30 ms.
    assert poll.polls > 100
    await asyncio.sleep(0.05)
    assert not poll._polling
    after = poll.polls
    await asyncio.sleep(0.03)
    assert poll.polls == after  # the window closed: the loop sleeps again


async def test_pokes_extend_the_window_without_a_second_poller() -> None:
    poll = CountingBusyPoll(0.03)
    poll.poke()
    await asyncio.sleep(0.02)
    poll.poke()  # 20 ms in: the window now ends 30 ms from here
    poll.poke()
    await asyncio.sleep(0.02)
    assert poll._polling
    await asyncio.sleep(0.05)
    assert not poll._polling
