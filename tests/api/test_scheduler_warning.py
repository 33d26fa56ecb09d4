"""``serve`` with its embedded scheduler warns, as ``worker`` does, when its timeouts and poll would retry a
dead worker's request past Okta's default 30 s rotation grace window (``tests/e2e/test_cli.py`` checks the
worker)."""

from __future__ import annotations

import logging

import pytest


@pytest.mark.parametrize(
    ("overrides", "warned"),
    [
        ({}, False),  # the suite's API settings: 2 + 2 + 5 s, then a 0.2 s poll
        ({"read_timeout_seconds": 30.0}, True),
        ({"read_timeout_seconds": 30.0, "run_scheduler": False}, False),  # no scheduler, no retries to time
    ],
    ids=["short-timeouts", "long-read-timeout", "no-scheduler"],
)
def test_serve_warns_when_a_dead_workers_retry_would_miss_oktas_grace_window(
    api_factory, caplog: pytest.LogCaptureFixture, overrides: dict[str, object], warned: bool
) -> None:
    options = {"run_scheduler": True} | overrides
    with caplog.at_level(logging.WARNING, logger="grantkeeper"):
        api_factory(**options)
    warnings = [r for r in caplog.records if getattr(r, "action", None) == "retry_after_death_beyond_grace"]
    assert bool(warnings) is warned
    if warned:
        assert "GRANTKEEPER_READ_TIMEOUT_SECONDS" in warnings[0].getMessage()
        assert "up to 37 s" in warnings[0].getMessage()  # 2 + 30 + 5 s, then the 0.2 s poll
