"""``/metrics`` in Prometheus text format, with the series operators need, fed by real refreshes."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from grantkeeper.sandbox import Behaviour
from tests.api.conftest import CRON_SECRET
from tests.api.test_cron import connect


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_attempts_latency_statuses_notifications_and_cycles(
    api, acme, sandbox, sandbox_provider
):
    connect(acme, sandbox, "ok")
    connect(acme, sandbox, "gone", Behaviour.CONSENT_REQUIRED)
    connect(acme, sandbox, "busy", Behaviour.RATE_LIMIT)
    with api.client(None) as client:
        assert client.post(
            "/api/cron/token-refresh", headers={"Authorization": f"Bearer {CRON_SECRET}"}
        ).is_success
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = samples(response.text)

    def value(name: str, **labels: str) -> float:
        return values[(name, tuple(sorted(labels.items())))]

    assert value("grantkeeper_refresh_attempts_total", provider="sandbox", outcome="success") == 1
    assert value("grantkeeper_refresh_attempts_total", provider="sandbox", outcome="reauth_required") == 1
    assert value("grantkeeper_refresh_attempts_total", provider="sandbox", outcome="transient") == 1
    assert value("grantkeeper_refresh_duration_seconds_count", provider="sandbox") == 3
    assert value("grantkeeper_connections", status="connected") == 2
    assert value("grantkeeper_connections", status="needs_reauthorization") == 1
    assert value("grantkeeper_notifications_total", type="integration_disconnected", channel="in_app") == 1
    assert value("grantkeeper_cycle_duration_seconds_count") == 1
    assert value("grantkeeper_lease_conflicts_total") == 0
    assert "sbx-" not in response.text
