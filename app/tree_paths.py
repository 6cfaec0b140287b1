"""Tree ensembles walked as flat arrays, every tree at once: the ``forest`` and ``boosting`` paths.

scikit-learn scores a RandomForest's or a GradientBoosting model's trees one after another (Python
and a GIL-holding loop per tree, ~12 ms a call for 200 forest trees whatever the rows). Here the
trees' nodes are concatenated into flat arrays, and all (tree, row) pairs step down one level per
numpy operation, leaves pointing at themselves. The comparison is scikit-learn's own: the feature
as float32 (trees are fitted and applied on float32 features) against the float64 threshold,
``<=`` going left. Calls of more than :data:`TREE_MAX_ROWS` rows go to the ``numpy`` path (faster
for them). Each path serves only once :func:`app.scoring.proven` holds for it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np

from app.arrays import Rows, Scores

TREE_MAX_ROWS: Final = 64
"""Calls with more rows go from a tree path to the ``numpy`` one."""

Predict = Callable[[Rows], Scores]


def forest_path(estimator: Any, numpy_path: Predict) -> Predict | None:
    """A RandomForest or ExtraTrees classifier: each leaf's class-1 share, averaged over trees."""
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    if type(estimator) not in (RandomForestClassifier, ExtraTreesClassifier):
        return None
    trees = [tree.tree_ for tree in estimator.estimators_]
    leaves = _leaf_finder(trees)
    shares = np.concatenate([t.value[:, 0, 1] / t.value[:, 0, :].sum(axis=1) for t in trees])

    def walk(rows: Rows) -> Scores:
        return np.asarray(shares[leaves(rows)].mean(axis=0), dtype=np.float64)

    return _small_calls(walk, numpy_path)


def boosting_path(estimator: Any, numpy_path: Predict) -> Predict | None:
    """A binary GradientBoostingClassifier: its constant initial raw score plus the learning rate
    times each tree's leaf value, through the loss's link (``log_loss``: the logistic function)."""
    from scipy.special import expit  # type: ignore[import-untyped]
    from sklearn.ensemble import GradientBoostingClassifier

    if type(estimator) is not GradientBoostingClassifier or estimator.estimators_.shape[1] != 1:
        return None
    link = {"log_loss": 1.0, "exponential": 2.0}.get(estimator.loss)
    if link is None:
        return None
    trees = [stage[0].tree_ for stage in estimator.estimators_]
    leaves = _leaf_finder(trees)
    values = np.concatenate([tree.value[:, 0, 0] for tree in trees]) * estimator.learning_rate

    def raw(rows: Rows) -> Scores:
        return np.asarray(values[leaves(rows)].sum(axis=0), dtype=np.float64)

    base: list[float] = []  # the initial raw score, taken at the first call (not at build)

    def walk(rows: Rows) -> Scores:
        if not base:
            base.append(_initial_raw_score(estimator, raw))
        return np.asarray(expit(link * (base[0] + raw(rows))), dtype=np.float64)

    return _small_calls(walk, numpy_path)


def _initial_raw_score(estimator: Any, raw: Predict) -> float:
    """The model's raw score less its trees' sum, the same for every row (else NaN: the proof
    then fails, as the initial estimator's score depends on the row)."""
    probe = np.array([[12, 79.5, 954.0, 3, 1], [60, 110.0, 6600.0, 1, 0]], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an array has no column names; the values are the same
        initial = np.ravel(estimator.decision_function(probe)) - raw(probe)
    same = np.allclose(initial, initial[0], rtol=0, atol=1e-12)
    return float(initial[0]) if same else float("nan")


def _leaf_finder(trees: Sequence[Any]) -> Callable[[Rows], np.ndarray[Any, Any]]:
    """A function giving, for rows, the flat index of the leaf each (tree, row) pair reaches."""
    sizes = [tree.node_count for tree in trees]
    offsets = np.cumsum([0, *sizes[:-1]])
    left, right, feature, threshold = [], [], [], []
    for tree, offset in zip(trees, offsets, strict=True):
        nodes = np.arange(tree.node_count)
        leaf = tree.children_left == -1
        left.append(np.where(leaf, nodes, tree.children_left) + offset)
        right.append(np.where(leaf, nodes, tree.children_right) + offset)
        feature.append(np.where(leaf, 0, tree.feature))
        threshold.append(np.where(leaf, np.inf, tree.threshold))
    lefts, rights = np.concatenate(left), np.concatenate(right)
    features, thresholds = np.concatenate(feature), np.concatenate(threshold)
    roots = offsets.astype(np.intp)[:, None]
    depth = max(tree.max_depth for tree in trees)

    def leaves(rows: Rows) -> np.ndarray[Any, Any]:
        x = rows.astype(np.float32).astype(np.float64).ravel()
        base = np.arange(len(rows)) * rows.shape[1]
        node = np.repeat(roots, len(rows), axis=1)
        for _ in range(depth):
            node = np.where(x[base + features[node]] <= thresholds[node], lefts[node], rights[node])
        return node

    return leaves


def _small_calls(walk: Predict, numpy_path: Predict) -> Predict:
    def predict(rows: Rows) -> Scores:
        return walk(rows) if len(rows) <= TREE_MAX_ROWS else numpy_path(rows)

    return predict
