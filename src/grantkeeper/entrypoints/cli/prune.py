"""``grantkeeper prune``: delete old refresh attempts (and, with a retention set, old in-app notifications)
once, as the worker does every hour (cron-style deployments, or catching up after a retention was
lowered)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from grantkeeper.entrypoints.cli.app import JsonOption, app, handle_errors, run_async, runtime
from grantkeeper.entrypoints.cli.output import console, err_console, print_json
from grantkeeper.service.retention import (
    prune_attempts,
    prune_connect_links,
    prune_deliveries,
    prune_notifications,
)


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
    notifications_older_than_days: Annotated[
        int | None,
        typer.Option(
            "--notifications-older-than-days",
            min=1,
            max=3650,
            help="Delete in-app notifications older than this many days "
            "(default: GRANTKEEPER_NOTIFICATION_RETENTION_DAYS; 0 there keeps them).",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Delete refresh attempts and finished deliveries older than the retention (oldest first, in short
    batches), in-app notifications older than theirs, and connect links a day past their expiry."""
    with runtime() as rt:
        settings = rt.settings
        days = settings.attempt_retention_days if older_than_days is None else older_than_days
        # only the settings can be 0 (keep forever); the options are at least 1
        keep = timedelta(days=days)
        deleted = run_async(prune_attempts(rt.store, rt.clock, keep)) if days else 0
        deliveries = run_async(prune_deliveries(rt.store, rt.clock, keep)) if days else 0
        links = run_async(prune_connect_links(rt.store, rt.clock))
        notice_days = (
            settings.notification_retention_days
            if notifications_older_than_days is None
            else notifications_older_than_days
        )
        notices = (
            run_async(prune_notifications(rt.store, rt.clock, timedelta(days=notice_days)))
            if notice_days
            else 0
        )
    counts = {
        "deliveries_deleted": deliveries,
        "connect_links_deleted": links,
        "notifications_deleted": notices,
        "notifications_older_than_days": notice_days or None,
    }
    if not days:
        if json_output:
            print_json({"deleted": 0, "older_than_days": None} | counts)
        err_console.print(
            "attempts are kept forever (GRANTKEEPER_ATTEMPT_RETENTION_DAYS=0): no attempt deleted; "
            "pass --older-than-days N to prune anyway"
        )
    elif json_output:
        print_json({"deleted": deleted, "older_than_days": days} | counts)
    else:
        console.print(f"deleted {deleted} refresh attempt(s) older than {days} day(s)")
        console.print(f"deleted {deliveries} finished deliveries older than {days} day(s)")
        console.print(f"deleted {links} expired connect link row(s)")
    if not json_output:
        if notice_days:
            console.print(f"deleted {notices} notification(s) older than {notice_days} day(s)")
        else:
            console.print("in-app notifications are kept (GRANTKEEPER_NOTIFICATION_RETENTION_DAYS=0)")
