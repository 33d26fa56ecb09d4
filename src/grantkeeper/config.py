"""Settings from the environment (and a ``.env`` file), read only at the edge by ``bootstrap``.

Secrets are ``SecretStr`` so they never print; policy knobs carry DESIGN section 2's defaults.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from grantkeeper.core.policy import Policy

DEFAULT_DATABASE_URL = "sqlite:///grantkeeper.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GRANTKEEPER_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: str = DEFAULT_DATABASE_URL
    encryption_keys: SecretStr | None = None
    cron_secret: SecretStr | None = None
    public_url: str = "http://127.0.0.1:8000"
    # Where a finished connect flow may send the browser (comma-separated URL prefixes); empty: nowhere,
    # the flow ends on its own page. See ``core.return_urls``.
    return_url_allowlist: str = ""

    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["none", "starttls", "tls"] = "starttls"
    email_from: str | None = None

    # Delivery of notifications (issue 4): the outbox dispatcher's schedule and limits.
    digest_hour: int = Field(default=9, ge=0, le=23)  # UTC hour the daily warning digest goes out
    delivery_max_attempts: int = Field(default=8, ge=1, le=100)
    delivery_base_delay_seconds: float = Field(default=30.0, gt=0, le=3600)
    delivery_max_delay_seconds: float = Field(default=3600.0, gt=0, le=7 * 86400)
    delivery_lease_seconds: float = Field(default=300.0, ge=1, le=3600)
    # a send is cut off after this long; the lease must be at least twice as long
    delivery_send_timeout_seconds: float = Field(default=60.0, gt=0, le=1800)
    delivery_concurrency: int = Field(default=10, ge=1, le=256)
    # failures in a row after which a Slack, Discord or webhook destination is disabled
    destination_failure_limit: int = Field(default=10, ge=1, le=10_000)

    # Refresh attempts older than this many days are deleted every hour by the worker (and the API's
    # scheduler); 0 keeps them forever.
    attempt_retention_days: int = Field(default=30, ge=0, le=3650)
    # In-app notifications older than this many days are deleted every hour too (with their finished
    # deliveries); 0 keeps them forever. After an outage every affected connection gets two.
    notification_retention_days: int = Field(default=0, ge=0, le=3650)

    warning_threshold: int = Field(default=2, ge=1)
    disconnect_threshold: int = Field(default=3, ge=1)
    rate_limit_notice_threshold: int = Field(default=5, ge=1)
    refresh_lead_seconds: int = Field(default=600, ge=1)
    cycle_interval_seconds: int = Field(default=300, ge=1)
    max_idle_days: int = Field(default=7, ge=1)
    stale_after_hours: int = Field(default=24, ge=1)
    max_backoff_seconds: int = Field(default=6 * 3600, ge=1)
    transient_backoff_base_seconds: float = Field(default=15.0, gt=0, le=3600)
    # refresh times move earlier by a random part of this, so connections do not stay bunched together
    refresh_spread_seconds: float = Field(default=300.0, ge=0, le=86400)

    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # 10 s: with connect 5 s and the poll 5 s, one worker death mid-request is retried within 25 s, inside
    # Okta's 30 s rotation grace window (``bootstrap.longest_retry_after_death``)
    read_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    concurrency: int = Field(default=32, ge=1, le=1024)
    poll_interval_seconds: float = Field(default=5.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @property
    def attempt_retention(self) -> timedelta | None:
        """How long refresh attempts and finished deliveries are kept; None: forever."""
        return timedelta(days=self.attempt_retention_days) if self.attempt_retention_days else None

    @property
    def notification_retention(self) -> timedelta | None:
        """How long in-app notifications are kept; None: forever."""
        return timedelta(days=self.notification_retention_days) if self.notification_retention_days else None

    def policy(self) -> Policy:
        return Policy(
            warning_threshold=self.warning_threshold,
            disconnect_threshold=self.disconnect_threshold,
            rate_limit_notice_threshold=self.rate_limit_notice_threshold,
            refresh_lead=timedelta(seconds=self.refresh_lead_seconds),
            cycle_interval=timedelta(seconds=self.cycle_interval_seconds),
            schedule_tolerance=min(
                timedelta(seconds=30), timedelta(seconds=self.cycle_interval_seconds) / 10
            ),
            max_idle_interval=timedelta(days=self.max_idle_days),
            stale_after=timedelta(hours=self.stale_after_hours),
            max_backoff=timedelta(seconds=self.max_backoff_seconds),
            transient_backoff_base=timedelta(seconds=self.transient_backoff_base_seconds),
            refresh_spread=timedelta(seconds=self.refresh_spread_seconds),
        )
