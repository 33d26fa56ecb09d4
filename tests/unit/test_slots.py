"""``service.slots.Slots``: a cycle's bounds, on a real event loop."""

from __future__ import annotations

import asyncio

import pytest

from grantkeeper.service.slots import Slots


async def test_never_more_holders_than_slots_and_waiters_served_in_order() -> None:
    slots = Slots(2)
    holding = 0
    most = 0
    order: list[int] = []

    async def hold(number: int) -> None:
        nonlocal holding, most
        await slots.acquire()
        order.append(number)
        holding += 1
        most = max(most, holding)
        await asyncio.sleep(0.001 * (number % 3))
        holding -= 1
        slots.release()

    await asyncio.gather(*(hold(number) for number in range(20)))

    assert most == 2
    assert order == list(range(20))  # first come, first served
    assert slots.free == 2


async def test_a_waiter_cancelled_before_or_after_it_was_handed_a_slot_loses_none() -> None:
    slots = Slots(1)
    await slots.acquire()
    gone = asyncio.create_task(slots.acquire())
    handed = asyncio.create_task(slots.acquire())
    last = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    gone.cancel()  # cancelled while waiting: skipped
    await asyncio.sleep(0)
    slots.release()  # goes to ``handed``...
    handed.cancel()  # ...which is cancelled before it runs: it must pass the slot on
    with pytest.raises(asyncio.CancelledError):
        await gone
    with pytest.raises(asyncio.CancelledError):
        await handed
    await asyncio.wait_for(last, timeout=1)  # so ``last`` gets it
    slots.release()
    assert slots.free == 1


def test_a_bound_of_no_slot_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Slots(0)
