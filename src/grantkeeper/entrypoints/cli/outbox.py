"""``grantkeeper outbox deliver``: deliver every due outbox row once, then exit (cron-style deployments)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

import typer

from grantkeeper.entrypoints.cli.app import JsonOption, app, handle_errors, runtime
from grantkeeper.entrypoints.cli.output import console, err_console, print_json
from grantkeeper.service.dispatch import Dispatcher, DispatchReport

outbox_app = typer.Typer(
    help="Deliveries of notifications to email and other channels.", no_args_is_help=True
)
app.add_typer(outbox_app, name="outbox")


@outbox_app.command("deliver")
@handle_errors
def outbox_deliver(json_output: JsonOption = False) -> None:
    """Deliver every due outbox row once; rows of channels that are not configured wait for them."""
    with runtime() as rt:
        dispatcher = rt.dispatcher()
        if dispatcher is None:
            err_console.print(
                "no delivery channel is configured: set GRANTKEEPER_ENCRYPTION_KEYS for Slack, Discord and "
                "webhooks, and GRANTKEEPER_SMTP_HOST and GRANTKEEPER_EMAIL_FROM for email; undelivered "
                "notifications wait in the outbox"
            )
            report = DispatchReport()
            channels: list[str] = []
        else:
            report = asyncio.run(_deliver_once(dispatcher))
            channels = dispatcher.channels
            if "email" not in channels:
                err_console.print(
                    "email is not configured (set GRANTKEEPER_SMTP_HOST and GRANTKEEPER_EMAIL_FROM): "
                    "email notifications wait in the outbox"
                )
    summary = asdict(report) | {"channels": channels}
    if json_output:
        print_json(summary)
    else:
        console.print(
            f"delivered {report.delivered}, retrying {report.retrying}, failed {report.failed} "
            f"(channels: {', '.join(channels) or 'none'})"
        )


async def _deliver_once(dispatcher: Dispatcher) -> DispatchReport:
    try:
        return await dispatcher.deliver_due()
    finally:
        await dispatcher.close()
