"""Assembly: settings, the lifespan that loads the champion once per worker, routes, errors, docs.

granian imports :func:`create_app` as a factory (``--factory app.main:create_app``) in every
worker; tests call it with a settings object and, for the web layer, a loader returning a fake.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import version as package_version

from litestar import Litestar

from app import docs
from app.errors import EXCEPTION_HANDLERS
from app.inference import MicroBatcher, Scorer, ThreadOffload
from app.model import Champion, load_champion
from app.routes import ROUTES, Service
from app.settings import Settings

log = logging.getLogger("churn_api")

Loader = Callable[[Settings], Champion | None]


def create_app(settings: Settings | None = None, loader: Loader = load_champion) -> Litestar:
    settings = Settings.from_environ() if settings is None else settings

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        model = loader(settings)  # before the worker takes traffic; failure stops the worker
        scorer: Scorer = (
            MicroBatcher(loop, settings.max_batch_rows)
            if settings.micro_batching
            else ThreadOffload(loop)
        )
        app.state.service = Service(settings=settings, scorer=scorer, model=model)
        if model is not None:
            log.info(
                "serving %s version %s (alias %s, %.2fs to load, %s path)",
                model.name,
                model.version,
                model.alias,
                model.load_seconds,
                "numpy" if model.fast_path else "DataFrame",
            )
        try:
            yield
        finally:
            scorer.close()

    return Litestar(
        route_handlers=[*ROUTES, docs.assets_router()],
        lifespan=[lifespan],
        on_startup=[docs.polish],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=docs.openapi_config(package_version("churn-api")),
        request_max_body_size=settings.max_body_bytes,
        debug=False,
    )
