"""Relaying the outbox: lease due rows, hand each to its channel's sender, record what happened.

Notifications and their outbox rows are written with the state change that caused them; this is the other
half of the transactional outbox. Delivery is at least once: a dispatcher that dies after sending but before
recording leaves the row to be sent again when its lease runs out, with the same ``idempotency_key``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from grantkeeper.ports import (
    ChannelSender,
    Clock,
    ConnectionStore,
    DeliveryResult,
    DigestSender,
    OutboxItem,
)

__all__ = ["DispatchReport", "Dispatcher", "next_delivery_at"]

log = logging.getLogger("grantkeeper.dispatch")


def next_delivery_at(
    attempts: int,
    now: datetime,
    rng: random.Random,
    *,
    base_delay: timedelta = timedelta(seconds=30),
    max_delay: timedelta = timedelta(hours=1),
) -> datetime:
    """When to try again after ``attempts`` failed deliveries: exponential with equal jitter, capped.

    The ceiling doubles per attempt from ``base_delay`` up to ``max_delay``; the delay is half the ceiling
    plus a random part of the other half, so retries of one outage spread out but never come sooner than
    half the schedule.
    """
    exponent = min(max(attempts - 1, 0), 32)
    ceiling = min(base_delay * (2**exponent), max_delay)
    delay: timedelta = ceiling / 2 + ceiling / 2 * rng.random()
    return now + delay


@dataclass(frozen=True)
class DispatchReport:
    """What one ``deliver_due`` run did.

    ``lost`` counts results not recorded because the lease was lost; ``deferred`` counts rows not sent because
    too little of their lease was left to finish a send (they go out on a later run, by whoever leases them).
    """

    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    lost: int = 0
    deferred: int = 0

    def __add__(self, other: DispatchReport) -> DispatchReport:
        return DispatchReport(
            self.delivered + other.delivered,
            self.retrying + other.retrying,
            self.failed + other.failed,
            self.lost + other.lost,
            self.deferred + other.deferred,
        )


_DELIVERED = DispatchReport(delivered=1)
_RETRYING = DispatchReport(retrying=1)
_FAILED = DispatchReport(failed=1)
_LOST = DispatchReport(lost=1)
_DEFERRED = DispatchReport(deferred=1)


class Dispatcher:
    """Delivers due outbox rows through the senders, ``concurrency`` at a time, in batches of ``batch_size``.

    A run claims only rows due when it started, so rows it schedules for a retry wait for a later run, and it
    stops claiming once half of ``lease_ttl`` has passed so no batch is leased for less time than it needs.

    A send starts only while at least ``send_timeout`` of the row's lease is left, and is cut off at
    ``send_timeout``: a dispatcher slowed down (a slow relay, a starved event loop) must not send a row that
    another dispatcher has leased since, because both would send it. So two live dispatchers never send one
    row at once; only a crash between sending and recording makes a duplicate (ADR 6).

    ``digest_sender`` takes the daily warning digests: a recipient's due rows are leased together and go out
    as one email. ``failure_limit`` is how many failures in a row disable a Slack, Discord or webhook
    destination (None: never).
    """

    def __init__(
        self,
        store: ConnectionStore,
        senders: Mapping[str, ChannelSender],
        clock: Clock,
        *,
        owner: str,
        max_attempts: int = 8,
        base_delay: timedelta = timedelta(seconds=30),
        max_delay: timedelta = timedelta(hours=1),
        lease_ttl: timedelta = timedelta(minutes=5),
        concurrency: int = 10,
        batch_size: int = 50,
        rng: random.Random | None = None,
        digest_sender: DigestSender | None = None,
        failure_limit: int | None = None,
        send_timeout: timedelta = timedelta(seconds=60),
    ) -> None:
        if max_attempts < 1 or concurrency < 1 or batch_size < 1:
            raise ValueError("max_attempts, concurrency and batch_size must be at least 1")
        if base_delay <= timedelta(0) or max_delay < base_delay or lease_ttl <= timedelta(0):
            raise ValueError("delays and lease_ttl must be positive, max_delay at least base_delay")
        if not timedelta(0) < send_timeout * 2 <= lease_ttl:
            raise ValueError("send_timeout must be positive and at most half of lease_ttl")
        self._send_timeout = send_timeout
        self._store = store
        self._senders = dict(senders)
        self._clock = clock
        self._owner = owner
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._lease_ttl = lease_ttl
        self._batch_size = batch_size
        self._slots = asyncio.Semaphore(concurrency)
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not security)
        self._digest_sender = digest_sender
        self._failure_limit = failure_limit

    @property
    def channels(self) -> list[str]:
        """The outbox channels this dispatcher delivers; rows of any other channel wait."""
        digest = [self._digest_sender.channel] if self._digest_sender is not None else []
        return sorted([*self._senders, *digest])

    async def close(self) -> None:
        """Release the senders' HTTP sessions; each sender is closed even if another fails to."""
        for sender in [*self._senders.values(), self._digest_sender]:
            close = getattr(sender, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    async def deliver_due(self) -> DispatchReport:
        """Deliver every row due now, batch after batch, and count the outcomes."""
        started_at = self._clock.now()
        report = DispatchReport()
        while self._clock.now() - started_at < self._lease_ttl / 2:
            batch = await asyncio.to_thread(
                self._store.claim_outbox,
                started_at,
                self._batch_size,
                self._owner,
                self._lease_ttl,
                list(self._senders),  # a channel nobody configured waits, it does not fail
            )
            if not batch:
                break
            for outcome in await asyncio.gather(*(self._deliver(item) for item in batch)):
                report += outcome
        if self._digest_sender is not None:
            report += await self._deliver_digests(started_at)
        return report

    async def _deliver_digests(self, started_at: datetime) -> DispatchReport:
        """Each due recipient's digest rows as one email; every row records the same result."""
        assert self._digest_sender is not None
        report = DispatchReport()
        while self._clock.now() - started_at < self._lease_ttl / 2:
            groups = await asyncio.to_thread(
                self._store.claim_digests, started_at, self._batch_size, self._owner, self._lease_ttl
            )
            if not groups:
                break
            for outcome in await asyncio.gather(*(self._deliver_group(group) for group in groups)):
                report += outcome
        return report

    async def _deliver_group(self, group: Sequence[OutboxItem]) -> DispatchReport:
        assert self._digest_sender is not None
        async with self._slots:
            if not all(self._has_time_to_send(item) for item in group):
                return DispatchReport(deferred=len(group))
            attempted_at = self._clock.now()
            started = time.monotonic()
            result = await self._bounded(
                self._digest_sender.send_digest(group), self._digest_sender.channel, group[0].outbox_id
            )
            duration = timedelta(seconds=time.monotonic() - started)
        report = DispatchReport()
        for item in group:
            report += await self._record(item, result, attempted_at, duration)
        return report

    async def _deliver(self, item: OutboxItem) -> DispatchReport:
        async with self._slots:
            if not self._has_time_to_send(item):
                return _DEFERRED
            attempted_at = self._clock.now()
            started = time.monotonic()
            result = await self._send(item)
            duration = timedelta(seconds=time.monotonic() - started)
        return await self._record(item, result, attempted_at, duration)

    async def _record(
        self, item: OutboxItem, result: DeliveryResult, attempted_at: datetime, duration: timedelta
    ) -> DispatchReport:
        next_attempt_at = self._next_attempt_at(item, result)
        is_recorded = await asyncio.to_thread(
            functools.partial(
                self._store.record_delivery,
                item,
                result,
                attempted_at,
                duration,
                next_attempt_at,
                failure_limit=self._failure_limit,
            )
        )
        if not is_recorded:
            log.warning(
                "lost the lease on outbox row %s before recording its delivery",
                item.outbox_id,
                extra={"action": "delivery_lease_lost", "outbox_id": item.outbox_id},
            )
            return _LOST
        if result.is_delivered:
            return _DELIVERED
        self._log_failure(item, result, is_final=next_attempt_at is None)
        return _RETRYING if next_attempt_at is not None else _FAILED

    def _has_time_to_send(self, item: OutboxItem) -> bool:
        """Whether a send started now ends (or is cut off) before the row's lease runs out."""
        if item.lease_expires_at is None or self._clock.now() + self._send_timeout < item.lease_expires_at:
            return True
        log.info(
            "too little lease left to send outbox row %s; leaving it for a later run",
            item.outbox_id,
            extra={"action": "delivery_deferred", "outbox_id": item.outbox_id},
        )
        return False

    async def _send(self, item: OutboxItem) -> DeliveryResult:
        """The sender's result; an unknown channel fails for good, a sender raising is retried."""
        sender = self._senders.get(item.channel)
        if sender is None:
            return DeliveryResult(False, f"no sender for channel {item.channel!r}", is_permanent=True)
        return await self._bounded(sender.send(item), item.channel, item.outbox_id)

    async def _bounded(
        self, sending: Coroutine[Any, Any, DeliveryResult], channel: str, outbox_id: str
    ) -> DeliveryResult:
        """A send cut off at ``send_timeout``; a sender raising is retried like any other failure."""
        try:
            async with asyncio.timeout(self._send_timeout.total_seconds()):
                return await sending
        except TimeoutError:
            return DeliveryResult(False, "send timeout")
        except Exception as exc:  # a sender bug or an unclassified fault; its message may hold the body
            log.warning(
                "the %s sender raised %s on outbox row %s",
                channel,
                type(exc).__name__,
                outbox_id,
                extra={"action": "delivery_raised", "outbox_id": outbox_id},
            )
            return DeliveryResult(False, type(exc).__name__)

    def _next_attempt_at(self, item: OutboxItem, result: DeliveryResult) -> datetime | None:
        """None when there is nothing more to try: delivered, a permanent failure, or out of attempts."""
        attempts = item.attempts + 1
        if result.is_delivered or result.is_permanent or attempts >= self._max_attempts:
            return None
        now = self._clock.now()
        scheduled = next_delivery_at(
            attempts, now, self._rng, base_delay=self._base_delay, max_delay=self._max_delay
        )
        if result.retry_after is not None:  # the receiver said when; never sooner, capped like the schedule
            scheduled = max(scheduled, now + min(result.retry_after, self._max_delay))
        return scheduled

    def _log_failure(self, item: OutboxItem, result: DeliveryResult, *, is_final: bool) -> None:
        log.log(
            logging.ERROR if is_final else logging.INFO,
            "%s delivery of outbox row %s %s after %d attempt(s): %s",
            item.channel,
            item.outbox_id,
            "failed" if is_final else "will be retried",
            item.attempts + 1,
            result.error,
            extra={
                "action": "delivery_failed" if is_final else "delivery_retry",
                "outbox_id": item.outbox_id,
            },
        )
