"""Prometheus metrics: what the service exposes, correct across granian's worker processes.

The metrics are ``prometheus_client`` objects in multiprocess mode whenever
``PROMETHEUS_MULTIPROC_DIR`` is set (``churn-api serve`` sets it, see :mod:`app.serve`): each
worker writes its values to files in that directory and ``GET /metrics`` adds up the files of
every worker, live or dead (:mod:`app.metrics_dir`), so counters never go backwards when a worker
is replaced. Without the variable (tests in one process) the default registry is served.

This module declares them. The request path never writes them itself: it counts in
:data:`app.tally.TALLY`, which adds its counts here once a second (a multiprocess observation
takes a lock and writes an mmap, 1 to 3 µs, several per request).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from app.schemas import FEATURES, FieldError

UNMATCHED_ROUTE: Final = "unmatched"

LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CALL_BUCKETS: Final = (*BATCH_BUCKETS, 2048)  # MAX_BATCH_ROWS' default
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
    buckets=CALL_BUCKETS,
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

_KNOWN_FIELDS: Final = frozenset({*FEATURES, "body", "query", "instances", "threshold"})
_BATCH_INDEX: Final = re.compile(r"^instances\[\d+\]\.")


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
