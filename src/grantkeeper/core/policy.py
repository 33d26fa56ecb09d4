"""The policy's knobs, with DESIGN section 2's defaults, and the scheduling arithmetic that uses them.

The defaults make the origin write-up's timelines hold exactly with 5-minute cycles: an auth failure is
retried at the next cycle (so failures land at 0:00, 0:05, 0:10), and the first transient retries back off
by less than one cycle, so five 429s in a row take five cycles.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from grantkeeper.core.errors import InvalidSettingError


@dataclass(frozen=True)
class Policy:
    """Thresholds count failures of one class since the last success; intervals are ``timedelta``s."""

    warning_threshold: int = 2
    disconnect_threshold: int = 3
    rate_limit_notice_threshold: int = 5
    refresh_lead: timedelta = timedelta(minutes=10)
    cycle_interval: timedelta = timedelta(minutes=5)
    schedule_tolerance: timedelta = timedelta(seconds=30)
    max_idle_interval: timedelta = timedelta(days=7)
    stale_after: timedelta = timedelta(hours=24)
    transient_backoff_base: timedelta = timedelta(seconds=15)
    max_backoff: timedelta = timedelta(hours=6)
    config_retry_interval: timedelta = timedelta(minutes=30)
    refresh_spread: timedelta = timedelta(minutes=5)
    provider_recovery_threshold: int = 2
    #: How many of the provider's other backed-off connections one recovery makes due (``RetryProviderNow``).
    provider_wake_batch: int = 8

    def __post_init__(self) -> None:
        for name in (
            "warning_threshold",
            "disconnect_threshold",
            "rate_limit_notice_threshold",
            "provider_recovery_threshold",
            "provider_wake_batch",
        ):
            if getattr(self, name) < 1:
                raise InvalidSettingError(f"{name} must be at least 1")
        for name in (
            "refresh_lead",
            "cycle_interval",
            "max_idle_interval",
            "stale_after",
            "transient_backoff_base",
            "max_backoff",
            "config_retry_interval",
        ):
            if getattr(self, name) <= timedelta(0):
                raise InvalidSettingError(f"{name} must be positive")
        if self.refresh_spread < timedelta(0):
            raise InvalidSettingError("refresh_spread must be at least 0")
        if not timedelta(0) <= self.schedule_tolerance < self.cycle_interval:
            raise InvalidSettingError("schedule_tolerance must be at least 0 and shorter than cycle_interval")

    @property
    def auth_retry_interval(self) -> timedelta:
        """Retry at "the next cycle": due a little before it, so a cycle starting early still takes it."""
        return self.cycle_interval - self.schedule_tolerance


def refresh_due_at(
    expires_at: datetime | None,
    now: datetime,
    policy: Policy,
    *,
    is_fresh: bool = False,
    rng: random.Random | None = None,
) -> datetime:
    """When a healthy connection should next be refreshed: ``refresh_lead`` before its access token expires.

    At least every ``max_idle_interval`` too, because idle refresh tokens die at many providers
    (Microsoft after 90 days, Xero after 60). For a token we were just issued (``is_fresh``), never earlier
    than half its lifetime, so a provider whose tokens live shorter than the lead window is refreshed at
    half-life instead of on every poll.

    With ``rng``, the time moves earlier by a random part of ``refresh_spread`` (at most a tenth of the
    token's remaining life): connections imported or reconnected together drift apart a little on every
    refresh instead of all coming due in the same minute forever, and the provider sees a smooth rate.
    """
    idle_due_at = now + policy.max_idle_interval
    if expires_at is None:
        return idle_due_at
    due_at = expires_at - policy.refresh_lead
    if rng is not None and expires_at > now:
        due_at -= min(policy.refresh_spread, (expires_at - now) / 10) * rng.random()
    if is_fresh and expires_at > now:
        due_at = max(due_at, now + (expires_at - now) / 2)
    return max(min(due_at, idle_due_at), now) if is_fresh else min(due_at, idle_due_at)


def transient_backoff(
    failures: int, retry_after: timedelta | None, policy: Policy, rng: random.Random
) -> timedelta:
    """Exponential backoff with "equal jitter" (half fixed, half random), floored by ``Retry-After``.

    Both are capped at ``max_backoff``, so a hostile ``Retry-After: 999999999`` cannot park a connection
    forever.
    """
    exponent = min(max(failures - 1, 0), 32)
    ceiling = min(policy.transient_backoff_base * (2**exponent), policy.max_backoff)
    delay: timedelta = ceiling / 2 + ceiling / 2 * rng.random()
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, policy.max_backoff)


def probe_horizon(now: datetime, policy: Policy) -> datetime:
    """How far ahead a provider's next retry may lie while its connections back off from transient failures.

    Backoff spares a provider that is down, but if every connection waits hours, nobody notices when it is
    back. So once per cycle at least one of its failing connections is tried (a probe): when the earliest
    scheduled retry lies beyond this horizon, that connection is made due now. Its success then wakes the
    others (``RetryProviderNow``), so all recover within about one cycle of the provider's return.
    """
    return now + policy.auth_retry_interval
