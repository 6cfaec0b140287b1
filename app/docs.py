"""OpenAPI at ``/schema``: Swagger UI served from the service itself, and a precise document.

Litestar's render plugins load their JavaScript from public CDNs; here the Swagger UI assets come
from the ``flask-swagger-ui`` wheel (only its static files are used, Flask is never imported), so
the page works with no internet access. :func:`polish` fixes what Litestar's generator leaves out or
adds by default: bounds of 0 on query parameters, ``additionalProperties: false`` for bodies that
reject unknown fields, request examples, and the 400/201 responses this service never sends.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Final

from litestar import Litestar, Router
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

from app.schemas import EXAMPLE_CUSTOMER, FEATURES, MAX_BATCH

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


def polish(app: Litestar) -> None:
    """Correct the generated document in place, once, before it is first served."""
    document = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    for name in _STRICT_BODIES:
        if name in schemas:
            schemas[name]["additionalProperties"] = False
    for path, item in document.get("paths", {}).items():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            responses = operation.get("responses", {})
            responses.pop("400", None)
            responses.pop("201", None)
            for parameter in operation.get("parameters", []):
                if parameter.get("name") == "threshold":
                    parameter["schema"] = {"type": "number", "minimum": 0, "maximum": 1}
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None and path in _EXAMPLES:
                body["example"] = _EXAMPLES[path]
