"""CLI commands that read and write data: migrate, keys, providers, connections, notifications, status.

``status`` also shows the outbox by status and the notification destinations disabled after failures."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from grantkeeper.adapters.crypto import generate_key_line
from grantkeeper.adapters.db.engine import make_engine
from grantkeeper.adapters.db.schema import head_revision, migrate
from grantkeeper.bootstrap import Runtime, check_database_url
from grantkeeper.core.errors import InvalidInputError
from grantkeeper.core.model import ConnectionStatus, Outcome, TokenSet
from grantkeeper.entrypoints.cli.app import (
    EXIT_USAGE,
    CliError,
    JsonOption,
    TenantOption,
    app,
    handle_errors,
    load_settings,
    run_async,
    runtime,
)
from grantkeeper.entrypoints.cli.channels import destination_dict
from grantkeeper.entrypoints.cli.output import (
    attempt_dict,
    connection_dict,
    connections_table,
    console,
    err_console,
    iso,
    notification_dict,
    notifications_table,
    print_json,
    provider_dict,
    table,
)
from grantkeeper.ports import (
    AuthMethod,
    NewProvider,
    ProviderConfig,
    ProviderInUseError,
    UnknownProviderError,
)
from grantkeeper.service import admin, deleting
from grantkeeper.service.importing import parse_time

providers_app = typer.Typer(
    help="OAuth providers (token endpoints and client credentials).", no_args_is_help=True
)
connections_app = typer.Typer(help="Users' connections to providers.", no_args_is_help=True)
notifications_app = typer.Typer(help="Notifications sent to users.", no_args_is_help=True)
keys_app = typer.Typer(help="Encryption keys for tokens at rest.", no_args_is_help=True)
app.add_typer(providers_app, name="providers")
app.add_typer(connections_app, name="connections")
app.add_typer(notifications_app, name="notifications")
app.add_typer(keys_app, name="keys")


@app.command("migrate")
@handle_errors
def migrate_command(json_output: JsonOption = False) -> None:
    """Apply the database migrations (other commands also do this on first use of a new database)."""
    settings = load_settings()
    check_database_url(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        revision = head_revision()
    finally:
        engine.dispose()
    if json_output:
        print_json({"revision": revision, "database": engine.url.render_as_string(hide_password=True)})
    else:
        console.print(f"database is at revision {revision}")


@keys_app.command("generate")
def keys_generate(
    kid: Annotated[str | None, typer.Option(help="Key id (default: k + date + random).")] = None,
) -> None:
    """Print a new KID:KEY line for GRANTKEEPER_ENCRYPTION_KEYS (put it first to encrypt with it)."""
    try:
        line = generate_key_line(kid)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    sys.stdout.write(line + "\n")


@keys_app.command("usage")
@handle_errors
def keys_usage(json_output: JsonOption = False) -> None:
    """How many stored secrets each configured key seals, per column: a key can leave
    GRANTKEEPER_ENCRYPTION_KEYS once nothing uses it (run `keys reseal` first)."""
    with runtime() as rt:
        counts = rt.store.key_usage()
    if json_output:
        print_json(counts)
        return
    kids = list(next(iter(counts.values())))
    rows = ([column, *(per_kid[kid] for kid in kids)] for column, per_kid in counts.items())
    console.print(table("Stored secrets by key id (the first seals)", ["column", *kids], rows))


@keys_app.command("reseal")
@handle_errors
def keys_reseal(
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Rows per transaction.")] = 500,
    json_output: JsonOption = False,
) -> None:
    """Re-encrypt every stored secret under the first key of GRANTKEEPER_ENCRYPTION_KEYS (after prepending a
    new key), so the old keys can be removed; safe while workers run. Values no configured key opens are
    left as they are and listed by row."""
    with runtime() as rt:
        report = rt.store.reseal_secrets(batch_size=batch_size)
        remaining = rt.store.key_usage()
    unreadable = {column: ids for column, ids in report.unreadable.items() if ids}
    if json_output:
        print_json({"resealed": report.resealed, "unreadable": unreadable, "usage": remaining})
    else:
        first = next(iter(next(iter(remaining.values()))))
        left = sum(n for per_kid in remaining.values() for kid, n in per_kid.items() if kid != first)
        console.print(
            f"resealed {sum(report.resealed.values())} stored secret(s) under {first}; "
            f"{left} still under another key"
        )
        for column, ids in unreadable.items():
            shown = ", ".join(ids[:20]) + (", ..." if len(ids) > 20 else "")
            err_console.print(f"{column}: {len(ids)} value(s) no configured key opens: {shown}")
    if unreadable:
        raise typer.Exit(1)


# The optional settings ``providers add`` and ``providers update`` share.
AuthorizeUrlOption = Annotated[
    str | None, typer.Option(help="Authorization endpoint, for connecting and reconnecting in a browser.")
]
ScopesOption = Annotated[str | None, typer.Option(help='Scopes to ask for, space-separated ("a b").')]
AccountFieldOption = Annotated[
    str | None,
    typer.Option(
        help="Where the provider's token answer names the account (id_token.sub, account_id, "
        "authed_user.id): a reconnect to another account is refused."
    ),
]
IssuerOption = Annotated[
    str | None,
    typer.Option(
        help="The provider's issuer identifier (RFC 8414): a connect callback must carry it as iss "
        "(RFC 9207)."
    ),
]
RevocationUrlOption = Annotated[str | None, typer.Option(help="RFC 7009 revocation endpoint.")]
IntrospectionUrlOption = Annotated[
    str | None, typer.Option(help="RFC 7662 introspection endpoint: checks an in-doubt refresh token first.")
]
MaxConcurrencyOption = Annotated[
    int | None, typer.Option(help="Refresh requests in flight at once, across all workers.")
]
RateLimitOption = Annotated[
    float | None, typer.Option(help="Refresh requests started per second, across all workers.")
]


def _secret(value: str) -> str:
    """A client secret option's value; "-" reads it from stdin, so it never shows in ``ps``."""
    return sys.stdin.readline().strip() if value == "-" else value


