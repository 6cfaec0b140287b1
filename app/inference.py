"""Running the blocking model call off the event loop.

:class:`MicroBatcher` (the default) gives each worker one scoring thread fed by a queue. Whatever
is waiting when the thread is free becomes one ``predict_proba`` call, up to ``max_rows`` rows;
an idle worker scores a lone request at once (no fixed wait). A request's rows are never split,
and rows are only ever grouped with rows scored by the same model object.
:class:`ThreadOffload` is the plain alternative (``MICRO_BATCHING=false``): one call per request
in a small thread pool.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, Protocol

import numpy as np

from app.model import Champion, Rows, Scores, prepare_inference_thread


class Scorer(Protocol):
    async def score(self, model: Champion, rows: Rows) -> Scores: ...

    def close(self) -> None: ...


_Item = tuple[Champion, Rows, "asyncio.Future[Scores]"]


class _Stop:
    """Queued by close(): the scoring thread finishes what it holds and ends."""


_STOP: Final = _Stop()
HANDSHAKE_MIN_SECONDS: Final = 0.0005
HANDSHAKE_MAX_SECONDS: Final = 0.005


class MicroBatcher:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        max_rows: int,
        threads: int = 1,
        on_call: Callable[[int], None] | None = None,
    ) -> None:
        self._loop = loop
        self._max_rows = max_rows
        self._threads = threads
        self._on_call = on_call
        self._queue: queue.SimpleQueue[_Item | _Stop] = queue.SimpleQueue()
        self._arrived: list[_Item] = []
        # The handshake (see _take_turns): set by the loop once the requests answered by the last
        # call have been replaced by as many new ones; only the loop thread touches the counts.
        self._refilled = threading.Event()
        self._refilled.set()  # set: no handshake armed (the loop then skips the counting)
        self._expected = 0
        self._since_answer = 0
        self._thread = threading.Thread(target=self._run, name="churn-scorer", daemon=True)
        self._thread.start()

    async def score(self, model: Champion, rows: Rows) -> Scores:
        future: asyncio.Future[Scores] = self._loop.create_future()
        if not self._arrived:
            self._loop.call_soon(self._hand_over)
        self._arrived.append((model, rows, future))
        return await future

    def _hand_over(self) -> None:
        """Queue what arrived during this turn of the event loop, all at once.

        Runs right after the callbacks already due (one more pass of the loop, microseconds, also
        for a lone request). Queuing each request as it arrives would wake the scoring thread, and
        hand it the GIL, once per request: it would then score batches of one or two while the
        loop still has requests in hand.
        """
        arrived, self._arrived = self._arrived, []
        for item in arrived:
            self._queue.put(item)
        if not self._refilled.is_set():  # a handshake is armed (after a long call)
            self._since_answer += len(arrived)
            if self._since_answer >= self._expected:
                self._refilled.set()

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        prepare_inference_thread(self._threads)
        carried: _Item | _Stop | None = None
        while True:
            first = carried if carried is not None else self._queue.get()
            carried = None
            if isinstance(first, _Stop):
                return
            batch = [first]
            model, rows_count = first[0], len(first[1])
            while rows_count < self._max_rows:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if (
                    isinstance(nxt, _Stop)
                    or nxt[0] is not model
                    or rows_count + len(nxt[1]) > self._max_rows
                ):
                    carried = nxt
                    break
                batch.append(nxt)
                rows_count += len(nxt[1])
            self._score(model, batch)

    def _score(self, model: Champion, batch: list[_Item]) -> None:
        futures = [future for _, _, future in batch]
        started = time.thread_time()  # this thread's CPU: a call waiting for the GIL is not long
        try:
            rows = batch[0][1] if len(batch) == 1 else np.concatenate([r for _, r, _ in batch])
            scores = model.predict(rows)
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
            self._loop.call_soon_threadsafe(_fail, futures, exc)
            return
        seconds = time.thread_time() - started
        bounds = np.cumsum([0, *(len(r) for _, r, _ in batch)]).tolist()
        long_call = seconds >= HANDSHAKE_MIN_SECONDS
        if long_call:
            self._refilled.clear()  # armed: _answer resets the counts, _hand_over sets it
        self._loop.call_soon_threadsafe(self._answer, futures, scores, bounds)
        if long_call:
            self._take_turns(seconds)

    def _answer(
        self, futures: list[asyncio.Future[Scores]], scores: Scores, bounds: list[int]
    ) -> None:
        """On the loop: resolve one call's requests and start counting the ones that follow."""
        _resolve(futures, scores, bounds)
        self._expected, self._since_answer = len(futures), 0
        if self._on_call is not None:
            self._on_call(bounds[-1])

    def _take_turns(self, seconds: float) -> None:
        """After a long call, let the loop take in the next requests before scoring again.

        A model that holds the GIL for most of a call (tree ensembles, DataFrame pipelines) starves
        the event loop of the same process: it gets the GIL back only at the interpreter's switch
        interval, parses a request or two, and the next call starts with what little was queued.
        So after a call that took more than :data:`HANDSHAKE_MIN_SECONDS` of this thread's CPU
        (not wall time: a short call that waited for the GIL is not long) the scoring thread waits
        (GIL released) until the loop has answered that call and queued as many new requests as
        it answered, or for half the call's duration (at most :data:`HANDSHAKE_MAX_SECONDS`),
        whichever comes first. An idle worker is never delayed: a request that arrives during the
        wait ends it. A fast model never waits, nor does the loop count for it (a handshake armed
        after every call cost the LR champion's 1000-row batches ~3-4 % of throughput).
        """
        self._refilled.wait(min(seconds / 2, HANDSHAKE_MAX_SECONDS))


def _resolve(futures: list[asyncio.Future[Scores]], scores: Scores, bounds: list[int]) -> None:
    for index, future in enumerate(futures):
        if not future.done():
            future.set_result(scores[bounds[index] : bounds[index + 1]])


def _fail(futures: list[asyncio.Future[Scores]], exc: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(exc)


class ThreadOffload:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, threads: int = 2, model_threads: int = 1
    ) -> None:
        self._loop = loop
        self._pool = ThreadPoolExecutor(
            threads,
            thread_name_prefix="churn-scorer",
            initializer=prepare_inference_thread,
            initargs=(model_threads,),
        )

    async def score(self, model: Champion, rows: Rows) -> Scores:
        return await self._loop.run_in_executor(self._pool, model.predict, rows)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
