"""The served API against its own OpenAPI document: a ``schemathesis run`` inside the suite, per database.

A real app (``api`` fixture: uvicorn on loopback, SQLite and PostgreSQL) is seeded through the API with a
provider pointing at the sandbox server and connections in known states; then schemathesis loads
``/openapi.json`` from it and runs its phases (coverage, fuzzing, stateful) over every operation with the
tenant's API key, checking each response:

- ``not_a_server_error``: no 5xx;
- ``status_code_conformance`` and ``content_type_conformance``: the status and media type are declared;
- ``response_schema_conformance``: the body matches the declared schema;
- ``problem_details_conformance`` (ours, below): every 4xx/5xx is an RFC 9457 ``application/problem+json``
  document with a ``urn:grantkeeper:problem:`` type, as ``entrypoints/api/errors.py`` promises; schemathesis
  cannot check those bodies against the document while it does not declare them.

The run goes through schemathesis's engine (what the ``schemathesis`` command runs) rather than
``schemathesis.pytest.from_fixture``: the lazy loader sets ``Function._nodeid``, which pytest 9 no longer has.

Generated path parameters are sometimes replaced by ids that exist, and generated connection, import,
workflow and provider bodies sometimes name the seeded provider, connections and the sandbox's URLs, so the
success paths are exercised too, not only 404s and 422s. Nothing is excluded: the cron operations get the
cron secret instead of the tenant key. Bounded and repeatable for CI: a fixed seed, Hypothesis derandomized,
no example database, ``MAX_EXAMPLES`` per operation in the fuzzing phase. Everything stays on 127.0.0.1: a
generated provider URL that would leave this machine is rewritten to a closed loopback port.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.core import NOT_SET
from schemathesis.engine import Status, StopReason, events, from_schema

from grantkeeper.core.urls import is_loopback_host, validate_token_url
from grantkeeper.sandbox import Behaviour
from tests.api.conftest import CRON_SECRET

MAX_EXAMPLES = 40  # per operation in the fuzzing phase; coverage and stateful add their own
SEED = 20261128
CLOSED_LOOPBACK_URL = "https://127.0.0.1:9/token"  # the discard port: nothing listens, refused at once
CRON_OPERATIONS = ["cron_token_refresh_get", "cron_token_refresh_post"]
PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:grantkeeper:problem:"


@schemathesis.check
def problem_details_conformance(ctx, response, case) -> bool | None:
    """Every error is an RFC 9457 problem document whose ``status`` is the response's."""
    if response.status_code < 400:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    if not content_type.startswith(PROBLEM_JSON):
        raise AssertionError(f"error response with Content-Type {content_type!r}, not {PROBLEM_JSON}")
    body = response.json()
    if not isinstance(body, dict):
        raise AssertionError(f"problem document is not an object: {body!r}")
    missing = sorted({"type", "title", "status", "detail", "instance"} - body.keys())
    if missing:
        raise AssertionError(f"problem document lacks {missing}")
    if body["status"] != response.status_code:
        raise AssertionError(f"problem status {body['status']!r} but HTTP status {response.status_code}")
    if not str(body["type"]).startswith(PROBLEM_TYPE_PREFIX):
        raise AssertionError(f"problem type {body['type']!r} is not one of ours ({PROBLEM_TYPE_PREFIX}...)")
    return None


@dataclass
class Seeded:
    """Values that exist in the served app, for the places a generated request can name them."""

    provider: str
    patchable: str  # a second provider for PATCH to change, so the seeded one keeps working for the rest
    removable: list[str]  # providers DELETE may take (without connections), so the others stay
    token_url: str
    revocation_url: str
    readable: list[str]  # connections for GET and /token (connected, plus one needing reauthorization)
    deletable: list[str]  # connections DELETE may take, kept apart so the readable ones stay
    workflows: list[str]
    notifications: list[str]

    def path_values(self, method: str, name: str) -> list[str]:
        return {
            ("GET", "connection_id"): self.readable,
            ("POST", "connection_id"): self.readable,
            ("DELETE", "connection_id"): self.deletable,
            ("GET", "workflow_id"): self.workflows,
            ("POST", "notification_id"): self.notifications,
            ("GET", "name"): [self.provider],
            ("PATCH", "name"): [self.patchable],
            ("DELETE", "name"): self.removable,
        }.get((method.upper(), name), [])


