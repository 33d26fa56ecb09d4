"""Token vending: hand the app a valid access token now, refreshing first when it would expire too soon.

Refreshes are single-flight at two levels. Inside one process, concurrent requests for one connection share
one refresh (a future per connection). Across processes and the scheduler, the refresh needs the
connection's lease; a request that finds the lease taken waits for the holder to finish and then reads the
tokens it stored. Either way a burst of requests makes one request to the provider, which matters because
a double refresh destroys rotating grants.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from grantkeeper.core.errors import GrantkeeperError
from grantkeeper.core.model import ConnectionStatus, OutcomeClass
from grantkeeper.ports import (
    ClaimedConnection,
    Clock,
    ConnectionRecord,
    ConnectionStore,
    StoredTokens,
    UnknownConnectionError,
)
from grantkeeper.service.attempt import AttemptResult, AttemptRunner

_MIN_RETRY_AFTER = timedelta(seconds=1)


class NeedsReauthorizationError(GrantkeeperError):
    """Only the user can fix this connection: it needs to be authorized again."""

    def __init__(self, connection_id: str) -> None:
        super().__init__(f"connection {connection_id} needs reauthorization")
        self.connection_id = connection_id


class TokenUnavailableError(GrantkeeperError):
    """No valid token right now, for a reason that may pass.

    ``is_transient`` tells provider trouble (rate limits, outages, a busy lease: wait and retry) from a
    refresh the provider rejected (an auth failure below the disconnect threshold: the grant may be dying,
    and the user may soon have to reconnect).
    """

    def __init__(
        self, connection_id: str, retry_after: timedelta, reason: str, *, is_transient: bool
    ) -> None:
        super().__init__(f"no valid token for connection {connection_id} right now: {reason}")
        self.connection_id = connection_id
        self.retry_after = max(retry_after, _MIN_RETRY_AFTER)
        self.reason = reason
        self.is_transient = is_transient


@dataclass(frozen=True)
class VendedToken:
    access_token: str = field(repr=False)
    expires_at: datetime | None
    token_type: str = "Bearer"  # noqa: S105 - a token type name


def is_fresh(tokens: StoredTokens, now: datetime, min_validity: timedelta) -> bool:
    """A stored access token good for at least ``min_validity``; one without a known expiry counts as good."""
    if not tokens.access_token:
        return False
    return tokens.expires_at is None or tokens.expires_at - now >= min_validity


class TokenVendor:
    """``token()`` is the use case behind ``GET /v1/connections/{id}/token``."""

    def __init__(
        self,
        store: ConnectionStore,
        runner: AttemptRunner,
        clock: Clock,
        *,
        owner: str,
        lease_ttl: timedelta,
        wait_timeout: timedelta = timedelta(seconds=30),
        poll_interval: timedelta = timedelta(milliseconds=50),
    ) -> None:
        self._store = store
        self._runner = runner
        self._clock = clock
        self._owner = owner
        self._lease_ttl = lease_ttl
        self._wait_timeout = wait_timeout
        self._poll_interval = poll_interval
        self._inflight: dict[str, asyncio.Future[VendedToken]] = {}

    async def token(self, tenant_id: str, connection_id: str, min_validity: timedelta) -> VendedToken:
        """The hot path is one read: a fresh stored token goes straight back."""
        tokens = await asyncio.to_thread(
            self._store.read_tokens, tenant_id, connection_id, with_refresh_token=False
        )
        if tokens is None:
            raise UnknownConnectionError([connection_id])
        if tokens.status is not ConnectionStatus.CONNECTED:
            raise NeedsReauthorizationError(connection_id)
        if is_fresh(tokens, self._clock.now(), min_validity):
            return _vended(tokens)
        record = await self._connection(tenant_id, connection_id)
        _raise_if_backing_off(record, self._clock.now())
        return await self._single_flight(tenant_id, connection_id, min_validity)

    async def _connection(self, tenant_id: str, connection_id: str) -> ConnectionRecord:
        record = await asyncio.to_thread(self._store.get_connection, tenant_id, connection_id)
        if record is None:
            raise UnknownConnectionError([connection_id])
        if record.state.status is not ConnectionStatus.CONNECTED:
            raise NeedsReauthorizationError(connection_id)
        return record

    async def _single_flight(
        self, tenant_id: str, connection_id: str, min_validity: timedelta
    ) -> VendedToken:
        flight = self._inflight.get(connection_id)
        if flight is None:
            flight = asyncio.ensure_future(self._refresh(tenant_id, connection_id, min_validity))
            self._inflight[connection_id] = flight
            flight.add_done_callback(lambda done: self._landed(connection_id, done))
        # shield: one caller giving up (a client disconnect) must not cancel the refresh the others wait on
        return await asyncio.shield(flight)

    def _landed(self, connection_id: str, flight: asyncio.Future[VendedToken]) -> None:
        self._inflight.pop(connection_id, None)
        if not flight.cancelled():
            flight.exception()  # retrieved here, so a flight whose waiters all left logs no warning

    async def _refresh(self, tenant_id: str, connection_id: str, min_validity: timedelta) -> VendedToken:
        """Take the lease and refresh, or wait for whoever holds it and use what they stored."""
        deadline = time.monotonic() + self._wait_timeout.total_seconds()
        while True:
            claims = await asyncio.to_thread(
                self._store.claim_ids,
                tenant_id,
                [connection_id],
                self._clock.now(),
                self._owner,
                self._lease_ttl,
            )
            if claims:
                vended = await self._refresh_claimed(claims[0], min_validity)
                if vended is not None:
                    return vended
            else:
                await self._connection(tenant_id, connection_id)  # deleted or disconnected meanwhile?
                tokens = await asyncio.to_thread(
                    self._store.read_tokens, tenant_id, connection_id, with_refresh_token=False
                )
                if tokens is not None and is_fresh(tokens, self._clock.now(), min_validity):
                    return _vended(tokens)
            if time.monotonic() >= deadline:
                raise TokenUnavailableError(
                    connection_id, _MIN_RETRY_AFTER, "another refresh is in progress", is_transient=True
                )
            await asyncio.sleep(self._poll_interval.total_seconds())

    async def _refresh_claimed(self, claim: ClaimedConnection, min_validity: timedelta) -> VendedToken | None:
        """With the lease held: someone may have refreshed just before us; if not, refresh now."""
        stored = StoredTokens(claim.access_token, claim.refresh_token, claim.state.expires_at)
        if is_fresh(stored, self._clock.now(), min_validity):
            await asyncio.to_thread(self._store.release, claim)
            return _vended(stored)
        result = await self._runner.run(claim)
        if result is None:  # the lease was too short to start safely; take a new one
            return None
        return self._outcome(result)

    def _outcome(self, result: AttemptResult) -> VendedToken:
        connection_id = result.claim.connection_id
        tokens = result.outcome.tokens
        if result.outcome.klass is OutcomeClass.SUCCESS and tokens is not None and result.is_committed:
            return VendedToken(tokens.access_token, tokens.expires_at, tokens.token_type)
        state = result.transition.state
        if state.status is not ConnectionStatus.CONNECTED:
            raise NeedsReauthorizationError(connection_id)
        reason = result.outcome.error.code if result.outcome.error else result.outcome.klass.value
        if not result.is_committed:
            reason = "the refresh could not be recorded"
        retry_at = state.next_attempt_at or self._clock.now()
        is_transient = result.outcome.klass is not OutcomeClass.AUTH or not result.is_committed
        raise TokenUnavailableError(
            connection_id, retry_at - self._clock.now(), reason, is_transient=is_transient
        )


def _vended(tokens: StoredTokens) -> VendedToken:
    assert tokens.access_token is not None  # is_fresh checked it
    return VendedToken(tokens.access_token, tokens.expires_at)


def _raise_if_backing_off(record: ConnectionRecord, now: datetime) -> None:
    """After a failure the policy chose when to try again (Retry-After, backoff): an app asking for a token
    does not get to hammer a provider that asked us to wait."""
    state = record.state
    is_failing = state.consecutive_failures or state.consecutive_transient_failures
    if is_failing and state.next_attempt_at is not None and state.next_attempt_at > now:
        reason = state.last_error.code if state.last_error else "backing off after a failed refresh"
        is_transient = state.consecutive_transient_failures > 0 and not state.consecutive_failures
        raise TokenUnavailableError(
            record.connection_id, state.next_attempt_at - now, reason, is_transient=is_transient
        )
