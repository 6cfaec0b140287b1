"""The Open Inference Protocol V2 over REST: health, metadata and ``infer`` under ``/v2``.

A thin front end: it decodes the request's JSON tensors into rows (:mod:`app.tensors`), scores
them through the service core (:func:`app.service.score`, the one micro-batcher shared with every
other front end) and answers ``predict_proba`` (FP64 ``[N, 2]``) and ``predict`` (INT64 ``[N]``,
the label at ``DECISION_THRESHOLD``). ``{name}`` is ``MODEL_NAME`` and ``{version}`` the served
version; anything else is 404. Errors go through the one error map (app.errors) as
``{"error": "..."}``.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version as package_version
from typing import Annotated, Any, Final

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import PathParameter

from app.errors import ERROR_SHAPE, MalformedRequest, ProtocolMediaType, UnknownModel
from app.inference_wire import (
    InferRequest,
    InferResponse,
    Live,
    MetadataTensor,
    ModelMetadata,
    ModelReady,
    Ready,
    ServerMetadata,
    request_decoder,
)
from app.model import Champion, Rows
from app.observability import REQUEST_ID_KEY
from app.schemas import FEATURES, InferenceErrorBody, encoder
from app.service import Scored, Service, labels_at, score
from app.tensors import JSON_ONLY, outputs, request_rows

TAG: Final = "Open Inference Protocol"
_OPT: Final = {ERROR_SHAPE: "inference"}
_MODEL: Final = "/v2/models/{name:str}"
_VERSION: Final = "/v2/models/{name:str}/versions/{version:str}"
_SERVER: Final = ServerMetadata("churn-api", package_version("churn-api"), [])
_INPUTS: Final = [MetadataTensor("features", "FP64", [-1, len(FEATURES)])]
_OUTPUTS: Final = [
    MetadataTensor("predict_proba", "FP64", [-1, 2]),
    MetadataTensor("predict", "INT64", [-1]),
]


_EXAMPLE: Final = {
    "id": "42",
    "inputs": [
        {"name": "features", "shape": [1, 5], "datatype": "FP64", "data": [12, 79.5, 954.0, 3, 1]}
    ],
    "outputs": [{"name": "predict_proba"}, {"name": "predict"}],
}


def _error(description: str) -> ResponseSpec:
    return ResponseSpec(InferenceErrorBody, description=description, generate_examples=False)


ModelName = Annotated[str, PathParameter(description="MODEL_NAME, the served model's name.")]
ModelVersion = Annotated[str | None, PathParameter(description="The served version (others: 404).")]
_UNKNOWN: Final = {404: _error("Another model name, or a version that is not the one served")}


@get("/v2/health/live", tags=[TAG], summary="Server live", opt=_OPT)
async def live() -> Live:
    return Live(live=True)


@get(
    "/v2/health/ready",
    tags=[TAG],
    summary="Server ready (a model is loaded)",
    responses={503: ResponseSpec(Ready, description="No model loaded", generate_examples=False)},
    opt=_OPT,
)
async def ready(state: State) -> Response[Ready]:
    loaded = state.service.model is not None
    return Response(Ready(ready=loaded), status_code=200 if loaded else 503)


@get("/v2", tags=[TAG], summary="Server metadata", opt=_OPT)
async def server_metadata() -> ServerMetadata:
    return _SERVER


@get(
    [_MODEL, _VERSION],
    tags=[TAG],
    summary="Model metadata: versions, inputs and outputs",
    responses={**_UNKNOWN, 503: _error("No model loaded")},
    opt=_OPT,
)
async def model_metadata(
    state: State, name: ModelName, version: ModelVersion = None
) -> ModelMetadata:
    model = _served(state.service, name, version)
    return ModelMetadata(model.name, [model.version], "sklearn", _INPUTS, _OUTPUTS)


@get(
    [f"{_MODEL}/ready", f"{_VERSION}/ready"],
    tags=[TAG],
    summary="Model ready",
    responses={
        **_UNKNOWN,
        503: ResponseSpec(ModelReady, description="No model loaded", generate_examples=False),
    },
    opt=_OPT,
)
async def model_ready(
    state: State, name: ModelName, version: ModelVersion = None
) -> Response[ModelReady]:
    service: Service = state.service
    if service.model is None:
        _check_name(service, name)
        return Response(ModelReady(name, ready=False), status_code=503)
    return Response(ModelReady(_served(service, name, version).name, ready=True))


@post(
    [f"{_MODEL}/infer", f"{_VERSION}/infer"],
    status_code=200,
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
        400: _error("Invalid request: the row and feature are named; binary data is refused"),
        **_UNKNOWN,
        413: _error("Request body larger than MAX_BODY_BYTES"),
        415: _error("Content-Type is not JSON"),
        503: _error("No model loaded, or the server is overloaded"),
    },
    opt={**_OPT, "request_body": {"application/json": (InferRequest, _EXAMPLE)}},
)
async def infer(
    request: Request[Any, Any, Any], state: State, name: ModelName, version: ModelVersion = None
) -> InferResponse:
    service: Service = state.service
    _served(service, name, version)
    _check_headers(request)
    try:
        decoded = request_decoder.decode(await request.body())
    except (
        msgspec.DecodeError,
        msgspec.ValidationError,
        RecursionError,
        UnicodeDecodeError,
    ) as exc:
        raise MalformedRequest(f"Request body is not an inference request: {exc}") from None
    scored = await score(service, request_rows(decoded))
    return _answer(service, decoded, scored, request.scope)


def _answer(service: Service, decoded: InferRequest, scored: Scored, scope: Any) -> InferResponse:
    labels = labels_at(service, scored, None)
    return InferResponse(
        model_name=scored.model.name,
        model_version=scored.model.version,
        id=decoded.id if decoded.id is not None else str(scope.get(REQUEST_ID_KEY, "")),
        outputs=outputs(decoded.outputs, scored.scores, labels),
    )


def fast_door(service: Service, body: bytes, scope: Any) -> tuple[Rows, Callable[[Scored], bytes]]:
    """The plain case of ``/v2/models/MODEL_NAME/infer`` for :mod:`app.fastpath`."""
    if scope["path"] != f"/v2/models/{service.settings.model_name}/infer":
        raise LookupError(scope["path"])  # another name: Litestar answers 404
    decoded = request_decoder.decode(body)
    rows = request_rows(decoded)
    return rows, lambda scored: encoder.encode(_answer(service, decoded, scored, scope))


def _served(service: Service, name: str, version: str | None) -> Champion:
    _check_name(service, name)
    model = service.champion()
    if version is not None and version != model.version:
        raise UnknownModel(
            f"model {name!r} has no version {version[:32]!r} here (serving version {model.version})"
        )
    return model


def _check_name(service: Service, name: str) -> None:
    if name != service.settings.model_name:
        raise UnknownModel(
            f"unknown model {name[:64]!r}; this server serves {service.settings.model_name!r}"
        )


def _check_headers(request: Request[Any, Any, Any]) -> None:
    if "inference-header-content-length" in request.headers:
        raise MalformedRequest(JSON_ONLY)
    content_type = request.headers.get("content-type")
    if content_type is None:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/octet-stream":
        raise MalformedRequest(JSON_ONLY)
    if media_type != "application/json":
        raise ProtocolMediaType(f"Content-Type must be application/json, got {media_type[:64]!r}")


ROUTES: Final = [live, ready, server_metadata, model_metadata, model_ready, infer]
