"""Tokens and client secrets at rest: only ciphertext in the database, bound to their row and column."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, select, text, update
from sqlalchemy.exc import IntegrityError

from grantkeeper.adapters.crypto import DecryptionError, Keyring, generate_key_line
from grantkeeper.adapters.db import SqlStore
from grantkeeper.adapters.db.tables import connections, providers
from grantkeeper.core.model import ConnectionState, ConnectionStatus, Outcome, OutcomeClass, TokenSet
from grantkeeper.core.routing import DestinationKind
from grantkeeper.ports import ProviderConfig, UnreadableSecretError
from tests.fixtures.db import LEASE_TTL, T0, attempt_commit, new_connection, new_provider

SECRETS = ["rt-secret-alpha-7731", "at-secret-alpha-7731", "rt-rotated-beta-4410", "at-rotated-beta-4410"]
CLIENT_SECRET = "client-secret-value-0001"


def _raw_database_text(engine: Engine) -> str:
    """Everything the database holds as text: the SQLite files' bytes, or every row of every PG table."""
    if engine.dialect.name == "sqlite":
        database = Path(str(engine.url.database))
        files = [database, database.with_name(database.name + "-wal")]
        return "".join(path.read_bytes().decode("latin-1") for path in files if path.exists())
    with engine.connect() as connection:
        tables = inspect(connection).get_table_names()
        return "\n".join(
            str(value)
            for table in tables
            for value in connection.execute(text(f'SELECT t::text FROM "{table}" t')).scalars()
        )


def _fill(store: SqlStore, tenant_id: str) -> str:
    """A connection imported with SECRETS[0:2], then refreshed with a rotation to SECRETS[2:4]."""
    [connection_id] = store.import_connections(
        tenant_id, [new_connection("u1", refresh_token=SECRETS[0], access_token=SECRETS[1])], T0
    )
    [claim] = store.claim_due(T0, 10, "worker", LEASE_TTL)
    tokens = TokenSet(SECRETS[3], SECRETS[2])
    outcome = Outcome(OutcomeClass.SUCCESS, http_status=200, tokens=tokens)
    assert store.commit_attempt(attempt_commit(claim, outcome, ConnectionState(last_refreshed_at=T0)))
    return connection_id


