"""Starting attempts: mark leased connections in flight, within each provider's limits, in one transaction.

Marking happens just before the refresh requests leave (DESIGN section 3): ``in_flight_since`` says an
answer is on its way, and the lease shrinks to the attempt's own deadline, so a worker that dies mid-request
gives its connections back as soon as no answer can still arrive; the next worker then retries them at once,
inside the rotation grace window many providers keep (Okta 30 s, Xero 30 min).

Provider limits hold across every worker because they are decided here, under a lock on the provider's row
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite runs one writer at a time): the concurrency limit counts the
provider's attempts in flight (a partial index holds only those), and the rate limit is a token bucket kept
in the provider's row. Providers without limits take no lock, so they cost one UPDATE per batch.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select, update

from grantkeeper.adapters.db import hotpath
from grantkeeper.adapters.db.tables import connections, providers
from grantkeeper.ports import AttemptStarts, ClaimedConnection

_c = connections.c
_p = providers.c

#: The bucket holds this many seconds of the rate (at least one request): any one-second window then sees
#: at most ``rate * (1 + BURST_SECONDS)`` requests started.
BURST_SECONDS = 0.05
#: How soon a batch held back by the concurrency limit asks again (slots free as answers are committed).
CONCURRENCY_RETRY_SECONDS = 0.02


@dataclass
class _Allowance:
    count: int
    wait_seconds: float = 0.0


def start_attempts(
    connection: Connection,
    claims: Sequence[ClaimedConnection],
    now: datetime,
    attempt_ttl: timedelta,
) -> AttemptStarts:
    """Mark as many claims in flight as their providers' limits allow; the rest are told how long to wait.

    Each mark is fenced on the claim's ``version`` and ``lease_owner``: a lease lost meanwhile is reported,
    never started. Provider rows are locked in primary-key order, then connection rows in primary-key order.
    Run after commits in one transaction (``commit_and_start``), a commit that flags or clears a provider
    may have locked a provider row first; should two workers then deadlock on PostgreSQL, the database
    aborts one transaction and the batcher retries its items one by one.
    """
    by_provider: dict[str, list[ClaimedConnection]] = defaultdict(list)
    for claim in claims:
        by_provider[claim.provider.provider_id].append(claim)
    to_mark: list[ClaimedConnection] = []
    waits: dict[str, float] = {}
    for provider_id in sorted(by_provider):
        group = sorted(by_provider[provider_id], key=lambda claim: claim.connection_id)
        allowance = _allowance(connection, group[0], len(group), now, attempt_ttl)
        to_mark.extend(group[: allowance.count])
        for claim in group[allowance.count :]:
            waits[claim.connection_id] = allowance.wait_seconds
    started = _mark(connection, to_mark, now, now + attempt_ttl)
    lost = frozenset(claim.connection_id for claim in to_mark) - started
    return AttemptStarts(
        started=started, lost=lost, waits=waits, lease_expires_at=now + attempt_ttl, started_at=now
    )


def _allowance(
    connection: Connection, claim: ClaimedConnection, wanted: int, now: datetime, attempt_ttl: timedelta
) -> _Allowance:
    provider = claim.provider
    if provider.max_concurrency is None and provider.rate_limit_per_second is None:
        return _Allowance(wanted)
    row = connection.execute(
        select(_p.max_concurrency, _p.rate_limit_per_second, _p.rate_tokens, _p.rate_refilled_at)
        .where(_p.id == provider.provider_id)
        .with_for_update()
    ).one()
    allowance = _Allowance(wanted)
    if row.max_concurrency is not None:
        free = row.max_concurrency - _in_flight(connection, provider.provider_id, now, attempt_ttl)
        if free < wanted:
            allowance = _Allowance(max(free, 0), CONCURRENCY_RETRY_SECONDS)
    if row.rate_limit_per_second is not None:
        allowance = _take_tokens(connection, provider.provider_id, row, allowance, now)
    return allowance


def _in_flight(connection: Connection, provider_id: str, now: datetime, attempt_ttl: timedelta) -> int:
    """Attempts of this provider started within one attempt deadline whose lease is still live.

    A row left marked by a dead worker stops counting when its lease runs out; one kept marked after a
    transient failure (the suspicion of a lost answer survives it) has no lease at all.
    """
    query = select(func.count()).where(
        _c.provider_id == provider_id,
        _c.in_flight_since.is_not(None),
        _c.in_flight_since > now - attempt_ttl,
        _c.lease_expires_at >= now,
    )
    return int(connection.scalar(query) or 0)


def _take_tokens(
    connection: Connection, provider_id: str, row: Any, allowance: _Allowance, now: datetime
) -> _Allowance:
    """Refill the provider's bucket for the time passed, take one token per request started, store it."""
    rate = float(row.rate_limit_per_second)
    capacity = max(1.0, rate * BURST_SECONDS)
    tokens = capacity if row.rate_tokens is None else float(row.rate_tokens)
    refilled_at = now if row.rate_refilled_at is None else max(row.rate_refilled_at, now)
    if row.rate_refilled_at is not None:
        elapsed = max((now - row.rate_refilled_at).total_seconds(), 0.0)  # a clock behind adds nothing
        tokens = min(capacity, tokens + elapsed * rate)
    taken = min(allowance.count, math.floor(tokens))
    tokens -= taken
    connection.execute(
        update(providers).where(_p.id == provider_id).values(rate_tokens=tokens, rate_refilled_at=refilled_at)
    )
    if taken == allowance.count:
        return allowance
    wait_seconds = max((1.0 - tokens) / rate, allowance.wait_seconds, 0.001)
    return _Allowance(taken, wait_seconds)


def _mark(
    connection: Connection, claims: Sequence[ClaimedConnection], now: datetime, deadline_at: datetime
) -> frozenset[str]:
    """Mark the batch in flight with one executemany; if fewer rows changed than were given (a lease was
    lost), the batch is marked again row by row under a savepoint so the answer says exactly which."""
    if not claims:
        return frozenset()
    hot = hotpath.for_connection(connection)
    at, deadline = hot.time_in(now), hot.time_in(deadline_at)  # converted once for the whole batch
    rows = [
        {"id": claim.connection_id, "version": claim.version, "owner": claim.lease_owner, "at": at,
         "deadline_at": deadline}
        for claim in claims
    ]  # fmt: skip
    hot.savepoint(connection)
    if hot.mark(connection, rows) == len(rows):
        hot.release(connection)
        return frozenset(claim.connection_id for claim in claims)
    hot.rollback_to(connection)
    return frozenset(
        claim.connection_id
        for claim, row in zip(claims, rows, strict=True)
        if hot.mark(connection, [row]) == 1
    )