@providers_app.command("add")
@handle_errors
def providers_add(
    name: str,
    token_url: Annotated[str, typer.Option(help="The provider's token endpoint (https://).")],
    client_id: Annotated[str, typer.Option(help="Our OAuth client id at the provider.")],
    client_secret: Annotated[str, typer.Option(help="Our OAuth client secret ('-' reads it from stdin).")],
    auth_method: Annotated[AuthMethod, typer.Option(help="Client authentication.")] = (
        AuthMethod.CLIENT_SECRET_BASIC
    ),
    default_expires_in: Annotated[
        int, typer.Option(help="Token lifetime when the provider omits it.")
    ] = 3600,
    authorize_url: AuthorizeUrlOption = None,
    scopes: ScopesOption = None,
    authorize_param: Annotated[
        list[str] | None,
        typer.Option(help="Extra authorization parameter NAME=VALUE (repeatable), e.g. access_type=offline."),
    ] = None,
    account_field: AccountFieldOption = None,
    issuer: IssuerOption = None,
    revocation_url: RevocationUrlOption = None,
    introspection_url: IntrospectionUrlOption = None,
    max_concurrency: MaxConcurrencyOption = None,
    rate_limit: RateLimitOption = None,
    tenant: TenantOption = "default",
    json_output: JsonOption = False,
) -> None:
    """Register a provider for a tenant."""
    provider = NewProvider(
        name=name,
        token_url=token_url,
        client_id=client_id,
        client_secret=_secret(client_secret),
        auth_method=auth_method,
        default_expires_in=default_expires_in,
        authorize_url=authorize_url,
        scopes=scopes,
        authorize_params=_name_values(authorize_param or []),
        account_field=account_field,
        issuer=issuer,
        revocation_url=revocation_url,
        introspection_url=introspection_url,
        max_concurrency=max_concurrency,
        rate_limit_per_second=rate_limit,
    )
    with runtime() as rt:
        created = admin.add_provider(rt.store, rt.store.ensure_tenant(tenant), provider)
    if json_output:
        print_json(provider_dict(created))
    else:
        console.print(f"added provider {created.name} ({created.provider_id})")


