"""The UTC column type's fast converters write exactly what SQLAlchemy's SQLite DATETIME wrote before, so
rows stored by older versions compare and sort with new ones, and read back as the same aware instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from grantkeeper.adapters.db.types import UTCDateTime

SQLITE = sqlite.dialect()
INSTANTS = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)


@given(INSTANTS, st.integers(-14 * 60, 14 * 60))
def test_sqlite_text_is_sqlalchemys_own_format_and_reads_back(instant: datetime, offset_minutes: int):
    shown = instant.astimezone(timezone(timedelta(minutes=offset_minutes)))
    written = UTCDateTime().bind_processor(SQLITE)(shown)
    assert written == sqlite.DATETIME().bind_processor(SQLITE)(instant.replace(tzinfo=None))
    assert UTCDateTime().result_processor(SQLITE, None)(written) == instant


@given(INSTANTS, INSTANTS)
def test_sqlite_text_order_is_time_order(a: datetime, b: datetime):
    write = UTCDateTime().bind_processor(SQLITE)
    assert (write(a) < write(b)) == (a < b)


def test_rows_written_without_microseconds_still_read():
    read = UTCDateTime().result_processor(SQLITE, None)
    assert read("2026-01-02 03:04:05") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_naive_and_non_datetime_values_are_refused_on_every_dialect():
    for dialect in (SQLITE, postgresql.dialect()):
        write = UTCDateTime().bind_processor(dialect)
        with pytest.raises(ValueError, match="naive"):
            write(datetime(2026, 1, 1))
        with pytest.raises(TypeError):
            write("2026-01-01")
        assert write(None) is None


def test_postgresql_gets_and_gives_aware_utc():
    dialect = postgresql.dialect()
    later = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert UTCDateTime().bind_processor(dialect)(later) == datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert UTCDateTime().result_processor(dialect, None)(later).tzinfo is UTC
