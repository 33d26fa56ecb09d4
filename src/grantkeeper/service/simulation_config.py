"""What to simulate: the fleet, the provider's faults, the worker fleet's capacity and the policy."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from grantkeeper.core.errors import InvalidInputError
from grantkeeper.core.policy import Policy, refresh_due_at
from grantkeeper.service.simulation_faults import FaultModel

#: Refreshes a second one worker handles at most, however short the provider's latency: its own CPU and its
#: one database session bound it. One worker on PostgreSQL did 2,000-3,300 a second on the 2-core machines of
#: ``docs/benchmarks.md`` (4,000-8,400 on SQLite): the low end, so a plan errs towards more workers;
#: ``bench/worker_vs_server.py`` measures yours.
DEFAULT_WORKER_RATE = 2_000.0
#: Beyond this a run takes hours; a sample of 100,000 already puts the sampling error well under 1%.
MAX_SIMULATED_CONNECTIONS = 1_000_000


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. ``sample`` simulates that many connections and scales counts to ``connections``."""

    connections: int = 10_000
    sample: int | None = None
    duration: timedelta = timedelta(days=7)
    token_lifetime: timedelta = timedelta(hours=1)
    faults: FaultModel = field(default_factory=FaultModel)
    latency: timedelta = timedelta(milliseconds=200)
    read_timeout: timedelta = timedelta(seconds=10)
    concurrency: int = 32
    workers: int | None = None
    worker_rate: float | None = DEFAULT_WORKER_RATE  # None: only concurrency / latency bounds a worker
    # the provider's limits as ``providers add --rate-limit / --max-concurrency`` set them: grantkeeper holds
    # every worker to them together, so refreshes beyond them wait in line instead of getting 429s
    provider_rate_limit: float | None = None
    provider_max_concurrency: int | None = None
    connections_per_user: int = 1
    poll_interval: timedelta = timedelta(seconds=5)
    policy: Policy = field(default_factory=Policy)
    seed: int = 0

    def __post_init__(self) -> None:
        positive_counts = {
            "connections": self.connections,
            "concurrency": self.concurrency,
            "connections per user": self.connections_per_user,
        }
        for name, count in positive_counts.items():
            if count < 1:
                raise InvalidInputError(f"{name} must be at least 1, got {count}")
        if self.sample is not None and not 1 <= self.sample <= self.connections:
            raise InvalidInputError(f"sample must be between 1 and connections ({self.connections:,})")
        if self.simulated_connections > MAX_SIMULATED_CONNECTIONS:
            raise InvalidInputError(
                f"simulating more than {MAX_SIMULATED_CONNECTIONS:,} connections takes too long; "
                "simulate a sample and scale it up (--sample 100000)"
            )
        if self.workers is not None and self.workers < 1:
            raise InvalidInputError(f"workers must be at least 1, got {self.workers}")
        if self.worker_rate is not None and not (math.isfinite(self.worker_rate) and self.worker_rate >= 1):
            raise InvalidInputError(
                f"worker rate must be at least 1 refresh a second, got {self.worker_rate}"
            )
        rate_limit = self.provider_rate_limit
        if rate_limit is not None and not (math.isfinite(rate_limit) and rate_limit > 0):
            raise InvalidInputError(f"provider rate limit must be a finite number over 0, got {rate_limit}")
        if self.provider_max_concurrency is not None and self.provider_max_concurrency < 1:
            raise InvalidInputError(
                f"provider max concurrency must be at least 1, got {self.provider_max_concurrency}"
            )
        self._check_durations()
        for outage in self.faults.outages:
            if outage.start >= self.duration:
                raise InvalidInputError(f"an outage starting at {outage.start} is after the simulation ends")

    def _check_durations(self) -> None:
        durations = {
            "duration": self.duration,
            "token lifetime": self.token_lifetime,
            "latency": self.latency,
            "read timeout": self.read_timeout,
            "poll interval": self.poll_interval,
        }
        for name, value in durations.items():
            if value <= timedelta(0):
                raise InvalidInputError(f"{name} must be longer than zero")
        if self.duration > timedelta(days=366):
            raise InvalidInputError("duration must be at most 366 days")
        if self.poll_interval < timedelta(milliseconds=100):
            raise InvalidInputError("poll interval must be at least 0.1 seconds")

    @property
    def provider_capacity(self) -> float | None:
        """Refreshes a second the provider's limits allow at most (a concurrency limit at the latency), None
        without limits."""
        bounds = []
        if self.provider_rate_limit is not None:
            bounds.append(self.provider_rate_limit)
        if self.provider_max_concurrency is not None:
            bounds.append(self.provider_max_concurrency / self.latency.total_seconds())
        return min(bounds) if bounds else None

    @property
    def refresh_period(self) -> timedelta:
        """How long after a refresh the policy refreshes a healthy connection again (without its jitter)."""
        at = datetime(2000, 1, 1, tzinfo=UTC)
        return refresh_due_at(at + self.token_lifetime, at, self.policy, is_fresh=True) - at

    @property
    def refresh_slack(self) -> timedelta:
        """How long a due refresh may wait before its access token expires: the policy's lead window, or
        half the lifetime of a token that lives shorter than two lead windows."""
        return self.token_lifetime - self.refresh_period

    @property
    def steady_demand(self) -> float:
        """Refreshes a second that keep every connection fresh with no fault: connections over the policy's
        refresh period for this token lifetime (without its jitter, which makes the period a little shorter
        on average; retries after faults come on top)."""
        return self.connections / max(self.refresh_period.total_seconds(), 1.0)

    @property
    def simulated_connections(self) -> int:
        return self.sample if self.sample is not None else self.connections

    @property
    def scale(self) -> float:
        return self.connections / self.simulated_connections
