"""The operations endpoints: readiness (``/health``), liveness (``/livez``) and ``/model-info``."""

from __future__ import annotations

from typing import Final

from litestar import Response, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec

from app.predict import ERRORS
from app.schemas import FEATURES, Health, ModelInfo
from app.service import Service


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
    responses={503: ERRORS[503]},
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


ROUTES: Final = [health, livez, model_info]
_ALIVE: Final = Health("ok")
