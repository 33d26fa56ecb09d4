"""``grantkeeper prune``: delete old refresh attempts once, as the worker does every hour (cron-style
deployments, or catching up after ``GRANTKEEPER_ATTEMPT_RETENTION_DAYS`` was lowered)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from grantkeeper.entrypoints.cli.app import JsonOption, app, handle_errors, run_async, runtime
from grantkeeper.entrypoints.cli.output import console, err_console, print_json
from grantkeeper.service.retention import prune_attempts, prune_connect_links, prune_deliveries


@app.command("prune")
@handle_errors
def prune_command(
    older_than_days: Annotated[
        int | None,
        typer.Option(
            "--older-than-days",
            min=1,
            max=3650,
            help="Delete attempts older than this many days (default: GRANTKEEPER_ATTEMPT_RETENTION_DAYS).",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Delete refresh attempts and finished deliveries older than the retention (oldest first, in short
    batches), and connect links a day past their expiry."""
    with runtime() as rt:
        days = rt.settings.attempt_retention_days if older_than_days is None else older_than_days
        # only the setting can be 0 (keep forever); the option is at least 1
        keep = timedelta(days=days)
        deleted = run_async(prune_attempts(rt.store, rt.clock, keep)) if days else 0
        deliveries = run_async(prune_deliveries(rt.store, rt.clock, keep)) if days else 0
        links = run_async(prune_connect_links(rt.store, rt.clock))
    counts = {"deliveries_deleted": deliveries, "connect_links_deleted": links}
    if not days:
        if json_output:
            print_json({"deleted": 0, "older_than_days": None} | counts)
        err_console.print(
            "attempts are kept forever (GRANTKEEPER_ATTEMPT_RETENTION_DAYS=0): nothing deleted; "
            "pass --older-than-days N to prune anyway"
        )
    elif json_output:
        print_json({"deleted": deleted, "older_than_days": days} | counts)
    else:
        console.print(f"deleted {deleted} refresh attempt(s) older than {days} day(s)")
        console.print(f"deleted {deliveries} finished deliveries older than {days} day(s)")
        console.print(f"deleted {links} expired connect link row(s)")
