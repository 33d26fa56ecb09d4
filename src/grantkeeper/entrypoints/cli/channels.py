"""``grantkeeper webhooks``, ``channels``, ``preferences``, ``deliveries``: where notifications go (issue 4).

Nothing printed here holds a Slack or Discord URL's path (it is the credential) or a webhook's signing secret,
except the secret ``webhooks add`` prints once, when it is made.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from grantkeeper.core.routing import ChannelKind, DestinationKind, WarningEmail
from grantkeeper.entrypoints.cli.app import CliError, JsonOption, TenantOption, app, handle_errors, runtime
from grantkeeper.entrypoints.cli.output import console, iso, print_json, table
from grantkeeper.ports import DeliveryAttemptRecord, DestinationRecord, UserPreferences
from grantkeeper.service import destinations as service
from grantkeeper.service.destinations import CHAT_KINDS, KEEP, WEBHOOK_KINDS, ChatKind, PreferenceChange

webhooks_app = typer.Typer(
    help="Standard Webhooks endpoints of the application (signed event deliveries).", no_args_is_help=True
)
channels_app = typer.Typer(help="Slack and Discord incoming webhooks.", no_args_is_help=True)
preferences_app = typer.Typer(help="Users' notification preferences.", no_args_is_help=True)
deliveries_app = typer.Typer(help="Attempts to deliver notifications and events.", no_args_is_help=True)
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(channels_app, name="channels")
app.add_typer(preferences_app, name="preferences")
app.add_typer(deliveries_app, name="deliveries")

DestinationId = Annotated[str, typer.Argument(help="The destination id (from `list`).")]


class Switch(StrEnum):
    ON = "on"
    OFF = "off"


def destination_dict(record: DestinationRecord) -> dict[str, Any]:
    """A destination as listings show it: ``url`` is the hint (scheme://host/…), never a chat URL's path."""
    return {
        "id": record.destination_id,
        "kind": record.kind.value,
        "user_id": record.user_id,
        "url": record.url_hint,
        "status": record.status,
        "consecutive_failures": record.consecutive_failures,
        "last_error": record.last_error,
        "disabled_at": iso(record.disabled_at),
        "created_at": iso(record.created_at),
    }


def _print_destinations(title: str, records: list[DestinationRecord], *, json_output: bool) -> None:
    rows = [destination_dict(r) for r in records]
    if json_output:
        print_json(rows)
        return
    columns = ("id", "kind", "user_id", "url", "status", "failures", "last_error", "disabled_at")
    cells = (
        (
            r["id"],
            r["kind"],
            r["user_id"] or "(tenant-wide)",
            r["url"],
            r["status"],
            r["consecutive_failures"],
            r["last_error"],
            r["disabled_at"],
        )
        for r in rows
    )
    console.print(table(title, columns, cells))


def _remove(tenant: str, destination_id: str, kinds: frozenset[DestinationKind], json_output: bool) -> None:
    with runtime() as rt:
        service.remove_destination(rt.store, rt.store.ensure_tenant(tenant), destination_id, kinds)
    if json_output:
        print_json({"id": destination_id, "removed": True})
    else:
        console.print(f"removed {destination_id}")


def _enable(tenant: str, destination_id: str, kinds: frozenset[DestinationKind], json_output: bool) -> None:
    with runtime() as rt:
        record = service.enable_destination(rt.store, rt.store.ensure_tenant(tenant), destination_id, kinds)
    if json_output:
        print_json(destination_dict(record))
    else:
        console.print(f"{record.destination_id} is {record.status}")


@webhooks_app.command("add")
@handle_errors
def webhooks_add(
    url: Annotated[str, typer.Argument(help="The endpoint (https://; http only to loopback).")],
    tenant: TenantOption = "default",
    json_output: JsonOption = False,
) -> None:
    """Register an endpoint and print its signing secret, once."""
    with runtime() as rt:
        record, secret = service.add_webhook(rt.store, rt.store.ensure_tenant(tenant), url, rt.clock.now())
    if json_output:
        print_json({"id": record.destination_id, "url": record.url_hint, "secret": secret})
        return
    console.print(f"added webhook {record.destination_id} ({record.url_hint})", highlight=False)
    console.print("signing secret (shown once, store it now):")
    typer.echo(secret)


@webhooks_app.command("list")
@handle_errors
def webhooks_list(tenant: TenantOption = "default", json_output: JsonOption = False) -> None:
    """List endpoints with their status: one disabled after repeated failures says so here."""
    with runtime() as rt:
        records = service.list_destinations(rt.store, rt.store.ensure_tenant(tenant), WEBHOOK_KINDS)
    _print_destinations("Webhooks", records, json_output=json_output)


@webhooks_app.command("remove")
@handle_errors
def webhooks_remove(
    destination_id: DestinationId, tenant: TenantOption = "default", json_output: JsonOption = False
) -> None:
    """Remove an endpoint; its pending deliveries go with it."""
    _remove(tenant, destination_id, WEBHOOK_KINDS, json_output)


@webhooks_app.command("enable")
@handle_errors
def webhooks_enable(
    destination_id: DestinationId, tenant: TenantOption = "default", json_output: JsonOption = False
) -> None:
    """Re-enable an endpoint disabled after repeated failures."""
    _enable(tenant, destination_id, WEBHOOK_KINDS, json_output)


@channels_app.command("add")
@handle_errors
def channels_add(
    kind: Annotated[ChatKind, typer.Argument(help="slack or discord.")],
    url: Annotated[str, typer.Argument(help="The incoming-webhook URL (its path is a secret).")],
    user_id: Annotated[
        str | None, typer.Option("--user-id", help="Only this user's notifications (default: tenant-wide).")
    ] = None,
    tenant: TenantOption = "default",
    json_output: JsonOption = False,
) -> None:
    """Register a Slack or Discord incoming webhook, for one user or the whole tenant."""
    with runtime() as rt:
        record = service.add_chat_channel(
            rt.store, rt.store.ensure_tenant(tenant), kind, url, user_id, rt.clock.now()
        )
    if json_output:
        print_json(
            {
                "id": record.destination_id,
                "kind": record.kind.value,
                "user_id": record.user_id,
                "url": record.url_hint,
            }
        )
        return
    scope = f"user {record.user_id}" if record.user_id else "the whole tenant"
    console.print(f"added {record.kind.value} channel {record.destination_id} for {scope}", highlight=False)


@channels_app.command("list")
@handle_errors
def channels_list(tenant: TenantOption = "default", json_output: JsonOption = False) -> None:
    """List Slack and Discord channels (URL host only) with their status."""
    with runtime() as rt:
        records = service.list_destinations(rt.store, rt.store.ensure_tenant(tenant), CHAT_KINDS)
    _print_destinations("Channels", records, json_output=json_output)


@channels_app.command("remove")
@handle_errors
def channels_remove(
    destination_id: DestinationId, tenant: TenantOption = "default", json_output: JsonOption = False
) -> None:
    """Remove a channel; its pending deliveries go with it."""
    _remove(tenant, destination_id, CHAT_KINDS, json_output)


@channels_app.command("enable")
@handle_errors
def channels_enable(
    destination_id: DestinationId, tenant: TenantOption = "default", json_output: JsonOption = False
) -> None:
    """Re-enable a channel disabled after repeated failures."""
    _enable(tenant, destination_id, CHAT_KINDS, json_output)


def preferences_dict(prefs: UserPreferences) -> dict[str, Any]:
    return {
        "user_id": prefs.user_id,
        "email": prefs.preferences.email,
        "slack": prefs.preferences.slack,
        "discord": prefs.preferences.discord,
        "warning_email": prefs.preferences.warning_email.value,
        "email_address": prefs.email_address,
        "updated_at": iso(prefs.updated_at),
    }


def _print_preferences(prefs: UserPreferences, *, json_output: bool) -> None:
    shown = preferences_dict(prefs)
    if json_output:
        print_json(shown)
        return
    if prefs.updated_at is None:
        shown["updated_at"] = "never set (defaults)"
    rows = ((name, {True: "on", False: "off"}.get(value, value)) for name, value in shown.items())
    console.print(table(f"Preferences of {prefs.user_id}", ("setting", "value"), rows))


@preferences_app.command("show")
@handle_errors
def preferences_show(user_id: str, tenant: TenantOption = "default", json_output: JsonOption = False) -> None:
    """Show a user's notification preferences (the defaults if they never chose)."""
    with runtime() as rt:
        prefs = service.get_preferences(rt.store, rt.store.ensure_tenant(tenant), user_id)
    _print_preferences(prefs, json_output=json_output)


def _on(value: Switch | None) -> bool | None:
    return None if value is None else value is Switch.ON


@preferences_app.command("set")
@handle_errors
def preferences_set(
    user_id: str,
    email: Annotated[Switch | None, typer.Option(help="Email notifications.")] = None,
    slack: Annotated[Switch | None, typer.Option(help="The user's own Slack channels.")] = None,
    discord: Annotated[Switch | None, typer.Option(help="The user's own Discord channels.")] = None,
    warning_email: Annotated[
        WarningEmail | None, typer.Option(help="Warning emails: at once, in a daily digest, or never.")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Email address used when a connection has none.")
    ] = None,
    clear_address: Annotated[bool, typer.Option(help="Forget the fallback email address.")] = False,
    tenant: TenantOption = "default",
    json_output: JsonOption = False,
) -> None:
    """Change some of a user's preferences; the ones not named keep their value."""
    if address is not None and clear_address:
        raise CliError("choose --address or --clear-address, not both")
    change = PreferenceChange(
        email=_on(email),
        slack=_on(slack),
        discord=_on(discord),
        warning_email=warning_email,
        email_address=None if clear_address else (KEEP if address is None else address),
    )
    if change.is_empty:
        raise CliError(
            "name at least one of --email, --slack, --discord, --warning-email, --address, --clear-address"
        )
    with runtime() as rt:
        prefs = service.update_preferences(
            rt.store, rt.store.ensure_tenant(tenant), user_id, change, rt.clock.now()
        )
    _print_preferences(prefs, json_output=json_output)


def delivery_dict(record: DeliveryAttemptRecord) -> dict[str, Any]:
    return {
        "outbox_id": record.outbox_id,
        "channel": record.channel,
        "destination_id": record.destination_id,
        "notification_id": record.notification_id,
        "event": record.event,
        "attempted_at": iso(record.attempted_at),
        "delivered": record.is_delivered,
        "error": record.error,
        "duration_ms": round(record.duration.total_seconds() * 1000),
    }


@deliveries_app.command("list")
@handle_errors
def deliveries_list(
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    destination: Annotated[str | None, typer.Option(help="Only attempts for this destination id.")] = None,
    channel: Annotated[ChannelKind | None, typer.Option(help="Only attempts on this channel.")] = None,
    tenant: TenantOption = "default",
    json_output: JsonOption = False,
) -> None:
    """List delivery attempts, newest first (a short error reason, never a message or a URL)."""
    with runtime() as rt:
        records = service.list_deliveries(
            rt.store,
            rt.store.ensure_tenant(tenant),
            limit,
            destination_id=destination,
            channel=None if channel is None else channel.value,
        )
    rows = [delivery_dict(r) for r in records]
    if json_output:
        print_json(rows)
        return
    columns = ("outbox_id", "channel", "destination", "event", "attempted_at", "delivered", "error", "ms")
    cells = (
        (
            r["outbox_id"],
            r["channel"],
            r["destination_id"],
            r["event"],
            r["attempted_at"],
            "yes" if r["delivered"] else "no",
            r["error"],
            r["duration_ms"],
        )
        for r in rows
    )
    console.print(table("Delivery attempts", columns, cells))