#: ``providers update --clear NAME``: the optional settings, by the names the API uses.
_CLEARABLE = ("authorize_url", "scopes", "authorize_params", "account_field", "issuer", "revocation_url",
              "introspection_url", "max_concurrency", "rate_limit_per_second")  # fmt: skip


@providers_app.command("update")
@handle_errors
def providers_update(
    name: str,
    token_url: Annotated[str | None, typer.Option(help="A new token endpoint (https://).")] = None,
    client_id: Annotated[str | None, typer.Option(help="A new OAuth client id.")] = None,
    client_secret: Annotated[
        str | None, typer.Option(help="A new client secret ('-' reads it from stdin): rotating it.")
    ] = None,
    auth_method: Annotated[AuthMethod | None, typer.Option(help="Client authentication.")] = None,
    default_expires_in: Annotated[
        int | None, typer.Option(help="Token lifetime when the provider omits it.")
    ] = None,
    authorize_url: AuthorizeUrlOption = None,
    scopes: ScopesOption = None,
    authorize_param: Annotated[
        list[str] | None,
        typer.Option(help="Extra authorization parameter NAME=VALUE (repeatable); replaces all of them."),
    ] = None,
    account_field: AccountFieldOption = None,
    issuer: IssuerOption = None,
    revocation_url: RevocationUrlOption = None,
    introspection_url: IntrospectionUrlOption = None,
    max_concurrency: MaxConcurrencyOption = None,
    rate_limit: RateLimitOption = None,
    clear: Annotated[
        list[str] | None,
        typer.Option(help=f"An optional setting to remove (repeatable): {', '.join(_CLEARABLE)}."),
    ] = None,
    tenant: TenantOption = "default",
    json_output: JsonOption = False,
) -> None:
    """Change some of a provider's settings (rotate its client secret, name its issuer, set limits); what is
    not given stays. Its connections, their tokens and its flag are kept."""
    given = {
        "token_url": token_url,
        "client_id": client_id,
        "client_secret": None if client_secret is None else _secret(client_secret),
        "auth_method": auth_method,
        "default_expires_in": default_expires_in,
        "authorize_url": authorize_url,
        "scopes": scopes,
        "authorize_params": _name_values(authorize_param) if authorize_param else None,
        "account_field": account_field,
        "issuer": issuer,
        "revocation_url": revocation_url,
        "introspection_url": introspection_url,
        "max_concurrency": max_concurrency,
        "rate_limit_per_second": rate_limit,
    }
    changes: dict[str, object] = {field: value for field, value in given.items() if value is not None}
    for field in clear or []:
        if field not in _CLEARABLE:
            raise InvalidInputError(f"--clear takes one of {', '.join(_CLEARABLE)}, not {field[:80]!r}")
        if field in changes:
            raise InvalidInputError(f"{field} is both given and cleared")
        changes[field] = None
    with runtime() as rt:
        updated = admin.update_provider(rt.store, rt.store.ensure_tenant(tenant), name, changes)
    if updated is None:
        raise InvalidInputError(f"unknown provider {name[:100]!r}")
    if json_output:
        print_json(provider_dict(updated))
    else:
        console.print(f"updated provider {updated.name} ({', '.join(sorted(changes))})")


