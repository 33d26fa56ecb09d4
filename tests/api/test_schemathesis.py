"""Property-based conformance of the served API to its own OpenAPI document (schemathesis).

One served app per database (``database_url`` is parametrized: SQLite and PostgreSQL), seeded through the
API with a provider pointing at the sandbox server and a few connections in known states, then every
operation of ``/openapi.json`` is called with generated requests (valid and invalid) and each response is
checked: no server error, a status code the document declares, a declared content type and a body that
matches the declared schema.

Generated path parameters are sometimes replaced by ids that exist (connections, workflows, notifications,
the provider), and generated connection and workflow bodies sometimes name the seeded provider and
connections, so the success paths are exercised too, not only 404s and 422s.

Bounded and repeatable for CI: a fixed seed with Hypothesis derandomized, no example database, a few dozen
examples per operation. Everything stays on 127.0.0.1: the only provider the app may call is the sandbox,
and any generated provider URL that would leave this machine is rewritten to a closed loopback port.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig

from grantkeeper.core.urls import is_loopback_host, validate_token_url
from grantkeeper.sandbox import Behaviour
from tests.api.conftest import CRON_SECRET

MAX_EXAMPLES = 25  # per operation, in the fuzzing phase; the examples and coverage phases add a few more
SEED = 20261128
CLOSED_LOOPBACK_URL = "https://127.0.0.1:9/token"  # the discard port: nothing listens, refused at once
CRON_OPERATIONS = ["cron_token_refresh_get", "cron_token_refresh_post"]


@dataclass
class Seeded:
    """Ids that exist in the served app, by the path parameter (or body field) that can name them."""

    provider: str
    readable: list[str]  # connections for GET and /token (connected, plus one needing reauthorization)
    deletable: list[str]  # connections DELETE may take; kept apart so the readable ones stay
    workflows: list[str]
    notifications: list[str]
    path_values: dict[tuple[str, str], list[str]] = field(default_factory=dict)


def _seed(client, sandbox) -> Seeded:
    """Through the API: connections with fresh tokens, some that must refresh first, one the provider
    refuses with ``interaction_required`` (so it needs reauthorization, its workflow is paused and a
    notification exists), deletable ones, and a workflow."""
    expires_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    fresh = [sandbox.issue_grant(client_id="app", access_token_lifetime=3600) for _ in range(6)]
    stale = [sandbox.issue_grant(client_id="app", access_token_lifetime=3600) for _ in range(2)]
    refused = sandbox.issue_grant(client_id="app", behaviour=Behaviour.INTERACTION_REQUIRED)
    spare = [sandbox.issue_grant(client_id="app", access_token_lifetime=3600) for _ in range(8)]

    def row(user: str, grant, *, with_access_token: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "provider": "sandbox",
            "user_id": user,
            "refresh_token": grant.refresh_token,
            "email": f"{user}@example.test",
        }
        if with_access_token:
            body |= {"access_token": grant.access_token, "expires_at": expires_at}
        return body

    rows = (
        [row(f"fresh-{i}", g, with_access_token=True) for i, g in enumerate(fresh)]
        + [row(f"stale-{i}", g, with_access_token=False) for i, g in enumerate(stale)]
        + [row("refused", refused, with_access_token=False)]
        + [row(f"spare-{i}", g, with_access_token=True) for i, g in enumerate(spare)]
    )
    imported = client.post("/v1/connections/import", json={"connections": rows})
    assert imported.status_code == 201, imported.text
    ids = imported.json()["ids"]
    readable, refused_id, deletable = ids[:8], ids[8], ids[9:]

    workflow = client.post(
        "/v1/workflows", json={"name": "sync", "connection_ids": [readable[0], refused_id]}
    )
    assert workflow.status_code == 201, workflow.text
    token = client.get(f"/v1/connections/{refused_id}/token")
    assert token.status_code == 409, token.text  # interaction_required: needs reauthorization at once
    notifications = [n["id"] for n in client.get("/v1/notifications").json()]
    assert notifications, "the disconnection should have left a notification"
    seeded = Seeded(
        provider="sandbox",
        readable=[*readable, refused_id],
        deletable=deletable,
        workflows=[workflow.json()["id"]],
        notifications=notifications,
    )
    seeded.path_values = {
        ("GET", "connection_id"): seeded.readable,
        ("DELETE", "connection_id"): seeded.deletable,
        ("GET", "workflow_id"): seeded.workflows,
        ("POST", "notification_id"): seeded.notifications,
        ("GET", "name"): [seeded.provider],
    }
    return seeded


def _config(api_key: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
            "checks": {
                "enabled": False,
                "not_a_server_error": {"enabled": True},
                "status_code_conformance": {"enabled": True},
                "content_type_conformance": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
            },
            "headers": {"Authorization": f"Bearer {api_key}"},
            # The cron endpoint takes the cron secret, not a tenant key, in the same header.
            "operations": [
                {
                    "include-operation-id": CRON_OPERATIONS,
                    "headers": {"Authorization": f"Bearer {CRON_SECRET}"},
                }
            ],
        }
    )


def _on_loopback(body: Any) -> Any:
    """A provider body whose URLs are valid but point off this machine gets them on a closed loopback port."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    for key in ("token_url", "revocation_url", "authorize_url"):
        url = body.get(key)
        if not isinstance(url, str):
            continue
        try:
            validate_token_url(url)
            host = urlsplit(url).hostname or ""
        except ValueError:
            continue  # rejected with a 422 before anything is sent
        if not is_loopback_host(host):
            body[key] = CLOSED_LOOPBACK_URL
    return body


