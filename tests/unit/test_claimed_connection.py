"""A claim once its attempt starts: the same claim with the attempt's lease (a fast copy, see ``started``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from grantkeeper.core.model import ConnectionState
from grantkeeper.ports import ClaimedConnection, PlainSecret, ProviderConfig

T = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_started_claim_is_the_claim_with_its_attempts_lease() -> None:
    provider = ProviderConfig("prv_1", "ten_1", "google", "https://oauth2.example.test/token", "id", "secret")
    claim = ClaimedConnection(
        "con_1", "ten_1", "u1", None, provider, ConnectionState(), PlainSecret("rt"), None, 1, "w1", T
    )
    later = T + timedelta(seconds=30)
    started = claim.started(later, T)
    assert started == replace(claim, lease_expires_at=later, started_at=T)
    assert claim.started_at is None  # the claim itself is unchanged
    assert started.refresh_token == "rt"
