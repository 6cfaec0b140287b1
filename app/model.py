"""The champion model behind a seam: load it from the registry, guard it, and score rows.

The web layer only sees :class:`Champion` (``predict`` on a float64 array of rows in contract
order, plus the registry facts). Everything MLflow- and scikit-learn-specific lives here.
"""

from __future__ import annotations

import copy
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from app import drift
from app.errors import StartupError
from app.profile import Profile
from app.schemas import FEATURES
from app.settings import Settings

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

# Without these MLflow's HTTP client retries an unreachable registry for minutes; the contract
# wants a failed start within 30 seconds. An operator's own values win.
_MLFLOW_HTTP_DEFAULTS: Final = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}


@dataclass(frozen=True)
class Champion:
    """A loaded, checked model and the registry facts about it."""

    name: str
    version: str
    alias: str
    run_id: str
    predict: Callable[[Rows], Scores] = field(repr=False)
    """P(churn) for each row of a float64 array whose columns are :data:`FEATURES`."""
    fast_path: bool = True
    load_seconds: float = 0.0
    profile: Profile | None = field(default=None, repr=False)
    """The version's reference profile (app.profile); None: no drift metrics."""


def load_champion(settings: Settings) -> Champion:
    """Resolve ``MODEL_NAME@MODEL_ALIAS`` in the registry and load that exact version."""
    started = time.perf_counter()
    for name, value in _MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    import mlflow.sklearn
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = settings.tracking_uri
    where = f"{settings.model_name}@{settings.model_alias} from {_redact(uri)}"
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        version = client.get_model_version_by_alias(settings.model_name, settings.model_alias)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        estimator = mlflow.sklearn.load_model(f"models:/{settings.model_name}/{version.version}")
    except (MlflowException, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StartupError(f"cannot load {where}: {reason}") from exc
    champion = registered_champion(estimator, settings, version, started)
    return replace(champion, profile=drift.attach(settings, champion.run_id, champion.version))


def registered_champion(
    estimator: Any, settings: Settings, version: Any, started: float
) -> Champion:
    """A registry version's estimator, checked, with the facts the service reports about it.

    ``version`` is MLflow's ``ModelVersion``; ``started`` the ``perf_counter`` when loading began.
    """
    return champion_from_estimator(
        estimator,
        name=settings.model_name,
        version=str(version.version),
        alias=settings.model_alias,
        run_id=str(version.run_id or ""),
        load_seconds=time.perf_counter() - started,
    )


def champion_from_estimator(
    estimator: Any,
    *,
    name: str,
    version: str,
    alias: str,
    run_id: str,
    load_seconds: float = 0.0,
) -> Champion:
    """Check a fitted classifier against the contract and pick its fastest exact scoring path."""
    check_estimator(estimator, f"{name} version {version}")
    reference = _predict_frame(estimator)(_probe_rows())
    fast = _numpy_path(estimator, reference)
    fast = _linear_path(estimator, fast) or fast
    if fast is None:
        log.warning("model %s v%s needs a DataFrame per call (slower path)", name, version)
    return Champion(
        name=name,
        version=version,
        alias=alias,
        run_id=run_id,
        predict=fast or _predict_frame(estimator),
        fast_path=fast is not None,
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


def prepare_inference_thread() -> None:
    """Per-thread scikit-learn settings for the scoring threads.

    Every row reaching the model is finite and in range (the decoders guarantee it), so the
    per-call finiteness scan and parameter validation are skipped. The setting is thread-local.
    """
    import sklearn

    sklearn.set_config(assume_finite=True, skip_parameter_validation=True)


def _probe_rows() -> Rows:
    return np.array(_PROBE_ROWS, dtype=np.float64)


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


def _numpy_path(estimator: Any, reference: Scores) -> Callable[[Rows], Scores] | None:
    """A copy that takes a plain array, if it scores the probe rows exactly like the original.

    The feature names were checked above; the copy forgets them so scikit-learn does not warn on
    every array. A model that really needs names (say, a ColumnTransformer selecting columns by
    name) fails the probe and keeps the DataFrame path.
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
            got = predict(_probe_rows())
    except Exception:  # noqa: BLE001 - any failure just means "use the DataFrame path"
        return None
    # Same numbers up to summation order (BLAS sees a C- instead of an F-ordered array).
    return predict if np.allclose(got, reference, rtol=0, atol=1e-12) else None


def _linear_path(
    estimator: Any, numpy_path: Callable[[Rows], Scores] | None
) -> Callable[[Rows], Scores] | None:
    """A StandardScaler + binary LogisticRegression pipeline as a few element-wise operations.

    scikit-learn spends ~165 µs per ``predict_proba`` call on checks and dispatch around a few µs
    of arithmetic. For the pipeline :mod:`app.train` fits, P(churn) is
    ``expit(intercept_ + sum_j (x_j - mean_j) / scale_j * coef_j)``, taken here directly. Every
    step is element-wise with a fixed order per row (no matrix product, whose BLAS kernel may sum
    differently for 1 row and for many), so a row gets the same bits alone or in any micro-batch.
    The path is used only if it matches scikit-learn's own numpy path (to 1e-12, like that path
    matches the DataFrame) on the probe rows and random contract-valid rows, and gives each row
    the same bits alone as in one call; any other model keeps the path chosen above.
    """
    from scipy.special import expit  # type: ignore[import-untyped]
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if numpy_path is None or type(estimator) is not Pipeline or len(estimator.steps) != 2:
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

    rows = np.concatenate([_probe_rows(), _random_rows(4096)])
    together = predict(rows)
    sample = range(0, len(rows), 16)
    alone = np.concatenate([predict(rows[i : i + 1]) for i in sample])
    close = np.allclose(together, numpy_path(rows), rtol=0, atol=1e-12)
    return predict if close and np.array_equal(together[sample], alone) else None


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


def _redact(uri: str) -> str:
    """A tracking URI without credentials, for log lines."""
    scheme, sep, rest = uri.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri
