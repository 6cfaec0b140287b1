"""Litestar's exception handlers: whatever a route raises, answered by :func:`app.errors.render`.

Service errors are rendered as they are; Litestar's own exceptions (routing's 404 and 405, the
parameter checks of the operations routes, a body over ``MAX_BODY_BYTES`` on a route that reads
it through Litestar) are translated first; anything else is a bug: logged once with its traceback
and the request id, answered ``500 Internal server error``. The 422s count the fields they name.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from app.errors import (
    REQUEST_ID_KEY,
    UNEXPECTED,
    ProtocolError,
    Rendered,
    RequestValidationError,
    ServiceError,
    answer,
    expected,
    render,
    shape_of,
)
from app.metrics import validation_failed
from app.schemas import FieldError

if TYPE_CHECKING:
    from litestar.types import ExceptionHandlersMap

log = logging.getLogger("churn_api")

AnyRequest = Request[Any, Any, Any]


def rendered(scope: Mapping[str, Any], exc: Exception) -> Rendered:
    """What the error map answers for ``exc`` on this request (logged and counted here)."""
    if not isinstance(exc, ServiceError) or not expected(exc):
        log.error(
            "unhandled error on %s %s",
            scope["method"],
            scope["path"],
            exc_info=exc,
            extra={"request_id": scope.get(REQUEST_ID_KEY)},  # the client has it
        )
        return render(UNEXPECTED, shape_of(scope))
    if isinstance(exc, RequestValidationError):
        validation_failed(exc.errors)
    elif isinstance(exc, ProtocolError):
        validation_failed([FieldError("body", name, exc.detail) for name in exc.fields])
    return render(exc, shape_of(scope))


def _respond(result: Rendered) -> Response[Any]:
    status, headers, body = result
    return Response(body, status_code=status, media_type=MediaType.JSON, headers=headers or None)


def _service_error(request: AnyRequest, exc: Exception) -> Response[Any]:
    return _respond(rendered(request.scope, exc))


def _parameter_error(request: AnyRequest, exc: ValidationException) -> Response[Any]:
    """Litestar's own parameter validation answers 422 naming the fields, not 400."""
    errors = [_field_error(item) for item in (exc.extra if isinstance(exc.extra, list) else [])]
    if not errors:
        errors = [FieldError("query", "query", "Invalid query parameters")]
    return _service_error(request, RequestValidationError(errors))


def _field_error(item: object) -> FieldError:
    if not isinstance(item, dict):
        return FieldError("query", "query", str(item))
    key = str(item.get("key", "query"))
    if key == "data":
        return FieldError("body", "body", "Request body is empty; expected a JSON object")
    return FieldError(str(item.get("source", "query")), key, str(item.get("message", "Invalid")))


def _http_error(request: AnyRequest, exc: HTTPException) -> Response[Any]:
    if exc.status_code >= 500:
        return _service_error(request, exc)
    # Routing's answers (404, 405) are not any front end's: the default shape.
    shape = shape_of(request.scope) if exc.status_code not in (404, 405) else None
    status = 422 if exc.status_code == 400 and shape is None else exc.status_code
    detail = exc.detail
    if exc.status_code == 413:
        limit = request.route_handler.resolve_request_max_body_size()
        detail = f"Request body is larger than MAX_BODY_BYTES ({limit} bytes)"
    return _respond(answer(status, detail, shape, exc.headers))


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ValidationException: _parameter_error,
    HTTPException: _http_error,
    Exception: _service_error,
}
