"""The ``linear`` path: a StandardScaler + binary LogisticRegression pipeline, element-wise.

scikit-learn spends ~165 µs per ``predict_proba`` call on checks and dispatch around a few µs of
arithmetic. For the pipeline :mod:`app.train` fits, P(churn) is
``expit(intercept_ + sum_j (x_j - mean_j) / scale_j * coef_j)``, taken here directly. Every step
is element-wise with a fixed order per row (no matrix product, whose BLAS kernel may sum
differently for 1 row and for many), so a row gets the same bits alone or in any micro-batch.
It serves only once :func:`app.scoring.proven` holds for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from app.arrays import Rows, Scores
from app.schemas import FEATURES


def linear_path(
    estimator: Any, numpy_path: Callable[[Rows], Scores]
) -> Callable[[Rows], Scores] | None:
    """The element-wise path of a two-step scaler + logistic regression pipeline, or None."""
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

    return predict
