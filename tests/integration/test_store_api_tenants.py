"""The store for the HTTP API, part 1: tenants and API keys, providers by name, health (both databases)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from grantkeeper.adapters.crypto import Keyring
from grantkeeper.adapters.db import SqlStore, make_engine
from grantkeeper.adapters.db.schema import VERSION_TABLE
from grantkeeper.ports import ProviderConfig, StoreError, TenantKeyExistsError, TenantRecord
from tests.fixtures.db import captured_sql, explain, new_provider

HASH_A = "sha256:" + "a" * 64
HASH_B = "sha256:" + "b" * 64


# API keys


def test_set_tenant_key_creates_the_tenant_with_its_key(store: SqlStore) -> None:
    before = datetime.now(UTC)

    record = store.set_tenant_key("acme", HASH_A)

    assert record.tenant_id == store.ensure_tenant("acme")
    assert (record.name, record.has_api_key) == ("acme", True)
    assert record.created_at >= before.replace(microsecond=0)
    assert store.tenant_for_key(HASH_A) == record


def test_set_tenant_key_gives_an_existing_tenant_without_a_key_its_first_key(store: SqlStore) -> None:
    tenant_id = store.ensure_tenant("acme")

    record = store.set_tenant_key("acme", HASH_A)

    assert record.tenant_id == tenant_id
    assert record.has_api_key


def test_set_tenant_key_refuses_to_overwrite_a_key_and_changes_nothing(store: SqlStore) -> None:
    first = store.set_tenant_key("acme", HASH_A)

    with pytest.raises(TenantKeyExistsError, match="rotate-key acme") as raised:
        store.set_tenant_key("acme", HASH_B)

    assert raised.value.name == "acme"
    assert store.tenant_for_key(HASH_A) == first
    assert store.tenant_for_key(HASH_B) is None


def test_set_tenant_key_with_replace_rotates_the_key(store: SqlStore) -> None:
    first = store.set_tenant_key("acme", HASH_A)

    rotated = store.set_tenant_key("acme", HASH_B, replace=True)

    assert rotated == first
    assert store.tenant_for_key(HASH_B) == first
    assert store.tenant_for_key(HASH_A) is None


def test_a_key_hash_of_another_tenant_is_refused_with_a_store_error(store: SqlStore) -> None:
    store.set_tenant_key("acme", HASH_A)

    with pytest.raises(StoreError, match="already in use"):
        store.set_tenant_key("other", HASH_A)

    assert [tenant.name for tenant in store.list_tenants()] == ["acme"]


def test_concurrent_first_keys_for_one_tenant_leave_exactly_one(store: SqlStore) -> None:
    barrier = threading.Barrier(6)
    outcomes: list[TenantRecord | TenantKeyExistsError] = []

    def set_key(slot: int) -> None:
        barrier.wait()
        try:
            outcomes.append(store.set_tenant_key("raced", f"sha256:{slot:064d}"))
        except TenantKeyExistsError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=set_key, args=(slot,)) for slot in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [outcome for outcome in outcomes if isinstance(outcome, TenantRecord)]
    assert len(outcomes) == 6
    assert len(winners) == 1
    assert sum(store.tenant_for_key(f"sha256:{slot:064d}") is not None for slot in range(6)) == 1


def test_tenant_for_key_of_an_unknown_hash_is_none(store: SqlStore) -> None:
    store.set_tenant_key("acme", HASH_A)

    assert store.tenant_for_key(HASH_B) is None
    assert store.tenant_for_key("") is None


def test_list_tenants_by_name_shows_who_has_a_key(store: SqlStore) -> None:
    store.ensure_tenant("zeta")
    store.set_tenant_key("acme", HASH_A)

    listed = store.list_tenants()

    assert [(tenant.name, tenant.has_api_key) for tenant in listed] == [("acme", True), ("zeta", False)]
    assert HASH_A not in repr(listed)


def test_tenant_for_key_is_one_bound_statement_served_by_the_unique_index(store: SqlStore) -> None:
    store.set_tenant_key("acme", HASH_A)

    with captured_sql(store.engine) as sent:
        store.tenant_for_key(HASH_A)
    [(statement, parameters)] = [(s, p) for s, p in sent if s.lstrip().upper().startswith("SELECT")]

    assert HASH_A not in statement
    assert "api_key_hash" in statement
    assert "uq_tenants_api_key_hash" in explain(store.engine, statement, parameters) or (
        "sqlite_autoindex_tenants" in explain(store.engine, statement, parameters)
    )


# Providers by name


def test_get_provider_returns_the_tenants_provider_by_name(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    assert store.get_provider(tenant_id, "google") == provider
    assert store.get_provider(tenant_id, "dropbox") is None


def test_get_provider_never_returns_another_tenants_provider(
    store: SqlStore, tenant_id: str, other_tenant_id: str
) -> None:
    store.add_provider(other_tenant_id, new_provider("slack"))

    assert store.get_provider(tenant_id, "slack") is None
    assert store.get_provider(tenant_id, "google") is None
    theirs = store.get_provider(other_tenant_id, "google")
    assert theirs is not None
    assert theirs.tenant_id == other_tenant_id


# Health


def test_ping_succeeds_on_a_reachable_database(store: SqlStore) -> None:
    store.ping()


def test_ping_raises_when_the_database_is_unreachable(keyring: Keyring, engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        dead = make_engine("sqlite:////nonexistent-directory/grantkeeper.db")
    else:
        dead = make_engine(engine.url.set(port=1), connect_args={"connect_timeout": 2})
    store = SqlStore(dead, keyring, create_schema=False)
    try:
        with pytest.raises(OperationalError):
            store.ping()
    finally:
        dead.dispose()


def test_schema_is_current_until_the_revision_changes(store: SqlStore) -> None:
    assert store.schema_is_current()

    with store.engine.begin() as connection:
        connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0001'"))

    assert not store.schema_is_current()
