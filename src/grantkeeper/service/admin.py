"""Administrative use cases shared by the CLI and the HTTP API: providers, imports, reconnects.

Each validates its input completely before touching the store, so bad input changes nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

from grantkeeper.core.accounts import parse_account_field
from grantkeeper.core.errors import InvalidInputError
from grantkeeper.core.issuers import validate_issuer
from grantkeeper.core.machine import initial_state, reconnect
from grantkeeper.core.model import TokenSet, Transition
from grantkeeper.core.notices import render_notice
from grantkeeper.core.policy import Policy
from grantkeeper.core.urls import validate_token_url
from grantkeeper.ports import (
    Clock,
    ConnectionRecord,
    ConnectionStore,
    NewConnection,
    NewProvider,
    NotificationContent,
    ProviderConfig,
)
from grantkeeper.service.importing import LineError, parse_import


def check_endpoint_url(url: str, *, field: str = "token URL") -> None:
    """HTTPS only, except plain http to loopback (the sandbox, local development): DESIGN section 4."""
    try:
        validate_token_url(url, field=field)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def add_provider(store: ConnectionStore, tenant_id: str, provider: NewProvider) -> ProviderConfig:
    check_provider(provider)
    return store.add_provider(tenant_id, provider)


#: What ``update_provider`` may change: every setting but the name (connections and links refer to it).
UPDATABLE_PROVIDER_FIELDS = frozenset(field.name for field in fields(NewProvider)) - {"name"}
#: Settings that cannot be cleared, only replaced.
REQUIRED_PROVIDER_FIELDS = frozenset(
    {"token_url", "client_id", "client_secret", "auth_method", "default_expires_in"}
)


def update_provider(
    store: ConnectionStore, tenant_id: str, name: str, changes: Mapping[str, Any]
) -> ProviderConfig | None:
    """Change some of a provider's settings (a new client secret, an issuer, limits); None when the tenant
    has no provider of that name. ``changes`` maps ``NewProvider`` field names to new values, None clearing
    an optional one; the result must pass every check ``add_provider`` makes, or nothing changes.

    The provider keeps its id, connections, flag and rate-limit state: a flag set by an ``invalid_client``
    answer clears at the next successful refresh, as always, so it shows whether the new secret works."""
    unknown = sorted(set(changes) - UPDATABLE_PROVIDER_FIELDS)
    if unknown:
        raise InvalidInputError(f"cannot change {', '.join(unknown)} (a provider's name stays)")
    cleared = sorted(name for name in REQUIRED_PROVIDER_FIELDS if name in changes and changes[name] is None)
    if cleared:
        raise InvalidInputError(f"{', '.join(cleared)} cannot be cleared, only replaced")
    if not changes:
        raise InvalidInputError("nothing to change: give at least one setting")
    current = store.get_provider(tenant_id, name)
    if current is None:
        return None
    kept = {field: getattr(current, field) for field in UPDATABLE_PROVIDER_FIELDS}
    provider = NewProvider(name=current.name, **(kept | dict(changes)))
    check_provider(provider)
    return store.update_provider(tenant_id, current.provider_id, provider)


def check_provider(provider: NewProvider) -> None:
    """Every rule a provider's settings must follow (DESIGN section 4), for adding and for updating."""
    if not provider.name.strip() or len(provider.name) > 100:
        raise InvalidInputError("provider name must be 1 to 100 characters")
    if not provider.client_id.strip():
        raise InvalidInputError("client id must not be empty")
    if not provider.client_secret:
        raise InvalidInputError("client secret must not be empty")
    if provider.default_expires_in < 1:
        raise InvalidInputError("default expires_in must be at least 1 second")
    check_limits(provider.max_concurrency, provider.rate_limit_per_second)
    check_authorize_params(provider.authorize_params)
    if provider.account_field is not None:
        parse_account_field(provider.account_field)
    if provider.issuer is not None:
        try:
            validate_issuer(provider.issuer)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
    check_endpoint_url(provider.token_url)
    for field, url in (
        ("revocation URL", provider.revocation_url),
        ("authorize URL", provider.authorize_url),
        ("introspection URL", provider.introspection_url),
    ):
        if url is not None:
            check_endpoint_url(url, field=field)


#: Set by the flow itself (RFC 6749 section 4.1.1, RFC 7636); a provider's extras may not override them.
RESERVED_AUTHORIZE_PARAMS = frozenset(
    {"response_type", "client_id", "redirect_uri", "state", "scope"}
    | {"code_challenge", "code_challenge_method"}
)
_PARAM_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def check_authorize_params(params: dict[str, str] | None) -> None:
    """Extra authorization parameters are plain name=value pairs that never replace the flow's own."""
    if not params:
        return
    if len(params) > 20:
        raise InvalidInputError("at most 20 extra authorization parameters")
    for name, value in params.items():
        if not _PARAM_NAME.fullmatch(name):
            raise InvalidInputError(f"authorization parameter name {name[:64]!r}: 1-64 of A-Z a-z 0-9 _ . -")
        if name in RESERVED_AUTHORIZE_PARAMS:
            raise InvalidInputError(f"authorization parameter {name!r} is set by the flow itself")
        if len(value) > 512 or any(not c.isprintable() for c in value):
            raise InvalidInputError(f"authorization parameter {name!r}: value must be printable, at most 512")


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
    return store.import_connections(tenant_id, [scheduled(row, policy, now) for row in rows], now)


def scheduled(row: NewConnection, policy: Policy, now: datetime) -> NewConnection:
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
    notices = reconnect_notices(transition, record)
    return store.reconnect(tenant_id, connection_id, tokens, transition, now, notices)


def reconnect_notices(transition: Transition, record: ConnectionRecord) -> tuple[NotificationContent, ...]:
    """The rendered notifications a reconnect's transition asks for (a recovery notice, in app only)."""
    metadata = {"provider": record.provider, "connection_id": record.connection_id, "user_id": record.user_id}
    contents = []
    for effect in transition.notifications:
        text = render_notice(effect.type, record.provider)
        channels = ("email",) if effect.email else ()
        contents.append(NotificationContent(effect.type, text.title, text.message, metadata, channels))
    return tuple(contents)
