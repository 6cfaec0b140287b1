"""The champion model behind a seam: load it from the registry, guard it, and score rows.

The web layer only sees :class:`Champion` (``predict`` on a float64 array of rows in contract
order, plus the registry facts). Everything MLflow- and scikit-learn-specific lives here.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from app.errors import StartupError
from app.schemas import FEATURES

log = logging.getLogger("churn_api")

Rows = npt.NDArray[np.float64]
Scores = npt.NDArray[np.float64]

# Contract-valid rows used once at load to check that the fast numpy path gives exactly the same
# probabilities as the DataFrame the model was fitted on.
_PROBE_ROWS: Final = (
    (0, 20.0, 0.0, 0, True),
    (1, 99.5, 99.5, 4, True),
    (12, 79.5, 954.0, 3, True),
    (24, 55.25, 1326.0, 0, False),
    (60, 110.0, 6600.0, 1, False),
    (72, 18.25, 1314.0, 9, True),
    (600, 9999.0, 5_999_400.0, 1000, False),
)


@dataclass(frozen=True)
class Champion:
    """A loaded, checked model and the registry facts about it."""

    name: str
    version: str
    alias: str
    run_id: str
    predict: Callable[[Rows], Scores] = field(repr=False)
    """P(churn) for each row of a float64 array whose columns are :data:`FEATURES`."""
    scoring: str = "numpy"
    """Which path :attr:`predict` takes: ``linear``, ``numpy`` or ``dataframe`` (see below)."""
    load_seconds: float = 0.0

    def with_load_seconds(self, seconds: float) -> Champion:
        return replace(self, load_seconds=seconds)


def champion_from_estimator(
    estimator: Any,
    *,
    name: str,
    version: str,
    alias: str,
    run_id: str,
    load_seconds: float = 0.0,
    proven: str | None = None,
) -> Champion:
    """Check a fitted classifier against the contract and pick its fastest exact scoring path.

    The reference is the model's own ``predict_proba`` on a DataFrame in contract order (what it
    was fitted on). A faster path serves only if it is proven equal to it at load, to
    :data:`TOLERANCE`, on the probe rows and thousands of contract-valid rows, scored all at once
    and one at a time; otherwise the DataFrame path serves. ``proven`` names the path a check of
    this same estimator object already proved (``churn-api serve`` proves it once per server,
    before forking the workers): then the probe rows alone are checked again.
    """
    check_estimator(estimator, f"{name} version {version}")
    frame = _predict_frame(estimator)
    rows = _probe_rows() if proven else proof_rows()
    reference = frame(rows)
    predict, scoring = frame, "dataframe"
    numpy_path = None if proven == "dataframe" else _numpy_path(estimator, rows, reference)
    if numpy_path is not None:
        predict, scoring = numpy_path, "numpy"
        linear = None if proven == "numpy" else _linear_path(estimator, rows, reference)
        if linear is not None:
            predict, scoring = linear, "linear"
    if scoring == "dataframe":
        log.warning("model %s v%s needs a DataFrame per call (slower path)", name, version)
    return Champion(
        name=name,
        version=version,
        alias=alias,
        run_id=run_id,
        predict=predict,
        scoring=scoring,
        load_seconds=load_seconds,
    )


def check_estimator(estimator: Any, what: str) -> None:
    """Refuse a model whose feature names, or whose classes, do not match the contract."""
    if not callable(getattr(estimator, "predict_proba", None)):
        raise StartupError(f"{what} has no predict_proba")
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None and tuple(str(n) for n in names) != FEATURES:
        raise StartupError(
            f"{what} was fitted on features {list(names)}, the contract requires {list(FEATURES)}"
        )
    classes = getattr(estimator, "classes_", None)
    if classes is not None and len(classes) != 2:
        raise StartupError(f"{what} is not a binary classifier (classes {list(classes)})")


def prepare_inference_thread(threads: int = 1) -> None:
    """Per-thread settings for a scoring thread.

    Every row reaching the model is finite and in range (the decoders guarantee it), so
    scikit-learn's per-call finiteness scan and parameter validation are skipped (thread-local).
    The model's native thread pools (OpenMP, BLAS) get ``threads`` threads (MODEL_THREADS): with
    one worker per CPU, more only oversubscribes the CPUs.
    """
    import sklearn
    from threadpoolctl import threadpool_limits

    sklearn.set_config(assume_finite=True, skip_parameter_validation=True)
    threadpool_limits(limits=threads)


TOLERANCE: Final = 1e-9
"""Largest difference from the model's own ``predict_proba`` a faster path may show at load."""
PROOF_ROWS: Final = 4096
ALONE_ROWS: Final = 32
"""Of the proof rows, about this many are also scored one by one (a forest takes ~12 ms a call)."""


def _probe_rows() -> Rows:
    return np.array(_PROBE_ROWS, dtype=np.float64)


def proof_rows() -> Rows:
    """The probe rows and :data:`PROOF_ROWS` seeded contract-valid rows: what a path must match."""
    return np.concatenate([_probe_rows(), _random_rows(PROOF_ROWS)])


