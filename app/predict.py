"""``POST /predict`` and ``POST /predict/batch``: decode strictly, score, answer.

One path per endpoint: an ``@asgi`` route (:func:`app.asgi.scoring_route`) reads the body,
:mod:`app.validation` turns it into rows (or the 422 naming every field), :mod:`app.service`
scores them, and the answer is encoded here; every error goes through the one error map
(:mod:`app.errors`). Each endpoint's OpenAPI operation (body schema, ``threshold``, error
responses) is the typed declaration below it, which is never routed.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Final

from litestar import post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, Parameter

from app.asgi import Receive, Scope, header, read_body, scoring_route
from app.schemas import (
    BatchPrediction,
    BatchRequest,
    Customer,
    ErrorBody,
    Prediction,
    Threshold,
    ValidationErrorBody,
    encoder,
)
from app.service import Service, score_rows
from app.tally import TALLY
from app.validation import batch_rows, check_media_type, customer_rows, query_threshold

_BOUNDS: Final = typing.get_args(Threshold)[1]  # the msgspec.Meta with the bounds
ThresholdQuery = Annotated[
    float | None,
    Parameter(
        ge=_BOUNDS.ge,
        le=_BOUNDS.le,
        description="Decision threshold for this request only (default: DECISION_THRESHOLD).",
    ),
]

ERRORS: Final = {
    status: ResponseSpec(body, description=description, generate_examples=False)
    for status, body, description in (
        (413, ErrorBody, "Request body larger than MAX_BODY_BYTES"),
        (415, ErrorBody, "Content-Type is not JSON"),
        (422, ValidationErrorBody, "Invalid body or query: every offending field is named"),
        (503, ErrorBody, "No model loaded"),
    )
}
_DOCUMENTED: Final[dict[str, Any]] = {
    "status_code": 200,
    "responses": ERRORS,
    "tags": ["prediction"],
    "sync_to_thread": False,
}


@post("/predict", **_DOCUMENTED, summary="Score one customer")
def _predict(data: JSONBody[Customer], threshold: ThresholdQuery = None) -> Prediction:
    """Score one customer: P(churn), the label at the threshold, and the model version."""
    raise NotImplementedError  # documentation only: predict() answers POST /predict


@post("/predict/batch", **_DOCUMENTED, summary="Score 1 to 1024 customers")
def _predict_batch(
    data: JSONBody[BatchRequest], threshold: ThresholdQuery = None
) -> BatchPrediction:
    """Score 1 to 1024 customers with one vectorised model call; answers keep the input order."""
    raise NotImplementedError  # documentation only: predict_batch() answers POST /predict/batch


async def _request(
    service: Service, scope: Scope, receive: Receive
) -> tuple[bytes, float | None, list[Any]]:
    """The body and the threshold, in the contract's order of checks: 413, 415, then 422."""
    threshold, query_errors = query_threshold(scope["query_string"])
    body = await read_body(scope, receive, service.settings.max_body_bytes)
    check_media_type(header(scope, b"content-type"))
    return body, threshold, query_errors


@scoring_route("/predict", documented=_predict)
async def predict(service: Service, scope: Scope, receive: Receive) -> bytes:
    body, threshold, query_errors = await _request(service, scope, receive)
    predictions = await score_rows(service, customer_rows(body, query_errors), threshold)
    return encoder.encode(predictions[0])


@scoring_route("/predict/batch", documented=_predict_batch)
async def predict_batch(service: Service, scope: Scope, receive: Receive) -> bytes:
    body, threshold, query_errors = await _request(service, scope, receive)
    predictions = await score_rows(service, batch_rows(body, query_errors), threshold)
    TALLY.batch(len(predictions))
    return encoder.encode(BatchPrediction(predictions=predictions, count=len(predictions)))


ROUTES: Final = [predict, predict_batch]
