"""The batcher that groups concurrent store calls: grouping, ordering, and one bad item not sinking others."""

from __future__ import annotations

import asyncio
import threading

import pytest

from grantkeeper.service.batching import Batcher


class Recorder:
    """A blocking batch function that records each batch it was given (and can be told to fail)."""

    def __init__(self, poison: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.poison = poison
        self.threads: set[int] = set()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.add(threading.get_ident())
        if self.poison in items:
            raise ValueError("refused")
        return [item * 10 for item in items]


def test_items_submitted_together_share_one_call_and_each_gets_its_own_answer():
    recorder = Recorder()

    async def main() -> list[int]:
        batcher = Batcher(recorder)
        return await asyncio.gather(*(batcher.submit(i) for i in range(50)))

    assert asyncio.run(main()) == [i * 10 for i in range(50)]
    assert recorder.batches == [list(range(50))]
    assert threading.get_ident() not in recorder.threads  # blocking work never runs on the event loop


def test_items_arriving_during_a_call_share_the_next_one():
    recorder = Recorder()

    async def main() -> None:
        batcher = Batcher(recorder)
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0)  # the first batch is now running
        await asyncio.sleep(0)
        later = [asyncio.create_task(batcher.submit(i)) for i in range(1, 6)]
        await asyncio.gather(first, *later)

    asyncio.run(main())
    assert recorder.batches[0] == [0]
    assert sorted(i for batch in recorder.batches[1:] for i in batch) == [1, 2, 3, 4, 5]
    assert len(recorder.batches) <= 3


def test_one_bad_item_fails_alone_and_the_others_are_answered():
    recorder = Recorder(poison=3)

    async def main() -> list[int | BaseException]:
        batcher = Batcher(recorder)
        return await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True)

    answers = asyncio.run(main())
    assert [a for i, a in enumerate(answers) if i != 3] == [0, 10, 20, 40, 50]
    assert isinstance(answers[3], ValueError)
    assert recorder.batches[0] == list(range(6))  # tried together first, then one by one
    assert [batch for batch in recorder.batches[1:]] == [[i] for i in range(6)]


def test_a_failing_single_item_raises_to_its_caller():
    async def main() -> None:
        await Batcher(Recorder(poison=1)).submit(1)

    with pytest.raises(ValueError, match="refused"):
        asyncio.run(main())


def test_a_cancelled_droppable_item_is_not_sent_and_the_others_are():
    recorder = Recorder()

    async def main() -> list[int]:
        batcher = Batcher(recorder, is_droppable=lambda item: item % 2 == 1)
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(4)]
        await asyncio.sleep(0)
        tasks[1].cancel()  # droppable: its caller is gone, so it is not sent
        tasks[2].cancel()  # not droppable: sent anyway (a commit is worth storing)
        return [await tasks[i] for i in (0, 3)]

    assert asyncio.run(main()) == [0, 30]
    assert recorder.batches[0] == [0, 2, 3]


def test_a_call_answering_the_wrong_number_of_items_fails_every_caller():
    def short(items: list[int]) -> list[int]:
        return items[:-1]

    async def main() -> list[int | BaseException]:
        batcher = Batcher(short)
        return await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)

    assert all(isinstance(answer, RuntimeError) for answer in asyncio.run(main()))
