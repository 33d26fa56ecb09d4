"""Administrative use cases shared by the CLI and the HTTP API: providers, imports, reconnects.

Each validates its input completely before touching the store, so bad input changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from grantkeeper.core.errors import InvalidInputError
from grantkeeper.core.machine import initial_state, reconnect
from grantkeeper.core.model import TokenSet
from grantkeeper.core.policy import Policy
from grantkeeper.core.urls import validate_token_url
from grantkeeper.ports import Clock, ConnectionStore, NewConnection, NewProvider, ProviderConfig
from grantkeeper.service.importing import LineError, parse_import


def check_endpoint_url(url: str, *, field: str = "token URL") -> None:
    """HTTPS only, except plain http to loopback (the sandbox, local development): DESIGN section 4."""
    try:
        validate_token_url(url, field=field)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def add_provider(store: ConnectionStore, tenant_id: str, provider: NewProvider) -> ProviderConfig:
    if not provider.name.strip() or len(provider.name) > 100:
        raise InvalidInputError("provider name must be 1 to 100 characters")
    if not provider.client_id.strip():
        raise InvalidInputError("client id must not be empty")
    if not provider.client_secret:
        raise InvalidInputError("client secret must not be empty")
    if provider.default_expires_in < 1:
        raise InvalidInputError("default expires_in must be at least 1 second")
    check_limits(provider.max_concurrency, provider.rate_limit_per_second)
    check_endpoint_url(provider.token_url)
    for field, url in (
        ("revocation URL", provider.revocation_url),
        ("authorize URL", provider.authorize_url),
        ("introspection URL", provider.introspection_url),
    ):
        if url is not None:
            check_endpoint_url(url, field=field)
    return store.add_provider(tenant_id, provider)


MAX_CONCURRENCY_LIMIT = 10_000
MAX_RATE_LIMIT = 100_000.0


def check_limits(max_concurrency: int | None, rate_limit_per_second: float | None) -> None:
    """A limit is a positive number (None: unlimited); the bounds only catch typos, not real providers."""
    if max_concurrency is not None and not 1 <= max_concurrency <= MAX_CONCURRENCY_LIMIT:
        raise InvalidInputError(f"max concurrency must be 1 to {MAX_CONCURRENCY_LIMIT}")
    if rate_limit_per_second is not None and not (
        math.isfinite(rate_limit_per_second) and 0.01 <= rate_limit_per_second <= MAX_RATE_LIMIT
    ):
        raise InvalidInputError(f"rate limit must be 0.01 to {MAX_RATE_LIMIT:g} requests per second")


@dataclass(frozen=True)
class ImportResult:
    connection_ids: list[str]
    errors: list[LineError]

    @property
    def is_ok(self) -> bool:
        return not self.errors


def import_connections(
    store: ConnectionStore, tenant_id: str, lines: Iterable[str], policy: Policy, clock: Clock
) -> ImportResult:
    """All or nothing: any bad line means nothing from this file is imported, and every bad line is named."""
    providers = {p.name for p in store.list_providers(tenant_id)}
    rows, errors = parse_import(lines, providers)
    if errors:
        return ImportResult([], errors)
    return ImportResult(import_rows(store, tenant_id, rows, policy, clock), [])


def import_rows(
    store: ConnectionStore, tenant_id: str, rows: Sequence[NewConnection], policy: Policy, clock: Clock
) -> list[str]:
    """Import validated rows, each scheduled by its expiry (one transaction)."""
    now = clock.now()
    return store.import_connections(tenant_id, [_scheduled(row, policy, now) for row in rows], now)


def _scheduled(row: NewConnection, policy: Policy, now: datetime) -> NewConnection:
    """Without an access token there is nothing to expire: such a connection is due at once."""
    expires_at = row.expires_at if row.access_token else None
    due_at = initial_state(expires_at, now, policy).next_attempt_at
    return replace(row, expires_at=expires_at, next_attempt_at=due_at)


def reconnect_connection(
    store: ConnectionStore,
    tenant_id: str,
    connection_id: str,
    tokens: TokenSet,
    policy: Policy,
    clock: Clock,
) -> bool:
    """Store the user's new tokens, reset both counters, set connected and resume dependent workflows."""
    record = store.get_connection(tenant_id, connection_id)
    if record is None:
        return False
    now = clock.now()
    transition = reconnect(record.state, tokens, policy, now)
    return store.reconnect(tenant_id, connection_id, tokens, transition, now)
