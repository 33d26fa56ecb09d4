"""``grantkeeper demo``: the sandbox provider, a few hundred connections, and the scheduler, live.

Everything runs in one process on the configured database (SQLite by default). Tokens live for a minute and
the policy is scaled down to match, so warnings, disconnections, rate-limit notices and recoveries all happen
within the first minute or two. The database is left behind for ``grantkeeper status``.

The web pages and the sandbox's server (FastAPI, uvicorn) are imported when the demo runs, not when the
command line starts: every other command would pay a third of a second for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import signal
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from grantkeeper.adapters.crypto import Keyring, generate_key_line
from grantkeeper.adapters.http import HttpTokenEndpoint
from grantkeeper.bootstrap import Runtime, build_runtime, load_keyring
from grantkeeper.core.model import ConnectionStatus
from grantkeeper.core.policy import Policy
from grantkeeper.entrypoints.cli.app import JsonOption, TenantOption, app, handle_errors, load_settings
from grantkeeper.entrypoints.cli.output import console, err_console, print_json, table
from grantkeeper.ports import AuthMethod, NewConnection, NewProvider, UnknownProviderError
from grantkeeper.sandbox.behaviour import Behaviour
from grantkeeper.service import admin
from grantkeeper.service.connecting import CALLBACK_PATH
from grantkeeper.service.report import CycleReport

if TYPE_CHECKING:
    from grantkeeper.sandbox import Sandbox

DEMO_KEY_FILE = Path("grantkeeper-demo.key")
DEMO_PROVIDER = "sandbox"

#: (share of connections, one-shot answers before the default, default answer). Healthy is the rest.
SCENARIOS: tuple[tuple[float, tuple[Behaviour, ...], Behaviour | None], ...] = (
    (0.08, (Behaviour.OK,), Behaviour.INVALID_GRANT),  # revoked after one refresh: warning, disconnection
    # an outage then a rate limit: five transient failures in a row give one notice, then recovered
    (
        0.08,
        (Behaviour.UNAVAILABLE, Behaviour.BAD_GATEWAY, Behaviour.SERVER_ERROR, Behaviour.REQUEST_TIMEOUT)
        + (Behaviour.RATE_LIMIT,) * 2,
        None,
    ),
    (0.04, (), Behaviour.CONSENT_REQUIRED),  # consent required: disconnected at once
    (0.05, (Behaviour.UNAVAILABLE, Behaviour.OK, Behaviour.SERVER_ERROR), None),  # a flaky provider
    (0.03, (Behaviour.RESET, Behaviour.HANG), None),  # network trouble
    (0.04, (Behaviour.INVALID_GRANT, Behaviour.INVALID_GRANT), None),  # warned, then recovered
    (0.03, (Behaviour.NOT_JSON, Behaviour.NO_ACCESS_TOKEN), None),  # malformed answers never overwrite
)


def demo_policy() -> Policy:
    """DESIGN's policy scaled from minutes to seconds, for one-minute tokens."""
    return Policy(
        refresh_lead=timedelta(seconds=15),
        cycle_interval=timedelta(seconds=5),
        schedule_tolerance=timedelta(seconds=1),
        transient_backoff_base=timedelta(milliseconds=500),
        max_backoff=timedelta(seconds=20),
        config_retry_interval=timedelta(seconds=30),
    )


def demo_keyring(existing: Keyring | None) -> Keyring:
    """The configured key, else a local demo key file (created once, and we say so)."""
    if existing is not None:
        return existing
    if not DEMO_KEY_FILE.exists():
        DEMO_KEY_FILE.write_text(generate_key_line() + "\n", encoding="utf-8")
        DEMO_KEY_FILE.chmod(0o600)
        err_console.print(
            f"No GRANTKEEPER_ENCRYPTION_KEYS set: generated a demo key into ./{DEMO_KEY_FILE}. "
            "Other commands that touch tokens need it: "
            f"export GRANTKEEPER_ENCRYPTION_KEYS=$(cat {DEMO_KEY_FILE})"
        )
    else:
        err_console.print(f"Using the demo key in ./{DEMO_KEY_FILE}.")
    return Keyring.parse(DEMO_KEY_FILE.read_text(encoding="utf-8").strip())


