"""OpenAPI at ``/schema``: Swagger UI served from the service itself, and a precise document.

Litestar's render plugins load their JavaScript from public CDNs; here the Swagger UI assets come
from the ``flask-swagger-ui`` wheel (only its static files are used, Flask is never imported), so
the page works with no internet access. :func:`polish` fixes what Litestar's generator leaves out or
adds by default: bounds of 0 on query parameters, ``additionalProperties: false`` for bodies that
reject unknown fields, request examples, and the 400/201 responses this service never sends.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import msgspec
from litestar import Litestar, Router
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.routes import ASGIRoute, BaseRoute
from litestar.static_files import create_static_files_router

from app.asgi import DOCUMENTED
from app.schemas import EXAMPLE_CUSTOMER, FEATURES, MAX_BATCH, Threshold

ASSETS_PATH: Final = "/schema/assets"
_STRICT_BODIES: Final = ("Customer", "BatchRequest")
_EXAMPLES: Final[dict[str, object]] = {
    "/predict": EXAMPLE_CUSTOMER,
    "/predict/batch": {
        "instances": [
            EXAMPLE_CUSTOMER,
            {**EXAMPLE_CUSTOMER, "tenure_months": 0, "total_charges": 0.0},
        ]
    },
}


def _declared_bodies(
    routes: Iterable[BaseRoute], schemas: dict[str, Any]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Request bodies that handlers reading the raw body declare in ``opt["request_body"]``.

    The value maps a media type to ``(type, example)``; ``str`` stands for a text body.
    """
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for route in routes:
        for handler in getattr(route, "route_handlers", ()):
            declared = handler.opt.get("request_body")
            if not declared:
                continue
            content = {}
            for media_type, (body_type, example) in declared.items():
                if body_type is str:
                    schema: dict[str, Any] = {"type": "string"}
                else:
                    (schema,), components = msgspec.json.schema_components(
                        [body_type], ref_template="#/components/schemas/{name}"
                    )
                    for name, component in components.items():
                        schemas.setdefault(name, component)
                content[media_type] = {"schema": schema, "example": example}
            for method in handler.http_methods:
                found[route.path_format, method.lower()] = {"required": True, "content": content}
    return found


def swagger_assets_dir() -> Path:
    spec = importlib.util.find_spec("flask_swagger_ui")  # locates the wheel without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("flask-swagger-ui (Swagger UI assets) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "dist"


def openapi_config(version: str) -> OpenAPIConfig:
    swagger = SwaggerRenderPlugin(
        path="/",
        js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon="<link rel='icon' href='data:,'>",
    )
    return OpenAPIConfig(
        title="churn-api",
        version=version,
        description=(
            "Churn probability from the MLflow registry's champion model. Requests are validated "
            f"strictly; the model sees the features in this order: {', '.join(FEATURES)}. "
            f"A batch holds 1 to {MAX_BATCH} instances."
        ),
        path="/schema",
        render_plugins=[swagger],
    )


def assets_router() -> Router:
    return create_static_files_router(
        path=ASSETS_PATH, directories=[swagger_assets_dir()], include_in_schema=False
    )


def _documented(app: Litestar) -> Litestar:
    """An app of the typed declarations of the ``@asgi`` scoring routes, never served.

    Litestar documents typed handlers only; each scoring route carries its operation as such a
    declaration (:data:`app.asgi.DOCUMENTED`), and this app generates their part of the document
    exactly as it would for a typed route. Built once per process (the declarations are static).
    """
    handlers = list(
        dict.fromkeys(  # a route handler with two paths has two routes
            route.route_handler.opt[DOCUMENTED]
            for route in app.routes
            if isinstance(route, ASGIRoute) and DOCUMENTED in route.route_handler.opt
        )
    )
    key = tuple(id(handler) for handler in handlers)
    if key not in _TWINS:
        _TWINS[key] = Litestar(
            route_handlers=handlers,
            openapi_config=app.openapi_config,
            logging_config=None,
            debug=False,
        )
    return _TWINS[key]


_TWINS: Final[dict[tuple[int, ...], Litestar]] = {}


def _merged(app: Litestar, paths: dict[str, Any], documented: dict[str, Any]) -> dict[str, Any]:
    """Both documents' paths, each declaration's paths placed where its route is in ``app``."""
    rank = {route.path_format: index for index, route in enumerate(app.routes)}
    pending = sorted(documented, key=lambda path: rank.get(path, len(rank)))
    merged: dict[str, Any] = {}
    for path, item in paths.items():
        while pending and rank.get(pending[0], len(rank)) < rank.get(path, len(rank)):
            first = pending.pop(0)
            merged[first] = copy.deepcopy(documented[first])
        merged[path] = item
    for path in pending:
        merged[path] = copy.deepcopy(documented[path])
    return merged


def polish(app: Litestar) -> None:
    """Correct the generated document in place, once, before it is first served."""
    document = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    twin = _documented(app)
    generated = twin.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    for name, component in generated.get("components", {}).get("schemas", {}).items():
        schemas.setdefault(name, component)
    document["paths"] = _merged(app, document.get("paths", {}), generated.get("paths", {}))
    for name in _STRICT_BODIES:
        if name in schemas:
            schemas[name]["additionalProperties"] = False
    declared = _declared_bodies([*app.routes, *twin.routes], schemas)
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            responses = operation.get("responses", {})
            if "400" in responses and (path, method) not in declared:
                responses.pop("400")  # Litestar's default; only the protocol routes answer 400
            responses.pop("201", None)
            if (path, method) in declared:
                operation["requestBody"] = declared[path, method]
            for parameter in operation.get("parameters", []):
                if parameter.get("name") == "threshold":
                    parameter["schema"] = msgspec.json.schema(Threshold)
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None and path in _EXAMPLES:
                body["example"] = _EXAMPLES[path]
