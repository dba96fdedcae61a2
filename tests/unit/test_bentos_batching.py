"""Adaptive batching: concurrent requests share model calls; one bad request fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

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


def batch_sizes() -> tuple[list[int], Callable[[list[int]], Awaitable[list[int]]]]:
    """A `process` that answers each item with itself, and the sizes of its batches."""
    calls: list[int] = []

    async def process(items: list[int]) -> list[int]:
        calls.append(len(items))
        return items

    return calls, process


def test_a_lone_caller_never_waits_for_company() -> None:
    calls, process = batch_sizes()

    async def main() -> float:
        batcher: MicroBatcher[int, int] = MicroBatcher(process, 64, max_latency_ms=500)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(5):  # one at a time: every batch holds one request
            assert await batcher.submit([i]) == [i]
        await batcher.close()
        return loop.time() - started

    assert asyncio.run(main()) < 0.5  # five lingers would take 2.5 s
    assert calls == [1] * 5


def test_after_a_batch_with_company_an_idle_batcher_waits_for_as_many() -> None:
    calls, process = batch_sizes()

    async def main() -> float:
        batcher: MicroBatcher[int, int] = MicroBatcher(process, 64, max_latency_ms=2000)
        loop = asyncio.get_running_loop()
        # Three together: the first batch holds them all (nothing to wait for yet).
        assert await asyncio.gather(*(batcher.submit([i]) for i in range(3))) == [[0], [1], [2]]
        started = loop.time()
        first = asyncio.ensure_future(batcher.submit([10]))
        await asyncio.sleep(0.02)  # the batcher holds the lone one for company
        rest = [asyncio.ensure_future(batcher.submit([i])) for i in (11, 12)]
        assert await first == [10] and [await r for r in rest] == [[11], [12]]
        waited = loop.time() - started
        await batcher.close()
        return waited

    waited = asyncio.run(main())
    assert calls == [3, 3]
    assert waited < 1.0  # it went as soon as three were queued, not after 2 s


def test_the_wait_for_company_ends_after_max_latency() -> None:
    calls, process = batch_sizes()

    async def main() -> float:
        batcher: MicroBatcher[int, int] = MicroBatcher(process, 64, max_latency_ms=50)
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(batcher.submit([i]) for i in range(4)))
        started = loop.time()
        assert await batcher.submit([9]) == [9]  # nobody comes: it runs after the window
        waited = loop.time() - started
        assert await batcher.submit([8]) == [8]  # the last batch held one: no wait now
        await batcher.close()
        return waited

    waited = asyncio.run(main())
    assert calls == [4, 1, 1]
    assert 0.04 <= waited < 1.0


def test_an_idle_batcher_waits_for_the_company_it_is_told_to_expect() -> None:
    calls, process = batch_sizes()
    expected = [3]

    async def main() -> float:
        batcher: MicroBatcher[int, int] = MicroBatcher(
            process, 64, max_latency_ms=2000, company=lambda: expected[0]
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = asyncio.ensure_future(batcher.submit([1]))  # no batch before: still waits
        await asyncio.sleep(0.02)
        rest = [asyncio.ensure_future(batcher.submit([i])) for i in (2, 3)]
        assert await first == [1] and [await r for r in rest] == [[2], [3]]
        waited = loop.time() - started
        expected[0] = 1  # concurrency fell to one: a lone request goes at once
        assert await batcher.submit([4]) == [4]
        await batcher.close()
        return waited

    waited = asyncio.run(main())
    assert calls == [3, 1]
    assert waited < 1.0
