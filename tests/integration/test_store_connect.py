"""The stored side of connecting in a browser, on SQLite and PostgreSQL: connect sessions found only by the
digest of their link's secret, authorization requests used once and only by their own browser, and a session
that completes once even when two tabs come back."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from grantkeeper.adapters.db import SqlStore
from grantkeeper.adapters.db.tables import authorization_requests, connections, workflows
from grantkeeper.core.machine import reconnect
from grantkeeper.core.model import ConnectionStatus, TokenSet
from grantkeeper.core.policy import Policy
from grantkeeper.ports import (
    AccountMismatchError,
    CallbackCheck,
    ConnectCompletion,
    NewAuthorizationRequest,
    NewConnectSession,
    ProviderConfig,
    UnknownConnectionError,
    UnknownProviderError,
)
from grantkeeper.service.admin import scheduled
from grantkeeper.service.retention import EXPIRED_LINK_GRACE, prune_connect_links, run_pruning
from grantkeeper.testing import FrozenClock
from tests.fixtures.db import T0, new_connection

VERIFIER = "v-" + "k" * 60


def _session(store: SqlStore, tenant_id: str, secret_hash: str = "a" * 64, **fields):
    values = {"provider": "google", "user_id": "new-user"} | fields
    return store.create_connect_session(
        NewConnectSession(tenant_id, secret_hash, T0 + timedelta(hours=1), **values), T0
    )


def _request(
    store: SqlStore, session_id: str, state_hash: str = "s" * 64, browser_hash: str = "b" * 64
) -> None:
    store.add_authorization_request(
        NewAuthorizationRequest(
            session_id, state_hash, browser_hash, VERIFIER, "https://gk.example/oauth/callback", None,
            T0 + timedelta(minutes=10),
        ),
        T0,
    )  # fmt: skip


def test_a_session_is_found_by_its_secrets_digest_and_names_the_tenants_own_provider(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    created = _session(store, tenant_id, email="n@example.test", return_to="https://app.example/x")

    found = store.connect_session("a" * 64)
    assert found == created
    assert found.provider.name == "google"
    assert found.connection_id is None
    assert store.connect_session("b" * 64) is None
    with pytest.raises(UnknownProviderError):
        _session(store, tenant_id, "c" * 64, provider="nope")
    other_tenant = store.ensure_tenant("globex")
    [connection_id] = store.import_connections(tenant_id, [new_connection()], T0)
    with pytest.raises(UnknownConnectionError):
        _session(store, other_tenant, "d" * 64, connection_id=connection_id, provider=None, user_id=None)


def test_the_same_signed_link_clicked_twice_finds_one_session(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection()], T0)
    first = _session(store, tenant_id, "e" * 64, connection_id=connection_id, provider=None, user_id=None)
    again = _session(store, tenant_id, "e" * 64, connection_id=connection_id, provider=None, user_id=None)
    assert first.session_id == again.session_id
    assert first.user_id == "user-1"  # from the connection


def test_an_authorization_request_is_taken_once_and_only_by_its_browser(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    session = _session(store, tenant_id)
    _request(store, session.session_id)

    assert store.take_authorization_request("s" * 64, "x" * 64, T0).check is CallbackCheck.OTHER_BROWSER
    assert store.take_authorization_request("s" * 64, None, T0).check is CallbackCheck.OTHER_BROWSER
    assert store.take_authorization_request("u" * 64, "b" * 64, T0).check is CallbackCheck.UNKNOWN
    taken = store.take_authorization_request("s" * 64, "b" * 64, T0)  # the other browser used nothing up
    assert taken.check is CallbackCheck.OK
    assert taken.code_verifier == VERIFIER
    assert taken.session == session
    assert store.take_authorization_request("s" * 64, "b" * 64, T0).check is CallbackCheck.USED

    _request(store, session.session_id, state_hash="t" * 64)
    late = T0 + timedelta(minutes=10)
    assert store.take_authorization_request("t" * 64, "b" * 64, late).check is CallbackCheck.EXPIRED


def test_the_verifier_is_stored_sealed(store: SqlStore, tenant_id: str, provider: ProviderConfig) -> None:
    _request(store, _session(store, tenant_id).session_id)
    with store.engine.connect() as connection:
        stored = connection.scalar(select(authorization_requests.c.code_verifier_enc))
    assert stored.startswith("gk1:")
    assert VERIFIER not in stored


def test_a_new_connection_session_completes_once(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    session = _session(store, tenant_id)
    tokens = TokenSet("at-new", "rt-new", expires_at=T0 + timedelta(hours=1))
    row = scheduled(new_connection("new-user", refresh_token="rt-new", access_token="at-new"), Policy(), T0)
    completion = ConnectCompletion(session.session_id, tokens, T0, new_connection=row)

    result = store.complete_connect(completion)
    assert result is not None
    assert result.is_new
    assert store.complete_connect(completion) is None  # a second tab: nothing more
    assert len(store.list_connections(tenant_id)) == 1
    assert store.read_tokens(tenant_id, result.connection_id).refresh_token == "rt-new"
    assert store.connect_session("a" * 64).completed_at == T0


def test_a_reconnect_resets_the_connection_and_resumes_its_workflows(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection(workflows=("sync",))], T0)
    with store.engine.begin() as connection:
        connection.execute(update(connections).values(status="needs_reauthorization", consecutive_failures=3))
        connection.execute(update(workflows).values(status="paused", paused_reason="auth_failures"))
    session = _session(store, tenant_id, connection_id=connection_id, provider=None, user_id=None)
    record = store.get_connection(tenant_id, connection_id)
    tokens = TokenSet("at-back", "rt-back", expires_at=T0 + timedelta(hours=1))
    transition = reconnect(record.state, tokens, Policy(), T0)

    result = store.complete_connect(ConnectCompletion(session.session_id, tokens, T0, transition=transition))

    assert result is not None
    assert result.connection_id == connection_id
    assert not result.is_new
    assert result.resumed_workflows == ("sync",)
    state = store.get_connection(tenant_id, connection_id).state
    assert state.status is ConnectionStatus.CONNECTED
    assert state.consecutive_failures == 0
    assert store.read_tokens(tenant_id, connection_id).refresh_token == "rt-back"


def test_a_reconnect_learns_the_account_then_refuses_another_in_the_same_statement(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection()], T0)
    assert store.get_connection(tenant_id, connection_id).account_id is None  # imported: not known yet

    def complete(secret_hash: str, account: str) -> object:
        session = _session(
            store, tenant_id, secret_hash, connection_id=connection_id, provider=None, user_id=None
        )
        record = store.get_connection(tenant_id, connection_id)
        tokens = TokenSet(
            f"at-{account}", f"rt-{account}", expires_at=T0 + timedelta(hours=1), account_id=account
        )
        transition = reconnect(record.state, tokens, Policy(), T0)
        return store.complete_connect(
            ConnectCompletion(session.session_id, tokens, T0, transition=transition)
        )

    assert complete("1" * 64, "alice") is not None
    assert store.get_connection(tenant_id, connection_id).account_id == "alice"  # learned
    assert complete("2" * 64, "alice") is not None  # the same account: fine

    before = store.get_connection(tenant_id, connection_id)
    with pytest.raises(AccountMismatchError):
        complete("3" * 64, "mallory")
    assert store.get_connection(tenant_id, connection_id) == before  # nothing stored
    assert store.read_tokens(tenant_id, connection_id).refresh_token == "rt-alice"
    assert store.connect_session("3" * 64).completed_at is None  # rolled back: the link still works


async def test_expired_links_and_requests_are_pruned_a_day_after_they_expire(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    expired = _session(store, tenant_id, "1" * 64)  # expires at T0 + 1 h
    _request(store, expired.session_id, state_hash="2" * 64)  # expires at T0 + 10 min
    store.create_connect_session(
        NewConnectSession(tenant_id, "3" * 64, T0 + timedelta(days=3), provider="google", user_id="u"), T0
    )
    clock = FrozenClock(T0 + timedelta(hours=1) + EXPIRED_LINK_GRACE - timedelta(seconds=1))

    assert await prune_connect_links(store, clock) == 1  # the request: expired over a day ago
    assert store.connect_session("1" * 64) is not None  # still inside its day of grace
    clock.advance(timedelta(seconds=2))
    stop = asyncio.Event()  # the worker's loop, with attempts kept forever (keep=None): links go anyway
    pruning = asyncio.create_task(run_pruning(store, clock, None, stop=stop))
    for _ in range(200):
        if store.connect_session("1" * 64) is None:
            break
        await asyncio.sleep(0.05)
    stop.set()
    assert await pruning == 1

    assert store.connect_session("1" * 64) is None
    assert store.connect_session("3" * 64) is not None
