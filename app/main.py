"""Assembly: settings, the lifespan that loads the champion once per worker, routes, errors, docs.

granian imports :func:`create_app` as a factory (``--factory app.main:create_app``) in every
worker; tests call it with a settings object and, for the web layer, a source serving a fake
champion (:class:`app.reload.ModelSource`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version as package_version

from litestar import Litestar
from litestar.routes import ASGIRoute

from app import (
    docs,
    inference_infer,
    inference_protocol,
    metrics,
    metrics_dir,
    mlflow_protocol,
    predict,
    routes,
)
from app.access_log import AccessLog
from app.admin import admin_routes
from app.admission import Bounded
from app.asgi import route_path_parameters
from app.error_handlers import EXCEPTION_HANDLERS
from app.inference import MicroBatcher, Scorer, ThreadOffload
from app.json_logging import configure_logging
from app.observability import WATCH_SECONDS, RequestObserver
from app.reload import ModelSource, RegistrySource, Reloader, trigger_path
from app.scoring_routes import ScoringRoutes
from app.service import Service
from app.settings import Settings, load
from app.startup import READY, forget, report
from app.tally import FLUSH_SECONDS, TALLY

log = logging.getLogger("churn_api")


def create_app(settings: Settings | None = None, source: ModelSource | None = None) -> Litestar:
    """The app; ``source`` gives the champion (the MLflow registry unless a test passes its own)."""
    settings = load() if settings is None else settings
    source = RegistrySource() if source is None else source

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        configure_logging()
        directory = settings.metrics_dir
        metrics_dir.forget_dead_workers(directory)
        loop = asyncio.get_running_loop()
        report(f"loading and checking {settings.model_name}@{settings.model_alias}", directory)
        model = source.first(settings)  # before the worker takes traffic; failure stops the worker
        scorer: Scorer = Bounded(
            MicroBatcher(loop, settings.max_batch_rows, settings.model_threads, TALLY.model_call)
            if settings.micro_batching
            else ThreadOffload(loop, model_threads=settings.model_threads),
            settings.max_queued_rows,
        )
        service = app.state.service = Service(settings=settings, scorer=scorer, model=model)
        reloader = app.state.reloader = Reloader(
            service,
            source,
            poll_seconds=settings.model_poll_seconds,
            trigger=trigger_path(directory) if settings.admin_token else None,
        )
        if model is not None:
            log.info(
                "serving %s version %s (alias %s, %.2fs to load, %s scoring path)",
                model.name,
                model.version,
                model.alias,
                model.load_seconds,
                model.scoring,
            )
            metrics.model_loaded(model.name, model.version, model.alias, model.load_seconds)
        background = [
            asyncio.create_task(reloader.run(), name="churn-reload"),
            asyncio.create_task(_flush_metrics(), name="churn-metrics"),
        ]
        background.append(asyncio.create_task(observer.watch(WATCH_SECONDS), name="churn-watch"))
        report(READY, directory)
        try:
            yield
        finally:
            forget(directory)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            scorer.close()
            TALLY.flush()
            metrics_dir.worker_stopped(directory)

    app = Litestar(
        route_handlers=[
            *predict.ROUTES,
            *routes.ROUTES,
            *mlflow_protocol.ROUTES,
            *inference_protocol.ROUTES,
            *inference_infer.ROUTES,
            metrics_dir.metrics_endpoint(settings.metrics_dir),
            *admin_routes(settings),
            docs.assets_router(),
        ],
        lifespan=[lifespan],
        on_startup=[docs.polish],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=docs.openapi_config(package_version("churn-api")),
        request_max_body_size=settings.max_body_bytes,
        debug=False,
        logging_config=None,  # log lines are JSON, see app.observability.configure_logging
    )
    route_path_parameters(app)
    # Outside routing and the error map, so it sees every answer (404s and 500s included).
    routed = ScoringRoutes(
        app.asgi_handler,  # type: ignore[arg-type]
        (route.route_handler for route in app.routes if isinstance(route, ASGIRoute)),
    )
    observer = RequestObserver(
        routed,
        current_version=lambda: _served_version(app),
        access_log=AccessLog() if settings.access_log else None,
        timeout=settings.request_timeout_seconds,
    )
    app.asgi_handler = observer  # type: ignore[assignment]
    return app


_prebuilt: Litestar | None = None


def prebuild(settings: Settings) -> None:
    """Build the app in the server's main process, before granian forks the workers.

    The workers then share its memory (routes, the OpenAPI document, the error map) with the
    main process instead of each building its own; its lifespan still runs in every worker.
    """
    global _prebuilt
    _prebuilt = create_app(settings)


def serve_app() -> Litestar:
    """granian's factory (``churn-api serve``): the prebuilt app, or one built from the settings."""
    return _prebuilt if _prebuilt is not None else create_app()


def _served_version(app: Litestar) -> str | None:
    service: Service | None = getattr(app.state, "service", None)
    return service.model.version if service is not None and service.model is not None else None


async def _flush_metrics() -> None:
    while True:
        await asyncio.sleep(FLUSH_SECONDS)
        TALLY.flush()
