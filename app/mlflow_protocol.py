"""MLflow's scoring protocol: ``POST /invocations``, ``GET /ping``, ``GET /version``.

A thin front end: it decodes the request into rows (:mod:`app.tabular`), scores them through the
service core (:func:`app.service.score`, so the one micro-batcher scores these rows together with
every other front end's) and answers what ``mlflow models serve`` answers for the same model
version: the model's ``predict`` labels, or its ``predict_proba`` rows when the model was logged
with ``pyfunc_predict_fn="predict_proba"``. Errors go through the one error map (app.errors) in
MLflow's shape, ``{"error_code": ..., "message": ...}``.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version as package_version
from typing import Any, Final

import numpy as np
from litestar import MediaType, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec

from app.asgi import Receive, Scope, header, read_body, scoring_route
from app.errors import ERROR_SHAPE, ModelNotLoaded, ProtocolError, ProtocolMediaType
from app.mlflow_wire import Invocation, Predictions, encoder
from app.model import Rows
from app.schemas import EXAMPLE_CUSTOMER, FEATURES, MlflowErrorBody
from app.service import Scored, Service, score
from app.tabular import csv_rows, invocation_rows
from app.tally import TALLY

TAG: Final = "MLflow scoring protocol"
PREDICT_FUNCTIONS: Final = ("predict", "predict_proba")
_JSON: Final = "application/json"
_CSV: Final = "text/csv"
_PING: Final = b"\n"


class UnsupportedPredictFunction(ProtocolError):
    status_code = 501
    error_code = "NOT_IMPLEMENTED"


def _error(description: str) -> ResponseSpec:
    return ResponseSpec(MlflowErrorBody, description=description, generate_examples=False)


@post(
    "/invocations",
    status_code=200,
    sync_to_thread=False,
    tags=[TAG],
    summary="Score rows as `mlflow models serve` does",
    description=(
        "The body is `application/json` with exactly one of `dataframe_split`, "
        "`dataframe_records`, `instances` or `inputs` (and an optional `params` object, "
        "ignored), or `text/csv` with a header row. Columns are matched by name in any order; "
        f"other columns are dropped. The features are {', '.join(FEATURES)}, with the same "
        "types, bounds and cross-field rule as `/predict`; 1 to 1024 rows per request. The "
        "answer is the model's `predict` label per row, or `[P(no churn), P(churn)]` per row "
        'for a model logged with `pyfunc_predict_fn="predict_proba"`.'
    ),
    responses={
        400: _error("Invalid body: the offending rows and columns are named"),
        413: _error("Request body larger than MAX_BODY_BYTES"),
        415: _error("Content-Type is neither JSON nor CSV"),
        501: _error("The model's pyfunc_predict_fn is not predict or predict_proba"),
        503: _error("No model loaded, or the server is overloaded"),
    },
    opt={
        ERROR_SHAPE: "mlflow",
        "request_body": {
            _JSON: (Invocation, {"dataframe_records": [EXAMPLE_CUSTOMER]}),
            _CSV: (str, ",".join(FEATURES) + "\n12,79.5,954.0,3,True\n"),
        },
    },
)
def _invocations() -> Predictions:
    raise NotImplementedError  # documentation only: invocations() answers POST /invocations


@scoring_route("/invocations", documented=_invocations, opt={ERROR_SHAPE: "mlflow"})
async def invocations(service: Service, scope: Scope, receive: Receive) -> bytes:
    service.champion()  # 503 before reading a body that cannot be scored
    parse = _parser(header(scope, b"content-type"))
    body = await read_body(scope, receive, service.settings.max_body_bytes)
    scored = await score(service, parse(body))
    return encoder.encode(Predictions(answers(scored)))


def answers(scored: Scored) -> list[Any]:
    """What MLflow's pyfunc flavor of the model answers for the scored rows.

    ``predict`` is scikit-learn's for a binary classifier: ``classes_[argmax(predict_proba)]``,
    with ``predict_proba = [1 - p, p]`` (class 1 only when it is strictly more likely).
    """
    model, churn = scored.model, scored.scores
    if model.pyfunc_predict_fn not in PREDICT_FUNCTIONS:
        raise UnsupportedPredictFunction(
            f"The model was logged with pyfunc_predict_fn={model.pyfunc_predict_fn!r}; "
            f"this service answers {' or '.join(PREDICT_FUNCTIONS)}"
        )
    positive = churn > 1.0 - churn
    TALLY.predictions(churn, positive.tolist())
    if model.pyfunc_predict_fn == "predict_proba":
        rows: list[Any] = np.column_stack([1.0 - churn, churn]).tolist()
        return rows
    negative_class, positive_class = model.classes
    return [positive_class if p else negative_class for p in positive.tolist()]


def _parser(content_type: str | None) -> Callable[[bytes], Rows]:
    """The body decoder for a Content-Type (none is JSON), as ``mlflow models serve`` reads it."""
    if content_type is None:
        return invocation_rows
    media_type, *parameters = (part.strip() for part in content_type.split(";"))
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        if key.strip().lower() != "charset":
            raise ProtocolMediaType(f"Unrecognized Content-Type parameter {key.strip()!r}")
        if value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise ProtocolMediaType("The scoring server only supports UTF-8")
    media_type = media_type.lower()
    if media_type == _JSON:
        return invocation_rows
    if media_type == _CSV:
        return csv_rows
    raise ProtocolMediaType(f"Content-Type must be {_JSON} or {_CSV}, got {media_type[:64]!r}")


@get(
    "/ping",
    tags=[TAG],
    summary="Health check of the MLflow scoring protocol",
    description="200 (an empty line) when a model is loaded, as `mlflow models serve`; else 503.",
    media_type=MediaType.JSON,
    responses={503: _error("No model loaded")},
    opt={ERROR_SHAPE: "mlflow"},
)
async def ping(state: State) -> Response[bytes]:
    if state.service.model is None:
        raise ModelNotLoaded()
    return Response(_PING, media_type=MediaType.JSON)


@get(
    "/version",
    tags=[TAG],
    summary="Version of the service (plain text)",
    description="Where `mlflow models serve` answers MLflow's version, this is churn-api's.",
    media_type=MediaType.TEXT,
)
async def version() -> str:
    return _VERSION


_VERSION: Final = package_version("churn-api")
ROUTES: Final = [invocations, ping, version]
