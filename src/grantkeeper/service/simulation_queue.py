"""How long due refreshes wait for a fleet of a given size, and the smallest fleet that refreshes every token
before it expires: a fluid queue over the simulation's demand, minute by minute.

"Workers needed" serves the busiest minute without a queue. After an outage that minute is the provider's
return, when every connection that backed off during it comes due within the minute (``RetryProviderNow``,
a few per recovery, ninefold a poll), and it can ask for a hundred times the workers the rest of the week
needs. A fleet that small loses nothing: the burst waits in line. What must not happen is a wait so long
that access tokens expire before their refresh, so the planning figure an operator buys machines by is the
smallest fleet whose longest wait stays inside the time a refresh is due before its token expires (the
policy's lead window). This module estimates it from the demand the unlimited run recorded; ``simulate
--workers N`` plays it out exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Demand:
    """What fell due, per virtual minute, for the whole fleet (already scaled up from a sample)."""

    attempts_by_minute: Sequence[float]
    #: slot-seconds: an attempt holds a request slot for the latency, a timeout for the read timeout
    busy_by_minute: Sequence[float]


@dataclass(frozen=True)
class Fleet:
    """What one worker serves a minute, and what the provider's limits allow the whole fleet."""

    concurrency: int
    worker_rate: float | None  # refreshes a second; None: only the slots bound a worker
    provider_capacity: float | None  # refreshes a second the provider's limits allow; None: no limits


def longest_wait_minutes(demand: Demand, fleet: Fleet, workers: int) -> float:
    """The longest a due refresh waits with ``workers`` workers (to the minute: arrivals are spread evenly
    over their minute). Two queues, served in due order: attempts against the fleet's (and the provider's)
    rate, slot-seconds against the fleet's slots; the longer wait of the two is the answer."""
    slot_capacity = workers * fleet.concurrency * 60.0
    rates = [rate * 60.0 for rate in (_fleet_rate(fleet, workers), fleet.provider_capacity) if rate]
    rate_capacity = min(rates) if rates else math.inf
    return max(
        _longest_wait(demand.attempts_by_minute, rate_capacity),
        _longest_wait(demand.busy_by_minute, slot_capacity),
    )


def workers_before_expiry(demand: Demand, fleet: Fleet, slack_minutes: float, most: int) -> int | None:
    """The fewest workers (at most ``most``, which serves every minute without a queue) whose longest wait
    stays within ``slack_minutes``; None when the provider's limits keep the wait longer whatever the
    fleet (more workers cannot help)."""
    if longest_wait_minutes(demand, fleet, most) > slack_minutes:
        return None
    low, high = 1, most  # the wait never grows with the fleet: bisect for the first that fits
    while low < high:
        middle = (low + high) // 2
        if longest_wait_minutes(demand, fleet, middle) <= slack_minutes:
            high = middle
        else:
            low = middle + 1
    return low


def _fleet_rate(fleet: Fleet, workers: int) -> float | None:
    return None if fleet.worker_rate is None else workers * fleet.worker_rate


def _longest_wait(work_by_minute: Sequence[float], capacity_per_minute: float) -> float:
    """The longest wait, in minutes, of a first-come first-served queue fed ``work_by_minute``."""
    if math.isinf(capacity_per_minute):
        return 0.0
    backlog = longest = 0.0
    for work in work_by_minute:
        backlog = max(0.0, backlog + work - capacity_per_minute)
        longest = max(longest, backlog / capacity_per_minute)
    return longest
