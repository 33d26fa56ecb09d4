"""One blocking store call for many concurrent callers: what turns per-attempt transactions into grouped ones.

Each caller submits one item and awaits its own answer. Items submitted in the same event-loop tick share a
call; items submitted while a call runs share the next one. So a batch is as large as the store is slow,
with no timer to tune: an idle worker pays one round trip per item, a busy one a round trip per hundred.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Runs ``call`` (blocking, in ``executor``'s thread, the default pool without one) on the items
    submitted together; one call at a time.

    ``call`` returns one answer per item, in order. If a batch of several raises, its items are tried again
    one by one, so one bad item (a bug, a value the database refuses) cannot sink the others; a caller gets
    an exception only when its own item fails alone (the store rolled that transaction back: nothing done).
    """

    def __init__(
        self,
        call: Callable[[list[T]], Sequence[R]],
        executor: Executor | None = None,
        *,
        is_droppable: Callable[[T], bool] = lambda _item: False,
    ) -> None:
        self._call = call
        self._executor = executor
        self._is_droppable = is_droppable  # items not worth sending once their caller is gone
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._running: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        answer: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, answer))
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._drain())
        return await answer

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # let the callers of this tick join the batch
        while self._pending:
            batch = [(item, answer) for item, answer in self._pending if not self._is_abandoned(item, answer)]
            self._pending = []
            if not batch:
                continue
            try:
                results = await self._run([item for item, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                else:
                    await self._one_by_one(batch)
                continue
            if len(results) != len(
                batch
            ):  # a bug in ``call``: fail every caller rather than leave one waiting
                error = RuntimeError(f"batch call answered {len(results)} items for {len(batch)}")
                for _, answer in batch:
                    _settle(answer, error)
                continue
            for (_, answer), result in zip(batch, results, strict=True):
                _settle(answer, result)

    def _is_abandoned(self, item: T, answer: asyncio.Future[R]) -> bool:
        return answer.cancelled() and self._is_droppable(item)

    async def _run(self, items: list[T]) -> Sequence[R]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, items)

    async def _one_by_one(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        for item, answer in batch:
            try:
                (result,) = await self._run([item])
            except Exception as exc:
                _settle(answer, exc)
            else:
                _settle(answer, result)


def _settle(answer: asyncio.Future[R], outcome: R | Exception) -> None:
    """Resolve a caller's future unless the caller has gone (cancelled)."""
    if answer.done():
        return
    if isinstance(outcome, Exception):
        answer.set_exception(outcome)
    else:
        answer.set_result(outcome)
