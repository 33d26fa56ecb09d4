"""Run the sandbox provider standalone, for benchmarks that drive it from another process.

Prints the token URL on one line once it accepts requests, then serves until SIGINT or SIGTERM; grants and
behaviours are configured through the HTTP control API (``/_sandbox/...``).
"""

from __future__ import annotations

import argparse
import sys

from grantkeeper.sandbox.server import SandboxServer
from grantkeeper.sandbox.state import Sandbox


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m grantkeeper.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--client-id", help="register this client at start")
    parser.add_argument("--client-secret", help="the client's secret (required with --client-id)")
    parser.add_argument("--no-rotation", action="store_true", help="the client keeps its refresh tokens")
    parser.add_argument("--seed", type=int, default=0, help="seed for fraction draws")
    parser.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto", help="HTTP parser")
    parser.add_argument("--hang-seconds", type=float, default=30.0, help="how long 'hang' answers wait")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if (args.client_id is None) != (args.client_secret is None):
        _parser().error("--client-id and --client-secret go together")
    sandbox = Sandbox(seed=args.seed, hang_seconds=args.hang_seconds)
    if args.client_id is not None:
        sandbox.add_client(args.client_id, args.client_secret, rotate_refresh_tokens=not args.no_rotation)
    try:
        server = SandboxServer(sandbox, args.host, args.port, args.http)
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    server.serve_forever(on_ready=lambda: print(server.token_url, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
