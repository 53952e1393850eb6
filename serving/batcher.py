"""Micro-batching of real-time requests: one ONNX call and one index search for many requests.

Every real-time request used to run its own user-tower call and its own FAISS search (~1.4 ms
of CPU, most of it fixed per-call cost). :class:`MicroBatcher` collects the rows of the
requests that reach the model path on the event loop and scores them together with
:func:`serving.pipeline.score_rows` (per-row ``k``), which gives each row the answer it gets
alone (``tests/serving/test_batcher.py``).

When does a batch go? A request's row joins the open batch; the batch is flushed

* once ``max_batch`` rows wait, or
* at the next loop turn once every request in flight in the app is waiting in it
  (``inflight``, the shedder's count: nobody else can join before it goes; a lone request
  goes one turn after it joined; the requests that arrived together have all joined by then), or
* once the loop has run ``QUIET_TURNS`` turns in a row without a new row joining (the
  requests already parsed have all had their turn: waiting longer would only add latency), or
* at the latest ``max_wait_ms`` after its first row joined (the bound; <= 2 ms).

So a lone request waits one loop turn, and under load a batch holds whatever arrived while the
previous one was being computed. The batch is computed inline on
the loop, like the one-row path was (a thread hop cost more than it saved). The shedder
(:mod:`serving.shed`) has already admitted every request that waits here, and the wait is
bounded, so the queue budget and ``max_inflight`` hold as before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from serving.metrics import BATCH_SIZE, BATCH_WAIT
from serving.model import ServingModel
from serving.pipeline import Picks, score_rows

QUIET_TURNS = 2  # a parsed request's first task step runs one loop turn after its bytes arrive


@dataclass
class _Waiting:
    model: ServingModel
    row: Mapping[str, Any]
    k: int
    future: asyncio.Future[Picks | None]
    joined: float


class MicroBatcher:
    """Scores rows for concurrent requests in batches; use from one event loop."""

    def __init__(
        self, max_wait_ms: float, max_batch: int, inflight: Callable[[], int] | None = None
    ) -> None:
        if not 0 < max_wait_ms <= 2.0:
            raise ValueError(f"max_wait_ms must be in (0, 2]; got {max_wait_ms}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1; got {max_batch}")
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_batch = max_batch
        self.inflight = inflight  # requests in flight in the app (None: unknown)
        self._open: list[_Waiting] = []
        self._seen = 0  # rows in the open batch at the last quiet check
        self._quiet = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._check: asyncio.Handle | None = None

    async def score(self, model: ServingModel, row: Mapping[str, Any], k: int) -> Picks | None:
        """The row's picks (None: no history), computed with the other rows waiting now."""
        if not row.get("history"):
            return None  # nothing to compute: trending, answered at once
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Picks | None] = loop.create_future()
        self._open.append(_Waiting(model, row, k, future, time.perf_counter()))
        if len(self._open) >= self.max_batch:
            self.flush()
        elif self._deadline is None:
            self._deadline = loop.call_later(self.max_wait_s, self.flush)
            self._seen, self._quiet = len(self._open), 0
            self._check = loop.call_soon(self._quiet_check)
        return await future

    def _quiet_check(self) -> None:
        self._check = None
        if not self._open:
            return
        if self.inflight is not None and len(self._open) >= self.inflight():
            self.flush()  # every request in the app waits here: nobody else can join
            return
        if len(self._open) == self._seen:
            self._quiet += 1
            if self._quiet >= QUIET_TURNS:
                self.flush()
                return
        else:
            self._seen, self._quiet = len(self._open), 0
        self._check = asyncio.get_running_loop().call_soon(self._quiet_check)

    def flush(self) -> None:
        """Score the open batch now (one pipeline call per bundle in it) and answer its rows."""
        batch, self._open = self._open, []
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._check is not None:
            self._check.cancel()
            self._check = None
        if not batch:
            return
        now = time.perf_counter()
        BATCH_SIZE.observe(len(batch))
        BATCH_WAIT.observe(now - batch[0].joined)
        by_model: dict[int, list[_Waiting]] = {}
        for w in batch:  # a bundle swap mid-batch: each request keeps the bundle it started with
            by_model.setdefault(id(w.model), []).append(w)
        for group in by_model.values():
            try:
                picks = score_rows(group[0].model, [w.row for w in group], [w.k for w in group])
            except Exception as exc:  # each request fails as it would have alone
                for w in group:
                    if not w.future.done():
                        w.future.set_exception(exc)
                continue
            for w, p in zip(group, picks, strict=True):
                if not w.future.done():  # a cancelled request (client gone) is skipped
                    w.future.set_result(p)
