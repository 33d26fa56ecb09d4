"""``grantkeeper refresh`` (one cycle, or named connections now) and ``grantkeeper worker`` (cycles)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated

import typer
from rich.live import Live
from rich.spinner import Spinner

from grantkeeper.bootstrap import Runtime, warn_if_retries_miss_grace_windows
from grantkeeper.entrypoints.cli.app import (
    CliError,
    JsonOption,
    TenantOption,
    app,
    handle_errors,
    run_async,
    runtime,
)
from grantkeeper.entrypoints.cli.output import console, print_json, table
from grantkeeper.entrypoints.collector import settle_after_start
from grantkeeper.service.cycle import RefreshService
from grantkeeper.service.dispatch import Dispatcher
from grantkeeper.service.report import CycleReport
from grantkeeper.service.retention import run_pruning
from grantkeeper.service.scheduler import run_cycles

log = logging.getLogger("grantkeeper.worker")


@app.command("refresh")
@handle_errors
def refresh_command(
    connection_ids: Annotated[list[str] | None, typer.Argument(help="Connections to refresh now.")] = None,
    due: Annotated[
        bool, typer.Option("--due", help="Run one cycle now: every connection that is due.")
    ] = False,
    all_: Annotated[bool, typer.Option("--all", help="Refresh every connected connection now.")] = False,
    all_tenants: Annotated[bool, typer.Option(help="With --due: every tenant, as the worker does.")] = False,
    concurrency: Annotated[int | None, typer.Option(min=1, max=1024)] = None,
    verbose: Annotated[bool, typer.Option(help="One row per connection in the output.")] = False,
    tenant: TenantOption = "default",
    json_output: JsonOption = False,
) -> None:
    """Refresh tokens: --due honours the lead window and backoff; --all and IDs ignore both.

    None of them ever touches a connection that needs reauthorization.
    """
    chosen = sum((due, all_, bool(connection_ids)))
    if chosen != 1:
        raise CliError("choose exactly one of --due, --all or connection IDs")
    with runtime() as rt:
        tenant_id = rt.store.ensure_tenant(tenant)
        scope = None if all_tenants else tenant_id

        def job(service: RefreshService) -> Awaitable[CycleReport]:
            if due:
                return service.run_cycle(scope)
            return service.refresh_now(tenant_id, None if all_ else connection_ids)

        report = run_async(_run_with_progress(rt, job, concurrency, show=not json_output))
    _print_report(report, json_output=json_output, verbose=verbose)


async def _run_with_progress(
    rt: Runtime,
    job: Callable[[RefreshService], Awaitable[CycleReport]],
    concurrency: int | None,
    *,
    show: bool,
) -> CycleReport:
    service, endpoint = rt.refresh_service(concurrency=concurrency)
    try:
        if not (show and sys.stderr.isatty()):
            return await job(service)
        with Live(Spinner("dots", "refreshing..."), console=console, transient=True):
            return await job(service)
    finally:
        await endpoint.close()
        service.runner.close()


def _print_report(report: CycleReport, *, json_output: bool, verbose: bool) -> None:
    summary = report.as_dict(verbose=verbose)
    if json_output:
        print_json(summary)
        return
    outcome_rows = [(name, count) for name, count in report.by_outcome.items()]
    console.print(
        f"attempted {report.due} connection(s) in {report.duration.total_seconds():.2f}s: "
        f"{report.refreshed} refreshed, {report.newly_disconnected} newly disconnected, "
        f"{sum(report.notifications.values())} notification(s)"
    )
    if outcome_rows:
        console.print(table("Outcomes", ("outcome", "count"), outcome_rows))
    if verbose and report.rows:
        rows = (
            (r.connection_id, r.provider, r.user_id, r.outcome.value, r.error_code, r.status.value)
            for r in report.rows
        )
        console.print(table("Attempts", ("id", "provider", "user_id", "outcome", "error", "status"), rows))
    for name in report.provider_alerts:
        console.print(f"[yellow]alert:[/yellow] provider {name} failed for most connections this cycle")


@app.command("worker")
@handle_errors
def worker_command(
    concurrency: Annotated[int | None, typer.Option(min=1, max=1024, help="Refreshes in flight.")] = None,
    poll_interval: Annotated[float | None, typer.Option(min=0.1, help="Seconds between polls.")] = None,
    max_cycles: Annotated[int | None, typer.Option(min=1, help="Stop after this many cycles.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Run refresh cycles and deliver notifications for every tenant; run several against PostgreSQL.

    Refresh attempts older than GRANTKEEPER_ATTEMPT_RETENTION_DAYS are deleted at start and then hourly.
    """
    with runtime() as rt:
        interval = poll_interval or rt.settings.poll_interval_seconds
        warn_if_retries_miss_grace_windows(rt.settings, interval)
        run_async(_worker_loop(rt, concurrency, interval, max_cycles, json_output))


async def _worker_loop(
    rt: Runtime, concurrency: int | None, interval: float, max_cycles: int | None, json_output: bool
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    service, endpoint = rt.refresh_service(concurrency=concurrency)
    settle_after_start()  # a long run: the collector leaves start-up's objects alone from here on

    def on_stop_signal() -> None:
        stop.set()
        service.runner.stop_committing_after()  # answers held through an outage get a bounded grace

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, on_stop_signal)

    def report(cycle_report: CycleReport) -> None:
        if cycle_report.due:
            _log_cycle(cycle_report, json_output)

    dispatcher = rt.dispatcher()

    async def refresh_then_stop() -> int:
        cycles = await run_cycles(
            service.run_cycle, interval=interval, stop=stop, on_cycle=report, max_cycles=max_cycles
        )
        stop.set()  # the delivery loop ends with the refresh loop
        return cycles

    try:
        loops = [refresh_then_stop()]
        if dispatcher is not None:
            loops.append(run_cycles(dispatcher.deliver_due, interval=interval, stop=stop))
        settings = rt.settings  # a retention of 0 keeps those rows forever; expired links go anyway
        loops.append(
            run_pruning(
                rt.store,
                rt.clock,
                settings.attempt_retention,
                stop=stop,
                notifications_keep=settings.notification_retention,
            )
        )
        await asyncio.gather(*loops)
        if dispatcher is not None:
            await _deliver_before_exit(dispatcher)
    finally:
        await endpoint.close()
        service.runner.close()
        if dispatcher is not None:
            await dispatcher.close()


async def _deliver_before_exit(dispatcher: Dispatcher) -> None:
    """What the last cycle queued goes out before the worker exits; best effort, since the rows stay in the
    outbox for the next run when the database or a channel is down."""
    try:
        await dispatcher.deliver_due()
    except Exception as exc:
        log.warning(
            "final delivery skipped (%s); undelivered notifications stay in the outbox",
            type(exc).__name__,
            extra={"action": "final_delivery_skipped"},
        )


def _log_cycle(report: CycleReport, json_output: bool) -> None:
    if json_output:
        print_json(report.as_dict())
    else:
        log.info(
            "cycle: %d due, %d refreshed, %d newly disconnected",
            report.due,
            report.refreshed,
            report.newly_disconnected,
            extra={"action": "cycle"},
        )
