"""The batcher behind ``nerdistil serve``: one bounded queue of texts, batches tagged in worker threads.

A lone batch runs on every ONNX Runtime thread; when full batches queue up, up to ``lanes`` of them run at once on a
one-thread session (``Batcher``). A text's result never depends on its batch or the session it ran on. Imports
onnxruntime (through ``Tagger``) and prometheus_client, never torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from nerdistil.deploy.runtime import Tagger

log = logging.getLogger("nerdistil.serve")


class QueueFull(Exception):
    """The bounded queue cannot take a request's texts now."""


@dataclass
class _Work:
    kind: str  # "texts" or "words"
    item: Any
    future: asyncio.Future = field(repr=False)
    request: int = 0  # which request it came with


class Batcher:
    """The one consumer of the queue: batches of up to ``max_batch`` items, tagged in worker threads.

    A batch runs on ``tagger`` (every ONNX Runtime thread of the process) when nothing else runs. When a full
    batch (``max_batch`` texts, at least 2) of several requests' texts waits, or one does while a lane runs, and
    ``lane_tagger`` (one thread) is given, up to ``lanes`` batches run at once on it instead, each on its own core:
    on 2 cores two one-thread runs of 32 random tweets tag more than one two-thread run does (benchmarks/RESULTS.md,
    "Serving"), while a lone request keeps every thread. The thread count never changes a result (tested), so
    neither does the session a batch runs on.
    """

    def __init__(self, tagger: Tagger, max_batch: int, max_wait_s: float, max_queue: int, metrics: Metrics,
                 lane_tagger: Tagger | None = None, lanes: int = 1) -> None:  # fmt: skip
        self.tagger, self.max_batch, self.max_wait_s, self.max_queue = tagger, max_batch, max_wait_s, max_queue
        self.lane_tagger, self.lanes = (lane_tagger, lanes) if lane_tagger is not None and lanes > 1 else (None, 1)
        self.metrics = metrics
        self.queue: deque[_Work] = deque()
        self.wake = asyncio.Event()
        self.pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="nerdistil-tag")
        self.task: asyncio.Task | None = None
        self.running = {"all": 0, "lane": 0}  # batches in flight on each session
        self.runs: set[asyncio.Task] = set()
        self.requests = 0  # requests submitted so far (each text knows its own)

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, kind: str, items: list) -> list[dict]:
        """Tag ``items`` (tweets or word lists) through the shared batches; ``QueueFull`` when they do not fit."""
        if len(self.queue) + len(items) > self.max_queue:
            raise QueueFull
        loop = asyncio.get_running_loop()
        self.requests += 1
        work = [_Work(kind, item, loop.create_future(), self.requests) for item in items]
        self.queue.extend(work)
        self.metrics.queue.set(len(self.queue))
        self.wake.set()
        return list(await asyncio.gather(*(w.future for w in work)))

    def _session(self) -> str | None:
        """Where the next batch runs now ("all" threads, a "lane"), or None: wait for texts or a run to end.

        Lanes take a full batch when texts of several requests wait (the oldest and the newest text came with
        different ones) or a lane runs already: a lone request, however long, runs on every thread.
        """
        if not self.queue or self.running["all"]:
            return None
        several = self.running["lane"] or self.queue[0].request != self.queue[-1].request
        busy = len(self.queue) >= max(self.max_batch, 2) and several
        if self.lane_tagger is not None and busy and self.running["lane"] < self.lanes:
            return "lane"
        return "all" if not self.running["lane"] else None

    async def _loop(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            idle = not any(self.running.values())
            if idle and self.max_wait_s and 0 < len(self.queue) < self.max_batch:  # wait a little for others
                deadline = time.perf_counter() + self.max_wait_s
                while len(self.queue) < self.max_batch and (left := deadline - time.perf_counter()) > 0:
                    self.wake.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), left)
            while (where := self._session()) is not None:
                batch = [self.queue.popleft() for _ in range(min(self.max_batch, len(self.queue)))]
                batch = [w for w in batch if not w.future.done()]  # texts whose client has gone are not tagged
                if not batch:
                    continue
                self.running[where] += 1
                run = asyncio.get_running_loop().create_task(self._run(batch, where))
                self.runs.add(run)
                run.add_done_callback(self.runs.discard)
            self.metrics.queue.set(len(self.queue))

    async def _run(self, batch: list[_Work], where: str) -> None:
        tagger = self.tagger if where == "all" else self.lane_tagger
        try:
            self.metrics.batch.observe(len(batch))
            self.metrics.runs.labels(where).inc()
            results = await asyncio.get_running_loop().run_in_executor(self.pool, self._tag, batch, tagger)
        except Exception as e:  # a bug in tagging: every waiting request gets a 500, the server lives on
            log.exception("tagging a batch of %d failed", len(batch))
            for w in batch:
                if not w.future.done():
                    w.future.set_exception(e)
        else:
            for w, r in zip(batch, results):
                if not w.future.done():  # its client may have gone
                    w.future.set_result(r)
        finally:
            self.running[where] -= 1
            self.wake.set()  # the queue may hold the next batch

    async def close(self, timeout: float) -> None:
        """Stop batching: texts still queued get an error, runs in flight get ``timeout`` s to finish."""
        if self.task:
            self.task.cancel()
        while self.queue:
            w = self.queue.popleft()
            if not w.future.done():
                w.future.set_exception(RuntimeError("the server is shutting down"))
        if self.runs:
            await asyncio.wait(self.runs, timeout=timeout)
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _tag(self, batch: list[_Work], tagger: Tagger) -> list[dict]:
        """Tag one batch (tweets and word lists apart, then back in order)."""
        out: list[dict | None] = [None] * len(batch)
        size = len(batch)  # an int8 Tagger runs each window alone anyway (batch_independent)
        for kind in ("texts", "words"):
            idx = [i for i, w in enumerate(batch) if w.kind == kind]
            if idx:
                items = [batch[i].item for i in idx]
                got = tagger.tag(items, size) if kind == "texts" else tagger.tag_words(items, size)
                for i, r in zip(idx, got):
                    out[i] = r
        self.metrics.texts.inc(len(batch))
        return out  # type: ignore[return-value]


class Metrics:
    """Prometheus metrics of one server process (its own registry)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("nerdistil_requests", "HTTP requests by path and status", ["path", "status"],
                                registry=self.registry)  # fmt: skip
        self.latency = Histogram("nerdistil_request_seconds", "Request latency", ["path"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))  # fmt: skip
        self.batch = Histogram("nerdistil_batch_size", "Texts per batch run", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))  # fmt: skip
        self.queue = Gauge("nerdistil_queue_depth", "Texts waiting for a batch", registry=self.registry)
        self.texts = Counter("nerdistil_texts_tagged", "Texts (or sentences) tagged", registry=self.registry)
        self.runs = Counter("nerdistil_batch_runs", "Batches run, by session: all threads, or a one-thread lane",
                            ["session"], registry=self.registry)  # fmt: skip
