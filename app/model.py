"""The champion model behind a seam: load it from the registry, guard it, and score rows.

The web layer only sees :class:`Champion` (``predict`` on a float64 array of rows in contract
order, plus the registry facts). Everything MLflow- and scikit-learn-specific lives here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.arrays import Rows as Rows
from app.arrays import Scores as Scores
from app.errors import StartupError
from app.profile import Profile
from app.schemas import FEATURES

if TYPE_CHECKING:
    from app.scoring import Proven

log = logging.getLogger("churn_api")


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
    """Which path :attr:`predict` takes: ``linear``, ``forest``, ``boosting``, ``numpy`` or
    ``dataframe`` (see :mod:`app.scoring`)."""
    proven: Proven | None = field(default=None, repr=False)
    """What the load-time proof established (handed to processes forked after it)."""
    load_seconds: float = 0.0
    profile: Profile | None = field(default=None, repr=False)
    """The version's reference profile (app.profile); None: no drift metrics."""
    classes: tuple[Any, ...] = (0, 1)
    """The estimator's ``classes_`` (what ``predict`` answers), as JSON-ready values."""
    pyfunc_predict_fn: str = "predict"
    """The method MLflow's pyfunc flavor calls (``pyfunc_predict_fn`` when it was logged)."""


def champion_from_estimator(
    estimator: Any,
    *,
    name: str,
    version: str,
    alias: str,
    run_id: str,
    load_seconds: float = 0.0,
    proven: Proven | None = None,
) -> Champion:
    """Check a fitted classifier against the contract and pick its fastest exact scoring path.

    The reference is the model's own ``predict_proba`` on a DataFrame in contract order (what it
    was fitted on). A faster path serves only if it is proven equal to it at load, to
    :data:`TOLERANCE`, on the probe rows and thousands of contract-valid rows, scored all at once
    and one at a time; otherwise the DataFrame path serves. ``proven`` is what a check of
    this same estimator object already proved (``churn-api serve`` proves it once per server,
    before forking the workers): then the probe rows alone are checked again.
    """
    from app import scoring as paths

    check_estimator(estimator, f"{name} version {version}")
    predict, proof = paths.fastest_proven(estimator, proven)
    scoring = proof.path
    if scoring == "dataframe":
        log.warning("model %s v%s needs a DataFrame per call (slower path)", name, version)
    return Champion(
        name=name,
        version=version,
        alias=alias,
        run_id=run_id,
        predict=predict,
        scoring=scoring,
        proven=proof,
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
