"""``POST /v2/models/MODEL_NAME[/versions/VERSION]/infer``: the Open Inference Protocol's scoring.

A thin front end: it decodes the request's JSON tensors into rows (:mod:`app.tensors`), scores
them through the service core (:func:`app.service.score`, the one micro-batcher shared with every
other front end) and answers ``predict_proba`` (FP64 ``[N, 2]``) and ``predict`` (INT64 ``[N]``,
the label at ``DECISION_THRESHOLD``). One ``@asgi`` route (:func:`app.asgi.scoring_route`);
errors go through the one error map (app.errors) as ``{"error": "..."}``.
"""

from __future__ import annotations

from typing import Any, Final

from litestar import post

from app.asgi import Receive, Scope, header, read_body, scoring_route
from app.errors import REQUEST_ID_KEY, MalformedRequest, ProtocolMediaType
from app.inference_protocol import (
    MODEL,
    OPT,
    TAG,
    UNKNOWN,
    VERSION,
    ModelName,
    ModelVersion,
    error,
    served,
)
from app.inference_wire import InferRequest, InferResponse, request_decoder
from app.schemas import DECODE_ERRORS, FEATURES, encoder
from app.service import Scored, Service, labels_at, score
from app.tensors import JSON_ONLY, outputs, request_rows

_EXAMPLE: Final = {
    "id": "42",
    "inputs": [
        {"name": "features", "shape": [1, 5], "datatype": "FP64", "data": [12, 79.5, 954.0, 3, 1]}
    ],
    "outputs": [{"name": "predict_proba"}, {"name": "predict"}],
}


@post(
    [f"{MODEL}/infer", f"{VERSION}/infer"],
    status_code=200,
    sync_to_thread=False,
    tags=[TAG],
    summary="Score rows given as JSON tensors",
    description=(
        f"One input of shape [N, {len(FEATURES)}] (any name; FP64, FP32, INT64 or INT32; data "
        f"flat or nested) with the columns {', '.join(FEATURES)} in that order; or, with "
        '`"parameters": {"content_type": "pd"}`, one input of shape [N] per feature named after '
        "it (`is_month_to_month` as BOOL). Same types, bounds and cross-field rule as `/predict`; "
        "1 to 1024 rows. Outputs: `predict_proba` (FP64 [N, 2]: P(no churn), P(churn)) and "
        "`predict` (INT64 [N]: 1 when P(churn) >= DECISION_THRESHOLD); `outputs` selects, none "
        "means both. The request `id` is echoed (the request id when absent). JSON tensors only."
    ),
    responses={
        400: error("Invalid request: the row and feature are named; binary data is refused"),
        **UNKNOWN,
        413: error("Request body larger than MAX_BODY_BYTES"),
        415: error("Content-Type is not JSON"),
        503: error("No model loaded, or the server is overloaded"),
    },
    opt={**OPT, "request_body": {"application/json": (InferRequest, _EXAMPLE)}},
)
def _infer(name: ModelName, version: ModelVersion = None) -> InferResponse:
    raise NotImplementedError  # documentation only: infer() answers POST .../infer


@scoring_route([f"{MODEL}/infer", f"{VERSION}/infer"], documented=_infer, opt=OPT)
async def infer(service: Service, scope: Scope, receive: Receive) -> bytes:
    path = scope["path_params"]
    served(service, path["name"], path.get("version"))
    _check_headers(scope)
    body = await read_body(scope, receive, service.settings.max_body_bytes)
    try:
        decoded = request_decoder.decode(body)
    except DECODE_ERRORS as exc:
        raise MalformedRequest(f"Request body is not an inference request: {exc}") from None
    scored = await score(service, request_rows(decoded))
    return encoder.encode(_answer(service, decoded, scored, scope))


def _answer(service: Service, decoded: InferRequest, scored: Scored, scope: Any) -> InferResponse:
    labels = labels_at(service, scored, None)
    return InferResponse(
        model_name=scored.model.name,
        model_version=scored.model.version,
        id=decoded.id if decoded.id is not None else str(scope.get(REQUEST_ID_KEY, "")),
        outputs=outputs(decoded.outputs, scored.scores, labels),
    )


def _check_headers(scope: Scope) -> None:
    if header(scope, b"inference-header-content-length") is not None:
        raise MalformedRequest(JSON_ONLY)
    content_type = header(scope, b"content-type")
    if content_type is None:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/octet-stream":
        raise MalformedRequest(JSON_ONLY)
    if media_type != "application/json":
        raise ProtocolMediaType(f"Content-Type must be application/json, got {media_type[:64]!r}")


ROUTES: Final = [infer]
