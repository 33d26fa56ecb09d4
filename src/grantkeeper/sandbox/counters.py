"""The token endpoint's statistics (and the introspection and authorization-code counts), apart from grants.

Everything here runs with the ``Sandbox``'s lock held except ``finish``: the end of a request is recorded
without the lock (``deque.append`` is atomic) and folded in at the next locked call, so a token request still
takes the lock exactly once however long its answer takes to send.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable

from grantkeeper.sandbox.model import SandboxStats


class Counters:
    """What ``SandboxStats`` reports, plus the live in-flight counts its maxima come from."""

    __slots__ = (
        "_finished",
        "_in_flight",
        "_in_flight_by_client",
        "_wall_clock",
        "authorizations",
        "by_behaviour",
        "by_grant",
        "by_second",
        "code_exchanges",
        "code_failures",
        "codes_issued",
        "grace_uses",
        "introspections",
        "max_by_client",
        "max_in_flight",
        "ok",
        "requests",
        "reuse",
    )

    def __init__(self, wall_clock: Callable[[], float]) -> None:
        self._wall_clock = wall_clock
        # Client key (None: not an authenticated client) of each request answered since the last drain.
        self._finished: deque[str | None] = deque()
        self._in_flight = 0
        self._in_flight_by_client: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        """Zero what is reported; requests still in flight stay counted as in flight (they are)."""
        self.requests = 0
        self.ok = 0
        self.reuse = 0
        self.grace_uses = 0
        self.introspections = 0
        self.authorizations = 0
        self.codes_issued = 0
        self.code_exchanges = 0
        self.code_failures = 0
        self.by_behaviour: Counter[str] = Counter()
        self.by_grant: Counter[str] = Counter()
        self.by_second: Counter[int] = Counter()
        self.max_in_flight = 0
        self.max_by_client: dict[str, int] = {}

    def arrive(self) -> None:
        """Count a token request the sandbox has taken up; it stays in flight until ``finish``."""
        self.requests += 1
        self.by_second[int(self._wall_clock())] += 1
        finished = self._finished
        while finished:  # only the lock holder pops, so the deque cannot empty under us
            key = finished.popleft()
            self._in_flight -= 1
            if key is not None:
                self._in_flight_by_client[key] -= 1
        self._in_flight += 1
        if self._in_flight > self.max_in_flight:
            self.max_in_flight = self._in_flight

    def enter_client(self, client_id: str) -> None:
        """The request just counted by ``arrive`` came from this (authenticated) client."""
        count = self._in_flight_by_client.get(client_id, 0) + 1
        self._in_flight_by_client[client_id] = count
        if count > self.max_by_client.get(client_id, 0):
            self.max_by_client[client_id] = count

    def finish(self, client_key: str | None) -> None:
        """A request counted by ``arrive`` has been answered; safe without the lock, from any thread."""
        self._finished.append(client_key)

    def snapshot(self) -> SandboxStats:
        return SandboxStats(
            self.requests,
            self.ok,
            self.reuse,
            dict(self.by_behaviour),
            dict(self.by_grant),
            grace_uses=self.grace_uses,
            requests_by_second=dict(self.by_second),
            max_in_flight=self.max_in_flight,
            max_in_flight_by_client=dict(self.max_by_client),
            introspections=self.introspections,
            authorizations=self.authorizations,
            codes_issued=self.codes_issued,
            code_exchanges=self.code_exchanges,
            code_failures=self.code_failures,
        )