def _name_values(pairs: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator or not name:
            raise InvalidInputError(f"--authorize-param takes NAME=VALUE, not {pair[:80]!r}")
        if name in params:
            raise InvalidInputError(f"--authorize-param names {name[:64]!r} twice")
        params[name] = value
    return params or None


@providers_app.command("remove")
@handle_errors
def providers_remove(
    name: str,
    with_connections: Annotated[
        bool, typer.Option("--with-connections", help="Remove its connections and their tokens too.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", help="Do not ask before removing connections (needed without a tty).")
    ] = False,
    tenant: TenantOption = "default",
    json_output: JsonOption = False,
) -> None:
    """Remove a provider. One that has connections is removed only with --with-connections, after a
    confirmation: their tokens are forgotten, not revoked at the provider."""
    with runtime() as rt:
        tenant_id = rt.store.ensure_tenant(tenant)
        try:
            removed = rt.store.delete_provider(tenant_id, name)
        except ProviderInUseError as exc:
            if not with_connections:
                raise CliError(f"{exc}; add --with-connections to remove them with it") from None
            _confirm_removal(name, exc.connections, yes)
            removed = rt.store.delete_provider(tenant_id, name, with_connections=True)
        except UnknownProviderError:
            raise CliError(f"unknown provider {name[:100]!r}") from None
    if json_output:
        print_json({"name": name, "removed": True, "connections_removed": removed})
    else:
        console.print(f"removed provider {name} and {removed} connection(s)", highlight=False)


def _confirm_removal(name: str, connections: int, yes: bool) -> None:
    """Removing connections loses their grants for good: ask, or insist on --yes where nobody can answer."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError(f"removing {name!r} removes {connections} connection(s); add --yes to confirm")
    if not typer.confirm(f"Remove provider {name!r} and its {connections} connection(s)?", default=False):
        raise CliError("nothing removed", exit_code=1)


@providers_app.command("list")
@handle_errors
def providers_list(tenant: TenantOption = "default", json_output: JsonOption = False) -> None:
    """List the tenant's providers (never the client secret)."""
    with runtime() as rt:
        providers = [provider_dict(p) for p in rt.store.list_providers(rt.store.ensure_tenant(tenant))]
    if json_output:
        print_json(providers)
        return
    rows = (
        (p["name"], p["token_url"], p["client_id"], p["auth_method"], p["flag_reason"]) for p in providers
    )
    console.print(table("Providers", ("name", "token_url", "client_id", "auth_method", "flagged"), rows))


@connections_app.command("import")
@handle_errors
def connections_import(
    file: Annotated[Path, typer.Argument(help="JSONL file, one connection per line ('-' for stdin).")],
    tenant: TenantOption = "default",
    json_output: JsonOption = False,
) -> None:
    """Import connections: every bad line is reported by number and nothing is imported."""
    lines = _read_lines(file)
    with runtime() as rt:
        result = admin.import_connections(
            rt.store, rt.store.ensure_tenant(tenant), lines, rt.policy, rt.clock
        )
    if json_output:
        print_json({"imported": len(result.connection_ids), "errors": [str(e) for e in result.errors]})
    elif result.is_ok:
        console.print(f"imported {len(result.connection_ids)} connections")
    if not result.is_ok:
        if not json_output:
            for error in result.errors:
                typer.echo(f"error: {error}", err=True)
            typer.echo("nothing was imported", err=True)
        raise typer.Exit(EXIT_USAGE)


def _read_lines(file: Path) -> list[str]:
    if str(file) == "-":
        return sys.stdin.read().splitlines()
    try:
        return file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise CliError(f"{file} is not UTF-8 text") from None
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror}") from None


@connections_app.command("list")
@handle_errors
def connections_list(
    status: Annotated[ConnectionStatus | None, typer.Option(help="Only connections in this status.")] = None,
    tenant: TenantOption = "default",
    json_output: JsonOption = False,
) -> None:
    """List connections (never a token)."""
    with runtime() as rt:
        records = rt.store.list_connections(rt.store.ensure_tenant(tenant), status)
    rows = [connection_dict(r) for r in records]
    if json_output:
        print_json(rows)
    else:
        console.print(connections_table(rows))


