"""The pure fan-out rules: which outbox rows a notification or an event becomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantkeeper.core.model import NotificationType as Kind
from grantkeeper.core.routing import (
    ChannelKind,
    Destination,
    DestinationKind,
    EventType,
    Preferences,
    Route,
    WarningEmail,
    digest_due_at,
    event_payload,
    route_event,
    route_notification,
)

SLACK_TEAM = Destination("dst_team", DestinationKind.SLACK)
SLACK_ANN = Destination("dst_ann", DestinationKind.SLACK, user_id="ann")
DISCORD_BOB = Destination("dst_bob", DestinationKind.DISCORD, user_id="bob")
HOOK = Destination("dst_hook", DestinationKind.WEBHOOK)
HOOK_OFF = Destination("dst_off", DestinationKind.WEBHOOK, is_enabled=False)
ALL = (SLACK_TEAM, SLACK_ANN, DISCORD_BOB, HOOK, HOOK_OFF)


DEFAULTS = Preferences()


def routes(
    kind: Kind, prefs: Preferences = DEFAULTS, *, wants_email: bool = True, user: str = "ann"
) -> tuple[Route, ...]:
    return route_notification(
        kind, wants_email=wants_email, has_address=True, user_id=user, preferences=prefs, destinations=ALL
    )


def test_a_warning_goes_to_email_the_users_own_chat_team_chat_and_enabled_webhooks() -> None:
    assert routes(Kind.WARNING) == (
        Route(ChannelKind.EMAIL),
        Route(ChannelKind.SLACK, "dst_team"),
        Route(ChannelKind.SLACK, "dst_ann"),
        Route(ChannelKind.WEBHOOK, "dst_hook"),
    )


def test_another_users_chat_destination_never_gets_it() -> None:
    assert Route(ChannelKind.DISCORD, "dst_bob") not in routes(Kind.WARNING)
    assert Route(ChannelKind.DISCORD, "dst_bob") in routes(Kind.WARNING, user="bob")


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (WarningEmail.IMMEDIATE, ChannelKind.EMAIL),
        (WarningEmail.DIGEST, ChannelKind.EMAIL_DIGEST),
        (WarningEmail.NEVER, None),
    ],
)
def test_warning_email_follows_the_preference_but_the_disconnection_always_goes(
    mode: WarningEmail, expected: ChannelKind | None
) -> None:
    prefs = Preferences(warning_email=mode)
    emails = [r.channel for r in routes(Kind.WARNING, prefs) if r.destination_id is None]
    assert emails == ([expected] if expected else [])
    assert [r.channel for r in routes(Kind.DISCONNECTED, prefs) if r.destination_id is None] == [
        ChannelKind.EMAIL
    ]


def test_email_off_means_no_email_at_all() -> None:
    prefs = Preferences(email=False)
    for kind in Kind:
        assert all(r.destination_id is not None for r in routes(kind, prefs))


def test_the_policy_table_decides_email_first() -> None:
    """Rate-limit notices and recoveries are not emailed (DESIGN section 2), whatever the preferences."""
    assert all(r.destination_id is not None for r in routes(Kind.RATE_LIMIT, wants_email=False))


def test_a_users_chat_switch_covers_their_own_destinations_only() -> None:
    got = routes(Kind.WARNING, Preferences(slack=False))
    assert Route(ChannelKind.SLACK, "dst_ann") not in got
    assert Route(ChannelKind.SLACK, "dst_team") in got  # the operator's team channel


def test_without_an_address_there_is_no_email_row() -> None:
    got = route_notification(
        Kind.DISCONNECTED,
        wants_email=True,
        has_address=False,
        user_id="ann",
        preferences=Preferences(),
        destinations=(),
    )
    assert got == ()


def test_events_without_a_user_go_to_enabled_webhooks_only() -> None:
    assert route_event(ALL) == (Route(ChannelKind.WEBHOOK, "dst_hook"),)


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    st.integers(0, 23),
)
def test_digest_is_due_at_the_next_digest_hour_within_a_day(created_at: datetime, hour: int) -> None:
    due = digest_due_at(created_at, hour)
    assert created_at < due <= created_at + timedelta(days=1)
    assert (due.hour, due.minute, due.second, due.microsecond) == (hour, 0, 0, 0)


def test_a_days_warnings_share_one_digest_time() -> None:
    day = datetime(2025, 3, 1, 9, 0, 1, tzinfo=UTC)
    times = {digest_due_at(day + timedelta(hours=h), 9) for h in range(0, 24)}
    assert times == {datetime(2025, 3, 2, 9, tzinfo=UTC)}


def test_digest_hour_is_checked() -> None:
    with pytest.raises(ValueError, match="digest_hour"):
        digest_due_at(datetime(2025, 1, 1, tzinfo=UTC), 24)


def test_event_payload_is_the_standard_webhooks_envelope() -> None:
    at = datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert event_payload(EventType.WORKFLOW_PAUSED, at, {"workflow_id": "w"}) == {
        "type": "workflow.paused",
        "timestamp": "2025-03-01T12:00:00+00:00",
        "data": {"workflow_id": "w"},
    }
