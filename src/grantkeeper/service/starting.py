"""The start gate: every attempt is recorded in flight before its request leaves, in batches.

Recording each start alone would cost a database round trip per refresh; instead the attempts that ask in
the same moment share one store call, and those that ask while it runs share the next. The same call stores
the answers that arrived meanwhile (``commit_and_start``: one transaction per tick), and applies the
providers' concurrency and rate limits, so the gate is also where an attempt waits for its provider's turn.

The gate also stops new starts while the database is unreachable: a start that cannot be recorded never
leaves, and a worker holding refreshed tokens it could not commit closes the gate (``hold``) until a commit
lands (``release_hold``), so it does not pile more answers it cannot store on top of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import timedelta

from grantkeeper.ports import AttemptCommit, ClaimedConnection, Clock, ConnectionStore, StoreUnavailableError
from grantkeeper.service.batching import Batcher

log = logging.getLogger("grantkeeper.refresh")

#: A start's answer: the claim with its attempt lease, seconds to wait for the provider's limits, or None.
StartAnswer = ClaimedConnection | float | None
#: Waits between tries while the database does not answer a start (it is checked again each time).
_UNREACHABLE_RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)


class StartGate:
    """Marks attempts in flight in batches; ``start`` gives the claim with its new lease, None if lost."""

    def __init__(
        self,
        store: ConnectionStore,
        clock: Clock,
        attempt_ttl: timedelta,
        executor: Executor | None = None,
        *,
        on_unavailable: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._on_unavailable = on_unavailable or (lambda: None)
        self._clock = clock
        self._attempt_ttl = attempt_ttl
        self._batcher: Batcher[ClaimedConnection | AttemptCommit, StartAnswer | bool] = Batcher(
            self._store_batch,
            executor,
            # a start whose attempt was cancelled must not be recorded in flight (its request never leaves);
            # a cancelled attempt's answer is still worth storing
            is_droppable=lambda item: not isinstance(item, AttemptCommit),
        )
        self._open = asyncio.Event()
        self._open.set()
        self._holds = 0

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def wait_open(self) -> None:
        """Return once no hold is on: what an attempt started ahead of its request waits for (ADR 21)."""
        await self._open.wait()

    def hold(self) -> None:
        """Stop new starts (a refreshed token waits in memory for the database); counted, so nested."""
        self._holds += 1
        self._open.clear()

    def release_hold(self) -> None:
        if self._holds < 1:
            raise RuntimeError("release_hold without a hold")  # a miscount would hide a stuck gate
        self._holds -= 1
        if self._holds == 0:
            self._open.set()

    async def start(self, claim: ClaimedConnection) -> ClaimedConnection | None:
        """Wait for the provider's limits, record the attempt in flight, and hand back the updated claim."""
        failures = 0
        while True:
            await self._open.wait()
            try:
                answer = await self._batcher.submit(claim)
            except StoreUnavailableError as exc:  # nothing was sent: try again when the database answers
                self._on_unavailable()
                delay = _UNREACHABLE_RETRY_SECONDS[min(failures, len(_UNREACHABLE_RETRY_SECONDS) - 1)]
                failures += 1
                log.warning(
                    "cannot record the start of %s (%s); retrying in %.1fs",
                    claim.connection_id,
                    type(exc).__name__,
                    delay,
                    extra={"action": "start_failed", "connection_id": claim.connection_id},
                )
                await asyncio.sleep(delay)
                continue
            if isinstance(answer, bool):
                raise TypeError("a start was answered like a commit")  # a bug in _store_batch
            if isinstance(answer, float):  # held back by the provider's limits
                await asyncio.sleep(answer)
                continue
            return answer

    async def commit(self, commit: AttemptCommit) -> bool:
        """Store an attempt's result, in the same transaction as the starts and results of the same tick."""
        answer = await self._batcher.submit(commit)
        if not isinstance(answer, bool):
            raise TypeError("a commit was answered like a start")  # a bug in _store_batch
        return answer

    def _store_batch(self, items: list[ClaimedConnection | AttemptCommit]) -> list[StartAnswer | bool]:
        """One ``commit_and_start`` call. Per item: a commit's bool, or a start's started claim, seconds to
        wait for the provider's limits, or None (its lease was lost)."""
        batch = [item for item in items if isinstance(item, AttemptCommit)]
        claims = [item for item in items if not isinstance(item, AttemptCommit)]
        committed, starts = self._store.commit_and_start(batch, claims, self._clock.now(), self._attempt_ttl)
        results = iter(committed)
        answers: list[StartAnswer | bool] = []
        for item in items:
            if isinstance(item, AttemptCommit):
                answers.append(next(results))
            elif item.connection_id in starts.started:
                answers.append(item.started(starts.lease_expires_at, starts.started_at))
            else:
                answers.append(starts.waits.get(item.connection_id))
        return answers
