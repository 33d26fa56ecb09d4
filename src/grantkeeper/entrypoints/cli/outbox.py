"""``grantkeeper outbox deliver``: deliver every due outbox row once, then exit (cron-style deployments)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

import typer

from grantkeeper.bootstrap import Runtime, build_email_sender
from grantkeeper.entrypoints.cli.app import JsonOption, app, handle_errors, runtime
from grantkeeper.entrypoints.cli.output import console, err_console, print_json
from grantkeeper.ports import ChannelSender
from grantkeeper.service.cycle import default_owner
from grantkeeper.service.dispatch import Dispatcher, DispatchReport

outbox_app = typer.Typer(
    help="Deliveries of notifications to email and other channels.", no_args_is_help=True
)
app.add_typer(outbox_app, name="outbox")


def configured_senders(rt: Runtime) -> dict[str, ChannelSender]:
    senders: dict[str, ChannelSender] = {}
    email = build_email_sender(rt.settings, rt.clock)
    if email is not None:
        senders[email.channel] = email
    return senders


async def _deliver(rt: Runtime, senders: dict[str, ChannelSender]) -> DispatchReport:
    dispatcher = Dispatcher(rt.store, senders, rt.clock, owner=default_owner())
    return await dispatcher.deliver_due()


@outbox_app.command("deliver")
@handle_errors
def outbox_deliver(json_output: JsonOption = False) -> None:
    """Deliver every due outbox row once; rows of channels that are not configured wait for them."""
    with runtime() as rt:
        senders = configured_senders(rt)
        if not senders:
            err_console.print(
                "no delivery channel is configured: set GRANTKEEPER_SMTP_HOST and GRANTKEEPER_EMAIL_FROM "
                "for email; undelivered notifications wait in the outbox"
            )
        report = asyncio.run(_deliver(rt, senders))
    summary = asdict(report) | {"channels": sorted(senders)}
    if json_output:
        print_json(summary)
    else:
        console.print(
            f"delivered {report.delivered}, retrying {report.retrying}, failed {report.failed} "
            f"(channels: {', '.join(sorted(senders)) or 'none'})"
        )
