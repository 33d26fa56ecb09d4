"""What a simulation found, as one frozen value that prints as JSON (``to_dict``) or as a table.

Counts and rates are for the whole fleet: when only a sample was simulated they are scaled up by ``scale``
(and say so in ``note``). Per-user figures, lags and delays are per connection and are never scaled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SimulationReport:
    connections: int
    simulated_connections: int
    scale: float
    days: float
    token_lifetime_seconds: float
    users: int
    attempts: int
    successes: int
    failures_by_class: Mapping[str, int]
    failures_by_cause: Mapping[str, int]
    false_disconnections: int
    true_disconnections: int
    revocations: int
    undetected_revocations: int
    revocation_to_disconnection_minutes_p50: float | None
    revocation_to_disconnection_minutes_max: float | None
    first_rejection_to_disconnection_minutes_max: float | None
    notifications_by_type: Mapping[str, int]
    emails: int
    notifications_per_user_mean: float
    notifications_per_user_max: int
    transient_streaks: int
    transient_streaks_reaching_notice: int
    refreshes_per_minute_peak: float
    refreshes_per_minute_mean: float
    attempts_per_second_peak: float
    lag_p50_seconds: float
    lag_p99_seconds: float
    latency_seconds: float
    concurrency: int
    worker_rate: float | None
    provider_rate_limit: float | None
    provider_max_concurrency: int | None
    provider_capacity_per_second: float | None
    due_per_second_mean: float
    due_per_second_steady: float
    workers: int | None
    workers_needed: int
    due_per_second_peak: float
    workers_formula: str
    refresh_slack_minutes: float
    workers_before_expiry: int | None
    estimated_longest_wait_minutes: float | None
    lag_max_seconds: float
    backlog_at_end: int
    wall_seconds: float
    note: str

    @property
    def provider_keeps_up(self) -> bool | None:
        """Whether the provider's limits allow the refreshes that keep the connections fresh (None without
        limits): those that fell due on average, or, if more, what the policy's refresh period asks for.

        The second matters because a late refresh comes due again late: a fleet the limits hold back shows
        a mean as low as the limits themselves. Busier minutes than the mean may still wait in line; if the
        mean is over the limits, the queue grows for as long as the run lasts and access tokens expire
        before they are refreshed."""
        capacity = self.provider_capacity_per_second
        return None if capacity is None else self._demand <= capacity

    @property
    def _demand(self) -> float:
        return max(self.due_per_second_mean, self.due_per_second_steady)

    def _provider_row(self) -> str:
        capacity = self.provider_capacity_per_second
        if capacity is None:
            return "no limits"
        limits = []
        if self.provider_rate_limit is not None:
            limits.append(f"{self.provider_rate_limit:g} a second")
        if self.provider_max_concurrency is not None:
            limits.append(f"{self.provider_max_concurrency} in flight")
        demand = (
            f"due {self._demand:,.1f} a second to keep every connection fresh, "
            f"{self.due_per_second_peak:,.1f} at the busiest minute"
        )
        if not self.provider_keeps_up:
            verdict = "the limits do not keep up: the queue grows and tokens expire unrefreshed"
        elif self.due_per_second_peak > capacity:
            verdict = "keeps up on average; the busiest minutes wait in line"
        else:
            verdict = "keeps up"
        return f"{', '.join(limits)}: at most {capacity:,.1f} refreshes a second; {demand}; {verdict}"

    @property
    def kept_before_expiry(self) -> bool:
        """Whether every refresh of this run was attempted before its access token expired."""
        return self.lag_max_seconds <= self.refresh_slack_minutes * 60

    def _before_expiry_row(self) -> str:
        slack = f"the {self.refresh_slack_minutes:g} min a refresh is due before its token expires"
        if self.workers is not None:
            fleet = f"{self.workers:,} worker{'s' if self.workers > 1 else ''}"
            lag = f"with {fleet} the longest wait was {self.lag_max_seconds / 60:,.1f} min"
            if self.kept_before_expiry:
                return f"{lag}, inside {slack}"
            late = "refreshes that waited this long came after their access token expired"
            return f"{lag}, over {slack}: {late}; add workers"
        wait = f"{self.estimated_longest_wait_minutes or 0.0:,.1f} min"
        workers = self.workers_before_expiry
        if workers is None:
            limited = "the provider's limits keep the longest wait at"
            return f"none: {limited} {wait} whatever the fleet, over {slack}"
        if workers == self.workers_needed:
            return f"{workers:,}, as many as the busiest minute needs (longest wait {wait})"
        return (
            f"{workers:,}: their longest wait, {wait}, stays inside {slack} "
            f"(estimated from this run's demand by minute; check with --workers {workers})"
        )

    @property
    def notifications_total(self) -> int:
        return sum(self.notifications_by_type.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, grouped the way an operator reads it."""
        return {
            "connections": self.connections,
            "simulated_connections": self.simulated_connections,
            "scale": self.scale,
            "note": self.note,
            "days": self.days,
            "token_lifetime_seconds": self.token_lifetime_seconds,
            "attempts": self.attempts,
            "successes": self.successes,
            "failures": {"by_class": dict(self.failures_by_class), "by_cause": dict(self.failures_by_cause)},
            "false_disconnections": self.false_disconnections,
            "true_disconnections": self.true_disconnections,
            "revocations": {
                "revoked": self.revocations,
                "disconnected": self.true_disconnections,
                "undetected_at_end": self.undetected_revocations,
                "revocation_to_disconnection_minutes_p50": self.revocation_to_disconnection_minutes_p50,
                "revocation_to_disconnection_minutes_max": self.revocation_to_disconnection_minutes_max,
                "first_rejection_to_disconnection_minutes_max": (
                    self.first_rejection_to_disconnection_minutes_max
                ),
            },
            "notifications": {
                "total": self.notifications_total,
                "by_type": dict(self.notifications_by_type),
                "emails": self.emails,
                "users": self.users,
                "per_user_mean": self.notifications_per_user_mean,
                "per_user_max": self.notifications_per_user_max,
            },
            "transient_streaks": {
                "started": self.transient_streaks,
                "reached_notice_threshold": self.transient_streaks_reaching_notice,
            },
            "refresh_rate": {
                "per_minute_peak": self.refreshes_per_minute_peak,
                "per_minute_mean": self.refreshes_per_minute_mean,
                "per_second_peak": self.attempts_per_second_peak,
            },
            "lag_seconds": {"p50": self.lag_p50_seconds, "p99": self.lag_p99_seconds},
            "capacity": {
                "latency_ms": round(self.latency_seconds * 1000, 3),
                "concurrency_per_worker": self.concurrency,
                "worker_rate_per_second": self.worker_rate,  # None: no ceiling but concurrency / latency
                "workers": self.workers,  # None: unlimited
                "workers_needed": self.workers_needed,
                "due_per_second_peak": self.due_per_second_peak,
                "due_per_second_mean": self.due_per_second_mean,
                "due_per_second_steady": self.due_per_second_steady,
                "workers_formula": self.workers_formula,
                "before_expiry": {
                    # how long a due refresh may wait before its access token expires
                    "slack_minutes": self.refresh_slack_minutes,
                    # the longest a refresh waited in this run, and whether every one fitted in the slack
                    "longest_lag_minutes": round(self.lag_max_seconds / 60, 2),
                    "kept": self.kept_before_expiry,
                    # for an unlimited fleet only: the fewest workers whose longest wait fits in the slack
                    # (null: none do, the provider's limits bind), estimated from the demand by minute
                    "workers": self.workers_before_expiry,
                    "estimated_longest_wait_minutes": self.estimated_longest_wait_minutes,
                },
                "backlog_at_end": self.backlog_at_end,
                "provider": {  # the limits grantkeeper holds all workers to; null without limits
                    "rate_limit_per_second": self.provider_rate_limit,
                    "max_concurrency": self.provider_max_concurrency,
                    "capacity_per_second": self.provider_capacity_per_second,
                    "keeps_up": self.provider_keeps_up,
                },
            },
            "wall_seconds": self.wall_seconds,
        }

    def rows(self) -> list[tuple[str, str]]:
        """(metric, value) rows for the human-readable table."""

        def num(value: float | None, digits: int = 1) -> str:
            return "-" if value is None else f"{value:,.{digits}f}"

        by_type = ", ".join(f"{name} {count:,}" for name, count in self.notifications_by_type.items())
        by_cause = ", ".join(f"{name} {count:,}" for name, count in self.failures_by_cause.items() if count)
        return [
            ("connections", f"{self.connections:,} ({self.simulated_connections:,} simulated)"),
            ("simulated time", f"{self.days:g} day(s), tokens live {self.token_lifetime_seconds:g} s"),
            ("attempts", f"{self.attempts:,} ({self.successes:,} succeeded)"),
            ("failures", by_cause or "none"),
            ("false disconnections", f"{self.false_disconnections:,}"),
            ("true disconnections", f"{self.true_disconnections:,} of {self.revocations:,} revoked"),
            (
                "revocation -> disconnection",
                f"p50 {num(self.revocation_to_disconnection_minutes_p50)} min, "
                f"max {num(self.revocation_to_disconnection_minutes_max)} min",
            ),
            ("notifications", f"{self.notifications_total:,} ({by_type or 'none'}); {self.emails:,} emails"),
            (
                "notifications per user",
                f"mean {self.notifications_per_user_mean:.3f}, max {self.notifications_per_user_max}",
            ),
            (
                "refreshes per minute",
                f"peak {num(self.refreshes_per_minute_peak)}, mean {num(self.refreshes_per_minute_mean)}",
            ),
            ("lag due -> attempted", f"p50 {self.lag_p50_seconds:.1f} s, p99 {self.lag_p99_seconds:.1f} s"),
            ("workers", "unlimited" if self.workers is None else str(self.workers)),
            ("workers needed", f"{self.workers_needed:,}: {self.workers_formula}"),
            ("workers before expiry", self._before_expiry_row()),
            ("provider limits", self._provider_row()),
            ("wall time", f"{self.wall_seconds:.1f} s"),
        ]


def percentile(histogram: Mapping[float, int], fraction: float) -> float:
    """The smallest bucket value at or below which ``fraction`` of the counted values lie (0 when empty)."""
    total = sum(histogram.values())
    if total == 0:
        return 0.0
    wanted = fraction * total
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= wanted:
            return value
    return max(histogram)