def _seed(client, sandbox, sandbox_server, provider: dict) -> Seeded:
    """Through the API: connections with fresh tokens, two that must refresh first, one the provider refuses
    with ``interaction_required`` (so it needs reauthorization, its workflow is paused and a notification
    exists), spares for DELETE, and a workflow."""
    expires_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()

    def row(user: str, *, fresh: bool = True, behaviour: Behaviour | None = None) -> dict[str, Any]:
        grant = sandbox.issue_grant(client_id="app", access_token_lifetime=3600, behaviour=behaviour)
        body = {"provider": provider["name"], "user_id": user, "refresh_token": grant.refresh_token}
        if fresh:
            body |= {"access_token": grant.access_token, "expires_at": expires_at}
        return body | {"email": f"{user}@example.test"}

    rows = [
        *(row(f"fresh-{i}") for i in range(6)),
        *(row(f"stale-{i}", fresh=False) for i in range(2)),
        row("refused", fresh=False, behaviour=Behaviour.INTERACTION_REQUIRED),
        *(row(f"spare-{i}") for i in range(10)),
    ]
    imported = client.post("/v1/connections/import", json={"connections": rows})
    assert imported.status_code == 201, imported.text
    ids = imported.json()["ids"]
    readable, refused, deletable = ids[:8], ids[8], ids[9:]
    workflow = client.post("/v1/workflows", json={"name": "sync", "connection_ids": [readable[0], refused]})
    assert workflow.status_code == 201, workflow.text
    token = client.get(f"/v1/connections/{refused}/token")
    assert token.status_code == 409, token.text  # interaction_required: needs reauthorization at once
    notifications = [n["id"] for n in client.get("/v1/notifications").json()]
    assert notifications, "the disconnection should have left a notification"
    removable = [f"removable-{i}" for i in range(5)]
    for name in ["patchable", *removable]:
        added = client.post("/v1/providers", json=_minimal_provider(name, sandbox_server))
        assert added.status_code == 201, added.text
    return Seeded(
        provider=provider["name"],
        patchable="patchable",
        removable=removable,
        token_url=sandbox_server.token_url,
        revocation_url=sandbox_server.revocation_url,
        readable=[*readable, refused],
        deletable=deletable,
        workflows=[workflow.json()["id"]],
        notifications=notifications,
    )


def _config(api_key: str) -> SchemathesisConfig:
    checks = [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        problem_details_conformance.__name__,
    ]
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
            "checks": {"enabled": False} | {name: {"enabled": True} for name in checks},
            "phases": {"stateful": {"max-steps": 6, "generation": {"max-examples": 10}}},
            "continue-on-failure": True,  # find every kind of failure of an operation, not only the first
            "request-timeout": 10,
            "headers": {"Authorization": f"Bearer {api_key}"},
            # The cron operations take the cron secret, not a tenant key, in the same header.
            "operations": [
                {
                    "include-operation-id": CRON_OPERATIONS,
                    "headers": {"Authorization": f"Bearer {CRON_SECRET}"},
                }
            ],
        }
    )


def _minimal_provider(name: str, sandbox_server: Any) -> dict[str, str]:
    return {
        "name": name,
        "token_url": sandbox_server.token_url,
        "client_id": "app",
        "client_secret": "app-secret",
    }


