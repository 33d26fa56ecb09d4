"""The simulated provider: what a token endpoint answers, drawn from a fault model, without any HTTP.

The fault outcomes are built once by the real classifier from the responses a provider would send (a 429, a
503, a read timeout, a 400 ``invalid_grant``), so the simulation feeds ``step`` exactly what the refresh
engine would. Only successes are built per attempt, because their expiry depends on the instant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from grantkeeper.core.classify import classify_fault, classify_response
from grantkeeper.core.errors import InvalidInputError
from grantkeeper.core.model import NetworkFault, Outcome, OutcomeClass, TokenSet
from grantkeeper.core.oauth_wire import RawResponse

_DAY_SECONDS = 86_400.0
_JSON = "application/json"


@dataclass(frozen=True)
class Outage:
    """From ``start`` (after the simulation begins) for ``duration``, every attempt gets a 503."""

    start: timedelta
    duration: timedelta

    def __post_init__(self) -> None:
        if self.start < timedelta(0):
            raise InvalidInputError("an outage cannot start before the simulation")
        if self.duration <= timedelta(0):
            raise InvalidInputError("an outage must last longer than zero")


@dataclass(frozen=True)
class FaultModel:
    """How a provider misbehaves. Rates are probabilities per attempt and are drawn independently of time.

    ``spurious_invalid_grant`` is a live grant answered ``400 invalid_grant`` (providers do this during
    incidents); it is the only fault that can falsely disconnect a connection, so it tests the thresholds.
    ``revocations_per_day`` is the chance that a given connection's grant is revoked within any one day;
    after that the provider answers ``invalid_grant`` for good.
    """

    rate_limit: float = 0.0
    server_error: float = 0.0
    timeout: float = 0.0
    spurious_invalid_grant: float = 0.0
    revocations_per_day: float = 0.0
    outages: tuple[Outage, ...] = ()
    retry_after: timedelta | None = None

    def __post_init__(self) -> None:
        rates = {
            "429 rate": self.rate_limit,
            "5xx rate": self.server_error,
            "timeout rate": self.timeout,
            "invalid_grant rate": self.spurious_invalid_grant,
            "revocations per day": self.revocations_per_day,
        }
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:  # also refuses NaN
                raise InvalidInputError(f"{name} must be between 0 and 1, got {rate}")
        if self.failure_rate > 1.0:
            raise InvalidInputError(
                f"the per-attempt fault rates add up to {self.failure_rate:g}; they must not exceed 1"
            )
        if self.retry_after is not None and self.retry_after < timedelta(0):
            raise InvalidInputError("Retry-After cannot be negative")

    @property
    def failure_rate(self) -> float:
        return self.rate_limit + self.server_error + self.timeout + self.spurious_invalid_grant

    def revocation_hazard_per_second(self) -> float:
        """The constant hazard that revokes ``revocations_per_day`` of the connections within each day."""
        if self.revocations_per_day >= 1.0:
            return math.inf
        return -math.log1p(-self.revocations_per_day) / _DAY_SECONDS


def _retry_after_header(retry_after: timedelta | None) -> str | None:
    return None if retry_after is None else str(int(retry_after.total_seconds()))


@dataclass(frozen=True)
class ProviderAnswers:
    """The classified outcome of every answer the simulated provider gives, and the cumulative draw bounds."""

    rate_limited: Outcome
    server_error: Outcome
    timed_out: Outcome
    rejected: Outcome
    bounds: tuple[float, float, float, float]

    @classmethod
    def build(cls, faults: FaultModel, now: datetime) -> ProviderAnswers:
        def answer(status: int, body: bytes, retry_after: str | None = None) -> Outcome:
            response = RawResponse(status, _JSON, body, retry_after)
            return classify_response(response, now=now, default_expires_in=3600)

        rate_limited = answer(429, b'{"error": "rate_limited"}', _retry_after_header(faults.retry_after))
        server_error = answer(503, b"")
        rejected = answer(400, b'{"error": "invalid_grant", "error_description": "revoked"}')
        timed_out = classify_fault(NetworkFault.READ_TIMEOUT, "simulated")
        for outcome, klass in ((rate_limited, OutcomeClass.TRANSIENT), (rejected, OutcomeClass.AUTH)):
            assert outcome.klass is klass, outcome  # the classifier and the fault model must agree
        first = faults.rate_limit
        second = first + faults.server_error
        third = second + faults.timeout
        bounds = (first, second, third, third + faults.spurious_invalid_grant)
        return cls(rate_limited, server_error, timed_out, rejected, bounds)


def success(now: datetime, token_lifetime: timedelta) -> Outcome:
    """A 200 with a new access token and a rotated refresh token (its value does not matter here)."""
    tokens = TokenSet(
        access_token="simulated-access",  # noqa: S106 - a placeholder, not a secret
        refresh_token="simulated-rotated",  # noqa: S106
        expires_at=now + token_lifetime,
    )
    return Outcome(OutcomeClass.SUCCESS, 200, tokens=tokens)