@app.command("demo")
@handle_errors
def demo_command(
    connections: Annotated[int, typer.Option(min=1, max=20_000, help="Connections to seed.")] = 300,
    duration: Annotated[float | None, typer.Option(min=1, help="Stop after this many seconds.")] = None,
    lifetime: Annotated[int, typer.Option(min=10, max=3600, help="Access token lifetime, seconds.")] = 60,
    seed: Annotated[int, typer.Option(help="Seed for the mix of behaviours.")] = 7,
    port: Annotated[
        int,
        typer.Option(min=0, max=65535, help="Port of the demo's web pages on 127.0.0.1 (0: any free one)."),
    ] = 0,
    tenant: TenantOption = "default",
    json_output: JsonOption = False,
) -> None:
    """Run the sandbox provider and the scheduler on a few hundred connections; Ctrl-C stops it.

    The demo also serves grantkeeper's pages on 127.0.0.1, so the reconnect link it prints for the first
    connection that breaks works in a browser on this machine (the sandbox shows its consent page)."""
    from grantkeeper.entrypoints.api.app import create_app
    from grantkeeper.entrypoints.cli.serving import ApiThread
    from grantkeeper.sandbox import Sandbox, serve_sandbox

    pages = ApiThread.bind(port)
    public_url = f"http://127.0.0.1:{pages.port}"
    # Short timeouts: a hanging provider should cost the demo's one-minute tokens seconds, not a cycle.
    settings = load_settings().model_copy(
        update={"connect_timeout_seconds": 1.0, "read_timeout_seconds": 2.0, "public_url": public_url}
    )
    keyring = demo_keyring(load_keyring(settings))
    rt = build_runtime(settings, keyring=keyring, policy=demo_policy())
    sandbox = Sandbox(seed=seed, hang_seconds=5.0)
    client_secret = secrets.token_urlsafe(24)
    sandbox.add_client(
        client_id="grantkeeper-demo",
        client_secret=client_secret,
        rotate_refresh_tokens=True,
        redirect_uris=[public_url + CALLBACK_PATH],
    )
    try:
        with serve_sandbox(sandbox) as server, pages.serving(create_app(rt, run_scheduler=False)):
            tenant_id = rt.store.ensure_tenant(tenant)
            urls = (server.token_url, server.authorize_url)
            _seed(rt, tenant_id, sandbox, urls, client_secret, connections, lifetime, seed)
            report, link = asyncio.run(_run(rt, tenant_id, duration, json_output))
        _print_summary(rt, tenant_id, report, sandbox, json_output, link)
    finally:
        rt.close()


def _seed(
    rt: Runtime,
    tenant_id: str,
    sandbox: Sandbox,
    urls: tuple[str, str],
    client_secret: str,
    count: int,
    lifetime: int,
    seed: int,
) -> None:
    """Replace a previous demo's provider and connections, then seed ``count`` connections with a mix."""
    with contextlib.suppress(UnknownProviderError):  # the first demo on this database
        rt.store.delete_provider(tenant_id, DEMO_PROVIDER, with_connections=True)
    token_url, authorize_url = urls
    provider = NewProvider(
        name=DEMO_PROVIDER,
        token_url=token_url,
        authorize_url=authorize_url,
        scopes="demo.read",
        client_id="grantkeeper-demo",
        client_secret=client_secret,
        auth_method=AuthMethod.CLIENT_SECRET_BASIC,
        default_expires_in=lifetime,
    )
    admin.add_provider(rt.store, tenant_id, provider)
    rng = random.Random(seed)  # noqa: S311 - a demo's mix, not security
    grants = sandbox.issue_grants(client_id="grantkeeper-demo", count=count, access_token_lifetime=lifetime)
    now = rt.clock.now()
    rows = []
    for index, grant in enumerate(grants):
        _assign_scenario(sandbox, grant.grant_id, rng.random())
        rows.append(
            NewConnection(
                provider=DEMO_PROVIDER,
                user_id=f"user-{index:04d}",
                refresh_token=grant.refresh_token,
                access_token=grant.access_token,
                expires_at=now + timedelta(seconds=rng.uniform(lifetime * 0.2, lifetime)),
                email=f"user-{index:04d}@example.test",
                workflows=(f"sync-{index % 50:02d}",),
            )
        )
    admin.import_rows(rt.store, tenant_id, rows, rt.policy, rt.clock)


