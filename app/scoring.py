"""Scoring paths of a champion, each proven equal to the model's own ``predict_proba`` at load.

The reference is ``predict_proba`` on a DataFrame in contract order (what the model was fitted on):
:func:`dataframe_path`. Faster paths, tried in order by :func:`fastest_proven`:

* ``numpy``: a copy of the model that takes a plain float64 array (feature names forgotten; a
  ColumnTransformer's by-name column selections rewritten to the same columns by position);
* ``forest``: a RandomForest / ExtraTrees classifier walked as flat arrays, all trees at once,
  for the small calls of single requests (scikit-learn's own per-tree loop costs ~12 ms per call
  for 200 trees whatever the rows); large calls go to the ``numpy`` path;
* ``linear``: the StandardScaler + LogisticRegression pipeline as a few element-wise operations.

A path serves only if :func:`proven` holds: equal to the reference to :data:`TOLERANCE` on the
probe rows and :data:`PROOF_ROWS` seeded contract-valid rows, scored all at once and a sample one
at a time. Otherwise the next slower path serves; the DataFrame path always can.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any, Final

import numpy as np

from app.arrays import Rows, Scores
from app.schemas import FEATURES

# Contract-valid rows at the edges of the contract, scored by every proof.
_PROBE_ROWS: Final = (
    (0, 20.0, 0.0, 0, True),
    (1, 99.5, 99.5, 4, True),
    (12, 79.5, 954.0, 3, True),
    (24, 55.25, 1326.0, 0, False),
    (60, 110.0, 6600.0, 1, False),
    (72, 18.25, 1314.0, 9, True),
    (600, 9999.0, 5_999_400.0, 1000, False),
)


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


def proven(predict: Callable[[Rows], Scores], rows: Rows, reference: Scores) -> bool:
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


def dataframe_path(estimator: Any) -> Callable[[Rows], Scores]:
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

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return predict if proven(predict, rows, reference) else None
    except Exception:  # noqa: BLE001 - any failure just means "use the DataFrame path"
        return None


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


def _linear_path(estimator: Any, rows: Rows, reference: Scores) -> Callable[[Rows], Scores] | None:
    """A StandardScaler + binary LogisticRegression pipeline as a few element-wise operations.

    scikit-learn spends ~165 µs per ``predict_proba`` call on checks and dispatch around a few µs
    of arithmetic. For the pipeline :mod:`app.train` fits, P(churn) is
    ``expit(intercept_ + sum_j (x_j - mean_j) / scale_j * coef_j)``, taken here directly. Every
    step is element-wise with a fixed order per row (no matrix product, whose BLAS kernel may sum
    differently for 1 row and for many), so a row gets the same bits alone or in any micro-batch.
    The path is used only if it is proven equal to the DataFrame path (:func:`proven`) and gives
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
    equal = proven(predict, rows, reference)
    return predict if equal and np.array_equal(together[sample], alone) else None


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


FOREST_MAX_ROWS: Final = 64
"""Calls with more rows go from the ``forest`` path to the ``numpy`` one (faster for them)."""


def _forest_path(
    estimator: Any, numpy_path: Callable[[Rows], Scores], rows: Rows, reference: Scores
) -> Callable[[Rows], Scores] | None:
    """A RandomForest or ExtraTrees classifier walked as flat arrays, every tree at once.

    scikit-learn scores each tree in turn (Python and a GIL-holding loop per tree); here the trees'
    nodes are concatenated into flat arrays and all (tree, row) pairs step down one level per
    numpy operation, leaves pointing at themselves. The comparison is scikit-learn's own: the
    feature as float32 (trees are fitted and applied on float32 features) against the float64
    threshold, ``<=`` going left; each leaf's class-1 fraction is averaged over the trees.
    """
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    if type(estimator) not in (RandomForestClassifier, ExtraTreesClassifier):
        return None
    trees = [tree.tree_ for tree in estimator.estimators_]
    sizes = [tree.node_count for tree in trees]
    offsets = np.cumsum([0, *sizes[:-1]])
    left, right, feature, threshold, leaf_share = [], [], [], [], []
    for tree, offset in zip(trees, offsets, strict=True):
        nodes = np.arange(tree.node_count)
        leaf = tree.children_left == -1
        left.append(np.where(leaf, nodes, tree.children_left) + offset)
        right.append(np.where(leaf, nodes, tree.children_right) + offset)
        feature.append(np.where(leaf, 0, tree.feature))
        threshold.append(np.where(leaf, np.inf, tree.threshold))
        value = tree.value[:, 0, :]
        leaf_share.append(value[:, 1] / value.sum(axis=1))
    lefts, rights = np.concatenate(left), np.concatenate(right)
    features, thresholds = np.concatenate(feature), np.concatenate(threshold)
    shares = np.concatenate(leaf_share)
    roots = offsets.astype(np.intp)[:, None]
    depth = max(tree.max_depth for tree in trees)
    columns = rows.shape[1]

    def walk(rows: Rows) -> Scores:
        x = rows.astype(np.float32).astype(np.float64).ravel()
        base = np.arange(len(rows)) * columns
        node = np.repeat(roots, len(rows), axis=1)
        for _ in range(depth):
            node = np.where(x[base + features[node]] <= thresholds[node], lefts[node], rights[node])
        return np.asarray(shares[node].mean(axis=0), dtype=np.float64)

    def predict(rows: Rows) -> Scores:
        return walk(rows) if len(rows) <= FOREST_MAX_ROWS else numpy_path(rows)

    small = rows[: FOREST_MAX_ROWS * 16]
    return predict if proven(walk, small, reference[: len(small)]) else None


def fastest_proven(
    estimator: Any, already: str | None = None
) -> tuple[Callable[[Rows], Scores], str]:
    """The fastest path proven equal to the DataFrame path, and its name.

    ``already``: the name of the path a check of this same object proved before (then only the
    probe rows are checked again, see :func:`app.model.champion_from_estimator`).
    """
    frame = dataframe_path(estimator)
    rows = _probe_rows() if already else proof_rows()
    reference = frame(rows)
    if already == "dataframe":
        return frame, "dataframe"
    numpy_path = _numpy_path(estimator, rows, reference)
    if numpy_path is None:
        return frame, "dataframe"
    if already in (None, "linear"):
        linear = _linear_path(estimator, rows, reference)
        if linear is not None:
            return linear, "linear"
    if already in (None, "forest"):
        forest = _forest_path(estimator, numpy_path, rows, reference)
        if forest is not None:
            return forest, "forest"
    return numpy_path, "numpy"
