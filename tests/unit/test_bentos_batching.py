"""Adaptive batching: concurrent requests share model calls; one bad request fails alone."""

from __future__ import annotations

import asyncio

from bentos.batching import MicroBatcher


def test_concurrent_requests_are_batched_and_answered_in_order() -> None:
    calls: list[list[int]] = []

    async def process(items: list[int]) -> list[int]:
        calls.append(items)
        await asyncio.sleep(0.01)  # the model is busy: others queue up meanwhile
        return [i * 10 for i in items]

    async def main() -> list[list[int]]:
        batcher: MicroBatcher[int, int] = MicroBatcher(process, max_batch_size=64)
        results = await asyncio.gather(*(batcher.submit([i, i + 100]) for i in range(20)))
        await batcher.close()
        return list(results)

    results = asyncio.run(main())
    assert results == [[i * 10, (i + 100) * 10] for i in range(20)]
    assert len(calls) < 20 and max(len(c) for c in calls) > 2


def test_batches_respect_max_batch_size() -> None:
    sizes: list[int] = []

    async def process(items: list[int]) -> list[int]:
        sizes.append(len(items))
        await asyncio.sleep(0.005)
        return items

    async def main() -> None:
        batcher: MicroBatcher[int, int] = MicroBatcher(process, max_batch_size=8)
        await asyncio.gather(*(batcher.submit([i, i]) for i in range(40)))
        big = await batcher.submit(list(range(20)))  # larger than a batch: runs alone
        assert big == list(range(20))
        await batcher.close()

    asyncio.run(main())
    assert max(sizes[:-1]) <= 8 and sizes[-1] == 20


def test_a_failing_request_does_not_fail_the_others_in_its_batch() -> None:
    async def process(items: list[int]) -> list[int]:
        await asyncio.sleep(0.005)
        if -1 in items:
            raise ValueError("bad input")
        return items

    async def main() -> list[object]:
        batcher: MicroBatcher[int, int] = MicroBatcher(process, max_batch_size=64)
        results = await asyncio.gather(
            *(batcher.submit([i]) for i in (1, -1, 2, 3)), return_exceptions=True
        )
        await batcher.close()
        return list(results)

    ok1, bad, ok2, ok3 = asyncio.run(main())
    assert (ok1, ok2, ok3) == ([1], [2], [3])
    assert isinstance(bad, ValueError)


def test_max_latency_holds_an_idle_batcher_for_company() -> None:
    calls: list[int] = []

    async def process(items: list[int]) -> list[int]:
        calls.append(len(items))
        return items

    async def main() -> None:
        batcher: MicroBatcher[int, int] = MicroBatcher(process, 64, max_latency_ms=50)
        first = asyncio.ensure_future(batcher.submit([1]))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(batcher.submit([2]))
        assert await first == [1] and await second == [2]
        await batcher.close()

    asyncio.run(main())
    assert calls == [2]
