"""``grantkeeper serve`` (the HTTP API with the embedded scheduler) and ``grantkeeper tenants``.

uvicorn and the API (FastAPI) are imported by ``serve`` itself, so other commands start without them.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Annotated

import typer

from grantkeeper.entrypoints.cli.app import JsonOption, app, handle_errors, load_settings, runtime
from grantkeeper.entrypoints.cli.output import console, print_json, table
from grantkeeper.entrypoints.collector import settle_after_start
from grantkeeper.service.tenants import issue_api_key


@contextlib.contextmanager
def _graceful_signals(handle_exit: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """SIGINT/SIGTERM shut uvicorn down gracefully and the command exits 0 (uvicorn's own handling re-raises
    the signal afterwards)."""
    previous = {sig: signal.signal(sig, handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


tenants_app = typer.Typer(help="Tenants and their API keys.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")


@app.command("serve")
@handle_errors
def serve_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    no_scheduler: Annotated[
        bool, typer.Option("--no-scheduler", help="Serve only; run `worker` apart.")
    ] = False,
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json) with the refresh scheduler beside it."""
    import uvicorn

    from grantkeeper.entrypoints.api.app import create_app

    class Server(uvicorn.Server):
        """Shuts down gracefully on SIGINT/SIGTERM and exits 0 (defined here: uvicorn is imported here)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with _graceful_signals(self.handle_exit):
                yield

    settings = load_settings()
    with runtime(settings) as rt:
        config = uvicorn.Config(
            create_app(rt, run_scheduler=not no_scheduler),
            host=host,
            port=port,
            access_log=False,  # our own access log drops query strings, which may hold the cron secret
            log_config=None,
            lifespan="on",
            timeout_graceful_shutdown=30,
        )
        settle_after_start()  # a long run: the collector leaves start-up's objects alone from here on
        Server(config).run()


def _issue(name: str, *, replace: bool, json_output: bool) -> None:
    with runtime() as rt:
        tenant, api_key = issue_api_key(rt.store, name, replace=replace)
    if json_output:
        print_json({"id": tenant.tenant_id, "name": tenant.name, "api_key": api_key})
        return
    console.print(f"tenant {tenant.name} ({tenant.tenant_id})")
    console.print("API key (shown once, store it now):")
    typer.echo(api_key)


@tenants_app.command("create")
@handle_errors
def tenants_create(name: str, json_output: JsonOption = False) -> None:
    """Create a tenant (or take one the CLI already made) and print its API key once."""
    _issue(name, replace=False, json_output=json_output)


@tenants_app.command("rotate-key")
@handle_errors
def tenants_rotate_key(name: str, json_output: JsonOption = False) -> None:
    """Replace a tenant's API key; the old key stops working at once."""
    _issue(name, replace=True, json_output=json_output)


@tenants_app.command("list")
@handle_errors
def tenants_list(json_output: JsonOption = False) -> None:
    """List tenants (never a key)."""
    with runtime() as rt:
        tenants = rt.store.list_tenants()
    rows = [
        {
            "id": t.tenant_id,
            "name": t.name,
            "has_api_key": t.has_api_key,
            "created_at": t.created_at.isoformat(),
        }
        for t in tenants
    ]
    if json_output:
        print_json(rows)
    else:
        console.print(
            table("Tenants", ("id", "name", "api key", "created_at"), (tuple(r.values()) for r in rows))
        )
