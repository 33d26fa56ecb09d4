"""The refresh path converts only the instants it knows of (``commits.TIME_KEYS``); a new instant column
that is not in that list would reach the driver unconverted, so this checks the list is complete."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from grantkeeper.adapters.db.commits import TIME_KEYS, _attempt_row, _driver_values
from grantkeeper.adapters.db.hotpath import HotPath
from grantkeeper.adapters.db.rows import state_values
from grantkeeper.core.model import ConnectionState, Outcome, OutcomeClass, Transition
from grantkeeper.ports import AttemptCommit, AttemptRecord, ClaimedConnection, PlainSecret, ProviderConfig

T = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_every_instant_of_a_state_is_a_known_key() -> None:
    every_instant = {
        field.name: T for field in dataclasses.fields(ConnectionState) if "datetime" in str(field.type)
    }
    values = state_values(dataclasses.replace(ConnectionState(), **every_instant))
    instants = {name for name, value in values.items() if isinstance(value, datetime)}
    assert instants
    assert instants <= set(TIME_KEYS)


def test_the_attempt_row_instants_are_known_keys() -> None:
    provider = ProviderConfig("prv_1", "ten_1", "google", "https://oauth2.example.test/token", "id", "secret")
    claim = ClaimedConnection(
        "con_1", "ten_1", "u1", None, provider, ConnectionState(), PlainSecret("rt"), None, 1, "w1", T,
        started_at=T,
    )  # fmt: skip
    outcome = Outcome(OutcomeClass.TRANSIENT, 503)
    record = AttemptRecord("con_1", T, OutcomeClass.TRANSIENT, 503, None, timedelta(milliseconds=5))
    row = _attempt_row(AttemptCommit(claim, outcome, Transition(ConnectionState()), record, ()))
    instants = {name for name, value in row.items() if isinstance(value, datetime)}
    assert instants == {"attempted_at"}
    assert instants <= set(TIME_KEYS)
    assert {"fence_started_at", "updated_at"} <= set(TIME_KEYS)  # the fence's and the UPDATE's own


def test_instants_are_converted_and_everything_else_passes_through() -> None:
    seen: list[datetime] = []

    def time_in(value: datetime) -> str:
        seen.append(value)
        return value.isoformat()

    hot = HotPath("sqlite", time_in, lambda value: value)
    values = {"next_attempt_at": T, "failing_since": None, "status": "connected", "version": 3}
    assert _driver_values(hot, values) == {
        "next_attempt_at": T.isoformat(),
        "failing_since": None,
        "status": "connected",
        "version": 3,
    }
    assert seen == [T]
    assert values["next_attempt_at"] is T  # the caller's dict is left alone
