"""Naming every offending field: the slow walk a request takes only once its decode failed.

The decoders (:mod:`app.validation`, :mod:`app.rows`) stop at the first error. Only then is the
body walked as a generic JSON document and every field checked on its own (with the contract's
types, bounds and cross-field rule from :mod:`app.schemas`), so a client learns about all its
mistakes in one answer while a good request pays nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import msgspec

from app.schemas import (
    CROSS_FIELD_RULE,
    DECODE_ERRORS,
    FEATURE_HINTS,
    FEATURES,
    MAX_BATCH,
    RULE_FIELDS,
    FieldError,
)
from app.schemas import breaks_cross_field_rule as breaks_rule

MAX_REPORTED_ERRORS: Final = 1000
TYPES: Final = FEATURE_HINTS
_MAX_NAME_CHARS: Final = 64


def feature_problems(document: dict[Any, Any]) -> Iterator[tuple[str, str]]:
    """(feature, message) for every feature of one customer that breaks the contract."""
    valid = True
    for name in FEATURES:
        if name not in document:
            valid = False
            yield name, "Field required"
            continue
        try:
            msgspec.convert(document[name], TYPES[name], strict=True)
        except msgspec.ValidationError as exc:
            valid = False
            yield name, clean(str(exc))
    if valid and breaks_rule(*(document[name] for name in RULE_FIELDS)):
        yield "total_charges", CROSS_FIELD_RULE


def body_errors(raw: bytes, batch: bool) -> list[FieldError]:
    """Every problem with ``raw`` as a ``/predict`` (or batch) body, at most MAX_REPORTED_ERRORS."""
    if not raw.strip():
        return [_body("Request body is empty; expected a JSON object")]
    try:
        document = msgspec.json.decode(raw)
    except DECODE_ERRORS as exc:  # msgspec.ValidationError: e.g. numbers such as 1e999
        return [_body(f"Request body is not valid JSON: {clean(str(exc))}")]
    found = _batch_errors(document) if batch else _customer_errors(document, "")
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
            "body", "instances", f"Expected 1 to {MAX_BATCH} instances, got {len(instances)}"
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
    for name, message in feature_problems(document):
        yield FieldError("body", prefix + name, message)


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
