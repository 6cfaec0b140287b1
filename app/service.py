"""The service core: rows in, scored predictions out.

Every front end (the ``/predict`` endpoints, and the protocol front ends) validates its own wire
format into a float64 array of rows in contract column order (:data:`app.schemas.FEATURES`) and
then calls this module; it imports no front end. It owns the model in hand, the scorer (the
micro-batcher), the output check, the decision threshold and the metrics of predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat

import numpy as np

from app.access_log import answered_by
from app.drift import DRIFT
from app.errors import ModelNotLoaded, ServiceError
from app.inference import Scorer
from app.model import Champion, Rows, Scores
from app.schemas import Prediction
from app.settings import Settings
from app.tally import TALLY


class ModelOutputError(ServiceError):
    detail = "Model returned an invalid probability"


@dataclass
class Service:
    """What the front ends need, stored once on ``app.state.service`` by the lifespan."""

    settings: Settings
    scorer: Scorer
    model: Champion | None = None

    def champion(self) -> Champion:
        """The model in hand (a request takes it once: the model it starts with answers it)."""
        if self.model is None:
            raise ModelNotLoaded()
        return self.model


@dataclass(frozen=True)
class Scored:
    """Raw P(churn) per row (unrounded, checked to be in [0, 1]) and the model that scored them."""

    model: Champion
    scores: Scores


async def score(service: Service, rows: Rows) -> Scored:
    """Score rows through the micro-batcher with the model in hand; check the model's output."""
    model = service.champion()
    scores: Scores = await service.scorer.score(model, rows)
    if not _probabilities(scores):
        raise ModelOutputError()
    answered_by.set(model.version)  # for the access log line
    if service.settings.drift_metrics:
        DRIFT.rows(model.profile, model.version, rows)
    return Scored(model, scores)


def labels_at(service: Service, scored: Scored, threshold: float | None) -> list[bool]:
    """Labels at the request's threshold (the service's default when None); counted in metrics."""
    cut = service.settings.decision_threshold if threshold is None else threshold
    scores = scored.scores
    # one row (most requests): the same float64 comparison, without two numpy calls
    labels: list[bool] = [float(scores[0]) >= cut] if len(scores) == 1 else (scores >= cut).tolist()
    TALLY.predictions(scores, labels)
    return labels


async def score_rows(service: Service, rows: Rows, threshold: float | None) -> list[Prediction]:
    """The ``/predict`` answer for each row: P(churn) to 6 decimals, the label, the version."""
    scored = await score(service, rows)
    labels = labels_at(service, scored, threshold)
    version = scored.model.version
    return list(map(Prediction, rounded(scored.scores), labels, repeat(version)))


def rounded(scores: Scores) -> list[float]:
    """Scores to 6 decimals, exactly as ``np.round(scores, 6)``: ``rint(x * 1e6) / 1e6``.

    One row (most requests) without numpy calls (~1 µs against ~9): Python's ``round`` of a float
    is numpy's ``rint`` (half to even), and the product and quotient are the same float64
    operations. tests/test_service.py compares the two on millions of values, ties included.
    """
    if len(scores) == 1:
        return [round(float(scores[0]) * 1e6) / 1e6]
    values: list[float] = np.round(scores, 6).tolist()
    return values


def _probabilities(scores: Scores) -> bool:
    """Every score in [0, 1] (NaN fails both comparisons); one row without numpy calls."""
    if len(scores) == 1:
        return 0.0 <= float(scores[0]) <= 1.0
    return bool(((scores >= 0) & (scores <= 1)).all())
