"""The API while PostgreSQL is unreachable: a 503 the client can retry, never a 500 or a 422, and it serves
again by itself once the database is back. The database sits behind a loopback TCP proxy the test cuts."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.engine import make_url

from grantkeeper.bootstrap import build_runtime
from grantkeeper.entrypoints.api.app import create_app
from grantkeeper.service.tenants import issue_api_key
from tests.api.conftest import api_settings, free_port, serve_in_thread
from tests.fixtures.tcp_proxy import TcpProxy, tcp_proxy


@pytest.fixture
def proxied(postgres_server) -> Iterator[tuple[TcpProxy, str]]:
    name = postgres_server.create(template=postgres_server.template)
    url = make_url(postgres_server.url_for(name))
    with tcp_proxy((url.host or "127.0.0.1", url.port or 5432)) as proxy:
        yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    postgres_server.drop(name)


def test_an_unreachable_database_is_a_503_with_retry_after_and_the_api_recovers(proxied, key_line, problem):
    proxy, url = proxied
    runtime = build_runtime(api_settings(url, key_line))
    _, key = issue_api_key(runtime.store, "acme", replace=True)
    port = free_port()
    server, thread = serve_in_thread(create_app(runtime, run_scheduler=False), port)
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
            assert client.get("/v1/connections").status_code == 200
            proxy.cut()
            for path in ("/v1/connections", "/v1/providers"):
                response = client.get(path)
                body = problem(response, 503, "database-unavailable")
                assert response.headers["Retry-After"] == "5"
                assert body["retry_after"] == 5
                assert key not in response.text
                assert "postgres" not in response.text.lower()  # no driver message, no URL
            # a person opening a link meanwhile gets the connect page, not a problem document
            page = client.get("/connect/session/abc", headers={"Authorization": ""})
            assert page.status_code == 503
            assert page.headers["content-type"].startswith("text/html")
            assert 'data-kind="database-unavailable"' in page.text
            assert page.headers["Retry-After"] == "5"
            assert "postgres" not in page.text.lower()
            proxy.restore()
            assert client.get("/v1/connections").status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        runtime.close()
