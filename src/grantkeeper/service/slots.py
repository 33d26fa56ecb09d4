"""A counting semaphore for a cycle's bounds that hands a freed slot straight to the longest waiter.

``asyncio.Semaphore`` (3.11) scans all its waiters on every ``acquire`` to keep its fairness, so it costs
time linear in the waiters. A cycle that starts attempts ahead of their request slot (ADR 21) has up to
``concurrency`` of them waiting for a slot, and takes one per request: with it, starting ahead raised the
event loop's CPU per refresh at concurrency 128 from 110-116 to 136-149 µs in alternating rounds; with
these slots the difference was within the noise (``docs/benchmarks.md``, tenth session). Both ends are O(1).
"""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    """``count`` slots; ``acquire`` waits in FIFO order for one, ``release`` gives one back (to the longest
    waiter if any). A waiter cancelled after it was handed a slot passes the slot on, so none is lost."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("a bound of at least one slot")
        self._free = count
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def free(self) -> int:
        return self._free

    async def acquire(self) -> None:
        if self._free and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a slot, then cancelled before taking it
                self.release()
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # one cancelled while waiting is skipped
                waiter.set_result(None)
                return
        self._free += 1
