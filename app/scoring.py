"""Scoring paths of a champion, each proven equal to the model's own ``predict_proba`` at load.

The reference is ``predict_proba`` on a DataFrame in contract order (what the model was fitted on):
:func:`dataframe_path`. Faster paths, tried by :func:`fastest_proven`:

* ``numpy``: a copy of the model that takes a plain float64 array (feature names forgotten; a
  ColumnTransformer's by-name column selections rewritten to the same columns by position);
* ``linear`` (:mod:`app.linear_path`): the StandardScaler + LogisticRegression pipeline as a few
  element-wise operations;
* ``forest`` and ``boosting`` (:mod:`app.tree_paths`): RandomForest / ExtraTrees and
  GradientBoosting trees walked as flat arrays for the small calls of single requests, larger
  calls going to the ``numpy`` path.

A path serves only if :func:`proven` holds: equal to the reference to :data:`TOLERANCE` on the
probe rows and :data:`PROOF_ROWS` seeded contract-valid rows, scored all at once, in calls of
micro-batch size and a sample one at a time. Otherwise the next slower path serves; the DataFrame
path always can. A check that proved a path hands the result on as :class:`Proven` (the path's
name and the reference scores of the probe rows), so the same estimator object in another
process (a worker forked after the check) rebuilds that path and checks it on the probe rows only.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Final

import numpy as np

from app.arrays import Rows, Scores
from app.errors import StartupError
from app.linear_path import linear_path
from app.numpy_path import numpy_path
from app.schemas import COLUMNS, FEATURE_TYPES, FEATURES
from app.tree_paths import TREE_MAX_ROWS, boosting_path, forest_path

Predict = Callable[[Rows], Scores]

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
"""Of the proof rows, about this many are also scored one by one."""
CHUNKED_ROWS: Final = 1024
"""Of the proof rows, this many are also scored in calls of micro-batch size."""

# Faster than ``numpy``, in the order tried: each builds a path from the estimator (or None).
FASTER: Final[dict[str, Callable[[Any, Predict], Predict | None]]] = {
    "linear": linear_path,
    "forest": forest_path,
    "boosting": boosting_path,
}


@dataclass(frozen=True)
class Proven:
    """The path a check proved for one estimator object, and the probe rows' reference scores."""

    path: str
    probe_scores: tuple[float, ...]
    built: Predict | None = field(default=None, compare=False, repr=False)
    """The path already rebuilt by :func:`build` (in the process the workers fork from)."""

    def encode(self) -> str:
        """One line, exact (hexadecimal floats), for a pipe between processes."""
        return " ".join([self.path, *(score.hex() for score in self.probe_scores)])

    @classmethod
    def decode(cls, line: str) -> Proven:
        path, *scores = line.split()
        return cls(path, tuple(float.fromhex(score) for score in scores))


def probe_rows() -> Rows:
    return np.array(_PROBE_ROWS, dtype=np.float64)


def proof_rows() -> Rows:
    """The probe rows and :data:`PROOF_ROWS` seeded contract-valid rows: what a path must match."""
    return np.concatenate([probe_rows(), _random_rows(PROOF_ROWS)])


def proven(predict: Predict, rows: Rows, reference: Scores, *, small_calls: bool = True) -> bool:
    """``predict`` matches the reference on ``rows`` scored together and, unless ``small_calls``
    is false, in calls of micro-batch size and on a sample one by one."""
    together = predict(rows)
    if together.shape != reference.shape or not _close(together, reference):
        return False
    if not small_calls:
        return True
    chunked = rows[:CHUNKED_ROWS]
    steps = range(0, len(chunked), TREE_MAX_ROWS)
    pieces = [predict(chunked[i : i + TREE_MAX_ROWS]) for i in steps]
    sample = list(range(0, len(rows), max(1, len(rows) // ALONE_ROWS)))
    alone = np.concatenate([predict(rows[i : i + 1]) for i in sample])
    return _close(np.concatenate(pieces), reference[: len(chunked)]) and _close(
        alone, reference[sample]
    )


def fastest_proven(estimator: Any, already: Proven | None = None) -> tuple[Predict, Proven]:
    """The fastest path proven equal to the DataFrame path, and what was proven.

    ``already``: what a check of this same object proved before (then that path is rebuilt and
    checked on the probe rows against the reference scores it carries).
    """
    frame = dataframe_path(estimator)
    if already is not None:
        return _rebuilt(estimator, frame, already)
    rows = proof_rows()
    reference = frame(rows)

    def result(predict: Predict, path: str) -> tuple[Predict, Proven]:
        return predict, Proven(path, tuple(float(s) for s in reference[: len(_PROBE_ROWS)]))

    numpy = numpy_path(estimator)
    if not _safely(proven, numpy, rows, reference, small_calls=False):
        return result(frame, "dataframe")
    for path, make in FASTER.items():
        fast = _safely(make, estimator, numpy)
        if fast is not None and _safely(proven, fast, rows, reference):
            return result(fast, path)
    if _safely(proven, numpy, rows, reference):
        return result(numpy, "numpy")
    return result(frame, "dataframe")


def dataframe_path(estimator: Any) -> Predict:
    """The general path: a DataFrame with the contract's column names and dtypes."""
    import pandas as pd

    columns = [(name, COLUMNS[name], np.dtype(FEATURE_TYPES[name])) for name in FEATURES]

    def predict(rows: Rows) -> Scores:
        frame = pd.DataFrame(
            {name: rows[:, column].astype(dtype, copy=False) for name, column, dtype in columns}
        )
        return np.asarray(estimator.predict_proba(frame)[:, 1], dtype=np.float64)

    return predict


def build(estimator: Any, already: Proven) -> Proven:
    """``already`` with its path rebuilt for this same object, without running the model.

    Safe in a process that forks afterwards; the processes forked from it share the path's
    memory (a forest's flat arrays, the ``numpy`` path's copy of the model) instead of each
    building its own.
    """
    if already.path == "dataframe":
        return replace(already, built=dataframe_path(estimator))
    numpy = numpy_path(estimator)
    fast = FASTER.get(already.path)
    return replace(already, built=numpy if fast is None else fast(estimator, numpy))


def _rebuilt(estimator: Any, frame: Predict, already: Proven) -> tuple[Predict, Proven]:
    rows, reference = probe_rows(), np.array(already.probe_scores, dtype=np.float64)
    rebuilt = already if already.built is not None else _safely(build, estimator, already)
    predict = None if rebuilt is None else rebuilt.built
    check = proven if already.path == "dataframe" else partial(_safely, proven)
    if predict is None or not check(predict, rows, reference):
        raise StartupError(f"its {already.path} scoring path does not match on the probe rows")
    return predict, replace(already, built=None)


def _safely(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``function``'s answer, or None if it raised or warned (a path that fails is not used)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return function(*args, **kwargs)
    except Exception:  # noqa: BLE001 - any failure just means "use a slower path"
        return None


def _close(scores: Scores, reference: Scores) -> bool:
    return bool(np.allclose(scores, reference, rtol=0, atol=TOLERANCE))


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
