"""The ``numpy`` path: a copy of the model that takes a plain float64 array in contract order.

Building a DataFrame per call costs ~0.3 ms or more; most fitted models answer the same on the
array its columns hold. The copy forgets the feature names (checked against the contract before),
and a ColumnTransformer's columns chosen by name are chosen by position instead. It serves only
once :func:`app.scoring.proven` holds for it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from app.arrays import Rows, Scores


def numpy_path(estimator: Any) -> Callable[[Rows], Scores]:
    """A copy that takes a plain array (to be proven equal to the DataFrame path).

    The feature names were checked before; the copy forgets them so scikit-learn does not warn on
    every array, and a ColumnTransformer's columns chosen by name are chosen by position instead.
    A model that still needs a DataFrame fails the proof and keeps the DataFrame path.
    """
    fast = copy.deepcopy(estimator)
    for part in [fast, *(step for _, step in getattr(fast, "steps", []))]:
        _select_by_position(part)
        if "feature_names_in_" in vars(part):
            delattr(part, "feature_names_in_")

    def predict(rows: Rows) -> Scores:
        return np.asarray(fast.predict_proba(rows)[:, 1], dtype=np.float64)

    return predict


def _select_by_position(part: Any) -> None:
    """A fitted ColumnTransformer's by-name column lists, as positions in the contract's order."""
    from sklearn.compose import ColumnTransformer

    if type(part) is not ColumnTransformer or getattr(part, "feature_names_in_", None) is None:
        return
    where = {str(name): index for index, name in enumerate(part.feature_names_in_)}
    fitted = []
    for name, transformer, columns in part.transformers_:
        if isinstance(columns, list) and all(isinstance(c, str) for c in columns):
            columns = [where[c] for c in columns]
        elif isinstance(columns, str) and columns in where:
            columns = [where[columns]]
        fitted.append((name, transformer, columns))
    part.transformers_ = fitted
    for _, transformer, _ in fitted:
        if hasattr(transformer, "feature_names_in_") and "feature_names_in_" in vars(transformer):
            delattr(transformer, "feature_names_in_")
