"""Adaptive batching: concurrent requests share one model call.

One consumer task takes everything queued (up to `max_batch_size` items) and
hands it to `process` as one batch; while that batch runs, new requests queue
up and form the next one. So under load batches grow by themselves.

`max_latency_ms` > 0 additionally holds an idle batcher for company, but only as
long as fewer requests are queued than are expected (`company`: the service passes
the most requests in flight in the worker lately; else the size of the last batch),
and at most that long. So a lone caller never waits, while a few concurrent callers,
whose next requests arrive a little apart, share one model call instead of one each
(unlike a fixed wait window, which every lone request would pay).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger("driftloop.serving")

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Job(Generic[T, R]):
    items: Sequence[T]
    future: asyncio.Future[list[R]]


class MicroBatcher(Generic[T, R]):
    """Queue items from many requests; run `process` once per batch; answer each request."""

    def __init__(
        self,
        process: Callable[[list[T]], Awaitable[list[R]]],
        max_batch_size: int,
        max_latency_ms: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
        weight: Callable[[T], int] | None = None,
        company: Callable[[], int] | None = None,
    ) -> None:
        self.process = process
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_ms / 1000.0
        self.on_batch = on_batch
        # What one item counts for against max_batch_size (e.g. the records of a request).
        self.weight = weight
        # How many requests an idle batcher waits for (up to max_latency_ms).
        self.company = company
        self.batches = 0
        self._last_jobs = 1  # requests in the last batch: the company worth waiting for
        self._queue: collections.deque[_Job[T, R]] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Results for `items`, in order, once the batch holding them has run."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name="micro-batcher")
        job: _Job[T, R] = _Job(items, loop.create_future())
        self._queue.append(job)
        assert self._wake is not None
        self._wake.set()
        return await job.future

    def waiting(self) -> int:
        """Requests queued for a later batch (not the one running)."""
        return len(self._queue)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in self._queue:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the service is shutting down"))
        self._queue.clear()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            if self.max_latency_s > 0 and self._wants_company():
                await self._linger()
            jobs = self._take()
            if jobs:
                self._last_jobs = len(jobs)
                await self._run_batch(jobs)

    def _wants_company(self) -> bool:
        """Fewer requests queued than expected, and room in the batch."""
        wanted = self._last_jobs if self.company is None else self.company()
        return len(self._queue) < wanted and self._size() < self.max_batch_size

    async def _linger(self) -> None:
        """Wait up to max_latency_ms while the batch wants company."""
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_latency_s
        while self._wants_company():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return

    def _size(self) -> int:
        return sum(self._weight(job) for job in self._queue)

    def _weight(self, job: _Job[T, R]) -> int:
        if self.weight is None:
            return len(job.items)
        return sum(self.weight(item) for item in job.items)

    def _take(self) -> list[_Job[T, R]]:
        """Whole jobs, oldest first, up to max_batch_size items (a big job goes alone)."""
        jobs: list[_Job[T, R]] = []
        size = 0
        while self._queue:
            job = self._queue[0]
            if job.future.done():  # the caller went away
                self._queue.popleft()
                continue
            weight = self._weight(job)
            if jobs and size + weight > self.max_batch_size:
                break
            jobs.append(self._queue.popleft())
            size += weight
        return jobs

    async def _run_batch(self, jobs: list[_Job[T, R]]) -> None:
        flat = [item for job in jobs for item in job.items]
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(sum(self._weight(job) for job in jobs))
        try:
            results = await self.process(flat)
        except Exception as exc:
            if len(jobs) == 1:
                _fail(jobs[0], exc)
                return
            # One bad request must not fail the others: run each job on its own.
            log.warning(
                "batch of %d requests failed (%s); retrying them one by one", len(jobs), exc
            )
            for job in jobs:
                try:
                    _succeed(job, await self.process(list(job.items)))
                except Exception as single_exc:
                    _fail(job, single_exc)
            return
        start = 0
        for job in jobs:
            _succeed(job, results[start : start + len(job.items)])
            start += len(job.items)


def _succeed(job: _Job[T, R], results: list[R]) -> None:
    if not job.future.done():
        job.future.set_result(results)


def _fail(job: _Job[T, R], exc: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(exc)
