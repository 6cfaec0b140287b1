"""Prometheus metrics, correct across granian's worker processes.

The metrics are ``prometheus_client`` objects in multiprocess mode whenever
``PROMETHEUS_MULTIPROC_DIR`` is set (``churn-api serve`` sets it, see :mod:`app.serve`; the
functions here get it as ``settings.metrics_dir``, prometheus_client reads the variable): each
worker writes its values to files in that directory and ``GET /metrics`` adds up the files of
every worker, live or dead, so counters never go backwards when a worker is replaced. Without the
variable (tests in one process) the default registry is served.

The request path never writes those files itself. A multiprocess observation takes a lock and
writes an mmap (1 to 3 µs each, several per request); instead :class:`Tally` counts in plain Python
numbers on the event loop (well under 1 µs per request) and :meth:`Tally.flush` adds the deltas to
the Prometheus values once a second, at shutdown, and before this worker answers a scrape. A scrape
therefore sees the other workers' traffic up to one flush interval late.
"""

from __future__ import annotations

import glob
import os
import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any, Final

import numpy as np
from litestar import Response, get
from litestar.handlers import HTTPRouteHandler
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from app.drift import DRIFT
from app.schemas import FEATURES, FieldError

FLUSH_SECONDS: Final = 1.0
# Text format 0.0.4 (CONTENT_TYPE_PLAIN_0_0_4), which every Prometheus reads; Litestar adds the
# charset to text media types itself.
_CONTENT_TYPE: Final = "text/plain; version=0.0.4"
UNMATCHED_ROUTE: Final = "unmatched"

LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
PROBABILITY_BUCKETS: Final = tuple(round(0.05 * i, 2) for i in range(1, 21))

REQUESTS: Final = Counter(
    "churn_http_requests_total",
    "HTTP requests answered, by route template, method and status code.",
    ["route", "method", "status"],
)
LATENCY: Final = Histogram(
    "churn_http_request_duration_seconds",
    "Time from the request reaching the app to the end of its response, by route template.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE: Final = Histogram(
    "churn_batch_size",
    "Instances per POST /predict/batch request that was scored.",
    buckets=BATCH_BUCKETS,
)
MODEL_CALL_ROWS: Final = Histogram(
    "churn_model_call_rows",
    "Rows per model call of the scoring thread: how many requests each micro-batch took in.",
    buckets=(*BATCH_BUCKETS, 2048),  # MAX_BATCH_ROWS' default
)
PREDICTIONS: Final = Counter(
    "churn_predictions_total",
    "Rows scored, by churn_label (true/false) at the threshold each request used.",
    ["label"],
)
PROBABILITY: Final = Histogram(
    "churn_probability",
    "Every churn_probability answered (raw model scores, for drift monitoring).",
    buckets=PROBABILITY_BUCKETS,
)
VALIDATION_FAILURES: Final = Counter(
    "churn_validation_failures_total",
    "Offending fields in 422 answers, by field (batch indexes dropped, unknown names as 'other').",
    ["field"],
)
MODEL_INFO: Final = Gauge(
    "churn_model_info",
    "Worker processes serving each model version (1 per live worker; 0 once swapped out).",
    ["name", "version", "alias"],
    multiprocess_mode="livesum",
)
MODEL_LOAD_SECONDS: Final = Gauge(
    "churn_model_load_seconds",
    "Seconds the worker took to load and check the model version it serves (slowest live worker).",
    ["version"],
    multiprocess_mode="livemax",
)
MODEL_RELOADS: Final = Counter(
    "churn_model_reloads_total",
    "Champion reload attempts that found a new version: swapped in, or failed (old model kept).",
    ["outcome"],
)
for _outcome in ("swapped", "failed"):  # both from 0, so increase() also sees the first failure
    MODEL_RELOADS.labels(_outcome)