@connections_app.command("attempts")
@handle_errors
def connections_attempts(
    connection_id: str,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 20,
    before: Annotated[
        str | None, typer.Option(help="Only attempts before this time (ISO 8601 or Unix seconds).")
    ] = None,
    tenant: TenantOption = "default",
    json_output: JsonOption = False,
) -> None:
    """A connection's refresh attempts, newest first: outcome, HTTP status, error code, duration."""
    until = None
    if before is not None:
        try:
            until = parse_time(before)
        except ValueError as exc:
            raise InvalidInputError(f"--before: {exc}") from None
    with runtime() as rt:
        records = rt.store.list_attempts(rt.store.ensure_tenant(tenant), connection_id, limit, until)
    rows = [attempt_dict(record) for record in records]
    if json_output:
        print_json(rows)
        return
    columns = ("attempted_at", "outcome", "http_status", "error_code", "duration_ms")
    console.print(table(f"Attempts of {connection_id}", columns, ([r[c] for c in columns] for r in rows)))


@connections_app.command("delete")
@handle_errors
def connections_delete(
    connection_id: str, tenant: TenantOption = "default", json_output: JsonOption = False
) -> None:
    """Delete a connection: its grant is revoked at the provider first (RFC 7009) when the provider has a
    revocation URL, then its tokens are forgotten, even when the revocation fails."""
    with runtime() as rt:
        tenant_id = rt.store.ensure_tenant(tenant)
        deletion = run_async(_delete(rt, tenant_id, connection_id))
    if json_output:
        print_json(asdict(deletion) | {"deleted": True})
        return
    revoked = {True: "revoked at the provider", False: "revocation FAILED", None: "nothing to revoke"}
    detail = f" ({deletion.revocation_error})" if deletion.revocation_error else ""
    console.print(f"deleted {connection_id}; {revoked[deletion.revoked]}{detail}", highlight=False)


async def _delete(rt: Runtime, tenant_id: str, connection_id: str) -> deleting.Deletion:
    endpoint = rt.token_endpoint()
    try:
        return await deleting.delete_connection(rt.store, endpoint, tenant_id, connection_id)
    finally:
        await endpoint.close()


@connections_app.command("reconnect")
@handle_errors
def connections_reconnect(
    connection_id: str,
    tokens_file: Annotated[
        Path, typer.Option(help='JSON {"refresh_token", "access_token"?, "expires_at"?}; "-" reads stdin.')
    ] = Path("-"),
    tenant: TenantOption = "default",
    json_output: JsonOption = False,
) -> None:
    """Store new tokens after the user authorized again: counters reset, workflows resume."""
    tokens = _read_tokens(tokens_file)
    with runtime() as rt:
        tenant_id = rt.store.ensure_tenant(tenant)
        if not admin.reconnect_connection(rt.store, tenant_id, connection_id, tokens, rt.policy, rt.clock):
            raise CliError(f"no connection {connection_id!r} in tenant {tenant!r}")
        record = rt.store.get_connection(tenant_id, connection_id)
    assert record is not None
    if json_output:
        print_json(connection_dict(record))
    else:
        console.print(f"{connection_id} reconnected; status {record.state.status.value}")


@connections_app.command("reconnect-link")
@handle_errors
def connections_reconnect_link(
    connection_id: str,
    return_to: Annotated[
        str | None, typer.Option(help="Where the browser goes afterwards (on the return URL allow list).")
    ] = None,
    ttl: Annotated[int, typer.Option(min=60, max=7 * 86400, help="How long the link works, seconds.")] = 3600,
    tenant: TenantOption = "default",
    json_output: JsonOption = False,
) -> None:
    """Print a link that reconnects the connection in a browser (GRANTKEEPER_PUBLIC_URL must reach serve)."""
    with runtime() as rt:
        tenant_id = rt.store.ensure_tenant(tenant)
        flow = rt.connect_flow(_NO_EXCHANGE)
        link = flow.reconnect_link(tenant_id, connection_id, return_to=return_to, ttl=timedelta(seconds=ttl))
    if json_output:
        print_json({"url": link.url, "expires_at": iso(link.expires_at)})
    else:
        console.print(link.url, soft_wrap=True)


class _NoExchange:
    """Making a link redeems no code; the ``serve`` process that receives the callback does."""

    async def exchange_code(
        self, provider: ProviderConfig, code: str, code_verifier: str, redirect_uri: str
    ) -> Outcome:
        raise RuntimeError("a CLI command never redeems an authorization code")


