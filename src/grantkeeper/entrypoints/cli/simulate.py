"""``grantkeeper simulate``: plan capacity with the real policy over virtual time (no HTTP, no database).

It needs no settings, no encryption key and no database, so it runs anywhere the package is installed.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Annotated

import typer

from grantkeeper.entrypoints.cli.app import CliError, JsonOption, app, handle_errors
from grantkeeper.entrypoints.cli.output import console, err_console, print_json, table
from grantkeeper.service.simulation import (
    DEFAULT_WORKER_RATE,
    FaultModel,
    Outage,
    SimulationConfig,
    SimulationReport,
    simulate,
)

OUTAGE_FORMAT = "START_HOURS:DURATION_MINUTES"


@app.command("simulate")
@handle_errors
def simulate_command(
    connections: Annotated[int, typer.Option(help="Connections to plan for.")] = 10_000,
    sample: Annotated[
        int | None, typer.Option(help="Simulate only this many and scale counts to --connections.")
    ] = None,
    days: Annotated[float, typer.Option(help="Virtual days to simulate.")] = 7.0,
    token_lifetime: Annotated[float, typer.Option(help="Access token lifetime, seconds.")] = 3600.0,
    rate_429: Annotated[float, typer.Option("--rate-429", help="Chance an attempt gets a 429.")] = 0.0,
    rate_5xx: Annotated[float, typer.Option("--rate-5xx", help="Chance an attempt gets a 503.")] = 0.0,
    rate_timeout: Annotated[float, typer.Option(help="Chance an attempt times out.")] = 0.0,
    rate_invalid_grant: Annotated[
        float, typer.Option(help="Chance a live grant is answered 400 invalid_grant anyway.")
    ] = 0.0,
    retry_after: Annotated[
        float | None, typer.Option(help="Retry-After seconds sent with each 429 (default: none).")
    ] = None,
    revocations_per_day: Annotated[
        float, typer.Option(help="Share of connections whose grant is revoked per day.")
    ] = 0.0,
    outage: Annotated[
        list[str] | None,
        typer.Option(help=f"{OUTAGE_FORMAT}: every attempt gets a 503 then (repeatable).", metavar="OUTAGE"),
    ] = None,
    latency_ms: Annotated[float, typer.Option(help="Provider latency per attempt, milliseconds.")] = 200.0,
    read_timeout: Annotated[float, typer.Option(help="Seconds a timed-out attempt holds its slot.")] = 10.0,
    concurrency: Annotated[int, typer.Option(help="Refreshes in flight per worker.")] = 32,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Workers in the fleet (default: unlimited; report the number needed, and the fewest that "
            "refresh every token before it expires)."
        ),
    ] = None,
    worker_rate: Annotated[
        float,
        typer.Option(
            help="Refreshes a second one worker handles at most, however short the latency (its CPU and "
            "database session); 0 for no such ceiling. Measure yours with bench/worker_vs_server.py."
        ),
    ] = DEFAULT_WORKER_RATE,
    provider_rate_limit: Annotated[
        float | None,
        typer.Option(
            help="The provider's --rate-limit: refreshes a second all workers together may send "
            "(default: none)."
        ),
    ] = None,
    provider_max_concurrency: Annotated[
        int | None,
        typer.Option(help="The provider's --max-concurrency: refreshes in flight across all workers."),
    ] = None,
    poll_interval: Annotated[float, typer.Option(help="Seconds between a worker's polls.")] = 5.0,
    connections_per_user: Annotated[int, typer.Option(help="Connections each user has.")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same report.")] = 0,
    json_output: JsonOption = False,
) -> None:
    """Run the real refresh policy and scheduler over virtual time against a provider fault model.

    Reports false and true disconnections, notifications per user, the refresh rate, the workers needed and
    the fewest workers that refresh every token before it expires.
    """
    faults = FaultModel(
        rate_limit=rate_429,
        server_error=rate_5xx,
        timeout=rate_timeout,
        spurious_invalid_grant=rate_invalid_grant,
        revocations_per_day=revocations_per_day,
        outages=tuple(parse_outage(text) for text in outage or ()),
        retry_after=None if retry_after is None else _duration("--retry-after", retry_after, allow_zero=True),
    )
    config = SimulationConfig(
        connections=connections,
        sample=sample,
        duration=_duration("--days", days * 86_400),
        token_lifetime=_duration("--token-lifetime", token_lifetime),
        faults=faults,
        latency=_duration("--latency-ms", latency_ms / 1000),
        read_timeout=_duration("--read-timeout", read_timeout),
        concurrency=concurrency,
        workers=workers,
        worker_rate=_worker_rate(worker_rate),
        provider_rate_limit=provider_rate_limit,
        provider_max_concurrency=provider_max_concurrency,
        connections_per_user=connections_per_user,
        poll_interval=_duration("--poll-interval", poll_interval),
        seed=seed,
    )
    if json_output or not err_console.is_terminal:
        report = simulate(config)
    else:
        with err_console.status(f"simulating {config.simulated_connections:,} connections..."):
            report = simulate(config)
    _print_report(report, json_output=json_output)


def parse_outage(text: str) -> Outage:
    """``36:60`` is an hour-long outage starting 36 hours into the simulation."""
    parts = text.split(":")
    try:
        start_hours, duration_minutes = (float(part) for part in parts)
    except ValueError:
        raise CliError(f"--outage {text!r}: expected {OUTAGE_FORMAT}, e.g. 36:60") from None
    if not (math.isfinite(start_hours) and math.isfinite(duration_minutes)):
        raise CliError(f"--outage {text!r}: hours and minutes must be finite numbers")
    if start_hours < 0 or duration_minutes <= 0:
        raise CliError(
            f"--outage {text!r}: the start must be 0 or more hours and the duration over 0 minutes"
        )
    return Outage(
        start=_duration("--outage", start_hours * 3600, allow_zero=True),
        duration=_duration("--outage", duration_minutes * 60),
    )


def _worker_rate(value: float) -> float | None:
    """0 lifts the ceiling; anything else must be a finite rate of at least 1 a second."""
    if value == 0:
        return None
    if not math.isfinite(value) or value < 1:
        raise CliError("--worker-rate must be 0 (no ceiling) or a finite number of at least 1 a second")
    return value


def _duration(option: str, seconds: float, *, allow_zero: bool = False) -> timedelta:
    """A ``timedelta`` from an option's seconds; NaN, infinity and out-of-range values are usage errors."""
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        qualifier = "0 or more" if allow_zero else "more than 0"
        raise CliError(f"{option} must be a finite number {qualifier}")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise CliError(f"{option} is too large") from None


def _print_report(report: SimulationReport, *, json_output: bool) -> None:
    if json_output:
        print_json(report.to_dict())
        return
    console.print(table("Simulation", ("metric", "value"), report.rows()))
    console.print(report.note)