_CALL_BUCKETS: Final = (*BATCH_BUCKETS, 2048)
_KNOWN_FIELDS: Final = frozenset({*FEATURES, "body", "query", "instances", "threshold"})
_BATCH_INDEX: Final = re.compile(r"^instances\[\d+\]\.")


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
        _add_histogram(histogram, self.counts, self.total)


class Tally:
    """Per-worker counts kept on the event loop and added to the Prometheus values by flush()."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, int], int] = {}
        self._latency: dict[str, _Buckets] = {}
        self._probability = _Buckets(PROBABILITY_BUCKETS)
        self._labels = [0, 0]  # false, true
        self._batches = _Buckets(BATCH_BUCKETS)
        self._calls = _Buckets(_CALL_BUCKETS)

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
        self._calls.observe(_CALL_BUCKETS, rows)

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
        calls, self._calls = self._calls, _Buckets(_CALL_BUCKETS)
        if any(calls.counts):
            calls.flush_into(MODEL_CALL_ROWS)
        (negative, positive), self._labels = self._labels, [0, 0]
        if negative:
            PREDICTIONS.labels("false").inc(negative)
        if positive:
            PREDICTIONS.labels("true").inc(positive)
        DRIFT.flush()


def _add_histogram(histogram: Histogram, counts: Sequence[int], total: float) -> None:
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


def validation_failed(errors: Iterable[FieldError]) -> None:
    """Count the fields named by a 422 answer (error path only: written directly)."""
    for error in errors:
        VALIDATION_FAILURES.labels(field_label(error.field)).inc()


def field_label(field: str) -> str:
    """A bounded label for a field path: ``instances[3].total_charges`` -> ``total_charges``."""
    name = _BATCH_INDEX.sub("", field)
    return name if name in _KNOWN_FIELDS else "other"


def model_loaded(name: str, version: str, alias: str, load_seconds: float) -> None:
    MODEL_INFO.labels(name, version, alias).set(1)
    MODEL_LOAD_SECONDS.labels(version).set(load_seconds)


def model_unloaded(name: str, version: str, alias: str) -> None:
    MODEL_INFO.labels(name, version, alias).set(0)
    MODEL_LOAD_SECONDS.labels(version).set(0)


def reload_outcome(outcome: str) -> None:
    MODEL_RELOADS.labels(outcome).inc()


def render(path: str | None) -> bytes:
    """The exposition text: every worker's files in ``path`` (multiprocess mode), else this
    process's metrics."""
    if path is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def forget_dead_workers(path: str | None) -> list[int]:
    """Drop the live-gauge files of worker processes that no longer exist.

    A worker that stops gracefully does this for itself (:func:`worker_stopped`); one that was
    killed cannot, so every worker calls this when it starts (granian respawns a killed worker, and
    the new one cleans up after it). Counter and histogram files of dead workers stay: their counts
    are part of the totals.
    """
    if path is None:
        return []
    dead = []
    for pid in sorted(_pids(glob.glob(os.path.join(path, "gauge_live*_*.db")))):
        if pid != os.getpid() and not _alive(pid):
            multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
            dead.append(pid)
    return dead


def worker_stopped(path: str | None) -> None:
    if path is not None:
        multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]


def _pids(files: Iterable[str]) -> set[int]:
    pids = set()
    for name in files:
        stem = os.path.basename(name).removesuffix(".db")
        _, _, pid = stem.rpartition("_")
        if pid.isdigit():
            pids.add(int(pid))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


TALLY: Final = Tally()
"""The worker's tally (metrics are process-global in prometheus_client too)."""


def metrics_endpoint(path: str | None) -> HTTPRouteHandler:
    """``GET /metrics``: Prometheus exposition of every worker's metrics (files in ``path``)."""

    @get("/metrics", include_in_schema=False, sync_to_thread=False)
    def metrics() -> Response[bytes]:
        TALLY.flush()
        return Response(render(path), media_type=_CONTENT_TYPE)

    return metrics
