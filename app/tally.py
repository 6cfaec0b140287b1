"""The pre-aggregation tally: per-request counts kept in plain Python numbers, flushed in bulk.

A multiprocess ``prometheus_client`` observation takes a lock and writes an mmap (1 to 3 µs each,
several per request). Instead :class:`Tally` counts on the event loop (well under 1 µs per
request) and :meth:`Tally.flush` adds the deltas to the metrics of :mod:`app.metrics` once every
:data:`FLUSH_SECONDS`, at shutdown, and before this worker answers a scrape. A scrape therefore
sees the other workers' traffic up to one flush interval late.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from prometheus_client import Histogram

from app.drift import DRIFT
from app.metrics import (
    BATCH_BUCKETS,
    BATCH_SIZE,
    CALL_BUCKETS,
    LATENCY,
    LATENCY_BUCKETS,
    MODEL_CALL_ROWS,
    PREDICTIONS,
    PROBABILITY,
    PROBABILITY_BUCKETS,
    REQUESTS,
)

FLUSH_SECONDS: Final = 1.0


class _Buckets:
    """Observations of one histogram child not yet flushed: per-bucket counts (+Inf last), sum."""

    __slots__ = ("counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, bounds: Sequence[float], value: float) -> None:
        self.counts[bisect_left(bounds, value)] += 1
        self.total += value

    def flush_into(self, histogram: Histogram) -> None:
        add_histogram(histogram, self.counts, self.total)


class Tally:
    """Per-worker counts kept on the event loop and added to the Prometheus values by flush()."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, int], int] = {}
        self._latency: dict[str, _Buckets] = {}
        self._probability = _Buckets(PROBABILITY_BUCKETS)
        self._labels = [0, 0]  # false, true
        self._batches = _Buckets(BATCH_BUCKETS)
        self._calls = _Buckets(CALL_BUCKETS)

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        requests = self._requests
        requests[key] = requests.get(key, 0) + 1
        latency = self._latency.get(route)
        if latency is None:
            latency = self._latency[route] = _Buckets(LATENCY_BUCKETS)
        latency.observe(LATENCY_BUCKETS, seconds)

    def predictions(self, scores: np.ndarray[Any, Any], labels: list[bool]) -> None:
        """Record one request's scores (unrounded) and the labels it answered."""
        positive = labels.count(True)
        self._labels[1] += positive
        self._labels[0] += len(labels) - positive
        if len(scores) == 1:
            self._probability.observe(PROBABILITY_BUCKETS, float(scores[0]))
            return
        indexes = np.searchsorted(PROBABILITY_BUCKETS, scores, side="left")
        counts = np.bincount(indexes, minlength=len(PROBABILITY_BUCKETS) + 1).tolist()
        bucket_counts = self._probability.counts
        for index, count in enumerate(counts):
            bucket_counts[index] += count
        self._probability.total += float(scores.sum())

    def batch(self, size: int) -> None:
        self._batches.observe(BATCH_BUCKETS, size)

    def model_call(self, rows: int) -> None:
        """One model call of the scoring thread scored ``rows`` rows."""
        self._calls.observe(CALL_BUCKETS, rows)

    def flush(self) -> None:
        """Add everything counted since the last flush to the Prometheus values."""
        requests, self._requests = self._requests, {}
        for (route, method, status), count in requests.items():
            REQUESTS.labels(route, method, str(status)).inc(count)
        latency, self._latency = self._latency, {}
        for route, buckets in latency.items():
            buckets.flush_into(LATENCY.labels(route))
        probability, self._probability = self._probability, _Buckets(PROBABILITY_BUCKETS)
        if any(probability.counts):
            probability.flush_into(PROBABILITY)
        batches, self._batches = self._batches, _Buckets(BATCH_BUCKETS)
        if any(batches.counts):
            batches.flush_into(BATCH_SIZE)
        calls, self._calls = self._calls, _Buckets(CALL_BUCKETS)
        if any(calls.counts):
            calls.flush_into(MODEL_CALL_ROWS)
        (negative, positive), self._labels = self._labels, [0, 0]
        if negative:
            PREDICTIONS.labels("false").inc(negative)
        if positive:
            PREDICTIONS.labels("true").inc(positive)
        DRIFT.flush()


def add_histogram(histogram: Histogram, counts: Sequence[int], total: float) -> None:
    """Add many observations at once: ``counts[i]`` of them fell in bucket ``i``, summing ``total``.

    ``Histogram.observe`` adds one observation to the first bucket whose bound is not below it and
    to the sum (prometheus_client keeps non-cumulative bucket counts, +Inf last, and accumulates
    them when collecting); this makes the same additions for many observations at once. There is
    no public bulk API; tests/test_metrics.py pins that both give the same exposition.
    """
    buckets = histogram._buckets
    if len(buckets) != len(counts):
        raise ValueError(f"{len(counts)} bucket counts for {len(buckets)} buckets")
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)
    histogram._sum.inc(total)


TALLY: Final = Tally()
"""The worker's tally (metrics are process-global in prometheus_client too)."""
