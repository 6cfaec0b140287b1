"""One error tree, rendered to HTTP in one place.

Every failure the service knows about is a :class:`ServiceError` carrying its status code and
headers (``Retry-After`` on the 503s a client should retry). :func:`render` is the one map from an
error to the bytes a client gets, in the body shape of the route's front end (``{"detail"}``,
MLflow's ``{"error_code", "message"}`` or the Open Inference Protocol's ``{"error"}``): the
scoring endpoints, Litestar's exception handlers (:mod:`app.error_handlers`) and the request
observer's time limit (:mod:`app.observability`) all answer through it. Nothing a client sees ever
contains a traceback, a file path or a library version.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Final

import msgspec

from app.schemas import (
    ErrorBody,
    FieldError,
    InferenceErrorBody,
    MlflowErrorBody,
    ValidationErrorBody,
)

REQUEST_ID_KEY: Final = "churn_api.request_id"
"""Scope key holding the request's id (set by :mod:`app.observability`, read by the log lines)."""
ERROR_SHAPE: Final = "error_shape"
"""Route ``opt`` key naming the body shape of that route's errors: ``mlflow`` or ``inference``."""
_MLFLOW_CODES: Final = {413: "BAD_REQUEST", 500: "INTERNAL_ERROR", 503: "TEMPORARILY_UNAVAILABLE"}
_RETRY: Final[Mapping[str, str]] = {"Retry-After": "1"}
_encoder: Final = msgspec.json.Encoder()


class ServiceError(Exception):
    """Base of every error the service raises on purpose; as such, an unexpected 500."""

    status_code: ClassVar[int] = 500
    headers: ClassVar[Mapping[str, str]] = {}
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


class BodyTooLarge(ServiceError):
    status_code = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"Request body is larger than MAX_BODY_BYTES ({limit} bytes)")


class ModelNotLoaded(ServiceError):
    status_code = 503
    detail = "Model not loaded"


class Overloaded(ServiceError):
    status_code = 503
    headers = _RETRY
    detail = "Server is overloaded, retry shortly"


class TimedOut(ServiceError):
    """No response started within REQUEST_TIMEOUT_SECONDS (answered by the request observer)."""

    status_code = 503
    headers = _RETRY
    detail = "Request timed out, retry shortly"


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


class ClientDisconnected(ServiceError):
    """The client went away before its answer was sent: nobody is left to answer.

    Raised by the request layer (:class:`app.observability.RequestObserver`) when the server reports
    the disconnect, so every front end stops reading at once; counted and logged as 499 (nginx's
    code for a client that closed the request), never as a server error.
    """

    status_code = 499
    detail = "Client closed the request"


class StartupError(Exception):
    """The service cannot start: a bad setting or a champion that cannot be loaded."""


def expected(exc: ServiceError) -> bool:
    """Whether ``exc`` is answered as it is; otherwise it is a bug, logged and answered 500."""
    return exc.status_code < 500 or exc.status_code == 503 or isinstance(exc, ProtocolError)


def shape_of(scope: Mapping[str, object]) -> str | None:
    """The error body shape of the route that matched (``None``: ``{"detail"}``)."""
    opt = getattr(scope.get("route_handler"), "opt", None)  # no handler: no route matched
    found = opt.get(ERROR_SHAPE) if isinstance(opt, dict) else None
    return found if isinstance(found, str) else None


Rendered = tuple[int, dict[str, str], bytes]
"""Status, headers (besides Content-Type, which is JSON) and body of an error answer."""


def render(exc: ServiceError, shape: str | None) -> Rendered:
    """The answer to an expected error (see :func:`expected`), in the route's body shape."""
    if isinstance(exc, RequestValidationError):
        return 422, {}, _encoder.encode(ValidationErrorBody(exc.detail, exc.errors))
    code = exc.error_code if isinstance(exc, ProtocolError) else None
    return answer(exc.status_code, exc.detail, shape, exc.headers, code)


def answer(
    status: int,
    detail: str,
    shape: str | None,
    headers: Mapping[str, str] | None = None,
    code: str | None = None,
) -> Rendered:
    """An error answer in the body shape of the route's protocol (``{"detail"}`` by default)."""
    body: object
    if shape == "mlflow":
        body = MlflowErrorBody(code or _MLFLOW_CODES.get(status, "BAD_REQUEST"), detail)
    elif shape == "inference":
        body = InferenceErrorBody(detail)
    else:
        body = ErrorBody(detail)
    return status, dict(headers or {}), _encoder.encode(body)


UNEXPECTED: Final = ServiceError()
"""What a client gets for a bug: ``500 Internal server error``."""
