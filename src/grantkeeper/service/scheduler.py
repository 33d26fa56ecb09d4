"""The scheduler loop shared by ``grantkeeper worker`` and the scheduler embedded in ``grantkeeper serve``.

It keeps going through trouble that is not its own: a cycle that fails (a database restarting, say) is
logged and the next one waits longer, up to a minute, until cycles succeed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger("grantkeeper.scheduler")

MAX_FAILURE_PAUSE_SECONDS = 60.0
R = TypeVar("R")


async def run_cycles(
    cycle: Callable[[], Awaitable[R]],
    *,
    interval: float,
    stop: asyncio.Event,
    on_cycle: Callable[[R], None] | None = None,
    max_cycles: int | None = None,
) -> int:
    """Run ``cycle`` every ``interval`` seconds until ``stop`` is set; returns how many cycles ran."""
    cycles = failures = 0
    while not stop.is_set() and (max_cycles is None or cycles < max_cycles):
        cycles += 1
        try:
            result = await cycle()
        except Exception as exc:
            failures += 1
            log.error(
                "cycle failed (%s: %s); retrying",
                type(exc).__name__,
                str(getattr(exc, "orig", None) or exc).splitlines()[0][:200] if str(exc) else "",
                extra={"action": "cycle_failed"},
            )
        else:
            failures = 0
            if on_cycle is not None:
                on_cycle(result)
        if max_cycles is not None and cycles >= max_cycles:
            break  # no pause after the last cycle: ``worker --max-cycles`` ends when its work does
        pause = min(interval * 2**failures, MAX_FAILURE_PAUSE_SECONDS)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=pause)
    return cycles
