"""The checks a fetched registry version must pass before it serves.

Startup (``churn-api serve``, ``churn-api check``), each worker's lifespan and the hot-swap all call
:func:`check` on what :func:`app.registry.fetch` returned, so a version passes or fails the same
checks wherever it is loaded: the contract's feature guard, a binary classifier, the probe rows
and proof of its scoring path (:func:`app.model.champion_from_estimator`), and one prediction on
the input example logged with it.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from app import drift
from app.model import Champion, Rows, champion_from_estimator
from app.registry import Fetched, RegistryError, describe, fetch_champion
from app.schemas import FEATURES
from app.scoring import Proven
from app.settings import Settings


class ModelCheckFailed(Exception):
    """A fetched model does not pass the checks (contract, probe rows, input example)."""


def check(fetched: Fetched, settings: Settings, proven: Proven | None = None) -> Champion:
    """Run every check on a fetched version; the champion that serves it, or ModelCheckFailed.

    ``proven``: what a check of this same object proved (see
    :func:`app.model.champion_from_estimator`).
    """
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    with threadpool_limits(limits=settings.model_threads):
        champion = champion_from_estimator(
            fetched.estimator,
            name=fetched.name,
            version=fetched.version,
            alias=settings.model_alias,
            run_id=fetched.run_id,
            load_seconds=fetched.fetch_seconds,
            proven=proven,
        )
        if fetched.input_example is not None:
            check_prediction(champion, example_rows(fetched.input_example))
    classes = getattr(fetched.estimator, "classes_", None)
    return replace(
        champion,
        load_seconds=fetched.fetch_seconds + time.perf_counter() - started,
        classes=(0, 1) if classes is None else tuple(np.asarray(classes).tolist()),
        pyfunc_predict_fn=fetched.pyfunc_predict_fn,
        profile=drift.exported(fetched.profile, champion.version),
    )


def load_champion(settings: Settings) -> Champion:
    """Resolve ``MODEL_NAME@MODEL_ALIAS``, fetch that version and check it."""
    from app.errors import StartupError

    try:
        fetched, proven = fetch_champion(settings)
        return check(fetched, settings, proven)
    except (RegistryError, ModelCheckFailed) as exc:
        raise StartupError(f"cannot load {describe(settings)}: {exc}") from exc


def example_rows(example: object) -> Rows:
    """The logged input example as float64 rows in contract order (by column name)."""
    columns = getattr(example, "columns", None)
    if columns is None or not set(FEATURES) <= {str(c) for c in columns}:
        raise ModelCheckFailed(f"input example does not have the columns {list(FEATURES)}")
    return np.asarray(example[list(FEATURES)], dtype=np.float64)  # type: ignore[index]


def check_prediction(champion: Champion, rows: Rows) -> None:
    scores = champion.predict(rows)
    if scores.shape != (len(rows),):
        raise ModelCheckFailed(f"input example: {scores.shape} scores for {len(rows)} rows")
    if not (np.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all()):
        raise ModelCheckFailed("input example: probabilities outside [0, 1]")