def _assign_scenario(sandbox: Sandbox, grant_id: str, draw: float) -> None:
    for share, script, default in SCENARIOS:
        if draw < share:
            if script:
                sandbox.script(grant_id, list(script))
            if default is not None:
                sandbox.set_behaviour(grant_id, default)
            return
        draw -= share


async def _run(
    rt: Runtime, tenant_id: str, duration: float | None, json_output: bool
) -> tuple[CycleReport, str | None]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    service, endpoint = rt.refresh_service(concurrency=32)
    totals = CycleReport(started_at=rt.clock.now())
    link: str | None = None
    started = time.monotonic()
    live = Live(console=console, refresh_per_second=4) if sys.stdout.isatty() and not json_output else None
    try:
        with live or contextlib.nullcontext():
            while not stop.is_set():
                if duration is not None and time.monotonic() - started >= duration:
                    break
                _merge(totals, await service.run_cycle(tenant_id))
                if link is None and totals.newly_disconnected:
                    link = await asyncio.to_thread(_reconnect_link, rt, endpoint, tenant_id)
                if live is not None:
                    live.update(_screen(rt, tenant_id, totals, time.monotonic() - started, link))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
    finally:
        await endpoint.close()
        service.runner.close()
    totals.finished_at = rt.clock.now()
    return totals, link


def _reconnect_link(rt: Runtime, endpoint: HttpTokenEndpoint, tenant_id: str) -> str | None:
    """A browser link for the first broken demo connection, said once on stderr (the screen shows it too)."""
    broken = rt.store.list_connections(tenant_id, ConnectionStatus.NEEDS_REAUTHORIZATION)
    if not broken:
        return None
    record = broken[0]
    link = rt.connect_flow(endpoint).reconnect_link(tenant_id, record.connection_id, ttl=timedelta(days=1))
    err_console.print(
        f"{record.user_id}'s {record.provider} connection broke; reconnect it in your browser while the demo "
        f"runs: {link.url}",
        soft_wrap=True,
    )
    return link.url


def _merge(totals: CycleReport, report: CycleReport) -> None:
    totals.due += report.due
    totals.by_outcome.update(report.by_outcome)
    totals.notifications.update(report.notifications)
    totals.newly_disconnected += report.newly_disconnected
    totals.stale += report.stale
    totals.lease_conflicts += report.lease_conflicts


def _screen(rt: Runtime, tenant_id: str, totals: CycleReport, elapsed: float, link: str | None) -> Group:
    counts = rt.store.count_by_status(tenant_id)
    status_table = table("Connections by status", ("status", "count"), sorted(counts.items()))
    outcomes = table("Refresh outcomes so far", ("outcome", "count"), sorted(totals.by_outcome.items()))
    notices = table("Notifications so far", ("type", "count"), sorted(totals.notifications.items()))
    grid = Table.grid(padding=(0, 4))
    grid.add_row(status_table, outcomes, notices)
    recent = rt.store.list_notifications(tenant_id, 6)
    lines = [
        f"  {n.created_at:%H:%M:%S} {n.type.value:<26} {n.metadata.get('user_id', '')}: {n.title}"
        for n in recent
    ]
    header = f"grantkeeper demo: {elapsed:5.0f}s, {totals.due} attempts (Ctrl-C to stop)"
    footer = [f"Reconnect a broken connection in your browser: {link}"] if link else []
    return Group(header, grid, "Latest notifications:", *lines, *footer)


def _print_summary(
    rt: Runtime, tenant_id: str, report: CycleReport, sandbox: Sandbox, json_output: bool, link: str | None
) -> None:
    counts = Counter(rt.store.count_by_status(tenant_id))
    stats = sandbox.stats()
    summary = report.as_dict() | {
        "counts": dict(counts),
        "sandbox": {"requests": stats.requests, "reuse_detected": stats.reuse_detected},
        "reconnect_url": link,
    }
    if json_output:
        print_json(summary)
        return
    console.print(
        f"demo finished: {report.due} attempts, {report.refreshed} refreshed, "
        f"{report.newly_disconnected} disconnected, {sum(report.notifications.values())} notifications; "
        f"refresh-token reuse seen by the provider: {stats.reuse_detected}"
    )
    console.print(table("Connections by status", ("status", "count"), sorted(counts.items())))
    console.print("Inspect the database with: grantkeeper status   (and grantkeeper notifications list)")
