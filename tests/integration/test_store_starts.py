"""Recording attempts in flight, and provider limits that hold across workers (both databases)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta

from grantkeeper.adapters.db import SqlStore
from grantkeeper.core.model import ConnectionState, Outcome, OutcomeClass, TokenSet
from grantkeeper.ports import ProviderConfig
from tests.fixtures.db import LEASE_TTL, T0, attempt_commit, new_connection, new_provider

ATTEMPT_TTL = timedelta(seconds=25)


def _import(store: SqlStore, tenant_id: str, count: int, provider: str = "google") -> list[str]:
    rows = [new_connection(f"{provider}-u{i}", provider=provider, next_attempt_at=T0) for i in range(count)]
    return store.import_connections(tenant_id, rows, T0 - timedelta(hours=1))


def test_a_start_marks_the_attempt_in_flight_and_shortens_the_lease_to_its_deadline(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    _import(store, tenant_id, 3)
    claims = store.claim_due(T0, 10, "w1", LEASE_TTL)

    starts = store.start_attempts(claims, T0, ATTEMPT_TTL)

    assert starts.started == {claim.connection_id for claim in claims}
    assert starts.lost == frozenset()
    assert starts.waits == {}
    assert starts.lease_expires_at == T0 + ATTEMPT_TTL
    # a worker that dies now leaves the mark: whoever claims the row after the deadline sees it
    retaken = store.claim_due(T0 + ATTEMPT_TTL + timedelta(seconds=1), 10, "w2", LEASE_TTL)
    assert {claim.connection_id for claim in retaken} == starts.started
    assert all(claim.state.in_flight_since == T0 for claim in retaken)


def test_no_one_retakes_an_attempt_before_its_deadline(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    _import(store, tenant_id, 2)
    store.start_attempts(store.claim_due(T0, 10, "w1", LEASE_TTL), T0, ATTEMPT_TTL)
    assert store.claim_due(T0 + ATTEMPT_TTL, 10, "w2", LEASE_TTL) == []


def test_a_start_on_a_lease_lost_meanwhile_is_refused_and_changes_nothing(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    _import(store, tenant_id, 1)
    stale = store.claim_due(T0, 1, "w1", timedelta(seconds=5))
    fresh = store.claim_due(T0 + timedelta(seconds=6), 1, "w2", LEASE_TTL)

    starts = store.start_attempts(stale, T0 + timedelta(seconds=7), ATTEMPT_TTL)

    assert starts.started == frozenset()
    assert starts.lost == {stale[0].connection_id}
    assert store.start_attempts(fresh, T0 + timedelta(seconds=7), ATTEMPT_TTL).started == {
        fresh[0].connection_id
    }


def test_the_commit_clears_the_in_flight_mark(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    _import(store, tenant_id, 1)
    claim = store.claim_due(T0, 1, "w1", LEASE_TTL)[0]
    store.start_attempts([claim], T0, ATTEMPT_TTL)
    tokens = TokenSet("at-new", "rt-new", expires_at=T0 + timedelta(hours=1))
    state = ConnectionState(last_refreshed_at=T0, expires_at=tokens.expires_at, next_attempt_at=T0)

    assert store.commit_attempt(
        attempt_commit(claim, Outcome(OutcomeClass.SUCCESS, 200, tokens=tokens), state)
    )

    again = store.claim_due(T0 + timedelta(seconds=1), 1, "w2", LEASE_TTL)
    assert again[0].state.in_flight_since is None


def test_the_concurrency_limit_holds_across_workers(store: SqlStore, tenant_id: str) -> None:
    store.add_provider(tenant_id, replace(new_provider(), max_concurrency=5))
    _import(store, tenant_id, 12)
    first = store.claim_due(T0, 4, "w1", LEASE_TTL)
    second = store.claim_due(T0, 8, "w2", LEASE_TTL)

    one = store.start_attempts(first, T0, ATTEMPT_TTL)
    two = store.start_attempts(second, T0, ATTEMPT_TTL)

    assert len(one.started) == 4
    assert len(two.started) == 1
    assert len(two.waits) == 7
    assert all(wait > 0 for wait in two.waits.values())
    # an answer committed frees its slot
    done = first[0]
    state = ConnectionState(next_attempt_at=T0 + timedelta(hours=1))
    store.commit_attempt(attempt_commit(done, Outcome(OutcomeClass.TRANSIENT, 503), state))
    waiting = [claim for claim in second if claim.connection_id in two.waits]
    assert len(store.start_attempts(waiting, T0, ATTEMPT_TTL).started) == 1


def test_a_dead_workers_attempts_stop_counting_against_the_limit_at_their_deadline(
    store: SqlStore, tenant_id: str
) -> None:
    store.add_provider(tenant_id, replace(new_provider(), max_concurrency=2))
    _import(store, tenant_id, 4)
    store.start_attempts(store.claim_due(T0, 2, "dead", LEASE_TTL), T0, ATTEMPT_TTL)
    later = T0 + ATTEMPT_TTL + timedelta(seconds=1)
    claims = store.claim_due(later, 4, "alive", LEASE_TTL)
    assert len(claims) == 4  # the dead worker's two are retaken, with the two never started
    assert len(store.start_attempts(claims, later, ATTEMPT_TTL).started) == 2


def test_the_rate_limit_is_a_token_bucket_shared_by_every_worker(store: SqlStore, tenant_id: str) -> None:
    store.add_provider(tenant_id, replace(new_provider(), rate_limit_per_second=40.0))
    _import(store, tenant_id, 100)
    claims = store.claim_due(T0, 100, "w1", LEASE_TTL)
    started: set[str] = set()
    now = T0
    per_second: dict[int, int] = {}
    while len(started) < len(claims):
        waiting = [claim for claim in claims if claim.connection_id not in started]
        half = len(waiting) // 2 or 1
        for batch in (waiting[:half], waiting[half:]):  # two workers asking in turn
            starts = store.start_attempts(batch, now, ATTEMPT_TTL)
            started |= starts.started
            second = int((now - T0).total_seconds())
            per_second[second] = per_second.get(second, 0) + len(starts.started)
        now += timedelta(milliseconds=10)
    assert max(per_second.values()) <= 42  # 40 a second plus a burst of two
    assert (now - T0) >= timedelta(seconds=2.4)  # 100 at 40/s, less the first burst


def test_concurrent_starts_from_threads_never_exceed_the_limit(store: SqlStore, tenant_id: str) -> None:
    store.add_provider(tenant_id, replace(new_provider(), max_concurrency=3))
    _import(store, tenant_id, 40)
    claims = [store.claim_due(T0, 10, f"w{slot}", LEASE_TTL) for slot in range(4)]
    started: list[int] = [0] * 4
    barrier = threading.Barrier(4)

    def start(slot: int) -> None:
        barrier.wait()
        started[slot] = len(store.start_attempts(claims[slot], T0, ATTEMPT_TTL).started)

    threads = [threading.Thread(target=start, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(started) == 3


def test_providers_without_limits_start_everything_at_once(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    _import(store, tenant_id, 50)
    claims = store.claim_due(T0, 50, "w1", LEASE_TTL)
    assert len(store.start_attempts(claims, T0, ATTEMPT_TTL).started) == 50


def test_limits_are_listed_with_the_provider(store: SqlStore, tenant_id: str) -> None:
    store.add_provider(tenant_id, replace(new_provider("slow"), max_concurrency=7, rate_limit_per_second=2.5))
    listed = {p.name: p for p in store.list_providers(tenant_id)}["slow"]
    assert (listed.max_concurrency, listed.rate_limit_per_second) == (7, 2.5)


def test_commits_and_starts_share_one_call_and_a_freed_slot_counts_at_once(
    store: SqlStore, tenant_id: str
) -> None:
    store.add_provider(tenant_id, replace(new_provider(), max_concurrency=1))
    _import(store, tenant_id, 2)
    first, second = store.claim_due(T0, 2, "w", LEASE_TTL)
    assert store.start_attempts([first], T0, ATTEMPT_TTL).started == {first.connection_id}
    done = attempt_commit(first, Outcome(OutcomeClass.TRANSIENT, 503), ConnectionState(next_attempt_at=T0))

    committed, starts = store.commit_and_start([done], [second], T0, ATTEMPT_TTL)

    assert committed == [True]
    assert starts.started == {second.connection_id}  # the commit freed the only slot first
