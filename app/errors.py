"""One error tree, mapped to HTTP in one place.

Every failure the service knows about is a :class:`ServiceError` carrying its status code; the
handlers at the bottom turn those, Litestar's own exceptions and anything unexpected into short JSON
bodies. Nothing a client sees ever contains a traceback, a file path or a library version.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from app.schemas import (
    ErrorBody,
    FieldError,
    InferenceErrorBody,
    MlflowErrorBody,
    ValidationErrorBody,
)

if TYPE_CHECKING:
    from litestar.types import ExceptionHandlersMap

log = logging.getLogger("churn_api")


class ServiceError(Exception):
    """Base of every error the service raises on purpose."""

    status_code: ClassVar[int] = 500
    detail: str = "Internal server error"

    def __init__(self, detail: str | None = None) -> None:
        if detail is not None:
            self.detail = detail
        super().__init__(self.detail)


class RequestValidationError(ServiceError):
    status_code = 422
    detail = "Request validation failed"

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__()


class UnsupportedMediaType(ServiceError):
    status_code = 415
    detail = "Content-Type must be application/json"


class ModelNotLoaded(ServiceError):
    status_code = 503
    detail = "Model not loaded"


class Overloaded(ServiceError):
    status_code = 503
    detail = "Server is overloaded, retry shortly"


class ProtocolError(ServiceError):
    """A request refused by a protocol front end (MLflow scoring, Open Inference Protocol).

    The body shape is the protocol's (see :data:`ERROR_SHAPE`); ``error_code`` is MLflow's word
    for the failure, ``fields`` the contract features named (counted in metrics).
    """

    status_code = 400
    error_code: ClassVar[str] = "INVALID_PARAMETER_VALUE"

    def __init__(self, detail: str, fields: tuple[str, ...] = ()) -> None:
        self.fields = fields
        super().__init__(detail)


class MalformedRequest(ProtocolError):
    """The body is not a request of the protocol at all (not JSON, wrong layout, binary data)."""

    error_code = "BAD_REQUEST"


class InvalidInput(ProtocolError):
    """A well-formed request whose rows break the contract (type, bound, rule, missing column)."""


class UnknownModel(ProtocolError):
    status_code = 404
    error_code = "RESOURCE_DOES_NOT_EXIST"


class ProtocolMediaType(ProtocolError):
    status_code = 415
    error_code = "BAD_REQUEST"


class StartupError(Exception):
    """The service cannot start: a bad setting or a champion that cannot be loaded."""


def _json(body: object, status_code: int, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(body, status_code=status_code, media_type=MediaType.JSON, headers=headers)


ERROR_SHAPE: Final = "error_shape"
"""Route ``opt`` key (or, in front of Litestar's router, scope key) naming the body shape of that
route's errors: ``mlflow`` or ``inference``."""
_MLFLOW_CODES: Final = {413: "BAD_REQUEST", 500: "INTERNAL_ERROR", 503: "TEMPORARILY_UNAVAILABLE"}


def _error(
    request: Request[Any, Any, Any],
    status: int,
    detail: str,
    headers: Mapping[str, str] | None = None,
    code: str | None = None,
) -> Response[Any]:
    """An error answer in the body shape of the route's protocol (``{"detail"}`` by default)."""
    shape = _shape(request)
    body: object
    if shape == "mlflow":
        body = MlflowErrorBody(code or _MLFLOW_CODES.get(status, "BAD_REQUEST"), detail)
    elif shape == "inference":
        body = InferenceErrorBody(detail)
    else:
        body = ErrorBody(detail)
    return _json(body, status, dict(headers) if headers else None)


def _shape(request: Request[Any, Any, Any]) -> str | None:
    handler = request.scope.get("route_handler")  # absent when no route matched (or app.fastpath)
    found = handler.opt.get(ERROR_SHAPE) if handler is not None else request.scope.get(ERROR_SHAPE)
    return found if isinstance(found, str) else None


def _service_error(request: Request[Any, Any, Any], exc: ServiceError) -> Response[Any]:
    if isinstance(exc, RequestValidationError):
        _count_validation_failures(exc.errors)
        return _json(ValidationErrorBody(exc.detail, exc.errors), 422)
    if isinstance(exc, ProtocolError):
        _count_validation_failures([FieldError("body", name, exc.detail) for name in exc.fields])
        return _error(request, exc.status_code, exc.detail, code=exc.error_code)
    if exc.status_code >= 500 and not isinstance(exc, (ModelNotLoaded, Overloaded)):
        return _unexpected(request, exc)
    headers = {"Retry-After": "1"} if isinstance(exc, Overloaded) else None
    return _error(request, exc.status_code, exc.detail, headers)


def _parameter_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """Litestar's own parameter validation answers 422 naming the fields, not 400.

    Predict bodies and their ``threshold`` are checked together by the strict DTO; what reaches
    here is a parameter Litestar checked itself, or an empty body (Litestar's ``data`` key).
    """
    errors = [_field_error(item) for item in (exc.extra if isinstance(exc.extra, list) else [])]
    if not errors:
        errors = [FieldError("query", "query", "Invalid query parameters")]
    _count_validation_failures(errors)
    return _json(ValidationErrorBody("Request validation failed", errors), 422)


def _field_error(item: object) -> FieldError:
    if not isinstance(item, dict):
        return FieldError("query", "query", str(item))
    key = str(item.get("key", "query"))
    if key == "data":
        return FieldError("body", "body", "Request body is empty; expected a JSON object")
    return FieldError(str(item.get("source", "query")), key, str(item.get("message", "Invalid")))


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if exc.status_code >= 500:
        return _unexpected(request, exc)
    status = 422 if exc.status_code == 400 and _shape(request) is None else exc.status_code
    detail = exc.detail
    if exc.status_code == 413:
        limit = request.route_handler.resolve_request_max_body_size()
        detail = f"Request body is larger than MAX_BODY_BYTES ({limit} bytes)"
    return _error(request, status, detail, exc.headers)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error(
        "unhandled error on %s %s",
        request.method,
        request.url.path,
        exc_info=exc,
        extra={"request_id": _request_id(request)},  # the client has it in a header
    )
    return _error(request, 500, "Internal server error")


def error_response(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The error map for code in front of Litestar (:mod:`app.fastpath`): same answers."""
    if isinstance(exc, ServiceError):
        return _service_error(request, exc)
    return _unexpected(request, exc)


# app.metrics and app.observability are imported on first use, not with this module: the
# ``churn-api`` command imports this module before granian's workers exist, and prometheus_client
# must be imported only in processes that write metrics (after PROMETHEUS_MULTIPROC_DIR is ready).
def _count_validation_failures(errors: list[FieldError]) -> None:
    from app.metrics import validation_failed

    validation_failed(errors)


def _request_id(request: Request[Any, Any, Any]) -> str | None:
    from app.observability import REQUEST_ID_KEY

    found = request.scope.get(REQUEST_ID_KEY)
    return found if isinstance(found, str) else None


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ValidationException: _parameter_error,
    ServiceError: _service_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
