"""Tenants (with their API keys) and providers: the slow-changing rows every connection hangs off.

API keys are stored only as the hash the caller computed; looking a tenant up by that hash runs on every API
request, so its statement is built once with a bound parameter and served by the unique index on the hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from grantkeeper.adapters.db.rows import FieldCipher, provider_from_row, tenant_from_row
from grantkeeper.adapters.db.tables import new_id, providers, tenants
from grantkeeper.ports import (
    DuplicateProviderError,
    NewProvider,
    ProviderConfig,
    StoreError,
    TenantKeyExistsError,
    TenantRecord,
    UnknownProviderError,
)

_TENANT_BY_KEY = select(tenants).where(tenants.c.api_key_hash == bindparam("api_key_hash"))


def insert_ignoring_duplicates(
    connection: Connection, table: Table, rows: Sequence[dict[str, Any]], unique_columns: Sequence[str]
) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: concurrent creators of one row both succeed, one row results."""
    if not rows:
        return
    dialect_insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = dialect_insert(table).on_conflict_do_nothing(index_elements=list(unique_columns))
    connection.execute(statement, list(rows))


def ensure_tenant(connection: Connection, name: str, now: datetime) -> str:
    row = {"id": new_id("ten"), "name": name, "created_at": now}
    insert_ignoring_duplicates(connection, tenants, [row], ["name"])
    return str(connection.execute(select(tenants.c.id).where(tenants.c.name == name)).scalar_one())


def set_tenant_key(
    connection: Connection, name: str, api_key_hash: str, *, replace: bool, now: datetime
) -> TenantRecord:
    """Create the tenant if needed and store the key's hash; without ``replace`` an existing key is kept and
    ``TenantKeyExistsError`` raised. The conditional UPDATE makes two concurrent first keys safe: the second
    re-reads the row after the first commits, finds a key and is refused."""
    ensure_tenant(connection, name, now)
    statement = (
        update(tenants).where(tenants.c.name == name).values(api_key_hash=api_key_hash).returning(*tenants.c)
    )
    if not replace:
        statement = statement.where(tenants.c.api_key_hash.is_(None))
    try:
        row = connection.execute(statement).first()
    except IntegrityError:
        raise StoreError("that API key is already in use by another tenant; generate a new key") from None
    if row is None:
        raise TenantKeyExistsError(name)
    return tenant_from_row(row)


def tenant_for_key(connection: Connection, api_key_hash: str) -> TenantRecord | None:
    row = connection.execute(_TENANT_BY_KEY, {"api_key_hash": api_key_hash}).first()
    return None if row is None else tenant_from_row(row)


def list_tenants(connection: Connection) -> list[TenantRecord]:
    return [tenant_from_row(row) for row in connection.execute(select(tenants).order_by(tenants.c.name))]


def add_provider(
    connection: Connection, cipher: FieldCipher, tenant_id: str, provider: NewProvider, now: datetime
) -> ProviderConfig:
    provider_id = new_id("prv")
    values = {"id": provider_id, "tenant_id": tenant_id, "name": provider.name, "created_at": now}
    values |= _settings(cipher, provider_id, provider)
    try:
        with connection.begin_nested():
            connection.execute(providers.insert().values(values))
    except IntegrityError as exc:
        if _provider_exists(connection, tenant_id, provider.name):
            raise DuplicateProviderError(provider.name) from None
        raise exc
    return providers_by_id(connection, cipher, [provider_id])[provider_id]


def _settings(cipher: FieldCipher, provider_id: str, provider: NewProvider) -> dict[str, Any]:
    """The provider row's columns for every setting but the name, the client secret sealed to the row."""
    return {
        "token_url": provider.token_url,
        "client_id": provider.client_id,
        "client_secret_enc": cipher.seal("providers", provider_id, "client_secret", provider.client_secret),
        "auth_method": provider.auth_method.value,
        "default_expires_in": provider.default_expires_in,
        "authorize_url": provider.authorize_url,
        "revocation_url": provider.revocation_url,
        "introspection_url": provider.introspection_url,
        "scopes": provider.scopes,
        "max_concurrency": provider.max_concurrency,
        "rate_limit_per_second": provider.rate_limit_per_second,
        "authorize_params": provider.authorize_params or None,
        "account_field": provider.account_field,
        "issuer": provider.issuer,
    }


def update_provider(
    connection: Connection, cipher: FieldCipher, tenant_id: str, provider_id: str, provider: NewProvider
) -> ProviderConfig:
    """Overwrite the provider's settings with ``provider``'s (its name is not changed); the secret is sealed
    anew, bound to the same row and column."""
    changed = connection.execute(
        update(providers)
        .where(providers.c.id == provider_id, providers.c.tenant_id == tenant_id)
        .values(_settings(cipher, provider_id, provider))
    ).rowcount
    if changed != 1:
        raise UnknownProviderError(provider.name)
    return providers_by_id(connection, cipher, [provider_id])[provider_id]


def _provider_exists(connection: Connection, tenant_id: str, name: str) -> bool:
    query = select(providers.c.id).where(providers.c.tenant_id == tenant_id, providers.c.name == name)
    return connection.scalar(query) is not None


def list_providers(connection: Connection, cipher: FieldCipher, tenant_id: str) -> list[ProviderConfig]:
    query = select(providers).where(providers.c.tenant_id == tenant_id).order_by(providers.c.name)
    return [provider_from_row(row, cipher) for row in connection.execute(query)]


def get_provider(
    connection: Connection, cipher: FieldCipher, tenant_id: str, name: str
) -> ProviderConfig | None:
    query = select(providers).where(providers.c.tenant_id == tenant_id, providers.c.name == name)
    row = connection.execute(query).first()
    return None if row is None else provider_from_row(row, cipher)


_PROVIDERS_BY_ID = select(providers).where(providers.c.id.in_(bindparam("provider_ids", expanding=True)))


def providers_by_id(
    connection: Connection, cipher: FieldCipher, provider_ids: Iterable[str]
) -> dict[str, ProviderConfig]:
    """Built once with an expanding parameter: every claim batch runs it."""
    rows = connection.execute(_PROVIDERS_BY_ID, {"provider_ids": sorted(set(provider_ids))})
    return {row.id: provider_from_row(row, cipher) for row in rows}


def provider_ids_by_name(connection: Connection, tenant_id: str, names: Iterable[str]) -> dict[str, str]:
    query = select(providers.c.name, providers.c.id).where(
        providers.c.tenant_id == tenant_id, providers.c.name.in_(set(names))
    )
    return {row.name: row.id for row in connection.execute(query)}
