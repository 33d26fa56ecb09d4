"""Key rotation at rest (both databases): counting which key seals each stored secret, re-sealing them under
a new first key, and then dropping the old key with every secret still readable."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, select

from grantkeeper.adapters.crypto import Keyring, generate_key_line
from grantkeeper.adapters.db import SqlStore, rekeying
from grantkeeper.adapters.db.tables import connections, metadata
from grantkeeper.core.routing import DestinationKind
from grantkeeper.ports import NewAuthorizationRequest, NewConnectSession, ProviderConfig
from tests.fixtures.db import T0, new_connection, new_provider

OLD, NEW = generate_key_line("old"), generate_key_line("new")


def _seed(store: SqlStore, tenant_id: str) -> list[str]:
    """Something in every sealed column: tokens, a client secret (the ``provider`` fixture), a webhook's URL
    and signing secret, an authorization request's PKCE verifier."""
    rows = [new_connection(f"u{i}", access_token=f"at-{i}", refresh_token=f"rt-{i}") for i in range(7)]
    ids = store.import_connections(tenant_id, rows, T0)
    store.add_destination(
        tenant_id, DestinationKind.WEBHOOK, "https://hooks.example.test/a", T0, secret="whsec_a"
    )
    session = store.create_connect_session(
        NewConnectSession(tenant_id, "a" * 64, T0 + timedelta(hours=1), provider="google", user_id="u9"), T0
    )
    request = NewAuthorizationRequest(
        session.session_id,
        "s" * 64,
        "b" * 64,
        "v" * 60,
        "https://gk.example/cb",
        None,
        T0 + timedelta(minutes=9),
    )
    store.add_authorization_request(request, T0)
    return ids


def test_every_sealed_column_is_known_to_the_rotation() -> None:
    sealed = {f"{table.name}.{column.name}" for table in metadata.tables.values() for column in table.columns}
    assert {name for name in sealed if name.endswith("_enc")} == {c.label for c in rekeying.SEALED_COLUMNS}


def test_reseal_moves_every_secret_to_the_new_key_and_the_old_key_can_go(engine: Engine) -> None:
    old_store = SqlStore(engine, Keyring.parse(OLD))
    old_tenant = old_store.ensure_tenant("rotating")
    provider = old_store.add_provider(old_tenant, new_provider())
    ids = _seed(old_store, old_tenant)
    rotating = SqlStore(engine, Keyring.parse(f"{NEW},{OLD}"))

    before = rotating.key_usage()
    assert before["connections.refresh_token_enc"]["old"] == 7
    assert before["connections.refresh_token_enc"]["new"] == 0
    batches: list[tuple[str, int]] = []

    report = rotating.reseal_secrets(batch_size=3, on_batch=lambda column, n: batches.append((column, n)))

    assert report.resealed["connections.refresh_token_enc"] == 7
    assert report.resealed["connections.access_token_enc"] == 7
    assert report.resealed["destinations.secret_enc"] == 1
    assert report.resealed["authorization_requests.code_verifier_enc"] == 1
    assert all(not ids_ for ids_ in report.unreadable.values())
    assert ("connections.refresh_token_enc", 3) in batches  # three transactions of at most three rows
    after = rotating.key_usage()
    assert all(per_kid["old"] == 0 and per_kid[rekeying.OTHER] == 0 for per_kid in after.values()), after
    assert after["connections.refresh_token_enc"]["new"] == 7
    assert after["providers.client_secret_enc"]["new"] == 1

    new_only = SqlStore(engine, Keyring.parse(NEW))
    tokens = new_only.read_tokens(old_tenant, ids[3])
    assert tokens is not None
    assert (tokens.access_token, tokens.refresh_token) == ("at-3", "rt-3")
    found = new_only.get_provider(old_tenant, "google")
    assert found is not None
    assert found.client_secret == provider.client_secret
    assert new_only.connect_session("a" * 64) is not None
    assert rotating.reseal_secrets().resealed["connections.refresh_token_enc"] == 0  # nothing left to do


def test_a_value_no_key_opens_is_reported_and_left_and_the_rest_goes_on(
    engine: Engine, store: SqlStore, tenant_id: str, provider: ProviderConfig, key_line: str
) -> None:
    lost = SqlStore(engine, Keyring.parse(generate_key_line("lost")))
    [orphan] = lost.import_connections(tenant_id, [new_connection("orphan", refresh_token="rt-x")], T0)
    [kept] = store.import_connections(tenant_id, [new_connection("kept", refresh_token="rt-k")], T0)
    rotating = SqlStore(engine, Keyring.parse(f"{NEW},{key_line}"))

    report = rotating.reseal_secrets()

    assert report.unreadable["connections.refresh_token_enc"] == [orphan]
    assert rotating.key_usage()["connections.refresh_token_enc"][rekeying.OTHER] == 1
    tokens = SqlStore(engine, Keyring.parse(NEW)).read_tokens(tenant_id, kept)
    assert tokens is not None
    assert tokens.refresh_token == "rt-k"
    with engine.connect() as connection:
        stored = connection.scalar(select(connections.c.refresh_token_enc).where(connections.c.id == orphan))
    assert str(stored).startswith("gk1:lost:")


def test_a_row_rewritten_meanwhile_keeps_its_new_value(
    engine: Engine, store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    ids = store.import_connections(
        tenant_id, [new_connection(f"u{i}", refresh_token=f"rt-{i}") for i in range(3)], T0
    )
    column = next(c for c in rekeying.SEALED_COLUMNS if c.column == "refresh_token_enc")
    stored = select(connections.c.id, connections.c.refresh_token_enc).where(connections.c.id.in_(ids))
    with engine.begin() as connection:
        current = {row[0]: row[1] for row in connection.execute(stored)}
        first, rewritten, last = ids  # a worker stored new tokens for the middle one since the batch read it
        swaps = [
            {"row_key": first, "old": current[first], "new": "gk1:new:a"},
            {"row_key": rewritten, "old": "gk1:stale:value", "new": "gk1:new:b"},
            {"row_key": last, "old": current[last], "new": "gk1:new:c"},
        ]
        assert rekeying._swap(connection, column, swaps) == 2  # the count reports only the rows swapped
        after = {row[0]: row[1] for row in connection.execute(stored)}
    assert after == {first: "gk1:new:a", rewritten: current[rewritten], last: "gk1:new:c"}
