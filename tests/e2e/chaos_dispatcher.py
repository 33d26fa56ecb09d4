"""A fork server for killing the outbox dispatcher a few hundred times a run (issue 4's delivery fault test).

Starting Python and importing grantkeeper takes about a second, far too long to do hundreds of times. So the
server (run as a script, ``python -P chaos_dispatcher.py JOURNAL``) imports grantkeeper once and then, on
request, ``os.fork()``s a child that builds the runtime from the environment (``build_runtime(Settings())``,
``Runtime.dispatcher()``: the production wiring) and runs ``deliver_due()`` every ``CHAOS_INTERVAL_SECONDS``
until it is killed. The server holds no thread, event loop or database connection when it forks; the children
make their own after the fork.

The server also times the kills. The test process is busy (receivers, database) and could be late by seconds
under load, and a dispatcher that lives on past its lease is no longer a crash test. The server is idle
between requests, waiting in ``select`` for the next deadline. Protocol: one request line on its stdin, one
reply line on its stdout.

    spawn DELAY FROM -> spawned INDEX PID
        FROM ``ready``: SIGKILL the child DELAY s after its dispatcher is built (or STARTUP_TIMEOUT s after
        the fork if it never is); ``fork``: DELAY s after the fork, so maybe while it is starting; ``never``.
    next             -> ended INDEX PID SIGNALLED_AT DEAD_AT STATUS
        waits until a child is killed on schedule, or exits by itself
    kill INDEX       -> ended ...   (SIGKILL now)
    stop INDEX SECS  -> ended ...   (SIGTERM: finish the current run, or a first one, and exit 0; SIGKILL
                                     after SECS)
    quit             -> (kills every child left, then exits)

STATUS is ``signal:9`` for a child that died of our SIGKILL, ``exit:N`` for one that exited (on its own
before its kill it crashed: its traceback is in the server's stderr). Only the server reaps, and only after it
signalled a child or saw it exit, so a pid cannot be reused while a signal may still go to it. Times are
``time.time()``.

The journal. Each child appends one line per event to a shared file with one unbuffered ``os.write`` on an
``O_APPEND`` descriptor, so a line is in the file the moment the event happens and survives a SIGKILL right
after. A SIGKILL *during* that write can tear it: Linux checks for a fatal signal between the pages a write
spans, so a line that straddles a page boundary may stop part-way. Each record is therefore written as a
newline, the line, a `` .`` end mark and a newline: a torn one is left on a line of its own without the end
mark, and ``read_journal`` drops it (the child died while noting the event, so for ``S`` the send never
began) and counts it, and the test allows at most one torn line per kill.

The hooks wrap the senders' ``send`` and the store's ``claim_outbox`` and ``record_delivery`` and call
through unchanged; they only note what happened, so the test can tell which child sent each copy a receiver
got and whether that child was dead before the row was sent again. Lines are ``KIND INDEX TIME [FIELDS]``:

    B i t                 child i started (before building the runtime)
    Y i t                 child i's dispatcher is built
    C i t ID,ID,...       child i leased these outbox rows
    S i t ID CHANNEL      child i starts sending row ID
    E i t ID OK           ... the sender returned (OK 1: delivered, 0: failed)
    D i t ID RECORDED OK  ... record_delivery returned (RECORDED 0: fenced out, the lease was lost)
    X i t                 child i stopped cleanly (after SIGTERM)
    K i t DEAD_AT STATUS  the server signalled child i at t; it was reaped at DEAD_AT (written by the server)

Children die with the server (``PR_SET_PDEATHSIG``, and a parent check between runs), and the server kills
its children and exits when its stdin closes, so nothing outlives the test even if pytest itself is killed.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Pause between two ``deliver_due`` runs of a child.
CHAOS_INTERVAL_SECONDS = 0.02
#: A child to be killed after it is ready is killed this long after its fork if it never gets ready.
STARTUP_TIMEOUT = 30.0
_PR_SET_PDEATHSIG = 1

# -- the client side (imported by the test; imports nothing of grantkeeper) ----------------------------------


class ForkServerError(RuntimeError):
    """The server did not answer as the protocol says; the message ends with the tail of its stderr."""


@dataclass(frozen=True)
class Ended:
    """How one child ended: ``signalled_at`` just before the signal, ``dead_at`` once it was reaped."""

    index: int
    pid: int
    signalled_at: float
    dead_at: float
    status: str

    @property
    def was_killed(self) -> bool:
        return self.status == f"signal:{int(signal.SIGKILL)}"


@dataclass(frozen=True)
class JournalEvent:
    kind: str
    index: int
    at: float
    fields: tuple[str, ...]


class ForkServer:
    """Starts the server process; ``spawn`` children and take their ends with ``next_ended``, or ``kill``
    or ``stop`` one; ``close`` ends everything."""

    def __init__(self, *, env: Mapping[str, str], cwd: Path, journal: Path, log: Path) -> None:
        self.journal = journal
        self.log = log
        self._log_file = log.open("wb")
        self._process = subprocess.Popen(
            [sys.executable, "-P", __file__, str(journal)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            cwd=cwd,
            env=dict(env),
            bufsize=0,
        )
        self._buffer = b""
        try:
            self._expect("ready", timeout=60)
        except BaseException:
            self.close()
            raise

    def spawn(self, delay: float | None, *, after: str = "ready") -> int:
        """Fork a dispatcher child to be killed ``delay`` s after it is ready (``after="fork"``: after its
        fork), or never (``delay`` None). Returns its index: 0, 1, 2, ... in spawn order."""
        if delay is None:
            delay, after = 0.0, "never"
        return int(self._call(f"spawn {delay:.6f} {after}", "spawned")[1])

    def next_ended(self, timeout: float = STARTUP_TIMEOUT + 30) -> Ended:
        """The next child killed on schedule (or that exited by itself)."""
        return self._ended(self._call("next", "ended", timeout=timeout))

    def kill(self, index: int) -> Ended:
        """SIGKILL the child now."""
        return self._ended(self._call(f"kill {index}", "ended"))

    def stop(self, index: int, timeout: float = 15.0) -> Ended:
        """SIGTERM the child, wait up to ``timeout`` seconds for it to exit (then SIGKILL)."""
        return self._ended(self._call(f"stop {index} {timeout}", "ended", timeout=timeout + 15))

    def close(self) -> None:
        """Ask the server to kill its children and exit; kill it if it does not (its children follow it)."""
        process = self._process
        if process.poll() is None:
            with contextlib.suppress(OSError):
                assert process.stdin is not None
                process.stdin.write(b"quit\n")
                process.stdin.close()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._log_file.close()

    def log_tail(self, size: int = 4000) -> str:
        try:
            return self.log.read_bytes()[-size:].decode("utf-8", "replace")
        except OSError:
            return ""

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _ended(words: list[str]) -> Ended:
        _, index, pid, signalled_at, dead_at, status = words
        return Ended(int(index), int(pid), float(signalled_at), float(dead_at), status)

    def _call(self, request: str, reply: str, timeout: float = 30.0) -> list[str]:
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(request.encode("ascii") + b"\n")
        except OSError as exc:
            raise ForkServerError(f"the fork server is gone ({exc}):\n{self.log_tail()}") from None
        return self._expect(reply, timeout)

    def _expect(self, reply: str, timeout: float) -> list[str]:
        words = self._read_line(timeout).split()
        if not words or words[0] != reply:
            raise ForkServerError(f"expected {reply!r}, got {words!r}:\n{self.log_tail()}")
        return words

    def _read_line(self, timeout: float) -> str:
        stdout = self._process.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if not select.select([stdout], [], [], max(remaining, 0))[0]:
                raise ForkServerError(f"no answer within {timeout} s:\n{self.log_tail()}")
            chunk = os.read(stdout.fileno(), 4096)
            if not chunk:
                raise ForkServerError(f"the fork server exited:\n{self.log_tail()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("ascii")


@dataclass(frozen=True)
class Journal:
    events: list[JournalEvent]
    torn: list[str]  # records a SIGKILL cut short while they were written (see the module docstring)


def read_journal(path: Path) -> Journal:
    """Every whole record of the journal, in file order, and the torn ones apart."""
    events = []
    torn = []
    for line in path.read_text("ascii").splitlines():
        words = line.split()
        if not words:
            continue
        if words[-1] != ".":
            torn.append(line)
            continue
        kind, index, at, *fields = words[:-1]
        events.append(JournalEvent(kind, int(index), float(at), tuple(fields)))
    return Journal(events, torn)


# -- the server side (runs in its own process; grantkeeper is imported there, lazily) ------------------------

_journal_fd = -1
_index = -1
_stop_requested = False  # a SIGTERM came before the child's event loop took the signal over


def _request_stop(signum: int, frame: object) -> None:
    global _stop_requested
    _stop_requested = True


def _note(kind: str, *fields: object, index: int | None = None, at: float | None = None) -> None:
    stamp = time.time() if at is None else at
    words = [kind, str(_index if index is None else index), f"{stamp:.6f}", *map(str, fields)]
    os.write(_journal_fd, ("\n" + " ".join(words) + " .\n").encode("ascii"))


def _install_journal_hooks() -> None:
    """Wrap the senders and two store methods so each child notes what it does; behaviour is unchanged."""
    from grantkeeper.adapters.db.store import SqlStore
    from grantkeeper.adapters.notify import SlackSender, SmtpEmailSender, StandardWebhookSender

    def hook_send(cls: Any) -> None:
        original = cls.send

        async def send(self: Any, item: Any) -> Any:
            _note("S", item.outbox_id, item.channel)
            result = await original(self, item)
            _note("E", item.outbox_id, int(result.is_delivered))
            return result

        cls.send = send

    for cls in (SmtpEmailSender, SlackSender, StandardWebhookSender):
        hook_send(cls)

    claim_outbox = SqlStore.claim_outbox
    record_delivery = SqlStore.record_delivery

    def claim(self: Any, *args: Any, **kwargs: Any) -> Any:
        items = claim_outbox(self, *args, **kwargs)
        if items:
            _note("C", ",".join(item.outbox_id for item in items))
        return items

    def record(self: Any, item: Any, result: Any, *args: Any, **kwargs: Any) -> Any:
        is_recorded = record_delivery(self, item, result, *args, **kwargs)
        _note("D", item.outbox_id, int(is_recorded), int(result.is_delivered))
        return is_recorded

    SqlStore.claim_outbox = claim  # type: ignore[method-assign]
    SqlStore.record_delivery = record  # type: ignore[method-assign]


def _warm_up() -> None:
    """Import and load what every child needs, so a child does not spend its short life importing."""
    import importlib

    from grantkeeper.adapters.notify.email_message import _environment

    for module in (
        "aiohttp",
        "aiosmtplib",
        "sqlalchemy.dialects.postgresql.psycopg",
        "sqlalchemy.dialects.sqlite.pysqlite",
        "grantkeeper.bootstrap",
    ):
        importlib.import_module(module)

    environment = _environment()
    for name in environment.list_templates():
        environment.get_template(name)


def _child(index: int, parent: int, ready_fd: int, inherited: list[int]) -> None:
    """The forked dispatcher: never returns."""
    global _index
    _index = index
    code = 1
    try:
        _prepare_child(parent, inherited)
        _note("B")
        import asyncio

        from grantkeeper.bootstrap import build_runtime
        from grantkeeper.config import Settings

        runtime = build_runtime(Settings())
        dispatcher = runtime.dispatcher()
        if dispatcher is None:
            raise RuntimeError("no delivery channel is configured")
        _note("Y")
        with contextlib.suppress(OSError):  # the server stops listening once it has signalled us
            os.write(ready_fd, b"y")
        os.close(ready_fd)
        asyncio.run(_deliver_until_stopped(dispatcher, parent))
        runtime.close()
        _note("X")
        code = 0
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code)


def _prepare_child(parent: int, inherited: list[int]) -> None:
    import ctypes
    import logging
    import random

    with contextlib.suppress(Exception):  # Linux: die with the server
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        raise SystemExit("the fork server is gone")
    signal.signal(signal.SIGTERM, _request_stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # blocked by the server for the fork
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops us; Ctrl-C reaches it through stdin EOF
    for fd in inherited:  # the other children's ready pipes
        os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the server's request pipe: not ours to read
    os.close(devnull)
    os.dup2(2, 1)  # the reply pipe: nothing of ours may end up there
    sys.stdout = sys.stderr
    random.seed()  # a fork copies the generator: reseed, or every child draws the same jitter
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,
        format=f"child {_index} %(levelname)s %(name)s: %(message)s",
    )


async def _deliver_until_stopped(dispatcher: Any, parent: int) -> None:
    import asyncio

    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    if _stop_requested:
        stopping.set()
    try:
        while True:  # at least one run, even when stopped while starting
            await dispatcher.deliver_due()
            if stopping.is_set() or os.getppid() != parent:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), CHAOS_INTERVAL_SECONDS)
    finally:
        await dispatcher.close()


@dataclass
class _Child:
    pid: int
    ready_fd: int | None  # the read end of the pipe the child writes one byte to once it is ready
    delay: float
    after: str  # ready, fork or never
    deadline: float | None  # time.monotonic() when to SIGKILL it


class _Server:
    def __init__(self) -> None:
        import threading

        self._threading = threading
        self.children: dict[int, _Child] = {}
        self.ended: deque[str] = deque()  # replies for ``next``: children killed on schedule or exited
        self.spawned = 0
        self.waiting = False  # a ``next`` is waiting for an end
        self._input = b""

    def run(self) -> None:
        _reply("ready")
        try:
            while True:
                self._answer_next()
                ready_fds = {c.ready_fd: i for i, c in self.children.items() if c.ready_fd is not None}
                deadlines = [c.deadline for c in self.children.values() if c.deadline is not None]
                timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
                readable = select.select([0, *ready_fds], [], [], timeout)[0]
                for fd in readable:
                    if fd != 0:
                        self._on_ready(ready_fds[fd])
                now = time.monotonic()
                for index, child in list(self.children.items()):
                    if child.deadline is not None and child.deadline <= now:
                        self.ended.append(self._end(index, signal.SIGKILL, 0))
                if 0 in readable and not self._read_requests():
                    return
        finally:
            for child in self.children.values():
                with contextlib.suppress(OSError):
                    os.kill(child.pid, signal.SIGKILL)
                    os.waitpid(child.pid, 0)

    def _answer_next(self) -> None:
        if self.waiting and self.ended:
            self.waiting = False
            _reply(self.ended.popleft())

    def _read_requests(self) -> bool:
        """Handle every complete request line; False on end of input or ``quit``."""
        chunk = os.read(0, 4096)
        if not chunk:
            return False
        self._input += chunk
        while b"\n" in self._input:
            line, _, self._input = self._input.partition(b"\n")
            words = line.decode("ascii").split()
            if not words or words[0] == "quit":
                return False
            self._handle(words)
        return True

    def _handle(self, words: list[str]) -> None:
        request = words[0]
        if request == "spawn":
            self._spawn(float(words[1]), words[2])
        elif request == "next":
            self.waiting = True
        elif request in ("kill", "stop") and int(words[1]) not in self.children:
            # it ended already (it exited by itself, or its scheduled kill came first): say how
            [line] = [line for line in self.ended if line.split()[1] == words[1]]
            self.ended.remove(line)
            _reply(line)
        elif request == "kill":
            _reply(self._end(int(words[1]), signal.SIGKILL, 0))
        elif request == "stop":
            _reply(self._end(int(words[1]), signal.SIGTERM, float(words[2])))
        else:
            raise RuntimeError(f"unknown request {words!r}")

    def _spawn(self, delay: float, after: str) -> None:
        if self._threading.active_count() != 1:
            raise RuntimeError("the fork server must not fork while it has threads")
        index, self.spawned = self.spawned, self.spawned + 1
        read_fd, write_fd = os.pipe()
        inherited = [c.ready_fd for c in self.children.values() if c.ready_fd is not None]
        # a SIGTERM right after the fork waits until the child has its handler (_prepare_child)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _child(index, os.getppid(), write_fd, inherited)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        os.close(write_fd)
        now = time.monotonic()
        deadline = {"fork": now + delay, "ready": now + STARTUP_TIMEOUT, "never": None}[after]
        self.children[index] = _Child(pid, read_fd, delay, after, deadline)
        _reply(f"spawned {index} {pid}")

    def _on_ready(self, index: int) -> None:
        child = self.children[index]
        assert child.ready_fd is not None
        is_ready = os.read(child.ready_fd, 1) == b"y"
        os.close(child.ready_fd)
        child.ready_fd = None
        if is_ready and child.after == "ready":
            child.deadline = time.monotonic() + child.delay
        elif not is_ready and child.after != "fork":
            # it died before it was ready (it crashed: it is not ours to kill yet): report it now
            self.ended.append(self._end(index, signal.SIGKILL, 0))

    def _end(self, index: int, sig: signal.Signals, timeout: float) -> str:
        child = self.children.pop(index)
        signalled_at = time.time()
        os.kill(child.pid, sig)
        status = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reaped, status = os.waitpid(child.pid, os.WNOHANG)
            if reaped:
                break
            status = None
            time.sleep(0.01)
        if status is None:
            if sig is not signal.SIGKILL:
                os.kill(child.pid, signal.SIGKILL)
            _, status = os.waitpid(child.pid, 0)
        dead_at = time.time()
        if child.ready_fd is not None:
            os.close(child.ready_fd)
        described = _describe(status)
        _note("K", f"{dead_at:.6f}", described, index=index, at=signalled_at)
        return f"ended {index} {child.pid} {signalled_at:.6f} {dead_at:.6f} {described}"


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal:{os.WTERMSIG(status)}"
    return f"exit:{os.waitstatus_to_exitcode(status)}"


def _reply(line: str) -> None:
    os.write(1, (line + "\n").encode("ascii"))


def serve(journal: Path) -> None:
    global _journal_fd
    _journal_fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    _warm_up()
    _install_journal_hooks()
    _Server().run()


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
