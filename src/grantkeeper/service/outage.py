"""Noticing that the database came back, so rows left in flight are given to their owners first.

When the database is unreachable, every worker holding a refreshed token keeps it in memory and retries its
commit, while the leases of those rows run out. When the database answers again, another worker's claim could
take such a row and send a second refresh with the old refresh token before the owner's commit lands: at a
provider without a grace window that loses the rotated token. A worker that saw the outage itself therefore
leaves rows in flight alone for a short while after the database is back (``settle``), and the owners' commit
retries (well under a second apart) land first. A worker that saw no outage (the owner alone was cut off, or
died) takes them at once, as a crash needs (ADR 11).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

#: How long after the database answers again rows left in flight wait for their owners' commits.
DEFAULT_SETTLE = timedelta(seconds=10)


class OutageWatch:
    """Told ``failed`` by each store call that found the database unreachable, ``succeeded`` by claims."""

    def __init__(
        self, settle: timedelta = DEFAULT_SETTLE, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._settle = settle.total_seconds()
        self._monotonic = monotonic
        self._is_down = False
        self._back_at: float | None = None

    def failed(self) -> None:
        self._is_down = True

    def succeeded(self) -> None:
        if self._is_down:
            self._is_down = False
            self._back_at = self._monotonic()

    @property
    def is_settling(self) -> bool:
        """The database is away, or came back less than ``settle`` ago."""
        if self._is_down:
            return True
        return self._back_at is not None and self._monotonic() - self._back_at < self._settle
