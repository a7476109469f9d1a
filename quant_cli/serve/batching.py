"""Score concurrent requests together: one feature-engine call for every request waiting.

The feature engine (polars) costs about the same for one symbol's 63 bars as for sixteen symbols'
(`benchmarks/serve_latency.py`: per-query planning and per-expression overhead dominate tiny
frames), so under concurrent load the server runs one call for all the requests queued while the
previous call ran, then hands each request its own rows back. A lone request is scored after a
few event-loop turns; under concurrent load a batch waits at most 2 ms for the clients it just
answered. The batch goes through the bundle's one scoring path (LoadedBundle.score_bars_many /
score_features_many), which falls back to
scoring one request at a time wherever batching could change a result, and gives each request its
own error when a batch fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from anyio import to_thread

ARRIVAL_TURNS = 16
GATHER_SECONDS = 0.002  # against an engine call of 20-40 ms
GATHER_STEP = 0.0002
# A batch of at most this many rows of cheap work (precomputed feature rows, tabular model) runs on
# the event loop itself: ~1-2 ms, less than the thread hop and the GIL hand-off back to the loop
# cost (/predict/features: ~+15% requests/s). Larger batches, and every feature-engine call, run
# in the scoring thread so the loop keeps answering (/health included).
INLINE_ROWS = 256
Run = Callable[[list[Any]], list[Any]]  # items -> a result or an exception per item, in order


@dataclass
class _Pending:
    group: Hashable
    run: Run
    item: Any
    rows: int
    future: asyncio.Future
    cheap: bool = False


class Batcher:
    """One scorer at a time; requests that arrive meanwhile join the next batch (same group only:
    the same bundle and input layout), up to `max_rows` rows per batch."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.pending: list[_Pending] = []
        self.busy = False
        self.last_size = 1  # requests in the last batch: >1 means concurrent clients
        self.task: asyncio.Task | None = None

    async def submit(self, group: Hashable, run: Run, item: Any, rows: int, cheap: bool = False) -> Any:
        """`run([item, ...])` of this item together with whatever else of its group is waiting
        (`cheap`: a small batch of it may run on the event loop, see INLINE_ROWS)."""
        future = asyncio.get_running_loop().create_future()
        self.pending.append(_Pending(group, run, item, rows, future, cheap))
        if not self.busy:
            self.busy = True
            self.task = asyncio.get_running_loop().create_task(
                self._drain()
            )  # held: the loop keeps only a weak reference
        return await future  # this request's result, or the exception its scoring raised

    async def _drain(self) -> None:
        try:
            while self.pending:
                await self._let_arrivals_queue()
                batch = self._next_batch()
                try:
                    items = [p.item for p in batch]
                    if batch[0].cheap and sum(p.rows for p in batch) <= INLINE_ROWS:
                        results = batch[0].run(items)
                    else:
                        results = await to_thread.run_sync(batch[0].run, items)
                except Exception as exc:  # the scorer gives per-item errors; this is a bug, surfaced per request
                    results = [exc] * len(batch)
                for pending, result in zip(batch, results):
                    if not pending.future.done():  # a client that went away cancelled its future
                        pending.future.set_result(result)
        finally:
            self.busy = False

    async def _let_arrivals_queue(self) -> None:
        """Let requests whose bytes have already arrived reach the queue before the batch is cut:
        a few event-loop turns always (microseconds); under concurrent load (the last batch held
        several requests) also up to GATHER_SECONDS for as many as last time, since the clients
        answered by the last batch send their next requests together. Without it the first
        arrival after a batch is scored alone while the rest wait a whole engine call behind it.
        A lone client never waits on the timer."""
        quiet = 0
        for _ in range(ARRIVAL_TURNS):
            before = len(self.pending)
            await asyncio.sleep(0)
            quiet = quiet + 1 if len(self.pending) == before else 0
            if quiet == 2:
                break
        deadline = time.monotonic() + GATHER_SECONDS
        while 1 < self.last_size and len(self.pending) < self.last_size and time.monotonic() < deadline:
            await asyncio.sleep(GATHER_STEP)

    def _next_batch(self) -> list[_Pending]:
        group, rows = self.pending[0].group, 0
        batch, rest = [], []
        for pending in self.pending:
            if pending.group == group and (not batch or rows + pending.rows <= self.max_rows):
                batch.append(pending)
                rows += pending.rows
            else:
                rest.append(pending)
        self.pending = rest
        self.last_size = len(batch)
        return batch
