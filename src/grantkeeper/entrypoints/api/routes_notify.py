"""``/v1/webhooks``, ``/v1/channels``, ``/v1/users/{user_id}/preferences`` and ``/v1/deliveries`` (issue 4).

Every call is scoped to the key's tenant: another tenant's destination answers 404, as if it did not exist,
and so does a destination of the other kind (a Slack channel's id under ``/v1/webhooks``). No response holds
a Slack or Discord URL's path (the credential) or a webhook's signing secret, except the 201 that creates the
webhook: its secret is shown there once.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from grantkeeper.core.routing import ChannelKind, DestinationKind
from grantkeeper.entrypoints.api.context import Context, Tenant
from grantkeeper.entrypoints.api.errors import Problem, not_found, problem_responses
from grantkeeper.entrypoints.api.schemas import (
    ChannelIn,
    ChannelOut,
    DeliveryOut,
    PreferencesOut,
    PreferencesPatch,
    WebhookCreatedOut,
    WebhookIn,
    WebhookOut,
)
from grantkeeper.ports import DestinationRecord, UnknownDestinationError
from grantkeeper.service import destinations as service
from grantkeeper.service.destinations import (
    CHAT_KINDS,
    KEEP,
    MAX_USER_ID_LENGTH,
    WEBHOOK_KINDS,
    PreferenceChange,
)

_ERRORS = problem_responses(400, 401, 404, 422)
webhooks = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=_ERRORS)
channels = APIRouter(prefix="/v1/channels", tags=["channels"], responses=_ERRORS)
preferences = APIRouter(prefix="/v1/users", tags=["preferences"], responses=_ERRORS)
deliveries = APIRouter(prefix="/v1/deliveries", tags=["deliveries"], responses=_ERRORS)

UserIdPath = Annotated[str, Path(min_length=1, max_length=MAX_USER_ID_LENGTH, pattern=r"^[^\x00-\x1f\x7f]*$")]


async def _remove(
    context: Context, tenant_id: str, destination_id: str, kinds: frozenset[DestinationKind]
) -> None:
    try:
        await asyncio.to_thread(service.remove_destination, context.store, tenant_id, destination_id, kinds)
    except UnknownDestinationError:
        raise _not_found(kinds, destination_id) from None


async def _enable(
    context: Context, tenant_id: str, destination_id: str, kinds: frozenset[DestinationKind]
) -> DestinationRecord:
    try:
        return await asyncio.to_thread(
            service.enable_destination, context.store, tenant_id, destination_id, kinds
        )
    except UnknownDestinationError:
        raise _not_found(kinds, destination_id) from None


def _not_found(kinds: frozenset[DestinationKind], destination_id: str) -> Problem:
    return not_found("webhook" if kinds == WEBHOOK_KINDS else "channel", destination_id)


@webhooks.post("", status_code=status.HTTP_201_CREATED, response_model=WebhookCreatedOut)
async def create_webhook(body: WebhookIn, context: Context, tenant: Tenant) -> WebhookCreatedOut:
    """Register a Standard Webhooks endpoint; the signing secret is in this response only."""
    record, secret = await asyncio.to_thread(
        service.add_webhook, context.store, tenant.tenant_id, body.url, context.clock.now()
    )
    return WebhookCreatedOut(secret=secret, **WebhookOut.fields_of(record))


@webhooks.get("", response_model=list[WebhookOut])
async def list_webhooks(context: Context, tenant: Tenant) -> list[WebhookOut]:
    """Endpoints with their status: one disabled after repeated failures says so, with ``last_error``."""
    records = await asyncio.to_thread(
        service.list_destinations, context.store, tenant.tenant_id, WEBHOOK_KINDS
    )
    return [WebhookOut.of(r) for r in records]


@webhooks.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_webhook(webhook_id: str, context: Context, tenant: Tenant) -> Response:
    await _remove(context, tenant.tenant_id, webhook_id, WEBHOOK_KINDS)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@webhooks.post("/{webhook_id}/enable", response_model=WebhookOut)
async def enable_webhook(webhook_id: str, context: Context, tenant: Tenant) -> WebhookOut:
    """Re-enable an endpoint disabled after repeated failures, with a clean failure count."""
    return WebhookOut.of(await _enable(context, tenant.tenant_id, webhook_id, WEBHOOK_KINDS))


@channels.post("", status_code=status.HTTP_201_CREATED, response_model=ChannelOut)
async def create_channel(body: ChannelIn, context: Context, tenant: Tenant) -> ChannelOut:
    """Register a Slack or Discord incoming webhook, for one user (``user_id``) or the whole tenant."""
    record = await asyncio.to_thread(
        service.add_chat_channel,
        context.store,
        tenant.tenant_id,
        body.kind,
        body.url,
        body.user_id,
        context.clock.now(),
    )
    return ChannelOut.of(record)


@channels.get("", response_model=list[ChannelOut])
async def list_channels(context: Context, tenant: Tenant) -> list[ChannelOut]:
    records = await asyncio.to_thread(service.list_destinations, context.store, tenant.tenant_id, CHAT_KINDS)
    return [ChannelOut.of(r) for r in records]


@channels.delete("/{channel_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_channel(channel_id: str, context: Context, tenant: Tenant) -> Response:
    await _remove(context, tenant.tenant_id, channel_id, CHAT_KINDS)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@channels.post("/{channel_id}/enable", response_model=ChannelOut)
async def enable_channel(channel_id: str, context: Context, tenant: Tenant) -> ChannelOut:
    """Re-enable a channel disabled after repeated failures, with a clean failure count."""
    return ChannelOut.of(await _enable(context, tenant.tenant_id, channel_id, CHAT_KINDS))


@preferences.get("/{user_id}/preferences", response_model=PreferencesOut)
async def get_preferences(user_id: UserIdPath, context: Context, tenant: Tenant) -> PreferencesOut:
    """A user's notification preferences; the defaults (``updated_at`` null) when they never chose."""
    prefs = await asyncio.to_thread(service.get_preferences, context.store, tenant.tenant_id, user_id)
    return PreferencesOut.of(prefs)


@preferences.patch("/{user_id}/preferences", response_model=PreferencesOut)
async def update_preferences(
    user_id: UserIdPath, body: PreferencesPatch, context: Context, tenant: Tenant
) -> PreferencesOut:
    """Change some preferences; fields left out keep their value."""
    change = PreferenceChange(
        email=body.email,
        slack=body.slack,
        discord=body.discord,
        warning_email=body.warning_email,
        email_address=body.email_address if "email_address" in body.model_fields_set else KEEP,
    )
    prefs = await asyncio.to_thread(
        service.update_preferences, context.store, tenant.tenant_id, user_id, change, context.clock.now()
    )
    return PreferencesOut.of(prefs)


@deliveries.get("", response_model=list[DeliveryOut])
async def list_deliveries(
    context: Context,
    tenant: Tenant,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    destination_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    channel: ChannelKind | None = None,
) -> list[DeliveryOut]:
    """Delivery attempts, newest first; an unknown ``destination_id`` is a 422."""
    records = await asyncio.to_thread(
        service.list_deliveries,
        context.store,
        tenant.tenant_id,
        limit,
        destination_id=destination_id,
        channel=None if channel is None else channel.value,
    )
    return [DeliveryOut.of(r) for r in records]
