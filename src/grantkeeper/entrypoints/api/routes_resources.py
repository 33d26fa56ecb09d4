"""``/v1/providers``, ``/v1/workflows`` and ``/v1/notifications``, each scoped to the key's tenant."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from grantkeeper.core.model import NotificationType
from grantkeeper.entrypoints.api.context import Context, Tenant
from grantkeeper.entrypoints.api.errors import not_found, problem_responses
from grantkeeper.entrypoints.api.schemas import (
    NotificationOut,
    ProviderIn,
    ProviderOut,
    ProviderPatch,
    WorkflowIn,
    WorkflowOut,
)
from grantkeeper.ports import NewProvider, UnknownProviderError
from grantkeeper.service import admin

_ERRORS = problem_responses(400, 401, 404, 409, 422)
providers = APIRouter(prefix="/v1/providers", tags=["providers"], responses=_ERRORS)
workflows = APIRouter(prefix="/v1/workflows", tags=["workflows"], responses=_ERRORS)
notifications = APIRouter(prefix="/v1/notifications", tags=["notifications"], responses=_ERRORS)


@providers.post("", status_code=status.HTTP_201_CREATED, response_model=ProviderOut)
async def create_provider(body: ProviderIn, context: Context, tenant: Tenant) -> ProviderOut:
    provider = NewProvider(
        name=body.name,
        token_url=body.token_url,
        client_id=body.client_id,
        client_secret=body.client_secret,
        auth_method=body.auth_method,
        default_expires_in=body.default_expires_in,
        authorize_url=body.authorize_url,
        revocation_url=body.revocation_url,
        introspection_url=body.introspection_url,
        scopes=body.scopes,
        authorize_params=body.authorize_params,
        account_field=body.account_field,
        issuer=body.issuer,
        max_concurrency=body.max_concurrency,
        rate_limit_per_second=body.rate_limit_per_second,
    )
    created = await asyncio.to_thread(admin.add_provider, context.store, tenant.tenant_id, provider)
    return ProviderOut.of(created)


@providers.get("", response_model=list[ProviderOut])
async def list_providers(context: Context, tenant: Tenant) -> list[ProviderOut]:
    return [
        ProviderOut.of(p) for p in await asyncio.to_thread(context.store.list_providers, tenant.tenant_id)
    ]


@providers.get("/{name}", response_model=ProviderOut)
async def get_provider(name: str, context: Context, tenant: Tenant) -> ProviderOut:
    provider = await asyncio.to_thread(context.store.get_provider, tenant.tenant_id, name)
    if provider is None:
        raise not_found("provider", name)
    return ProviderOut.of(provider)


@providers.patch("/{name}", response_model=ProviderOut)
async def update_provider(name: str, body: ProviderPatch, context: Context, tenant: Tenant) -> ProviderOut:
    """Change some of a provider's settings: rotate its client secret, name its issuer, set its limits."""
    changes = {field: getattr(body, field) for field in body.model_fields_set}
    updated = await asyncio.to_thread(admin.update_provider, context.store, tenant.tenant_id, name, changes)
    if updated is None:
        raise not_found("provider", name)
    return ProviderOut.of(updated)


@providers.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_provider(
    name: str,
    context: Context,
    tenant: Tenant,
    with_connections: Annotated[
        bool, Query(description="Remove its connections too; without it, a provider that has any is a 409")
    ] = False,
) -> Response:
    """Remove a provider. Its connections go with it only when asked (``with_connections=true``): their
    tokens are forgotten, not revoked at the provider; revoke a grant first with ``DELETE
    /v1/connections/{id}``. 409 ``provider-in-use`` (with the count) when it has connections and that was
    not asked; nothing changes then."""
    try:
        await asyncio.to_thread(
            context.store.delete_provider, tenant.tenant_id, name, with_connections=with_connections
        )
    except UnknownProviderError:
        raise not_found("provider", name) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@workflows.post("", status_code=status.HTTP_201_CREATED, response_model=WorkflowOut)
async def create_workflow(body: WorkflowIn, context: Context, tenant: Tenant) -> WorkflowOut:
    """Register a workflow with the connections it depends on; paused while any of them is disconnected."""
    record = await asyncio.to_thread(
        context.store.create_workflow, tenant.tenant_id, body.name, body.connection_ids, context.clock.now()
    )
    return WorkflowOut.of(record)


@workflows.get("", response_model=list[WorkflowOut])
async def list_workflows(context: Context, tenant: Tenant) -> list[WorkflowOut]:
    return [
        WorkflowOut.of(w) for w in await asyncio.to_thread(context.store.list_workflows, tenant.tenant_id)
    ]


@workflows.get("/{workflow_id}", response_model=WorkflowOut)
async def get_workflow(workflow_id: str, context: Context, tenant: Tenant) -> WorkflowOut:
    record = await asyncio.to_thread(context.store.get_workflow, tenant.tenant_id, workflow_id)
    if record is None:
        raise not_found("workflow", workflow_id)
    return WorkflowOut.of(record)


@notifications.get("", response_model=list[NotificationOut])
async def list_notifications(
    context: Context,
    tenant: Tenant,
    type: NotificationType | None = None,
    unread: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[NotificationOut]:
    records = await asyncio.to_thread(
        context.store.list_notifications, tenant.tenant_id, limit, type=type, unread_only=unread
    )
    return [NotificationOut.of(r) for r in records]


@notifications.post("/{notification_id}/read", status_code=status.HTTP_204_NO_CONTENT)
async def mark_read(notification_id: str, context: Context, tenant: Tenant) -> Response:
    found = await asyncio.to_thread(context.store.mark_notification_read, tenant.tenant_id, notification_id)
    if not found:
        raise not_found("notification", notification_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
