"""The Open Inference Protocol V2 over REST: health and metadata under ``/v2``.

``{name}`` is ``MODEL_NAME`` and ``{version}`` the served version; anything else is 404. Errors
go through the one error map (app.errors) as ``{"error": "..."}``. Scoring (``POST .../infer``)
is :mod:`app.inference_infer`.
"""

from __future__ import annotations

from importlib.metadata import version as package_version
from typing import Annotated, Final

from litestar import Response, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import PathParameter

from app.errors import ERROR_SHAPE, UnknownModel
from app.inference_wire import (
    Live,
    MetadataTensor,
    ModelMetadata,
    ModelReady,
    Ready,
    ServerMetadata,
)
from app.model import Champion
from app.schemas import FEATURES, InferenceErrorBody
from app.service import Service

TAG: Final = "Open Inference Protocol"
OPT: Final = {ERROR_SHAPE: "inference"}
MODEL: Final = "/v2/models/{name:str}"
VERSION: Final = "/v2/models/{name:str}/versions/{version:str}"
_SERVER: Final = ServerMetadata("churn-api", package_version("churn-api"), [])
_INPUTS: Final = [MetadataTensor("features", "FP64", [-1, len(FEATURES)])]
_OUTPUTS: Final = [
    MetadataTensor("predict_proba", "FP64", [-1, 2]),
    MetadataTensor("predict", "INT64", [-1]),
]


def error(description: str) -> ResponseSpec:
    return ResponseSpec(InferenceErrorBody, description=description, generate_examples=False)


ModelName = Annotated[str, PathParameter(description="MODEL_NAME, the served model's name.")]
ModelVersion = Annotated[str | None, PathParameter(description="The served version (others: 404).")]
UNKNOWN: Final = {404: error("Another model name, or a version that is not the one served")}


@get("/v2/health/live", tags=[TAG], summary="Server live", opt=OPT)
async def live() -> Live:
    return Live(live=True)


@get(
    "/v2/health/ready",
    tags=[TAG],
    summary="Server ready (a model is loaded)",
    responses={503: ResponseSpec(Ready, description="No model loaded", generate_examples=False)},
    opt=OPT,
)
async def ready(state: State) -> Response[Ready]:
    loaded = state.service.model is not None
    return Response(Ready(ready=loaded), status_code=200 if loaded else 503)


@get("/v2", tags=[TAG], summary="Server metadata", opt=OPT)
async def server_metadata() -> ServerMetadata:
    return _SERVER


@get(
    [MODEL, VERSION],
    tags=[TAG],
    summary="Model metadata: versions, inputs and outputs",
    responses={**UNKNOWN, 503: error("No model loaded")},
    opt=OPT,
)
async def model_metadata(
    state: State, name: ModelName, version: ModelVersion = None
) -> ModelMetadata:
    model = served(state.service, name, version)
    return ModelMetadata(model.name, [model.version], "sklearn", _INPUTS, _OUTPUTS)


@get(
    [f"{MODEL}/ready", f"{VERSION}/ready"],
    tags=[TAG],
    summary="Model ready",
    responses={
        **UNKNOWN,
        503: ResponseSpec(ModelReady, description="No model loaded", generate_examples=False),
    },
    opt=OPT,
)
async def model_ready(
    state: State, name: ModelName, version: ModelVersion = None
) -> Response[ModelReady]:
    service: Service = state.service
    if service.model is None:
        _check_name(service, name)
        return Response(ModelReady(name, ready=False), status_code=503)
    return Response(ModelReady(served(service, name, version).name, ready=True))


def served(service: Service, name: str, version: str | None) -> Champion:
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


ROUTES: Final = [live, ready, server_metadata, model_metadata, model_ready]
