"""Serving the HTTP app from a background thread of a command that has its own event loop (the demo).

The socket is bound first, so the port, and with it the public URL that links and the provider's redirect
URI name, is known before anything is built; uvicorn then serves on that socket in a daemon thread with its
own loop. Signal handlers stay with the command: uvicorn installs none off the main thread.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp

_START_TIMEOUT_SECONDS = 15.0


@dataclass
class ApiThread:
    sock: socket.socket

    @classmethod
    def bind(cls, port: int, host: str = "127.0.0.1") -> ApiThread:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        return cls(sock)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @contextmanager
    def serving(self, app: ASGIApp) -> Iterator[None]:
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [self.sock]}, name="grantkeeper-pages", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the web pages did not start")
            time.sleep(0.01)
        try:
            yield
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            self.sock.close()