def _proven(predict: Callable[[Rows], Scores], rows: Rows, reference: Scores) -> bool:
    """``predict`` matches the reference on ``rows`` scored together, and on a sample one by one."""
    together = predict(rows)
    if together.shape != reference.shape:
        return False
    sample = range(0, len(rows), max(1, len(rows) // ALONE_ROWS))
    alone = np.concatenate([predict(rows[i : i + 1]) for i in sample])
    return bool(
        np.allclose(together, reference, rtol=0, atol=TOLERANCE)
        and np.allclose(alone, reference[sample], rtol=0, atol=TOLERANCE)
    )


def _predict_frame(estimator: Any) -> Callable[[Rows], Scores]:
    """The general path: a DataFrame with the contract's column names and dtypes."""
    import pandas as pd

    def predict(rows: Rows) -> Scores:
        frame = pd.DataFrame(
            {
                "tenure_months": rows[:, 0].astype(np.int64),
                "monthly_charges": rows[:, 1],
                "total_charges": rows[:, 2],
                "num_support_tickets": rows[:, 3].astype(np.int64),
                "is_month_to_month": rows[:, 4].astype(bool),
            }
        )
        return np.asarray(estimator.predict_proba(frame)[:, 1], dtype=np.float64)

    return predict


def _numpy_path(estimator: Any, rows: Rows, reference: Scores) -> Callable[[Rows], Scores] | None:
    """A copy that takes a plain array, if it is proven equal to the DataFrame path.

    The feature names were checked above; the copy forgets them so scikit-learn does not warn on
    every array. A model that really needs names (say, a ColumnTransformer selecting columns by
    name) fails here and keeps the DataFrame path.
    """
    fast = copy.deepcopy(estimator)
    for part in [fast, *(step for _, step in getattr(fast, "steps", []))]:
        if "feature_names_in_" in vars(part):
            delattr(part, "feature_names_in_")

    def predict(rows: Rows) -> Scores:
        return np.asarray(fast.predict_proba(rows)[:, 1], dtype=np.float64)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return predict if _proven(predict, rows, reference) else None
    except Exception:  # noqa: BLE001 - any failure just means "use the DataFrame path"
        return None


def _linear_path(estimator: Any, rows: Rows, reference: Scores) -> Callable[[Rows], Scores] | None:
    """A StandardScaler + binary LogisticRegression pipeline as a few element-wise operations.

    scikit-learn spends ~165 µs per ``predict_proba`` call on checks and dispatch around a few µs
    of arithmetic. For the pipeline :mod:`app.train` fits, P(churn) is
    ``expit(intercept_ + sum_j (x_j - mean_j) / scale_j * coef_j)``, taken here directly. Every
    step is element-wise with a fixed order per row (no matrix product, whose BLAS kernel may sum
    differently for 1 row and for many), so a row gets the same bits alone or in any micro-batch.
    The path is used only if it is proven equal to the DataFrame path (:func:`_proven`) and gives
    each row the same bits alone as in one call; any other model keeps the path chosen above.
    """
    from scipy.special import expit  # type: ignore[import-untyped]
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if type(estimator) is not Pipeline or len(estimator.steps) != 2:
        return None
    scaler, classifier = (step for _, step in estimator.steps)
    if (
        type(scaler) is not StandardScaler
        or type(classifier) is not LogisticRegression
        or getattr(scaler, "mean_", None) is None
        or getattr(scaler, "scale_", None) is None
        or len(classifier.classes_) != 2
        or classifier.coef_.shape != (1, len(FEATURES))
    ):
        return None
    mean = np.asarray(scaler.mean_, dtype=np.float64)
    scale = np.asarray(scaler.scale_, dtype=np.float64)
    coef = [float(c) for c in classifier.coef_[0]]
    intercept = float(classifier.intercept_[0])

    def predict(rows: Rows) -> Scores:
        scaled = (rows - mean) / scale
        logit = np.full(len(rows), intercept)
        for column, weight in enumerate(coef):
            logit += scaled[:, column] * weight
        return np.asarray(expit(logit), dtype=np.float64)

    together = predict(rows)
    sample = range(0, len(rows), 16)
    alone = np.concatenate([predict(rows[i : i + 1]) for i in sample])
    proven = _proven(predict, rows, reference)
    return predict if proven and np.array_equal(together[sample], alone) else None


def _random_rows(count: int) -> Rows:
    """Contract-valid rows spread over the whole range of every feature (seeded)."""
    rng = np.random.default_rng(20261125)
    tenure = rng.integers(0, 601, count).astype(np.float64)
    monthly = rng.uniform(0.01, 9999.99, count)
    total = np.where(tenure > 0, monthly * tenure * rng.uniform(1.0, 1.5, count), 0.0)
    total = np.minimum(total, 6_000_000.0)
    monthly = np.where(tenure > 0, np.minimum(monthly, total), monthly)
    tickets = rng.integers(0, 1001, count).astype(np.float64)
    month_to_month = rng.integers(0, 2, count).astype(np.float64)
    return np.column_stack([tenure, monthly, total, tickets, month_to_month])
