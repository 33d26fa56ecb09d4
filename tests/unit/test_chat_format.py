"""The Slack and Discord message formats, checked as values without a network."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from grantkeeper.adapters.notify.chat import DISCORD_COLORS, discord_message, slack_message
from grantkeeper.adapters.notify.email_message import ReconnectLink
from grantkeeper.core.model import NotificationType
from grantkeeper.ports import OutboxItem

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
LINK = ReconnectLink("https://gk.test/connect/conn-1?token=abc", NOW + timedelta(days=7))
LINKED = (NotificationType.WARNING, NotificationType.DISCONNECTED)
UNLINKED = (NotificationType.RATE_LIMIT, NotificationType.RECOVERED)
EXPECTED_NOTE = {
    NotificationType.DISCONNECTED: "User u-42 must reconnect Xero.",
    NotificationType.WARNING: "User u-42 may soon need to reconnect Xero.",
}


def make_item(kind: NotificationType | None = NotificationType.DISCONNECTED, **changes: object) -> OutboxItem:
    item = OutboxItem(
        outbox_id="ob-1",
        notification_id="n-1",
        channel="slack",
        attempts=0,
        tenant_id="t-1",
        connection_id="conn-1",
        user_id="u-42",
        email=None,
        provider="Xero",
        type=kind,
        title="Xero disconnected",
        message="Xero no longer accepts our access. Workflows that use it are paused.",
        metadata={},
        created_at=NOW,
        destination_user_id="u-42",
    )
    return replace(item, **changes)  # type: ignore[arg-type]


def slack_buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        element for block in message["blocks"] if block["type"] == "actions" for element in block["elements"]
    ]


def slack_section_text(message: dict[str, Any]) -> str:
    [section] = [block for block in message["blocks"] if block["type"] == "section"]
    return str(section["text"]["text"])


@pytest.mark.parametrize("kind", LINKED)
def test_slack_per_user_linked_types_carry_a_reconnect_button(kind: NotificationType):
    message = slack_message(make_item(kind), LINK)

    assert message["text"] == "Xero disconnected"
    assert message["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Xero disconnected"},
    }
    assert "Workflows that use it are paused." in slack_section_text(message)
    [button] = slack_buttons(message)
    assert button["text"]["text"] == "Reconnect now"
    assert button["url"] == LINK.url


@pytest.mark.parametrize("kind", UNLINKED)
def test_slack_informational_types_carry_no_button_even_if_given_a_link(kind: NotificationType):
    message = slack_message(make_item(kind), LINK)
    assert slack_buttons(message) == []
    assert "/connect/" not in json.dumps(message)


@pytest.mark.parametrize("kind", LINKED)
def test_slack_tenant_wide_names_the_user_and_carries_no_link(kind: NotificationType):
    message = slack_message(make_item(kind, destination_user_id=None), LINK)

    assert slack_buttons(message) == []
    assert "/connect/" not in json.dumps(message)
    text = slack_section_text(message)
    assert "User u-42" in text
    assert EXPECTED_NOTE[kind] in text


def test_slack_tenant_wide_informational_names_the_user():
    message = slack_message(make_item(NotificationType.RECOVERED, destination_user_id=None), None)
    assert "u-42" in slack_section_text(message)
    assert "reconnect" not in slack_section_text(message)


def test_slack_escapes_control_characters_in_mrkdwn_text():
    provider = "<!channel> & <https://evil.test|click>"
    item = make_item(title=f"{provider} disconnected", message=f"{provider} no longer accepts our access.")
    message = slack_message(item, LINK)

    escaped = "&lt;!channel&gt; &amp; &lt;https://evil.test|click&gt;"
    assert message["text"] == f"{escaped} disconnected"
    assert slack_section_text(message).startswith(f"{escaped} no longer")
    assert "<!channel>" not in slack_section_text(message)
    # The header is plain_text, which Slack never parses: it keeps the words as they are.
    assert message["blocks"][0]["text"]["text"] == f"{provider} disconnected"


def test_slack_truncates_to_block_kit_limits():
    message = slack_message(make_item(title="T" * 400, message="M" * 5000), None)
    assert len(message["blocks"][0]["text"]["text"]) == 150
    assert len(slack_section_text(message)) == 3000


@pytest.mark.parametrize("offset", range(5))
def test_slack_truncation_never_leaves_half_an_entity(offset: int):
    text = slack_section_text(slack_message(make_item(message="M" * offset + "&" * 3000), None))
    assert len(text) <= 3000
    assert text.endswith("&amp;…")


@pytest.mark.parametrize("kind", LINKED)
def test_discord_per_user_links_the_embed(kind: NotificationType):
    message = discord_message(make_item(kind, channel="discord"), LINK)

    assert message["content"] == ""
    assert message["allowed_mentions"] == {"parse": []}
    [embed] = message["embeds"]
    assert embed["title"] == "Xero disconnected"
    assert embed["url"] == LINK.url
    assert embed["description"].startswith("Xero no longer accepts our access.")
    assert f"[Reconnect now]({LINK.url})" in embed["description"]
    assert embed["color"] == DISCORD_COLORS[kind]


@pytest.mark.parametrize("kind", LINKED)
def test_discord_tenant_wide_names_the_user_and_carries_no_link(kind: NotificationType):
    message = discord_message(make_item(kind, destination_user_id=None), LINK)

    [embed] = message["embeds"]
    assert "url" not in embed
    assert "/connect/" not in json.dumps(message)
    assert "User u-42" in embed["description"]
    assert EXPECTED_NOTE[kind] in embed["description"]


def test_discord_colours_by_type():
    colours = {
        kind: discord_message(make_item(kind), None)["embeds"][0]["color"] for kind in NotificationType
    }
    assert colours[NotificationType.DISCONNECTED] == 0xD93F0B  # red
    assert colours[NotificationType.WARNING] == 0xF2A900  # amber
    assert colours[NotificationType.RATE_LIMIT] == 0x95A5A6  # grey
    assert colours[NotificationType.RECOVERED] == 0x2EB67D  # green
    assert discord_message(make_item(None), None)["embeds"][0]["color"] == 0x95A5A6


@pytest.mark.parametrize("kind", UNLINKED)
def test_discord_informational_types_are_not_linked(kind: NotificationType):
    [embed] = discord_message(make_item(kind), LINK)["embeds"]
    assert "url" not in embed
    assert "/connect/" not in embed["description"]


def test_discord_truncates_to_embed_limits_and_keeps_the_link():
    message = discord_message(make_item(title="T" * 300, message="M" * 5000), LINK)
    [embed] = message["embeds"]
    assert len(embed["title"]) == 256
    assert embed["title"].endswith("…")
    assert len(embed["description"]) == 4096
    assert embed["description"].endswith(f"[Reconnect now]({LINK.url})")


def test_formats_are_json_serializable_with_non_ascii_text():
    item = make_item(provider="Zoho Bücher", title="Zoho Bücher disconnected", message="Zoho Bücher — gone")
    for message in (slack_message(item, LINK), discord_message(item, LINK)):
        assert json.loads(json.dumps(message, ensure_ascii=False)) == message
