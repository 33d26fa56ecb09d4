"""Run the sandbox provider standalone, for benchmarks that drive it from another process.

Prints the token URL on one line once it accepts requests, then serves until SIGINT or SIGTERM; grants and
behaviours are configured through the HTTP control API (``/_sandbox/...``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from grantkeeper.sandbox.authorize import redirect_uri_problem
from grantkeeper.sandbox.server import SandboxServer
from grantkeeper.sandbox.state import Sandbox


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text!r}")
    return value


def _cpu(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a CPU number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"CPU numbers start at 0, not {value}")
    return value


def _redirect_uri(text: str) -> str:
    problem = redirect_uri_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"redirect URI {text!r} {problem}")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m grantkeeper.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--client-id", help="register this client at start")
    parser.add_argument("--client-secret", help="the client's secret (required with --client-id)")
    parser.add_argument("--no-rotation", action="store_true", help="the client keeps its refresh tokens")
    parser.add_argument(
        "--grace-seconds",
        type=_non_negative,
        default=0.0,
        help="with --client-id: how long a rotated refresh token stays usable (default 0: reuse at once)",
    )
    parser.add_argument(
        "--redirect-uri",
        dest="redirect_uris",
        metavar="URL",
        action="append",
        type=_redirect_uri,
        default=[],
        help="with --client-id: a redirect URI for the authorization-code grant (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for fraction draws")
    parser.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto", help="HTTP parser")
    parser.add_argument("--hang-seconds", type=float, default=30.0, help="how long 'hang' answers wait")
    parser.add_argument(
        "--latency-ms", type=_non_negative, default=0.0, help="every token response waits this long first"
    )
    parser.add_argument(
        "--cpu", type=_cpu, help="pin the process to this CPU before serving (benchmarks: one core each)"
    )
    return parser


def _pin(cpu: int) -> str | None:
    """Pin this process to ``cpu``; an error text when that is impossible.

    Called before the server starts so every thread it creates inherits the affinity.
    """
    if not hasattr(os, "sched_setaffinity"):
        return "--cpu needs os.sched_setaffinity (Linux)"
    try:
        os.sched_setaffinity(0, {cpu})
    except (OSError, ValueError) as exc:
        return f"cannot pin to CPU {cpu}: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.client_id is None) != (args.client_secret is None):
        parser.error("--client-id and --client-secret go together")
    if args.grace_seconds and args.client_id is None:
        parser.error("--grace-seconds applies to --client-id")
    if args.redirect_uris and args.client_id is None:
        parser.error("--redirect-uri applies to --client-id")
    if args.cpu is not None and (error := _pin(args.cpu)) is not None:
        print(error, file=sys.stderr)
        return 1
    sandbox = Sandbox(seed=args.seed, hang_seconds=args.hang_seconds)
    sandbox.set_latency(args.latency_ms / 1000)
    if args.client_id is not None:
        sandbox.add_client(
            args.client_id,
            args.client_secret,
            rotate_refresh_tokens=not args.no_rotation,
            rotation_grace_seconds=args.grace_seconds,
            redirect_uris=args.redirect_uris,
        )
    try:
        server = SandboxServer(sandbox, args.host, args.port, args.http)
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    sandbox.set_issuer(server.base_url)  # RFC 9207: authorization responses name the server as ``iss``
    server.serve_forever(on_ready=lambda: print(server.token_url, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
