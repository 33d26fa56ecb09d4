"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes in and out, whatever the database does with zones.

    PostgreSQL stores ``timestamptz`` and hands back the session's zone; SQLite has no zones and stores text,
    so values go in as naive UTC in one fixed-width format, which keeps text order equal to time order for the
    due index. Naive input is refused: a naive ``now`` is the classic bug that shifts every schedule by an
    offset.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        utc = _as_utc(value)
        return utc.replace(tzinfo=None) if utc is not None and dialect.name == "sqlite" else utc

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """One closure per dialect instead of this class's hook followed by the dialect's own converter.

        The refresh path binds about ten instants per connection; SQLAlchemy's generic chain (our hook, then
        SQLite's DATETIME formatter) cost more CPU than SQLite spent storing them. The text written to SQLite
        is exactly SQLAlchemy's own format (``YYYY-MM-DD HH:MM:SS.ffffff``), so old and new rows compare.
        """
        is_sqlite = dialect.name == "sqlite"

        def process(value: Any) -> Any:
            utc = _as_utc(value)
            if utc is None or not is_sqlite:
                return utc
            return utc.replace(tzinfo=None).isoformat(" ", "microseconds")

        return process

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        """SQLite hands back text, parsed by ``datetime.fromisoformat`` (C); PostgreSQL an aware datetime."""
        if dialect.name == "sqlite":

            def from_text(value: Any) -> datetime | None:
                if value is None:
                    return None
                if isinstance(value, datetime):  # a driver configured to parse
                    return self.process_result_value(value, dialect)
                return datetime.fromisoformat(value).replace(tzinfo=UTC)

            return from_text

        def from_timestamp(value: Any) -> datetime | None:
            return self.process_result_value(value, dialect)

        return from_timestamp

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"UTCDateTime read a {type(value).__name__}, not a datetime")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _as_utc(value: Any) -> datetime | None:
    """The instant in UTC; a naive datetime (the classic bug that shifts every schedule) is refused."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"UTCDateTime expects a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("UTCDateTime refuses a naive datetime; pass an aware one (e.g. datetime.now(UTC))")
    return value.astimezone(UTC)