def _naming_seeded(seeded: Seeded) -> Callable[[Any], Any]:
    """Point a generated connection, import or workflow body at the seeded provider and connections."""

    def connection(item: Any) -> Any:
        return item | {"provider": seeded.provider} if isinstance(item, dict) else item

    def rewrite(body: Any) -> Any:
        if not isinstance(body, dict):
            return body
        if "provider" in body:
            return connection(body)
        if isinstance(body.get("connections"), list):
            return body | {"connections": [connection(item) for item in body["connections"]]}
        if isinstance(body.get("connection_ids"), list):
            return body | {"connection_ids": seeded.readable[:3]}
        return body

    return rewrite


def _install_hooks(schema: schemathesis.BaseSchema, seeded: Seeded) -> None:
    rewrite = _naming_seeded(seeded)

    @schema.hook
    def before_generate_path_parameters(context, strategy):
        operation = context.operation
        names = [p.name for p in operation.path_parameters]
        real = {name: seeded.path_values.get((operation.method.upper(), name)) for name in names}
        if not names or not all(real.values()):
            return strategy
        return st.one_of(strategy, st.fixed_dictionaries({n: st.sampled_from(v) for n, v in real.items()}))

    @schema.hook
    def before_generate_body(context, strategy):
        operation = context.operation
        if operation.method.upper() != "POST":
            return strategy
        if operation.path == "/v1/providers":
            return strategy.map(_on_loopback)
        if operation.path in ("/v1/connections", "/v1/connections/import", "/v1/workflows"):
            return st.one_of(strategy, strategy.map(rewrite))
        return strategy


@pytest.fixture
def served_schema(api, acme, sandbox, sandbox_provider) -> schemathesis.BaseSchema:
    seeded = _seed(acme, sandbox)
    schema = schemathesis.openapi.from_url(
        f"{api.base_url}/openapi.json", config=_config(api.keys["acme"]), timeout=10
    )
    _install_hooks(schema, seeded)
    return schema


schema = schemathesis.pytest.from_fixture("served_schema")


@schema.parametrize()
def test_every_operation_conforms_to_the_openapi_document(case):
    case.call_and_validate(timeout=10)