_NO_EXCHANGE = _NoExchange()


def _read_tokens(file: Path) -> TokenSet:
    text = sys.stdin.read() if str(file) == "-" else _read_lines_text(file)
    try:
        obj: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"tokens are not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("refresh_token"), str) or not obj["refresh_token"]:
        raise CliError('tokens must be a JSON object with a non-empty "refresh_token"')
    access = obj.get("access_token")
    if access is not None and not (isinstance(access, str) and access):
        raise CliError('"access_token" must be a non-empty string')
    try:
        expires_at = parse_time(obj["expires_at"]) if obj.get("expires_at") is not None else None
    except ValueError as exc:
        raise InvalidInputError(f"expires_at: {exc}") from None
    return TokenSet(access_token=access or "", refresh_token=obj["refresh_token"], expires_at=expires_at)


def _read_lines_text(file: Path) -> str:
    return "\n".join(_read_lines(file))


@notifications_app.command("list")
@handle_errors
def notifications_list(
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    tenant: TenantOption = "default",
    json_output: JsonOption = False,
) -> None:
    """List the latest notifications, newest first."""
    with runtime() as rt:
        rows = [
            notification_dict(n) for n in rt.store.list_notifications(rt.store.ensure_tenant(tenant), limit)
        ]
    if json_output:
        print_json(rows)
    else:
        console.print(notifications_table(rows))


@app.command("status")
@handle_errors
def status_command(tenant: TenantOption = "default", json_output: JsonOption = False) -> None:
    """Counts by status, failing connections and recent notifications."""
    with runtime() as rt:
        tenant_id = rt.store.ensure_tenant(tenant)
        counts = rt.store.count_by_status(tenant_id)
        reasons = rt.store.count_by_disconnect_reason(tenant_id)
        failing = [connection_dict(r) for r in rt.store.list_failing(tenant_id, 20)]
        recent = [notification_dict(n) for n in rt.store.list_notifications(tenant_id, 10)]
        destinations = rt.store.list_destinations(tenant_id)
        outbox_counts = rt.store.outbox_counts(tenant_id)
    by_status = {status.value: counts.get(status.value, 0) for status in ConnectionStatus}
    disabled = [destination_dict(d) for d in destinations if d.status == "disabled"]
    summary = {
        "counts": by_status,
        "total": sum(counts.values()),
        "disconnect_reasons": reasons,
        "failing": failing,
        "notifications": recent,
        "destinations": {
            "total": len(destinations),
            "disabled": len(disabled),
            "disabled_ids": [d["id"] for d in disabled],
        },
        "outbox": outbox_counts,
    }
    if json_output:
        print_json(summary)
        return
    console.print(table("Connections by status", ("status", "count"), by_status.items()))
    console.print(table("Needing reauthorization, by reason", ("reason", "count"), reasons.items()))
    if reasons.get("lost_rotation"):
        console.print(
            f"{reasons['lost_rotation']} connection(s) lost their rotated refresh token when a worker died "
            "mid-refresh; their users must reconnect (see the log lines with action lost_rotation)"
        )
    console.print(connections_table(failing, "Failing connections (latest 20)"))
    console.print(notifications_table(recent, "Recent notifications"))
    console.print(table("Outbox by status", ("status", "count"), outbox_counts.items()))
    _print_disabled(disabled, len(destinations))


def _print_disabled(disabled: list[dict[str, Any]], total: int) -> None:
    """Destinations disabled after repeated failures: nothing new reaches them until `... enable ID`."""
    console.print(f"destinations: {total}, disabled: {len(disabled)}")
    if not disabled:
        return
    rows = (
        (d["id"], d["kind"], d["url"], d["consecutive_failures"], d["last_error"], d["disabled_at"])
        for d in disabled
    )
    columns = ("id", "kind", "url", "failures", "last_error", "disabled_at")
    title = "Disabled destinations (re-enable with `webhooks|channels enable ID`)"
    console.print(table(title, columns, rows))
