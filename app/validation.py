"""Strict request decoding, and the slow path that names every offending field.

The fast path is one prebuilt ``msgspec`` decoder per body type: it stops at the first error.
Only when it fails does :func:`body_errors` walk the generic JSON document and check every field on
its own, so a client learns about all its mistakes in one answer while a good request pays nothing.
"""

from __future__ import annotations

import typing
from collections.abc import Generator, Iterator
from typing import Annotated, Any, Final, TypeVar

import msgspec
from litestar.dto import AbstractDTO, DTOFieldDefinition

from app.errors import RequestValidationError, UnsupportedMediaType
from app.schemas import (
    CROSS_FIELD_RULE,
    FEATURES,
    MAX_BATCH,
    BatchRequest,
    Customer,
    FieldError,
    batch_decoder,
    breaks_cross_field_rule,
    customer_decoder,
)

if typing.TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.openapi.spec import Reference, Schema
    from litestar.typing import FieldDefinition

MAX_REPORTED_ERRORS: Final = 1000
Threshold = Annotated[float, msgspec.Meta(ge=0, le=1)]
_FIELD_TYPES: Final = typing.get_type_hints(Customer, include_extras=True)
_MAX_NAME_CHARS: Final = 64

T = TypeVar("T", Customer, BatchRequest)

_DECODERS: Final[dict[type[Any], msgspec.json.Decoder[Any]]] = {
    Customer: customer_decoder,
    BatchRequest: batch_decoder,
}


def decode_body(raw: bytes, body_type: type[T]) -> T:
    """Decode ``raw`` strictly into ``body_type`` or raise an error naming every bad field."""
    try:
        return _DECODERS[body_type].decode(raw)  # type: ignore[no-any-return]
    except (
        msgspec.DecodeError,
        msgspec.ValidationError,
        RecursionError,
        UnicodeDecodeError,
    ) as first:  # invalid UTF-8 inside a JSON string is a UnicodeDecodeError
        errors = body_errors(raw, body_type)
        if not errors:  # both paths must agree; keep msgspec's own word if they do not
            errors = [FieldError("body", "body", clean(str(first)))]
        raise RequestValidationError(errors) from None


def check_media_type(content_type: str | None) -> None:
    """JSON bodies only; a request without a Content-Type is read as JSON."""
    if content_type is None:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return
    raise UnsupportedMediaType()


def query_threshold(raw: str | None) -> tuple[float | None, list[FieldError]]:
    """The optional ``threshold`` query value: a number in [0, 1], or an error naming it."""
    if raw is None:
        return None, []
    try:
        return msgspec.convert(raw, Threshold, strict=False), []
    except msgspec.ValidationError as exc:
        return None, [FieldError("query", "threshold", clean(str(exc)) + f", got {raw[:32]!r}")]


class StrictJSONBody(AbstractDTO[T]):
    """Decodes a predict request strictly, straight from the raw body, with one prebuilt decoder.

    Litestar would convert bodies in lax mode (``"79.5"`` as a number, ``1`` as ``true``); this
    DTO replaces that step while keeping the body type in OpenAPI. The ``threshold`` query value
    is checked here too, so a request with several problems gets one answer naming all of them.
    """

    @classmethod
    def generate_field_definitions(cls, model_type: type[Any]) -> Generator[DTOFieldDefinition]:
        yield from ()

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        return False

    @classmethod
    def create_for_field_definition(
        cls, field_definition: FieldDefinition, handler_id: str, backend_cls: Any = None
    ) -> None:
        return None

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: SchemaCreator
    ) -> Reference | Schema:
        return schema_creator.for_field_definition(field_definition)

    def decode_bytes(self, value: bytes) -> T:
        check_media_type(self.asgi_connection.headers.get("content-type"))
        _, query_errors = query_threshold(self.asgi_connection.query_params.get("threshold"))
        try:
            body_type: type[T] = self.asgi_connection.route_handler.opt["body_type"]
            body = decode_body(value, body_type)
        except RequestValidationError as exc:
            raise RequestValidationError(query_errors + exc.errors) from None
        if query_errors:
            raise RequestValidationError(query_errors)
        return body

    def decode_builtins(self, value: dict[str, Any]) -> T:
        raise NotImplementedError("StrictJSONBody decodes raw bytes only")


def body_errors(raw: bytes, body_type: type[Any]) -> list[FieldError]:
    """Every problem with ``raw`` as a ``body_type`` body, capped at MAX_REPORTED_ERRORS."""
    if not raw.strip():
        return [_body("Request body is empty; expected a JSON object")]
    try:
        document = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        return [_body(f"Request body is not valid JSON: {clean(str(exc))}")]
    except msgspec.ValidationError as exc:  # e.g. numbers out of range such as 1e999
        return [_body(f"Request body is not valid JSON: {clean(str(exc))}")]
    found = _batch_errors(document) if body_type is BatchRequest else _customer_errors(document, "")
    errors: list[FieldError] = []
    for error in found:
        errors.append(error)
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
    return errors


def _batch_errors(document: object) -> Iterator[FieldError]:
    if not isinstance(document, dict):
        yield _body(f"Expected a JSON object, got {json_type(document)}")
        return
    yield from _unknown_fields(document, ("instances",), "")
    if "instances" not in document:
        yield FieldError("body", "instances", "Field required")
        return
    instances = document["instances"]
    if not isinstance(instances, list):
        yield FieldError("body", "instances", f"Expected an array, got {json_type(instances)}")
        return
    if not 1 <= len(instances) <= MAX_BATCH:
        yield FieldError(
            "body",
            "instances",
            f"Expected 1 to {MAX_BATCH} instances, got {len(instances)}",
        )
        return
    for index, item in enumerate(instances):
        yield from _customer_errors(item, f"instances[{index}].")


def _customer_errors(document: object, prefix: str) -> Iterator[FieldError]:
    where = prefix.rstrip(".") or "body"
    if not isinstance(document, dict):
        yield FieldError("body", where, f"Expected a JSON object, got {json_type(document)}")
        return
    yield from _unknown_fields(document, FEATURES, prefix)
    valid = True
    for name in FEATURES:
        if name not in document:
            valid = False
            yield FieldError("body", prefix + name, "Field required")
            continue
        try:
            msgspec.convert(document[name], _FIELD_TYPES[name], strict=True)
        except msgspec.ValidationError as exc:
            valid = False
            yield FieldError("body", prefix + name, clean(str(exc)))
    if valid and breaks_cross_field_rule(
        document["tenure_months"], document["monthly_charges"], document["total_charges"]
    ):
        yield FieldError("body", prefix + "total_charges", CROSS_FIELD_RULE)


def _unknown_fields(
    document: dict[Any, Any], allowed: tuple[str, ...], prefix: str
) -> Iterator[FieldError]:
    for key in document:
        if key not in allowed:
            name = str(key)
            if len(name) > _MAX_NAME_CHARS:
                name = name[:_MAX_NAME_CHARS] + "…"
            yield FieldError("body", prefix + name, "Unknown field")


def _body(message: str) -> FieldError:
    return FieldError("body", "body", message)


def clean(message: str) -> str:
    """msgspec's message without its ``- at `$...``` suffix (the field is named separately)."""
    return message.split(" - at `$", 1)[0]


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
