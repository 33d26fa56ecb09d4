"""The outbox dispatcher: its retry schedule (pure, with hypothesis) and runs over the real SQLite store."""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantkeeper.adapters.crypto import Keyring, generate_key_line
from grantkeeper.adapters.db import SqlStore, make_engine
from grantkeeper.core.routing import DestinationKind
from grantkeeper.ports import DeliveryResult, OutboxItem
from grantkeeper.service.dispatch import Dispatcher, DispatchReport, next_delivery_at
from grantkeeper.testing import FrozenClock
from tests.fixtures.db import T0, new_provider
from tests.integration.test_outbox_store import emit

LATER = T0 + timedelta(minutes=10)
BASE = timedelta(seconds=30)
CAP = timedelta(hours=1)
DELIVERED = DeliveryResult(is_delivered=True)
REFUSED = DeliveryResult(is_delivered=False, error="smtp_451")

attempts_counts = st.integers(min_value=1, max_value=200)
seeds = st.integers(min_value=0, max_value=2**32)
base_seconds = st.integers(min_value=1, max_value=3600)


def _delay(attempts: int, seed: int, base: timedelta = BASE, cap: timedelta = CAP) -> timedelta:
    return next_delivery_at(attempts, T0, random.Random(seed), base_delay=base, max_delay=cap) - T0


@given(attempts_counts, seeds, base_seconds, st.integers(min_value=1, max_value=1000))
def test_next_delivery_is_within_the_equal_jitter_bounds(
    attempts: int, seed: int, base: int, cap_factor: int
) -> None:
    base_delay = timedelta(seconds=base)
    max_delay = base_delay * cap_factor
    ceiling = min(base_delay * 2 ** min(attempts - 1, 32), max_delay)

    delay = _delay(attempts, seed, base_delay, max_delay)

    assert ceiling / 2 <= delay <= ceiling
    assert delay <= max_delay


@given(attempts_counts, seeds)
def test_next_delivery_never_comes_sooner_with_more_attempts_for_the_same_draw(
    attempts: int, seed: int
) -> None:
    assert _delay(attempts + 1, seed) >= _delay(attempts, seed)


@given(attempts_counts, seeds, seeds)
def test_next_delivery_at_least_halves_at_worst_whatever_the_draws(
    attempts: int, seed: int, other: int
) -> None:
    assert _delay(attempts + 1, other) >= _delay(attempts, seed) / 2


def test_next_delivery_reaches_the_cap_and_stays_there() -> None:
    assert all(CAP / 2 <= _delay(attempts, 7) <= CAP for attempts in range(9, 1000, 37))


def test_next_delivery_starts_from_the_base_delay() -> None:
    assert BASE / 2 <= _delay(1, 7) <= BASE


