"""The counters a simulation keeps while it runs, and the report they become (scaled when sampled)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from grantkeeper.core.model import NotificationType, Notify
from grantkeeper.service.simulation_config import SimulationConfig
from grantkeeper.service.simulation_queue import Demand, Fleet, longest_wait_minutes, workers_before_expiry
from grantkeeper.service.simulation_report import SimulationReport, percentile

# What produced an attempt's outcome; indexes into ``Tally.causes`` (a list is the cheapest counter).
SUCCEEDED, RATE_LIMITED, SERVER_ERROR, TIMED_OUT, SPURIOUS_INVALID_GRANT, OUTAGE, REVOKED = range(7)
CAUSE_NAMES = (
    "success",
    "rate_limited",
    "server_error",
    "timeout",
    "spurious_invalid_grant",
    "outage",
    "revoked",
)
TRANSIENT_CAUSES = (RATE_LIMITED, SERVER_ERROR, TIMED_OUT, OUTAGE)
AUTH_CAUSES = (SPURIOUS_INVALID_GRANT, REVOKED)


class Tally:
    """Running counts. Lags are a histogram in tenths of a second (whole seconds past ten minutes)."""

    def __init__(self, config: SimulationConfig, end_seconds: float, connections: int) -> None:
        minutes = math.floor(end_seconds / 60) + 1
        self.causes = [0] * len(CAUSE_NAMES)
        self.attempts_by_minute = [0] * minutes  # by the minute they were made: the provider's view
        self.due_by_minute = [0] * minutes  # by the minute they fell due: the demand on the fleet
        self.timeouts_by_due_minute = [0] * minutes
        self.lags: dict[int, int] = {}
        self.latency_seconds = config.latency.total_seconds()
        self.read_timeout_seconds = config.read_timeout.total_seconds()
        self.notifications: Counter[NotificationType] = Counter()
        self.emails = 0
        self._connections_per_user = config.connections_per_user
        self.per_user = [0] * math.ceil(connections / config.connections_per_user)
        self.false_disconnections = 0
        self.true_disconnections = 0
        self.revocation_delays: list[float] = []
        self.max_rejection_delay: float | None = None
        self.transient_streaks = 0
        self.transient_streaks_reaching_notice = 0
        self.backlog_at_end = 0

    def notify(self, index: int, effect: Notify) -> None:
        self.notifications[effect.type] += 1
        self.emails += effect.email
        self.per_user[index // self._connections_per_user] += 1

    def merge(self, other: Tally) -> None:
        """Add a later shard's counts; its users follow this shard's (shards split at user boundaries)."""
        self.causes = [a + b for a, b in zip(self.causes, other.causes, strict=True)]
        for mine, theirs in (
            (self.attempts_by_minute, other.attempts_by_minute),
            (self.due_by_minute, other.due_by_minute),
            (self.timeouts_by_due_minute, other.timeouts_by_due_minute),
        ):
            mine[:] = [a + b for a, b in zip(mine, theirs, strict=True)]
        for key, count in other.lags.items():
            self.lags[key] = self.lags.get(key, 0) + count
        self.notifications.update(other.notifications)
        self.emails += other.emails
        self.per_user.extend(other.per_user)
        self.false_disconnections += other.false_disconnections
        self.true_disconnections += other.true_disconnections
        self.revocation_delays.extend(other.revocation_delays)
        if other.max_rejection_delay is not None:
            self.max_rejection_delay = max(self.max_rejection_delay or 0.0, other.max_rejection_delay)
        self.transient_streaks += other.transient_streaks
        self.transient_streaks_reaching_notice += other.transient_streaks_reaching_notice
        self.backlog_at_end += other.backlog_at_end

    def record_true_disconnection(self, since_revocation: float, since_first_rejection: float) -> None:
        self.true_disconnections += 1
        self.revocation_delays.append(since_revocation)
        self.max_rejection_delay = max(self.max_rejection_delay or 0.0, since_first_rejection)


@dataclass(frozen=True)
class Truth:
    """What only the simulator knows: how many grants were revoked, and how many of those went unnoticed."""

    revocations: int
    undetected_revocations: int

    def __add__(self, other: Truth) -> Truth:
        return Truth(
            self.revocations + other.revocations, self.undetected_revocations + other.undetected_revocations
        )


def build_report(
    config: SimulationConfig, tally: Tally, truth: Truth, wall_seconds: float
) -> SimulationReport:
    scale = config.scale

    def scaled(count: float) -> int:
        return round(count * scale)

    causes = tally.causes
    attempts = sum(causes)
    minutes = config.duration.total_seconds() / 60
    peak_minute = max(tally.attempts_by_minute)
    demand, fleet = _demand(config, tally), _fleet(config)
    workers_needed, peak_due_per_second, formula = _workers_needed(config, tally, demand)
    slack_minutes = config.refresh_slack.total_seconds() / 60
    # an estimate only for an unlimited fleet: a smaller one's demand is already shaped by its queue
    before_expiry: int | None = None
    estimated_wait: float | None = None
    if config.workers is None:
        before_expiry = workers_before_expiry(demand, fleet, slack_minutes, most=workers_needed)
        estimated_wait = round(longest_wait_minutes(demand, fleet, before_expiry or workers_needed), 2)
    users = len(tally.per_user)
    delays = sorted(tally.revocation_delays)
    return SimulationReport(
        connections=config.connections,
        simulated_connections=config.simulated_connections,
        scale=scale,
        days=config.duration.total_seconds() / 86_400,
        token_lifetime_seconds=config.token_lifetime.total_seconds(),
        users=math.ceil(config.connections / config.connections_per_user),
        attempts=scaled(attempts),
        successes=scaled(causes[SUCCEEDED]),
        failures_by_class={
            "transient": scaled(sum(causes[c] for c in TRANSIENT_CAUSES)),
            "auth": scaled(sum(causes[c] for c in AUTH_CAUSES)),
        },
        failures_by_cause={name: scaled(causes[c]) for c, name in enumerate(CAUSE_NAMES) if c != SUCCEEDED},
        false_disconnections=scaled(tally.false_disconnections),
        true_disconnections=scaled(tally.true_disconnections),
        revocations=scaled(truth.revocations),
        undetected_revocations=scaled(truth.undetected_revocations),
        revocation_to_disconnection_minutes_p50=_minutes(delays[len(delays) // 2] if delays else None),
        revocation_to_disconnection_minutes_max=_minutes(delays[-1] if delays else None),
        first_rejection_to_disconnection_minutes_max=_minutes(tally.max_rejection_delay),
        notifications_by_type={kind.value: scaled(tally.notifications[kind]) for kind in NotificationType},
        emails=scaled(tally.emails),
        notifications_per_user_mean=round(sum(tally.per_user) / users, 4),
        notifications_per_user_max=max(tally.per_user),
        transient_streaks=scaled(tally.transient_streaks),
        transient_streaks_reaching_notice=scaled(tally.transient_streaks_reaching_notice),
        refreshes_per_minute_peak=round(peak_minute * scale, 1),
        refreshes_per_minute_mean=round(attempts * scale / minutes, 1),
        attempts_per_second_peak=round(peak_minute * scale / 60, 2),
        lag_p50_seconds=percentile(_lag_seconds(tally.lags), 0.50),
        lag_p99_seconds=percentile(_lag_seconds(tally.lags), 0.99),
        latency_seconds=tally.latency_seconds,
        concurrency=config.concurrency,
        worker_rate=config.worker_rate,
        provider_rate_limit=config.provider_rate_limit,
        provider_max_concurrency=config.provider_max_concurrency,
        provider_capacity_per_second=_rounded(config.provider_capacity),
        due_per_second_mean=round(sum(tally.due_by_minute) * scale / minutes / 60, 2),
        due_per_second_steady=round(config.steady_demand, 2),
        workers=config.workers,
        workers_needed=workers_needed,
        due_per_second_peak=peak_due_per_second,
        workers_formula=formula,
        refresh_slack_minutes=round(slack_minutes, 2),
        workers_before_expiry=before_expiry,
        estimated_longest_wait_minutes=estimated_wait,
        lag_max_seconds=max(_lag_seconds(tally.lags), default=0.0),
        backlog_at_end=scaled(tally.backlog_at_end),
        wall_seconds=round(wall_seconds, 2),
        note=_note(config),
    )


def _workers_needed(config: SimulationConfig, tally: Tally, demand: Demand) -> tuple[int, float, str]:
    """The workers the busiest minute needs: enough slots for its attempts, and enough workers for its rate.

    Slots: ceil(peak attempts per second x latency / concurrency), the slots the busiest minute keeps busy.
    Rate: ceil(peak attempts per second / worker rate), since a worker handles only so many refreshes a second
    (its CPU, its database session) however short the latency; with a fast provider this is what binds.

    Attempts count in the minute they fell due, not the one they were made in, so a run with too few
    ``workers`` reports the demand it faced rather than its capped throughput (retries that waited in the
    queue back off from later, so that demand can be lower than an unlimited fleet's). A timeout holds its
    slot for the read timeout, not the latency, so with timeouts busy seconds are counted.
    Returns the workers, the peak attempts per second and the formula in words and numbers.
    """
    latency, read_timeout = tally.latency_seconds, tally.read_timeout_seconds
    peak_due_per_second = max(tally.due_by_minute) * config.scale / 60
    busy_per_second = max(demand.busy_by_minute) / 60
    for_slots = max(1, math.ceil(busy_per_second / config.concurrency - 1e-9))
    if not any(tally.timeouts_by_due_minute):
        formula = (
            f"ceil(peak attempts/s x latency / concurrency per worker) = "
            f"ceil({peak_due_per_second:,.2f} x {latency:g} s / {config.concurrency}) = {for_slots}"
        )
    else:
        formula = (
            f"ceil(peak busy slot-seconds per second / concurrency per worker) = "
            f"ceil({busy_per_second:,.2f} / {config.concurrency}) = {for_slots}; an attempt holds a slot "
            f"for the latency ({latency:g} s), a timeout for the read timeout ({read_timeout:g} s)"
        )
    rate = config.worker_rate
    if rate is None:
        return for_slots, round(peak_due_per_second, 2), formula
    for_rate = max(1, math.ceil(peak_due_per_second / rate - 1e-9))
    rate_formula = (
        f"ceil(peak attempts/s / worker rate) = ceil({peak_due_per_second:,.2f} / {rate:g}) = {for_rate}"
    )
    if for_rate > for_slots:
        formula = f"{rate_formula}: the workers' own rate binds, not their slots ({formula})"
    else:
        formula = f"{formula}; the workers' own rate needs fewer: {rate_formula}"
    return max(for_slots, for_rate), round(peak_due_per_second, 2), formula


def _busy_slot_seconds(config: SimulationConfig, tally: Tally) -> list[float]:
    """Per minute of due time: the slot-seconds its attempts hold (a timeout holds one for the read timeout,
    every other attempt for the latency), for the whole fleet."""
    latency, read_timeout = tally.latency_seconds, tally.read_timeout_seconds
    return [
        (due * latency + timeouts * (read_timeout - latency)) * config.scale
        for due, timeouts in zip(tally.due_by_minute, tally.timeouts_by_due_minute, strict=True)
    ]


def _demand(config: SimulationConfig, tally: Tally) -> Demand:
    return Demand(
        attempts_by_minute=[due * config.scale for due in tally.due_by_minute],
        busy_by_minute=_busy_slot_seconds(config, tally),
    )


def _fleet(config: SimulationConfig) -> Fleet:
    return Fleet(config.concurrency, config.worker_rate, config.provider_capacity)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _lag_seconds(lags: dict[int, int]) -> dict[float, int]:
    return {key / 10: count for key, count in lags.items()}


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60, 1)


def _note(config: SimulationConfig) -> str:
    if config.sample is None or config.sample == config.connections:
        return f"simulated all {config.connections:,} connections"
    times = "\N{MULTIPLICATION SIGN}"
    return (
        f"sampled {config.simulated_connections:,} of {config.connections:,}, counts scaled {times}"
        f"{config.scale:g}; per-user figures, lags and delays are the sample's"
    )
