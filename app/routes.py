"""The HTTP endpoints. Handlers stay thin: decode (strictly, in the DTO), score, answer."""

from __future__ import annotations

from typing import Annotated, Any, Final

import numpy as np
from litestar import Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, Parameter

from app.metrics import TALLY
from app.schemas import (
    FEATURES,
    BatchPrediction,
    BatchRequest,
    Customer,
    ErrorBody,
    Health,
    ModelInfo,
    Prediction,
    ValidationErrorBody,
)
from app.service import Service, score_rows
from app.validation import StrictJSONBody

ThresholdQuery = Annotated[
    float | None,
    Parameter(
        ge=0,
        le=1,
        description="Decision threshold for this request only (default: DECISION_THRESHOLD).",
    ),
]

_ERRORS: Final = {
    status: ResponseSpec(body, description=description, generate_examples=False)
    for status, body, description in (
        (413, ErrorBody, "Request body larger than MAX_BODY_BYTES"),
        (415, ErrorBody, "Content-Type is not JSON"),
        (422, ValidationErrorBody, "Invalid body or query: every offending field is named"),
        (503, ErrorBody, "No model loaded"),
    )
}
_PREDICT: Final[dict[str, Any]] = {
    "dto": StrictJSONBody,
    "return_dto": None,
    "status_code": 200,
    "responses": _ERRORS,
}


@post(
    "/predict",
    **_PREDICT,
    opt={"body_type": Customer},
    tags=["prediction"],
    summary="Score one customer",
)
async def predict(
    data: JSONBody[Customer], state: State, threshold: ThresholdQuery = None
) -> Prediction:
    """Score one customer: P(churn), the label at the threshold, and the model version."""
    service: Service = state.service
    rows = np.array([_row(data)], dtype=np.float64)
    return (await score_rows(service, rows, threshold))[0]


@post(
    "/predict/batch",
    **_PREDICT,
    opt={"body_type": BatchRequest},
    tags=["prediction"],
    summary="Score 1 to 1024 customers",
)
async def predict_batch(
    data: JSONBody[BatchRequest], state: State, threshold: ThresholdQuery = None
) -> BatchPrediction:
    """Score 1 to 1024 customers with one vectorised model call; answers keep the input order."""
    service: Service = state.service
    rows = np.array([_row(customer) for customer in data.instances], dtype=np.float64)
    predictions = await score_rows(service, rows, threshold)
    TALLY.batch(len(predictions))
    return BatchPrediction(predictions=predictions, count=len(predictions))


@get(
    "/health",
    tags=["operations"],
    summary="Readiness: is a model loaded",
    responses={503: ResponseSpec(Health, description="No model loaded", generate_examples=False)},
)
async def health(state: State) -> Response[Health]:
    """Readiness: 200 when a model is loaded, 503 otherwise."""
    if state.service.model is None:
        return Response(Health("unavailable"), status_code=503)
    return Response(Health("ok"))


@get("/livez", tags=["operations"], summary="Liveness: the event loop answers")
async def livez() -> Health:
    """Liveness: 200 while the worker's event loop answers; never looks at the model."""
    return _ALIVE


@get(
    "/model-info",
    tags=["operations"],
    summary="Which model and version answer",
    responses={503: _ERRORS[503]},
)
async def model_info(state: State) -> ModelInfo:
    """Which registered model and version answers, at which default threshold, on which features."""
    service: Service = state.service
    model = service.champion()
    return ModelInfo(
        name=model.name,
        version=model.version,
        alias=model.alias,
        run_id=model.run_id,
        threshold=service.settings.decision_threshold,
        features=list(FEATURES),
        scoring=model.scoring,
        drift_monitoring=service.settings.drift_metrics and model.profile is not None,
    )


ROUTES: Final = [predict, predict_batch, health, livez, model_info]
_ALIVE: Final = Health("ok")


def _row(customer: Customer) -> tuple[float, ...]:
    return (
        customer.tenure_months,
        customer.monthly_charges,
        customer.total_charges,
        customer.num_support_tickets,
        customer.is_month_to_month,
    )
