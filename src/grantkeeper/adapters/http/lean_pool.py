"""Keep-alive connections per (scheme, host, port), within a total and a per-host limit.

The limits count connections in use or being opened, as aiohttp's did: an idle connection holds no slot, and
a host never has more connections than it once had requests in flight at the same time. A request that finds
no free slot waits in line (first come, first served per host); the slot is handed to it directly when one is
released, so a newcomer cannot overtake. The wait is bounded by the caller's connect timeout.

Idle connections are reused newest first, so a quiet period lets the older ones reach ``idle_ttl`` and close.
One that the server closed meanwhile is known from ``connection_lost`` and skipped. Nothing is ever retried
here: a refresh_token grant is not idempotent (RFC 9700 section 4.14.2).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from grantkeeper.adapters.http.lean_errors import ConnectionClosedError
from grantkeeper.adapters.http.lean_protocol import HttpConnection

#: Close a connection idle for this long: a server is likely to drop it soon anyway (aiohttp's default too).
IDLE_TTL_SECONDS = 15.0


class HostPool:
    """The connections to one (scheme, host, port): idle ones, slots held, requests waiting for a slot."""

    __slots__ = ("busy", "idle", "waiters")

    def __init__(self) -> None:
        self.idle: list[HttpConnection] = []
        self.busy = 0
        self.waiters: deque[asyncio.Future[None]] = deque()


class ConnectionPool:
    """Every connection of one client, bound to its event loop; ``close`` ends them all."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_connections: int,
        max_connections_per_host: int,
        idle_ttl: float = IDLE_TTL_SECONDS,
    ) -> None:
        self._loop = loop
        self._max = max_connections
        self._max_per_host = max_connections_per_host
        self._idle_ttl = idle_ttl
        self._hosts: dict[tuple[str, str, int], HostPool] = {}
        self._busy = 0
        self._waiting = 0
        self._connections: set[HttpConnection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self.is_closed = False

    def host(self, key: tuple[str, str, int]) -> HostPool:
        """The pool for (scheme, host, port); callers keep it, so a request needs no lookup."""
        pool = self._hosts.get(key)
        if pool is None:
            pool = self._hosts[key] = HostPool()
        return pool

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def take_idle(self, host: HostPool) -> HttpConnection | None:
        """A slot and a fresh idle connection at once, or None: then ``acquire`` waits or opens one."""
        if not host.idle or self._busy >= self._max or host.busy >= self._max_per_host:
            return None
        connection = self._pop_idle(host)
        if connection is not None:
            host.busy += 1
            self._busy += 1
        return connection

    async def acquire(
        self, host: HostPool, open_connection: Callable[[], Awaitable[HttpConnection]]
    ) -> HttpConnection:
        """A slot (waiting in line for one if need be), then an idle connection or a new one."""
        if self.is_closed:
            raise ConnectionClosedError("the HTTP client was closed")
        if self._busy < self._max and host.busy < self._max_per_host:
            host.busy += 1
            self._busy += 1
        else:
            await self._wait_for_slot(host)
        try:
            connection = self._pop_idle(host)
            if connection is None:
                connection = await open_connection()
                self._connections.add(connection)
                if self.is_closed:  # closed while this one was being opened
                    connection.close()
                    raise ConnectionClosedError("the HTTP client was closed")
        except BaseException:
            self._release_slot(host)
            raise
        return connection

    def release(self, host: HostPool, connection: HttpConnection) -> None:
        """Give the slot back; keep the connection for the next request if it can carry one."""
        if connection.is_reusable and connection.is_usable and not self.is_closed:
            host.idle.append(connection)
            if self._sweeper is None:
                self._sweeper = self._loop.call_later(self._idle_ttl, self._sweep)
        else:
            connection.close()
        self._release_slot(host)

    def forget(self, connection: HttpConnection) -> None:
        """``connection_lost`` was called: it no longer counts as open (an idle entry is skipped later)."""
        self._connections.discard(connection)

    def close(self) -> None:
        """Close every connection (an exchange in flight fails) and turn away everyone waiting."""
        self.is_closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for host in self._hosts.values():
            host.idle.clear()
            while host.waiters:
                waiter = host.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(ConnectionClosedError("the HTTP client was closed"))
        self._waiting = 0
        for connection in list(self._connections):
            connection.close()

    def _pop_idle(self, host: HostPool) -> HttpConnection | None:
        oldest_allowed = self._loop.time() - self._idle_ttl
        while host.idle:
            connection = host.idle.pop()
            if connection.is_usable and connection.idle_since > oldest_allowed:
                return connection
            connection.close()  # closed by the server, or idle past the TTL
        return None

    async def _wait_for_slot(self, host: HostPool) -> None:
        waiter: asyncio.Future[None] = self._loop.create_future()
        host.waiters.append(waiter)
        self._waiting += 1
        try:
            await waiter
        except BaseException:
            if waiter.cancelled() or not waiter.done():  # timed out or cancelled while in line
                if waiter in host.waiters:
                    host.waiters.remove(waiter)
                    self._waiting -= 1
            elif waiter.exception() is None:  # granted a slot, then cancelled before using it
                self._release_slot(host)
            raise

    def _release_slot(self, host: HostPool) -> None:
        host.busy -= 1
        self._busy -= 1
        if self._waiting:
            self._grant_slots()

    def _grant_slots(self) -> None:
        """Hand free slots to waiting requests, first come first served within each host."""
        for host in self._hosts.values():
            while host.waiters and host.busy < self._max_per_host and self._busy < self._max:
                waiter = host.waiters.popleft()
                self._waiting -= 1
                if waiter.done():  # cancelled and not yet out of line
                    continue
                host.busy += 1
                self._busy += 1
                waiter.set_result(None)
            if self._busy >= self._max:
                return

    def _sweep(self) -> None:
        """Close connections idle past the TTL; look again later while any remain idle."""
        self._sweeper = None
        oldest_allowed = self._loop.time() - self._idle_ttl
        remaining = 0
        for host in self._hosts.values():
            keep = []
            for connection in host.idle:
                if connection.is_usable and connection.idle_since > oldest_allowed:
                    keep.append(connection)
                else:
                    connection.close()
            host.idle[:] = keep
            remaining += len(keep)
        if remaining:
            self._sweeper = self._loop.call_later(self._idle_ttl / 2, self._sweep)
