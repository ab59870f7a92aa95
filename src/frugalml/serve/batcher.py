"""Dynamic batching for predictors: concurrent requests gathered into one runtime call.

A batch opens when the first request arrives and closes at ``max_batch_size`` rows or ``max_wait_ms`` after
that first request, whichever comes first (the timer starts at the first request, not at the end of the last
batch). Rows, not requests, are counted, so a client sending big requests cannot overrun the batch; a request
larger than the batch runs alone. The runtime call runs in a worker thread, so the event loop keeps
accepting and answering while the model computes; while it runs, the next batch gathers.

The queue is bounded: past ``max_queue`` waiting requests a new one is refused at once (``QueueFull``, a 429
with ``Retry-After`` estimated from the recent batch time), never left to wait or time out. A caller that
leaves (a client disconnect cancels its future) is dropped from the batch before it runs.
"""

from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable


class QueueFull(Exception):
    def __init__(self, retry_after_s: float):
        super().__init__("the queue is full")
        self.retry_after_s = retry_after_s


@dataclass
class _Job:
    rows: list
    future: asyncio.Future
    arrived_s: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """``await batcher.submit(rows)`` -> ``predict(rows)``'s answers for those rows.

    ``predict(all_rows) -> list of per-row answers`` runs in one worker thread, one batch at a time.
    """

    def __init__(self, predict: Callable[[list], list], max_batch_size: int = 64, max_wait_ms: float = 2.0,
                 max_queue: int = 1024, metrics=None):
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        self.metrics = metrics
        self._queue: asyncio.Queue[_Job] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="frugal-predict")
        self._task: asyncio.Task | None = None
        self._batch_s = 0.0  # moving average of a runtime call, for Retry-After
        self._held: _Job | None = None  # the request that did not fit the last batch: it opens the next

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True)

    @property
    def depth(self) -> int:
        return self._queue.qsize() + (self._held is not None) if self._queue is not None else 0

    async def submit(self, rows: list) -> list:
        if self.depth >= self.max_queue:
            batches_ahead = math.ceil((self.depth + 1) / max(1, self.max_batch_size))
            raise QueueFull(max(1.0, batches_ahead * self._batch_s))
        job = _Job(rows, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(job)
        self._gauge()
        return await job.future

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self.depth)

    async def _next_batch(self) -> list[_Job]:
        first = self._held or await self._queue.get()
        self._held = None
        batch, rows = [first], len(first.rows)
        deadline = first.arrived_s + self.max_wait_s
        while rows < self.max_batch_size:
            try:
                if self._queue.empty():
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    job = await asyncio.wait_for(self._queue.get(), left)
                else:
                    job = self._queue.get_nowait()
            except asyncio.TimeoutError:
                break
            if rows + len(job.rows) > self.max_batch_size:
                self._held = job
                break
            batch.append(job)
            rows += len(job.rows)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [j for j in await self._next_batch() if not j.future.done()]  # callers that left are dropped
            self._gauge()
            if not batch:
                continue
            rows = [r for j in batch for r in j.rows]
            t0 = time.perf_counter()
            try:
                answers = await loop.run_in_executor(self._pool, self.predict, rows)
            except Exception as exc:
                await self._one_by_one(batch, exc)
                continue
            took = time.perf_counter() - t0
            self._batch_s = took if not self._batch_s else 0.8 * self._batch_s + 0.2 * took
            if self.metrics is not None:
                self.metrics.inference.observe(took)
                self.metrics.batch_rows.observe(len(rows))
                self.metrics.batch_requests.observe(len(batch))
                for j in batch:
                    self.metrics.queue_wait.observe(t0 - j.arrived_s)
            start = 0
            for j in batch:
                if not j.future.done():
                    j.future.set_result(answers[start:start + len(j.rows)])
                start += len(j.rows)

    async def _one_by_one(self, batch: list[_Job], exc: Exception) -> None:
        """The model failed on a batch: run its requests alone, so only the one at fault gets the error."""
        loop = asyncio.get_running_loop()
        for j in batch:
            try:
                answer = exc if len(batch) == 1 else await loop.run_in_executor(self._pool, self.predict, j.rows)
            except Exception as own:
                answer = own
            if not j.future.done():
                if isinstance(answer, Exception):
                    j.future.set_exception(answer)
                else:
                    j.future.set_result(answer)
