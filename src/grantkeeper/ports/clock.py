"""``Clock``: where the service layer gets the current time. It is a port so that nothing in the service
layer reads the system clock itself: production passes ``adapters.clock.SystemClock``, tests pass
``testing.FrozenClock`` and run hours in milliseconds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...
