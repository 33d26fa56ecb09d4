"""Prometheus metrics for one server process, on a registry of its own (so tests can build many apps).

Attempts are observed as they happen, whoever ran them (the scheduler, the cron endpoint, token vending);
connections by status are read from the database at scrape time, so every process reports the same truth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from grantkeeper.service.attempt import AttemptResult
from grantkeeper.service.report import CycleReport

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StatusCollector(Collector):
    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("grantkeeper_connections", "Connections by status.", labels=["status"])
        for status, count in sorted(self._counts().items()):
            family.add_metric([status], count)
        yield family


class Metrics:
    def __init__(self, status_counts: Callable[[], Mapping[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self.attempts = Counter(
            "grantkeeper_refresh_attempts",
            "Refresh attempts by provider and outcome class.",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "grantkeeper_refresh_duration_seconds",
            "Time the provider took to answer a refresh.",
            ["provider"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.notifications = Counter(
            "grantkeeper_notifications",
            "Notifications created, by type and channel.",
            ["type", "channel"],
            registry=self.registry,
        )
        self.cycle_duration = Histogram(
            "grantkeeper_cycle_duration_seconds",
            "Duration of refresh cycles.",
            buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.lease_conflicts = Counter(
            "grantkeeper_lease_conflicts",
            "Attempts whose commit found the lease taken by another worker.",
            registry=self.registry,
        )
        self.lost_rotations = Counter(
            "grantkeeper_lost_rotations",
            "Connections disconnected because a worker died with a rotated refresh token in flight.",
            ["provider"],
            registry=self.registry,
        )
        self.recovered_in_flight = Counter(
            "grantkeeper_recovered_in_flight",
            "Attempts that succeeded after an earlier attempt's answer was lost with its worker.",
            ["provider"],
            registry=self.registry,
        )
        self.lag = Histogram(
            "grantkeeper_refresh_lag_seconds",
            "How late refresh attempts start after their connection came due (are the workers keeping up?).",
            buckets=(0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
            registry=self.registry,
        )
        self.registry.register(_StatusCollector(status_counts))

    def observe_attempt(self, result: AttemptResult) -> None:
        provider = result.claim.provider.name
        self.attempts.labels(provider, result.outcome.klass.value).inc()
        self.latency.labels(provider).observe(result.duration.total_seconds())
        for content in result.notifications:
            for channel in ("in_app", *content.channels):
                self.notifications.labels(content.type.value, channel).inc()
        if not result.is_committed:
            self.lease_conflicts.inc()
        lag = result.lag
        if lag is not None:
            self.lag.observe(lag.total_seconds())
        if result.is_lost_rotation:
            self.lost_rotations.labels(provider).inc()
        if result.is_recovered_in_flight:
            self.recovered_in_flight.labels(provider).inc()

    def observe_cycle(self, report: CycleReport) -> None:
        self.cycle_duration.observe(report.duration.total_seconds())

    def render(self) -> bytes:
        return generate_latest(self.registry)
