"""What a cycle did, for the CLI, the cron endpoint and the logs: counts by outcome and one row per attempt.

Rows carry ids, outcomes, counters and status, never a token.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from grantkeeper.core.model import ConnectionStatus, NotificationType, OutcomeClass
from grantkeeper.service.attempt import AttemptResult

#: A provider whose attempts in one cycle fail at least this often (over at least ``_ALERT_MIN_ATTEMPTS``)
#: gets an operator alert: most users cannot all have revoked access at once.
_ALERT_FAILURE_RATIO = 0.8
_ALERT_MIN_ATTEMPTS = 10
#: Rows kept for a verbose report; a cycle over a big backlog keeps only counts beyond this (memory).
MAX_ROWS = 10_000


class AttemptRow(NamedTuple):
    """One line of a verbose cycle report: ids, outcome, counters and status; never a token.

    A named tuple, not a frozen dataclass: a worker makes one per refresh (up to ``MAX_ROWS`` a cycle), and a
    frozen dataclass of eleven fields took 2.4 µs to build against 0.4 µs (``docs/benchmarks.md``)."""

    connection_id: str
    provider: str
    user_id: str
    outcome: OutcomeClass
    error_code: str | None
    http_status: int | None
    consecutive_failures: int
    consecutive_transient_failures: int
    status: ConnectionStatus
    is_stale: bool
    is_committed: bool


@dataclass
class CycleReport:
    started_at: datetime
    finished_at: datetime | None = None
    due: int = 0
    by_outcome: Counter[str] = field(default_factory=Counter)
    newly_disconnected: int = 0
    notifications: Counter[str] = field(default_factory=Counter)
    stale: int = 0
    skipped: int = 0
    errors: int = 0
    lease_conflicts: int = 0
    lost_rotations: int = 0
    recovered_in_flight: int = 0
    probes: int = 0
    lags: list[float] = field(default_factory=list)  # seconds from due to started, per attempt
    provider_alerts: list[str] = field(default_factory=list)
    rows: list[AttemptRow] = field(default_factory=list)
    rows_dropped: int = 0
    provider_attempts: Counter[str] = field(default_factory=Counter)
    provider_failures: Counter[str] = field(default_factory=Counter)

    @property
    def refreshed(self) -> int:
        return self.by_outcome[OutcomeClass.SUCCESS.value]

    @property
    def duration(self) -> timedelta:
        return (self.finished_at or self.started_at) - self.started_at

    def add(self, result: AttemptResult) -> None:
        self.by_outcome[result.outcome.klass.value] += 1
        state = result.transition.state
        was_connected = result.claim.state.status is ConnectionStatus.CONNECTED
        if was_connected and state.status is ConnectionStatus.NEEDS_REAUTHORIZATION:
            self.newly_disconnected += 1
        for content in result.notifications:
            self.notifications[content.type.value] += 1
        self.stale += result.transition.is_stale
        self.lease_conflicts += not result.is_committed
        self.lost_rotations += result.is_lost_rotation
        self.recovered_in_flight += result.is_recovered_in_flight
        lag = result.lag
        if lag is not None:
            self.lags.append(lag.total_seconds())
        provider = result.claim.provider.name
        self.provider_attempts[provider] += 1
        self.provider_failures[provider] += result.outcome.klass is not OutcomeClass.SUCCESS
        if len(self.rows) < MAX_ROWS:
            self.rows.append(_row(result))
        else:
            self.rows_dropped += 1

    def as_dict(self, *, verbose: bool = False) -> dict[str, object]:
        """The JSON summary (CLI ``--json`` and the cron endpoint)."""
        summary: dict[str, object] = {
            "started_at": self.started_at.isoformat(),
            "finished_at": (self.finished_at or self.started_at).isoformat(),
            "duration_seconds": round(self.duration.total_seconds(), 3),
            "due": self.due,
            "refreshed": self.refreshed,
            "by_outcome": {klass.value: self.by_outcome[klass.value] for klass in OutcomeClass},
            "newly_disconnected": self.newly_disconnected,
            "notifications_created": sum(self.notifications.values()),
            "notifications": {kind.value: self.notifications[kind.value] for kind in NotificationType},
            "stale": self.stale,
            "skipped": self.skipped,
            "errors": self.errors,
            "lease_conflicts": self.lease_conflicts,
            "lost_rotations": self.lost_rotations,
            "recovered_in_flight": self.recovered_in_flight,
            "probes": self.probes,
            "lag_seconds": _percentiles(self.lags),
            "provider_alerts": list(self.provider_alerts),
        }
        if verbose:
            summary["connections"] = [_row_dict(row) for row in self.rows]
            summary["connections_not_listed"] = self.rows_dropped
        return summary


def _percentiles(values: list[float]) -> dict[str, float | None]:
    """p50, p99 and max of the lags (nearest rank); None when nothing was attempted."""
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 3)

    return {"p50": rank(0.5), "p99": rank(0.99), "max": round(ordered[-1], 3)}


def _row(result: AttemptResult) -> AttemptRow:
    state = result.transition.state
    return AttemptRow(
        connection_id=result.claim.connection_id,
        provider=result.claim.provider.name,
        user_id=result.claim.user_id,
        outcome=result.outcome.klass,
        error_code=result.outcome.error.code if result.outcome.error else None,
        http_status=result.outcome.http_status,
        consecutive_failures=state.consecutive_failures,
        consecutive_transient_failures=state.consecutive_transient_failures,
        status=state.status,
        is_stale=result.transition.is_stale,
        is_committed=result.is_committed,
    )


def _row_dict(row: AttemptRow) -> dict[str, object]:
    return {
        "id": row.connection_id,
        "provider": row.provider,
        "user_id": row.user_id,
        "outcome": row.outcome.value,
        "error_code": row.error_code,
        "http_status": row.http_status,
        "consecutive_failures": row.consecutive_failures,
        "consecutive_transient_failures": row.consecutive_transient_failures,
        "status": row.status.value,
        "stale": row.is_stale,
    }


def failing_providers(attempts: Counter[str], failures: Counter[str]) -> list[str]:
    """Providers whose refreshes failed for most connections in this cycle: an operator problem."""
    return sorted(
        name
        for name, count in attempts.items()
        if count >= _ALERT_MIN_ATTEMPTS and failures[name] / count >= _ALERT_FAILURE_RATIO
    )
