"""Keeping ``refresh_attempts`` to a retention window, for the worker, the API's scheduler and ``prune``.

Every refresh adds a row, so without this the table grows by tens of millions of rows a day at scale. The
deletion goes in small batches, one short transaction each with a pause in between: on SQLite the pause is
what lets refresh commits take the write lock between batches, so pruning a large backlog never stalls
the refresh path. The cutoff is fixed when a prune starts, so a long prune ends even while new attempts
keep ageing past it. Several processes pruning at once is harmless (see ``adapters.db.retention``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from grantkeeper.ports import Clock, ConnectionStore, PruneBatch
from grantkeeper.service.scheduler import run_cycles

__all__ = [
    "EXPIRED_LINK_GRACE",
    "PRUNE_INTERVAL_SECONDS",
    "prune_attempts",
    "prune_connect_links",
    "prune_deliveries",
    "prune_notifications",
    "run_pruning",
]

log = logging.getLogger("grantkeeper.retention")

#: how often the worker and the API's scheduler prune; the first prune runs as they start
PRUNE_INTERVAL_SECONDS = 3600.0
#: how long an expired connect link is kept (so a late click gets the "expired" page)
EXPIRED_LINK_GRACE = timedelta(days=1)

RunInThread = Callable[[Callable[[], PruneBatch]], Awaitable[PruneBatch]]


async def prune_attempts(
    store: ConnectionStore,
    clock: Clock,
    keep: timedelta,
    *,
    batch_size: int = 10_000,
    pause_seconds: float = 0.05,
    run_in_thread: RunInThread = asyncio.to_thread,
    stop: asyncio.Event | None = None,
) -> int:
    """Delete the refresh attempts older than ``keep``, batch after batch, until none is left; return how
    many went. ``stop`` ends it early, between two batches (a worker shutting down mid-backlog)."""
    if keep <= timedelta(0):
        raise ValueError("keep must be positive")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    before = clock.now() - keep
    total = await _in_batches(
        lambda: run_in_thread(lambda: store.prune_refresh_attempts(before, batch_size=batch_size)),
        pause_seconds,
        stop,
    )
    log.info(
        "pruned %d refresh attempt(s) from before %s",
        total,
        before.isoformat(),
        extra={"action": "attempts_pruned", "deleted": total},
    )
    return total


async def prune_deliveries(
    store: ConnectionStore, clock: Clock, keep: timedelta, *, pause_seconds: float = 0.05
) -> int:
    """Delete finished outbox rows (delivered, or given up after the last retry) and their delivery attempts
    once they are older than ``keep``; the in-app notifications they delivered stay. Returns how many
    outbox rows went."""
    before = clock.now() - keep
    total = await _in_batches(lambda: asyncio.to_thread(store.prune_finished_outbox, before), pause_seconds)
    _log_pruned(total, "finished deliveries", before, "deliveries_pruned")
    return total


async def prune_notifications(
    store: ConnectionStore, clock: Clock, keep: timedelta, *, pause_seconds: float = 0.05
) -> int:
    """Delete in-app notifications created more than ``keep`` ago, with their finished deliveries; one whose
    delivery is still pending stays until it is delivered or given up. Returns how many went."""
    if keep <= timedelta(0):
        raise ValueError("keep must be positive")
    before = clock.now() - keep
    total = await _in_batches(lambda: asyncio.to_thread(store.prune_notifications, before), pause_seconds)
    _log_pruned(total, "notification(s)", before, "notifications_pruned")
    return total


def _log_pruned(total: int, what: str, before: datetime, action: str) -> None:
    if total:
        log.info(
            "pruned %d %s from before %s",
            total,
            what,
            before.isoformat(),
            extra={"action": action, "deleted": total},
        )


async def _in_batches(
    delete: Callable[[], Awaitable[PruneBatch]], pause_seconds: float, stop: asyncio.Event | None = None
) -> int:
    """Run ``delete`` until a batch says it was the last (or ``stop`` is set), pausing between batches so
    other writers get the database (on SQLite, its one write lock); returns how many rows went in all."""
    total = 0
    while True:
        batch = await delete()
        total += batch.deleted
        if batch.is_done or (stop is not None and stop.is_set()):
            return total
        await asyncio.sleep(pause_seconds)


async def prune_connect_links(store: ConnectionStore, clock: Clock) -> int:
    """Delete connect links and authorization requests a day after they expired (until then a late click
    still gets its "expired" page rather than "this link does not work"); returns how many rows went."""
    before = clock.now() - EXPIRED_LINK_GRACE
    deleted = await asyncio.to_thread(store.prune_connect_links, before)
    if deleted:
        log.info(
            "pruned %d expired connect link row(s)",
            deleted,
            extra={"action": "connect_links_pruned", "deleted": deleted},
        )
    return deleted


async def run_pruning(
    store: ConnectionStore,
    clock: Clock,
    keep: timedelta | None,
    *,
    stop: asyncio.Event,
    interval: float = PRUNE_INTERVAL_SECONDS,
    notifications_keep: timedelta | None = None,
) -> int:
    """Prune at once, then every ``interval`` seconds until ``stop`` is set; returns how many prunes ran.
    Attempts and finished deliveries go only with a retention (``keep``; None keeps them forever), in-app
    notifications only with theirs (``notifications_keep``); expired connect links always go. A prune that
    fails (the database restarting) is logged and retried by ``run_cycles``."""

    async def prune() -> int:
        pruned = await prune_connect_links(store, clock)
        if keep is not None:
            pruned += await prune_attempts(store, clock, keep, stop=stop)
            pruned += await prune_deliveries(store, clock, keep)
        if notifications_keep is not None:
            pruned += await prune_notifications(store, clock, notifications_keep)
        return pruned

    return await run_cycles(prune, interval=interval, stop=stop)