class RecordingSender:
    """A ``ChannelSender`` that answers from a script (results, or exceptions to raise), then delivers."""

    def __init__(self, channel: str, *script: DeliveryResult | Exception, pause: float = 0.0) -> None:
        self.channel = channel
        self.sent: list[OutboxItem] = []
        self._script = list(script)
        self._pause = pause
        self.in_flight = self.max_in_flight = 0

    async def send(self, item: OutboxItem) -> DeliveryResult:
        self.sent.append(item)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self._pause)
        finally:
            self.in_flight -= 1
        answer = self._script.pop(0) if self._script else DELIVERED
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def store(sqlite_template: Path, tmp_path: Path) -> Iterator[SqlStore]:
    path = tmp_path / "dispatch.db"
    shutil.copyfile(sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    yield SqlStore(engine, Keyring.parse(generate_key_line("unit")))
    engine.dispose()


@pytest.fixture
def tenant_id(store: SqlStore) -> str:
    tenant_id = store.ensure_tenant("acme")
    store.add_provider(tenant_id, new_provider())
    return tenant_id


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(LATER)


def dispatcher(store: SqlStore, clock: FrozenClock, *senders: RecordingSender, **options: int) -> Dispatcher:
    return Dispatcher(
        store,
        {sender.channel: sender for sender in senders},
        clock,
        owner="dispatcher-1",
        rng=random.Random(1),
        **options,  # type: ignore[arg-type]
    )


async def test_due_rows_are_delivered_once_each(store: SqlStore, tenant_id: str, clock: FrozenClock) -> None:
    emit(store, tenant_id, "u1", T0, "email", count=3)
    email = RecordingSender("email")

    report = await dispatcher(store, clock, email).deliver_due()

    assert report == DispatchReport(delivered=3)
    assert len({item.idempotency_key for item in email.sent}) == 3
    assert store.outbox_counts(tenant_id) == {"pending": 0, "delivered": 3, "failed": 0}
    assert await dispatcher(store, clock, email).deliver_due() == DispatchReport()


async def test_a_refused_delivery_is_retried_later_and_then_delivered(
    store: SqlStore, tenant_id: str, clock: FrozenClock
) -> None:
    emit(store, tenant_id, "u1", T0, "email")
    email = RecordingSender("email", REFUSED)
    relay = dispatcher(store, clock, email)

    assert await relay.deliver_due() == DispatchReport(retrying=1)
    assert await relay.deliver_due() == DispatchReport()  # not due yet
    clock.advance(BASE)
    assert await relay.deliver_due() == DispatchReport(delivered=1)

    assert [item.attempts for item in email.sent] == [0, 1]
    assert [d.is_delivered for d in store.list_deliveries(tenant_id)] == [True, False]


async def test_a_permanent_failure_is_not_retried(
    store: SqlStore, tenant_id: str, clock: FrozenClock
) -> None:
    emit(store, tenant_id, "u1", T0, "email")
    email = RecordingSender("email", DeliveryResult(False, "smtp_550", is_permanent=True))

    assert await dispatcher(store, clock, email).deliver_due() == DispatchReport(failed=1)

    clock.advance(timedelta(days=1))
    assert await dispatcher(store, clock, email).deliver_due() == DispatchReport()
    assert store.outbox_counts(tenant_id)["failed"] == 1


async def test_a_row_fails_after_max_attempts(store: SqlStore, tenant_id: str, clock: FrozenClock) -> None:
    emit(store, tenant_id, "u1", T0, "email")
    email = RecordingSender("email", REFUSED, REFUSED, REFUSED, REFUSED)
    relay = dispatcher(store, clock, email, max_attempts=3)

    reports = []
    for _ in range(4):
        reports.append(await relay.deliver_due())
        clock.advance(CAP)

    assert reports == [DispatchReport(retrying=1)] * 2 + [DispatchReport(failed=1), DispatchReport()]
    assert len(store.list_deliveries(tenant_id)) == 3
    assert store.outbox_counts(tenant_id) == {"pending": 0, "delivered": 0, "failed": 1}


async def test_a_channel_without_a_sender_waits_until_one_is_configured(
    store: SqlStore, tenant_id: str, clock: FrozenClock
) -> None:
    store.add_destination(tenant_id, DestinationKind.SLACK, "https://hooks.slack.example/T/B/x", T0)
    emit(store, tenant_id, "u1", T0, "email")
    email = RecordingSender("email")

    assert await dispatcher(store, clock, email).deliver_due() == DispatchReport(delivered=1)
    assert store.outbox_counts(tenant_id)["pending"] == 1  # the slack row is neither sent nor failed

    slack = RecordingSender("slack")
    assert await dispatcher(store, clock, email, slack).deliver_due() == DispatchReport(delivered=1)
    assert [d.channel for d in store.list_deliveries(tenant_id)].count("slack") == 1


async def test_a_sender_that_raises_is_retried_and_its_message_is_not_logged(
    store: SqlStore, tenant_id: str, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    emit(store, tenant_id, "u1", T0, "email")
    email = RecordingSender("email", RuntimeError("Dear user-1, your at-plain-u1 ..."))

    with caplog.at_level(logging.DEBUG):
        assert await dispatcher(store, clock, email).deliver_due() == DispatchReport(retrying=1)

    assert store.list_deliveries(tenant_id)[0].error == "RuntimeError"
    assert "RuntimeError" in caplog.text
    assert "at-plain-u1" not in caplog.text


async def test_sends_run_concurrently_up_to_the_bound(
    store: SqlStore, tenant_id: str, clock: FrozenClock
) -> None:
    emit(store, tenant_id, "u1", T0, "email", count=12)
    email = RecordingSender("email", pause=0.02)

    report = await dispatcher(store, clock, email, concurrency=3, batch_size=5).deliver_due()

    assert report == DispatchReport(delivered=12)
    assert email.max_in_flight == 3


def test_a_dispatcher_refuses_nonsense_settings(store: SqlStore, clock: FrozenClock) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        dispatcher(store, clock, concurrency=0)
    with pytest.raises(ValueError, match="half of lease_ttl"):
        Dispatcher(
            store, {}, clock, owner="o", lease_ttl=timedelta(seconds=60), send_timeout=timedelta(seconds=31)
        )


async def test_a_row_whose_lease_is_nearly_over_is_deferred_not_sent(
    store: SqlStore, tenant_id: str, clock: FrozenClock
) -> None:
    """A send must end before the lease does, or a second dispatcher could send the row at the same time."""
    emit(store, tenant_id, "u1", T0, "email")
    [item] = store.claim_outbox(clock.now(), 10, "slow", timedelta(seconds=90))
    email = RecordingSender("email")
    relay = Dispatcher(store, {"email": email}, clock, owner="slow", send_timeout=timedelta(seconds=60))

    clock.advance(timedelta(seconds=31))  # 59 s of the lease left: less than one send
    assert await relay._deliver(item) == DispatchReport(deferred=1)
    assert email.sent == []
    assert store.outbox_counts(tenant_id)["pending"] == 1
