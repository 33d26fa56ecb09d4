"""A sandbox OAuth 2.0 provider: a real token endpoint (RFC 6749 section 6) that fails on cue.

Beside ``POST /oauth/token`` it serves token revocation (RFC 7009, ``POST /oauth/revoke``), token
introspection (RFC 7662, ``POST /oauth/introspect``) and the authorization-code grant with PKCE (RFC 6749
section 4.1, RFC 7636: a consent page at ``/oauth/authorize``, codes exchanged at the token endpoint), plus a
control API under ``/_sandbox/``.

grantkeeper's demo, tests and benchmarks refresh against it over real HTTP, so the provider client, the policy
and the scheduler meet every answer of DESIGN section 2 (rate limits, outages, resets, revoked grants, vendor
quirks) without a third-party account.

The server (uvicorn) is imported on first use of ``SandboxServer`` or ``serve_sandbox``: the ``grantkeeper``
command names the sandbox's behaviours at start-up (``demo``) and should not start uvicorn's imports for it.
"""

from typing import TYPE_CHECKING, Any

from grantkeeper.sandbox.behaviour import Behaviour
from grantkeeper.sandbox.model import GrantTokens, SandboxStats
from grantkeeper.sandbox.state import Sandbox

if TYPE_CHECKING:
    from grantkeeper.sandbox.server import SandboxServer, serve_sandbox

__all__ = ["Behaviour", "GrantTokens", "Sandbox", "SandboxServer", "SandboxStats", "serve_sandbox"]


def __getattr__(name: str) -> Any:
    if name in ("SandboxServer", "serve_sandbox"):
        from grantkeeper.sandbox import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
