"""Serve a ``Sandbox`` over loopback with uvicorn, in a background thread or in the foreground.

uvicorn's own main loop polls for exit every 0.1 s and its shutdown sleeps 0.1 s more; tests start and stop a
server per test, so this subclass waits on an event instead and drains connections in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Final, Literal

import uvicorn

from grantkeeper.sandbox.app import (
    AUTHORIZE_PATH,
    INTROSPECTION_PATH,
    REVOCATION_PATH,
    TOKEN_PATH,
    SandboxApp,
)
from grantkeeper.sandbox.state import Sandbox

#: uvicorn's HTTP parser: "auto" is httptools when installed (about 2.5x faster here), else h11.
HTTPImpl = Literal["auto", "h11", "httptools"]
_STARTUP_TIMEOUT: Final = 10.0
_GRACE_SECONDS: Final = 1.0


class _Server(uvicorn.Server):
    """uvicorn.Server that stops as soon as asked and ends pending ``hang`` answers on the way out."""

    def __init__(self, config: uvicorn.Config, app: SandboxApp, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._app = app
        self._on_ready = on_ready
        self._stop_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def request_stop(self) -> None:
        """Ask the server to shut down; safe from any thread and from signal handlers."""
        self.should_exit = True
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(event.set)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.request_stop()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM stop the server cleanly (uvicorn's version re-raises them afterwards)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def main_loop(self) -> None:
        self._stop_event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        await self.on_tick(counter)  # sets the Date header; on_tick refreshes it when counter % 10 == 0
        self._on_ready()
        while not self.should_exit:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), 1.0)
            counter += 10
            await self.on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        self._app.release_hangs()
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()  # idle keep-alive connections close now, busy ones after their response
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _GRACE_SECONDS
        # uvicorn has no event for "all connections closed": poll briefly.
        while (state.connections or state.tasks) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        for connection in list(state.connections):
            connection.transport.close()
        for task in list(state.tasks):
            task.cancel()
        for server in self.servers:
            await server.wait_closed()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP (not 0) so asyncio sets TCP_NODELAY on accepted sockets; else Nagle adds ~40 ms per answer.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def _config(app: SandboxApp, http: HTTPImpl, quiet_logging: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http=http,
        log_level="warning",
        log_config=None if quiet_logging else uvicorn.config.LOGGING_CONFIG,
        access_log=False,
        lifespan="off",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=int(_GRACE_SECONDS),
    )


class SandboxServer:
    """A running sandbox: where to reach it, and how to stop it (``serve_sandbox`` does both for you).

    The socket is bound in the constructor, so the port (and a bind error) is known before serving starts.
    """

    def __init__(
        self, sandbox: Sandbox, host: str = "127.0.0.1", port: int = 0, http: HTTPImpl = "auto"
    ) -> None:
        self.sandbox = sandbox
        self.http: HTTPImpl = http
        self.app = sandbox.asgi_app()
        self._sock = _bind(host, port)
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{shown}:{self.port}"
        self.token_url = self.base_url + TOKEN_PATH
        self.revocation_url = self.base_url + REVOCATION_PATH
        self.introspection_url = self.base_url + INTROSPECTION_PATH
        self.authorize_url = self.base_url + AUTHORIZE_PATH
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._server: _Server | None = None

    def start(self) -> None:
        """Serve from a daemon thread; returns once the server accepts requests."""
        self._server = _Server(_config(self.app, self.http, quiet_logging=True), self.app, self._ready.set)
        self._thread = threading.Thread(target=self._run, name=f"sandbox-{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(_STARTUP_TIMEOUT) or self._error is not None:
            self.stop()
            raise RuntimeError(f"sandbox server did not start on {self.base_url}") from self._error

    def stop(self) -> None:
        """Stop serving (pending ``hang`` answers end with their 504) and wait for the thread."""
        if self._server is not None:
            self._server.request_stop()
        if self._thread is not None:
            self._thread.join(_STARTUP_TIMEOUT)
        self._sock.close()

    def serve_forever(self, on_ready: Callable[[], None] = lambda: None) -> None:
        """Serve in this thread until SIGINT/SIGTERM (for ``python -m grantkeeper.sandbox``)."""
        self._server = _Server(_config(self.app, self.http, quiet_logging=False), self.app, on_ready)
        self._run()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        assert self._server is not None
        try:
            with asyncio.Runner(loop_factory=self._server.config.get_loop_factory()) as runner:
                runner.run(self._server.serve(sockets=[self._sock]))
        except BaseException as exc:  # reported to the thread that started the server
            self._error = exc
            self._ready.set()


@contextlib.contextmanager
def serve_sandbox(
    sandbox: Sandbox, host: str = "127.0.0.1", port: int = 0, http: HTTPImpl = "auto"
) -> Iterator[SandboxServer]:
    """Serve ``sandbox`` with uvicorn from a background thread during the ``with`` block (port 0: any)."""
    server = SandboxServer(sandbox, host, port, http)
    if sandbox.issuer is None:
        sandbox.set_issuer(server.base_url)  # an RFC 9207 server: its responses name it as ``iss``
    server.start()
    try:
        yield server
    finally:
        server.stop()