def _loopback_only(body: Any) -> Any:
    """Valid provider URLs that point off this machine are moved to a closed loopback port."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    for key in ("token_url", "revocation_url", "authorize_url", "introspection_url"):
        url = body.get(key)
        if not isinstance(url, str):
            continue
        try:
            validate_token_url(url)
        except ValueError:
            continue  # refused with a 422 before anything is sent
        if not is_loopback_host(urlsplit(url).hostname or ""):
            body[key] = CLOSED_LOOPBACK_URL
    return body


#: Provider fields whose every schema-valid value the server takes, so a rewritten body keeps them.
_PROVIDER_FIELDS_VALID_BY_SCHEMA = (
    "auth_method",
    "default_expires_in",
    "max_concurrency",
    "rate_limit_per_second",
)


def _body_rewrites(seeded: Seeded) -> dict[str, Callable[[Any], Any]]:
    """Per path of a POST: make a generated body name what exists, so it can succeed."""

    def named(item: Any) -> Any:
        return item | {"provider": seeded.provider} if isinstance(item, dict) else item

    def importing(body: Any) -> Any:
        if isinstance(body, dict) and isinstance(body.get("connections"), list):
            return body | {"connections": [named(item) for item in body["connections"]]}
        return body

    def workflow(body: Any) -> Any:
        return body | {"connection_ids": seeded.readable[:3]} if isinstance(body, dict) else body

    def provider(body: Any) -> Any:
        if not isinstance(body, dict):
            return body
        # Only what the schema alone makes valid is kept; the server refuses most generated values of the rest
        # (a blank client id, an authorize URL off loopback, "state" as an extra parameter, a bare "id_token"
        # as the account path).
        kept = {key: body[key] for key in _PROVIDER_FIELDS_VALID_BY_SCHEMA if key in body}
        # a fresh name: generated names repeat ("0"), and a repeat is a 409
        unique = f"p{uuid.uuid4().hex[:12]}"
        return kept | {
            "name": unique,
            "token_url": seeded.token_url,
            "revocation_url": seeded.revocation_url,
            "client_id": "schemathesis-client",
            "client_secret": "schemathesis-secret",
        }

    def connect_session(body: Any) -> Any:
        if not isinstance(body, dict):
            return body
        # return_to must be on the (empty) allow list: only a body without one can succeed
        return {key: value for key, value in body.items() if key != "return_to"} | {
            "provider": seeded.provider
        }

    def reconnect_link(body: Any) -> Any:
        return (
            {key: value for key, value in body.items() if key != "return_to"}
            if isinstance(body, dict)
            else body
        )

    return {
        "/v1/connections": named,
        "/v1/connections/import": importing,
        "/v1/workflows": workflow,
        "/v1/providers": provider,
        "/v1/connect-sessions": connect_session,
        "/v1/connections/{connection_id}/reconnect-link": reconnect_link,
    }


def _install_hooks(schema: schemathesis.BaseSchema, seeded: Seeded) -> None:
    rewrites = _body_rewrites(seeded)

    @schema.hook
    def before_generate_path_parameters(context, strategy):
        operation = context.operation
        real = {p.name: seeded.path_values(operation.method, p.name) for p in operation.path_parameters}
        if not real or not all(real.values()):
            return strategy
        existing = st.fixed_dictionaries({name: st.sampled_from(values) for name, values in real.items()})
        return st.one_of(strategy, existing)

    @schema.hook
    def map_body(context, body):
        # ``map_body``, not a ``before_generate_body`` strategy: schemathesis hands a map hook the plain body,
        # while a strategy of its own may yield bodies wrapped in its ``GeneratedValue``, which no rewrite
        # recognised (they all went out as generated, and runs saw no provider made, CI red)
        operation = context.operation
        if operation.method.upper() == "PATCH" and operation.path == "/v1/providers/{name}":
            # half change one harmless setting (the other half are generated, many refused); no URL may
            # point off this machine
            return {"scopes": "patched"} if _is_chosen(body) else _loopback_only(body)
        if operation.method.upper() != "POST" or operation.path not in rewrites:
            return body
        if _is_chosen(body):
            return rewrites[operation.path](body)
        return _loopback_only(body) if operation.path == "/v1/providers" else body


#: What a PATCH of a provider may not change here: what its refreshes need. A connection on the provider
#: PATCHed (schemathesis finds provider names in responses and puts them in connection bodies) would then
#: answer ``/token`` with a documented 503, which ``not_a_server_error`` counts as a failure. The dedicated
#: tests (``test_provider_update.py``) cover changing these.
_REFRESH_SETTINGS = ("token_url", "client_id", "client_secret", "auth_method", "max_concurrency",
                     "rate_limit_per_second")  # fmt: skip


@contextmanager
def _seeded_provider_kept(seeded: Seeded) -> Iterator[None]:
    """Every request of every phase (``before_call``; coverage and stateful included, which no generation
    hook reaches): a PATCH of a provider goes to ``patchable``, never the seeded provider the connections
    use, and leaves the settings refreshes need alone; a DELETE of either goes to a removable one instead.
    A global hook, so it is removed afterwards."""

    def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
        operation = case.operation
        if operation.path != "/v1/providers/{name}" or not isinstance(case.path_parameters, dict):
            return
        name = case.path_parameters.get("name")
        method = operation.method.upper()
        if method == "DELETE" and name in (seeded.provider, seeded.patchable):
            case.path_parameters = case.path_parameters | {"name": seeded.removable[0]}
        if method != "PATCH":
            return
        if name == seeded.provider:
            case.path_parameters = case.path_parameters | {"name": seeded.patchable}
        if isinstance(case.body, dict):
            case.body = {key: value for key, value in case.body.items() if key not in _REFRESH_SETTINGS}

    schemathesis.hook(before_call)
    try:
        yield
    finally:
        schemathesis.hooks.unregister(before_call)


def _is_chosen(body: Any) -> bool:
    """About half of the bodies, by their content: the choice is a function of the body, so Hypothesis sees
    the same mapping whenever it draws the same body again (a counter started afresh with each strategy)."""
    return zlib.crc32(json.dumps(body, sort_keys=True, default=repr).encode()) % 2 == 0


DOCUMENTATION_CHECKS = frozenset({"status_code_conformance", "content_type_conformance"})


@dataclass
class RunReport:
    """What a run saw: distinct failures with one example each, errors, and statuses per operation."""

    failures: dict[tuple[str, str, int | None], list[str]]
    errors: list[str]
    statuses: dict[str, Counter[int]]
    stop_reason: StopReason | None

    def failures_of(self, is_chosen: Callable[[str], bool]) -> str:
        """The distinct failures of the chosen checks, one example each; empty when there are none."""
        chosen = sorted((key, examples) for key, examples in self.failures.items() if is_chosen(key[0]))
        lines = []
        for (check, label, status), examples in chosen:
            lines.append(f"- [{check}] {label} -> {status} ({len(examples)}x)")
            lines.append("    " + examples[0].replace("\n", "\n    "))
        return "\n".join(lines)


def _example(failure, interaction, case) -> str:
    text = f"{failure.title}: {' '.join(failure.message.split())}"[:300]
    if interaction is None:
        return text
    request, response = interaction.request, interaction.response
    target = urlsplit(request.uri)
    where = f"{request.method} {target.path}{'?' + target.query if target.query else ''}"[:300]
    if case.body is not NOT_SET:
        where += f"\nrequest body: {json.dumps(case.body, default=repr)[:400]}"
    if response is None:
        return f"{text}\n{where}\n-> no response"
    content_type = (response.headers.get("content-type") or [""])[0]
    body = (response.content or b"")[:400].decode("utf-8", "replace")
    return f"{text}\n{where}\n-> {response.status_code} {content_type} {body}"


def _run(schema: schemathesis.BaseSchema) -> RunReport:
    failures: dict[tuple[str, str, int | None], list[str]] = defaultdict(list)
    errors: list[str] = []
    statuses: dict[str, Counter[int]] = defaultdict(Counter)
    stop_reason = None
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            _collect(event.recorder, failures, statuses)
        elif isinstance(event, events.NonFatalError):
            errors.append(f"{event.label}: {event.info.title}: {event.value!r}")
        elif isinstance(event, events.FatalError):
            errors.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            stop_reason = event.stop_reason
    return RunReport(dict(failures), errors, dict(statuses), stop_reason)


def _collect(recorder, failures, statuses) -> None:
    for case_id, node in recorder.cases.items():
        interaction = recorder.interactions.get(case_id)
        if interaction is not None and interaction.response is not None:
            statuses[node.value.operation.label][interaction.response.status_code] += 1
    for case_id, checks in recorder.checks.items():
        interaction = recorder.interactions.get(case_id)
        status = interaction.response.status_code if interaction and interaction.response else None
        for check in checks:
            if check.status is Status.FAILURE and check.failure_info is not None:
                failure = check.failure_info.failure
                case = recorder.cases[case_id].value
                label = failure.operation or case.operation.label
                failures[(check.name, label, status)].append(_example(failure, interaction, case))


def _without_success(statuses: dict[str, Counter[int]], labels: Iterable[str]) -> list[str]:
    return sorted(label for label in labels if not any(200 <= s < 300 for s in statuses.get(label, {})))


@pytest.mark.timeout(600)  # a hang guard: ~40 operations, each fuzzed; slow when the machine is loaded
def test_every_operation_against_the_served_openapi_document(
    api, acme, sandbox, sandbox_server, sandbox_provider, subtests
):
    """One run, three verdicts (subtests), so a server error is not hidden behind a documentation gap."""
    seeded = _seed(acme, sandbox, sandbox_server, sandbox_provider)
    schema = schemathesis.openapi.from_url(
        f"{api.base_url}/openapi.json", config=_config(api.keys["acme"]), timeout=10
    )
    _install_hooks(schema, seeded)
    labels = [result.ok().label for result in schema.get_all_operations()]

    with _seeded_provider_kept(seeded):
        report = _run(schema)

    assert report.stop_reason is StopReason.COMPLETED, f"the run stopped early: {report.stop_reason}"
    assert not report.errors, "\n".join(report.errors)
    with subtests.test("no server error; bodies match the document; errors are problem documents"):
        found = report.failures_of(lambda check: check not in DOCUMENTATION_CHECKS)
        assert not found, f"distinct failures (check, operation, status), one example each:\n{found}"
    with subtests.test("every status code and media type is documented"):
        found = report.failures_of(lambda check: check in DOCUMENTATION_CHECKS)
        assert not found, f"distinct failures (check, operation, status), one example each:\n{found}"
    with subtests.test("the seeding works: every operation answered a 2xx at least once"):
        assert not _without_success(report.statuses, labels), dict(report.statuses)