def test_tokens_and_client_secrets_are_never_stored_in_plaintext(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    _fill(store, tenant_id)

    raw = _raw_database_text(store.engine)

    assert "gk1:" in raw  # the dump does see the token columns
    for secret in [*SECRETS, CLIENT_SECRET]:
        assert secret not in raw


def test_a_token_copied_to_another_row_fails_to_decrypt(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    source, target = store.import_connections(tenant_id, [new_connection("u1"), new_connection("u2")], T0)
    with store.engine.begin() as connection:
        stolen = connection.execute(
            select(connections.c.refresh_token_enc).where(connections.c.id == source)
        ).scalar_one()
        connection.execute(
            update(connections).where(connections.c.id == target).values(refresh_token_enc=stolen)
        )

    with pytest.raises(DecryptionError):
        store.read_tokens(tenant_id, target)
    assert [c.connection_id for c in store.claim_ids(tenant_id, None, T0, "worker", LEASE_TTL)] == [source]


def test_a_claim_leaves_refresh_tokens_sealed_and_an_unreadable_one_is_parked_by_its_attempt(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    good, bad = store.import_connections(tenant_id, [new_connection("u1"), new_connection("u2")], T0)
    with store.engine.begin() as connection:
        connection.execute(
            update(connections).where(connections.c.id == bad).values(refresh_token_enc="gk1:x:y")
        )

    claims = {c.connection_id: c for c in store.claim_due(T0, 10, "worker", LEASE_TTL)}

    assert set(claims) == {good, bad}  # nothing is decrypted inside the claim's transaction
    assert "rt-" not in repr(claims[good])  # the sealed token shows where it lives, never its value
    assert claims[good].refresh_token is not None
    with pytest.raises(UnreadableSecretError) as raised:
        _ = claims[bad].refresh_token
    assert bad in str(raised.value)
    assert "gk1:x:y" not in str(raised.value)

    assert store.park_unreadable(claims[bad], T0)
    assert not store.park_unreadable(claims[bad], T0)  # the lease is no longer ours: a no-op
    parked = store.get_connection(tenant_id, bad)
    assert parked is not None
    assert parked.state.last_error is not None
    assert parked.state.last_error.code == "decryption_failed"
    assert parked.state.next_attempt_at is not None
    assert parked.state.next_attempt_at > T0
    assert parked.state.consecutive_failures == 0
    assert parked.state.status is ConnectionStatus.CONNECTED
    # once the good row's lease runs out it is due again; the parked one is not, for an hour
    later = store.claim_due(T0 + LEASE_TTL * 2, 10, "other", LEASE_TTL)
    assert [c.connection_id for c in later] == [good]


def test_rows_whose_provider_secret_no_key_opens_are_parked_by_the_claim(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection("u1")], T0)
    with store.engine.begin() as connection:
        connection.execute(update(providers).values(client_secret_enc="gk1:x:y"))

    assert store.claim_due(T0, 10, "worker", LEASE_TTL) == []

    parked = store.get_connection(tenant_id, connection_id)
    assert parked is not None
    assert parked.state.last_error is not None
    assert parked.state.last_error.code == "decryption_failed"


def test_a_token_copied_to_another_column_fails_to_decrypt(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    store.import_connections(tenant_id, [new_connection("u1")], T0)
    with store.engine.begin() as connection:
        connection.execute(update(connections).values(access_token_enc=connections.c.refresh_token_enc))

    # a scheduled refresh never opens the access token (the refresh replaces it), token vending does
    assert store.claim_ids(tenant_id, None, T0, "worker", LEASE_TTL) == []
    (record,) = store.list_connections(tenant_id)
    assert record.state.last_error is not None
    assert record.state.last_error.code == "decryption_failed"


def test_values_written_before_a_key_rotation_still_decrypt(
    engine: Engine, key_line: str, tenant_id: str, provider: ProviderConfig
) -> None:
    before = SqlStore(engine, Keyring.parse(key_line))
    before.import_connections(tenant_id, [new_connection("u1", refresh_token="rt-old-key")], T0)

    rotated = SqlStore(engine, Keyring.parse(f"{generate_key_line('test2')},{key_line}"))
    [claim] = rotated.claim_due(T0, 10, "worker", LEASE_TTL)
    tokens = TokenSet("at-new-key", "rt-new-key")
    assert rotated.commit_attempt(
        attempt_commit(claim, Outcome(OutcomeClass.SUCCESS, tokens=tokens), ConnectionState())
    )

    assert claim.refresh_token == "rt-old-key"
    assert rotated.list_providers(tenant_id)[0].client_secret == CLIENT_SECRET
    with engine.connect() as connection:
        stored = connection.execute(select(connections.c.refresh_token_enc)).scalar_one()
    assert stored.startswith("gk1:test2:")


def test_store_errors_do_not_echo_bound_values(store: SqlStore) -> None:
    with pytest.raises(IntegrityError) as raised:
        store.add_provider("ten_does_not_exist", new_provider())

    assert "gk1:" not in str(raised.value)
    assert "google-client-id" not in str(raised.value)


def test_chat_webhook_urls_and_signing_secrets_are_never_stored_in_plaintext(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    slack_path = "/services/T0001/B0002/slack-path-secret-5521"
    signing = "whsec_c2lnbmluZy1zZWNyZXQtZm9yLXRlc3RzLTk5"
    slack = store.add_destination(
        tenant_id, DestinationKind.SLACK, f"https://hooks.slack.example{slack_path}", T0, user_id="u1"
    )
    store.add_destination(tenant_id, DestinationKind.WEBHOOK, "https://app.example/hooks", T0, secret=signing)

    raw = _raw_database_text(store.engine)

    assert slack_path not in raw
    assert "slack-path-secret" not in raw
    assert signing not in raw
    assert slack.url_hint == "https://hooks.slack.example/…"
    listed = {d.kind: d.url_hint for d in store.list_destinations(tenant_id)}
    assert listed == {
        DestinationKind.SLACK: "https://hooks.slack.example/…",
        DestinationKind.WEBHOOK: "https://app.example/hooks",
    }


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://hooks.slack.example/services/T/B/secret-x", "must use https"),
        ("ftp://hooks.slack.example/services/T/B/secret-x", "absolute https URL"),
        ("https://user:pw@hooks.slack.example/services/T/B/secret-x", "credentials"),
        ("https://hooks.slack.example/services/T/B/secret-x#frag", "fragment"),
        ("https://hooks.slack.example/services/T/B/secret-x\n", "whitespace"),
    ],
)
def test_a_bad_destination_url_is_refused_without_showing_its_path(
    store: SqlStore, tenant_id: str, url: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        store.add_destination(tenant_id, DestinationKind.SLACK, url, T0)
    assert "secret-x" not in str(caught.value)
    assert store.list_destinations(tenant_id) == []
