"""``run_cycles``: the loop behind ``grantkeeper worker`` and the API's embedded scheduler."""

from __future__ import annotations

import asyncio

import pytest

from grantkeeper.service.scheduler import run_cycles


async def test_max_cycles_ends_right_after_the_last_cycle_without_a_pause() -> None:
    """``worker --max-cycles 1 --poll-interval 3600`` must not sit out an hour after its one cycle."""
    ran: list[int] = []

    async def cycle() -> int:
        ran.append(len(ran))
        return len(ran)

    done = await asyncio.wait_for(run_cycles(cycle, interval=3600, stop=asyncio.Event(), max_cycles=1), 5)
    assert done == 1
    assert ran == [0]


async def test_cycles_pause_for_the_interval_in_between() -> None:
    reported: list[int] = []

    async def cycle() -> int:
        return len(reported)

    task = asyncio.create_task(
        run_cycles(cycle, interval=3600, stop=asyncio.Event(), on_cycle=reported.append, max_cycles=2)
    )
    await asyncio.sleep(0.2)
    assert reported == [0]  # the first cycle ran; the second waits for the interval
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_stop_ends_the_pause() -> None:
    stop = asyncio.Event()

    async def cycle() -> None:
        stop.set()

    assert await asyncio.wait_for(run_cycles(cycle, interval=3600, stop=stop), 5) == 1
