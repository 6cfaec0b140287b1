"""The reference profile of a model version: what its training data looked like, bin by bin.

``churn-api train`` logs one with every run, as the run artifact ``reference_profile.json``
(:data:`PROFILE_FILE`); the service reads it back when it loads that version (:mod:`app.drift`
counts the scored rows in the same bins). The file is JSON:

.. code-block:: json

    {"format": "churn-api/reference-profile", "format_version": 1, "training_rows": 15000,
     "features": [{"name": "tenure_months", "kind": "numeric",
                   "edges": [1.0, 3.0, 6.0], "shares": [0.12, 0.2, 0.25, 0.43]}, ...],
     "probability": {"holdout_rows": 5000, "bounds": [0.05, ..., 1.0], "shares": [...]}}

Per feature, ``edges`` are the cut points between bins, taken at the training data's deciles
(duplicates and an edge at the minimum dropped, so integer features with ties get fewer bins and
no bin is empty in training); bin ``i`` holds ``edges[i-1] <= x < edges[i]`` (bin 0 everything
below ``edges[0]``, the last bin everything from ``edges[-1]`` up). The boolean feature has the
edge ``[1.0]``: bin 0 is ``false``, bin 1 ``true``. ``shares`` are the training rows' shares per
bin (they sum to 1). ``probability`` is the holdout P(churn) distribution: ``shares[i]`` of the
holdout rows scored in ``(bounds[i-1], bounds[i]]``, the buckets of the ``churn_probability``
histogram.
"""

from __future__ import annotations

import logging
import tempfile
from itertools import pairwise
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np

from app.schemas import FEATURES

log = logging.getLogger("churn_api")

PROFILE_FILE: Final = "reference_profile.json"
FORMAT: Final = "churn-api/reference-profile"
BOOLEAN_FEATURES: Final = frozenset({"is_month_to_month"})
DECILES: Final = tuple(i / 10 for i in range(1, 10))


class FeatureBins(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    kind: str  # "numeric" or "boolean"
    edges: list[float]
    shares: list[float]


class ProbabilityBins(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    holdout_rows: int
    bounds: list[float]
    shares: list[float]


class Profile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One model version's reference profile (see the module docstring for the format)."""

    format: str
    format_version: int
    training_rows: int
    features: list[FeatureBins]
    probability: ProbabilityBins

    def __post_init__(self) -> None:
        if self.format != FORMAT or self.format_version != 1:
            raise ValueError(f"not a {FORMAT} version 1 file")
        if tuple(f.name for f in self.features) != FEATURES:
            raise ValueError(f"features are not {list(FEATURES)}")
        lists = [(f.edges, f.shares, len(f.edges) + 1) for f in self.features]
        probability = self.probability
        lists.append((probability.bounds, probability.shares, len(probability.bounds)))
        for cuts, listed, expected in lists:
            if any(b <= a for a, b in pairwise(cuts)):
                raise ValueError("bin edges must increase strictly")
            shares = np.asarray(listed)
            if len(shares) != expected or (shares < 0).any() or abs(shares.sum() - 1) > 1e-6:
                raise ValueError("each share list must have one share per bin, summing to 1")

    def encode(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=1)


_decoder: Final = msgspec.json.Decoder(Profile)


def decode(raw: bytes) -> Profile:
    """A profile from its JSON; ``msgspec.ValidationError`` names what is wrong."""
    return _decoder.decode(raw)


def feature_edges(values: np.ndarray[Any, Any], boolean: bool) -> list[float]:
    """Cut points at the deciles of ``values`` (data values; none at the minimum, no repeats)."""
    if boolean:
        return [1.0]
    cuts = np.unique(np.quantile(values, DECILES, method="inverted_cdf"))
    return [float(c) for c in cuts if c > values.min()]


def bin_index(edges: np.ndarray[Any, Any], values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The bin of each value: ``i`` with ``edges[i-1] <= value < edges[i]``."""
    return np.searchsorted(edges, values, side="right")


def shares(counts: np.ndarray[Any, Any]) -> list[float]:
    return [float(c) for c in counts / counts.sum()]


def build(
    training: np.ndarray[Any, Any], holdout_scores: np.ndarray[Any, Any], bounds: tuple[float, ...]
) -> Profile:
    """The profile of float64 training rows (contract column order) and holdout P(churn)."""
    features = []
    for column, name in enumerate(FEATURES):
        values = np.asarray(training[:, column], dtype=np.float64)
        kind = "boolean" if name in BOOLEAN_FEATURES else "numeric"
        edges = feature_edges(values, kind == "boolean")
        counts = np.bincount(bin_index(np.asarray(edges), values), minlength=len(edges) + 1)
        features.append(FeatureBins(name, kind, edges, shares(counts)))
    buckets = np.searchsorted(bounds, holdout_scores, side="left")
    probability = np.bincount(buckets, minlength=len(bounds))[: len(bounds)]
    return Profile(
        format=FORMAT,
        format_version=1,
        training_rows=len(training),
        features=features,
        probability=ProbabilityBins(len(holdout_scores), list(bounds), shares(probability)),
    )


def read(tracking_uri: str, run_id: str, what: str) -> Profile | None:
    """The profile logged with ``run_id``, or None (logged once, with why) if there is none.

    ``what`` names the model version in the log line. A missing, unreadable or invalid file
    never stops the model from serving: it only has no drift metrics.
    """
    if not run_id:
        log.warning("%s has no run, so no reference profile: no drift metrics", what)
        return None
    try:
        return decode(_download(tracking_uri, run_id))
    except OSError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("%s has no %s (%s): no drift metrics", what, PROFILE_FILE, reason)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        log.warning("%s has an invalid %s (%s): no drift metrics", what, PROFILE_FILE, exc)
    return None


def _download(tracking_uri: str, run_id: str) -> bytes:
    """The run's profile file: read in place from a SQLite registry's local artifacts
    (:mod:`app.sqlite_registry`), else downloaded by MLflow (its errors as OSError)."""
    import sqlite3

    from app import sqlite_registry

    db = sqlite_registry.database(tracking_uri)
    try:
        local = None if db is None else sqlite_registry.run_artifacts(db, run_id)
    except sqlite3.Error as exc:
        raise OSError(str(exc)) from exc
    if local is not None:
        return (local / PROFILE_FILE).read_bytes()
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        with tempfile.TemporaryDirectory(prefix="churn-api-profile-") as scratch:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=PROFILE_FILE, dst_path=scratch,
                tracking_uri=tracking_uri,
            )  # fmt: skip
            return Path(path).read_bytes()
    except MlflowException as exc:
        raise OSError(str(exc)) from exc
