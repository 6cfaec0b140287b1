"""Strict decoding of the ``/predict`` requests into rows, or one 422 naming every offending field.

A good body costs one prebuilt ``msgspec`` decoder (strict: a string is never a number, ``24.5``
is never an integer) and one array. Only a body that fails it is walked again, field by field
(:func:`app.field_errors.body_errors`), so the answer names every problem at once, together with
a bad ``threshold``. A batch is decoded without the per-row cross-field check and checked on the
whole array at once with the same rule (:func:`app.schemas.breaks_cross_field_rule`). If the walk
finds nothing where the decoder failed, the two disagree: the answer keeps msgspec's word and the
disagreement is logged as a warning, never hidden.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Final
from urllib.parse import parse_qsl

import msgspec

from app.errors import RequestValidationError, UnsupportedMediaType
from app.field_errors import TYPES, body_errors, clean
from app.model import Rows
from app.schemas import (
    COLUMNS,
    DECODE_ERRORS,
    FEATURES,
    MAX_BATCH,
    RULE_FIELDS,
    FieldError,
    Threshold,
    breaks_cross_field_rule,
    customer_decoder,
    rows_of,
)

log = logging.getLogger("churn_api")

# A batch row: the fields, types and bounds of Customer without its per-row __post_init__.
_Row = msgspec.defstruct(
    "_Row", [(name, TYPES[name]) for name in FEATURES], forbid_unknown_fields=True, gc=False
)
_Batch = msgspec.defstruct(
    "_Batch",
    [("instances", Annotated[list[_Row], msgspec.Meta(min_length=1, max_length=MAX_BATCH)])],  # type: ignore[valid-type]
    forbid_unknown_fields=True,
)
_batch_decoder: Final = msgspec.json.Decoder(_Batch)
_RULE_COLUMNS: Final = tuple(COLUMNS[name] for name in RULE_FIELDS)


def customer_rows(raw: bytes, query_errors: list[FieldError]) -> Rows:
    """The one row of a ``/predict`` body, or the 422 naming every bad field (and the query's)."""
    try:
        customer = customer_decoder.decode(raw)
    except DECODE_ERRORS as first:
        raise _invalid(raw, False, first, query_errors) from None
    if query_errors:
        raise RequestValidationError(query_errors)
    return rows_of((customer,))


def batch_rows(raw: bytes, query_errors: list[FieldError]) -> Rows:
    """The rows of a ``/predict/batch`` body, or the 422 naming every bad field (and query's)."""
    try:
        batch: Any = _batch_decoder.decode(raw)  # a _Batch (made by defstruct: mypy cannot see it)
    except DECODE_ERRORS as first:
        raise _invalid(raw, True, first, query_errors) from None
    rows = rows_of(batch.instances)
    if breaks_cross_field_rule(*(rows[:, column] for column in _RULE_COLUMNS)).any():
        raise _invalid(raw, True, None, query_errors)
    if query_errors:
        raise RequestValidationError(query_errors)
    return rows


def _invalid(
    raw: bytes, batch: bool, first: Exception | None, query_errors: list[FieldError]
) -> RequestValidationError:
    errors = body_errors(raw, batch)
    if not errors:  # the decoder and the walk disagree: keep the decoder's word, and say so
        log.warning("the field walk found nothing in a body its decoder refused: %s", first)
        errors = [FieldError("body", "body", clean(str(first)))]
    return RequestValidationError(query_errors + errors)


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


def query_threshold(query: bytes) -> tuple[float | None, list[FieldError]]:
    """The optional ``threshold`` query value (the last one if repeated), or errors naming it.

    Every given value must be a number in [0, 1] (:data:`app.schemas.Threshold`); other query
    parameters are ignored.
    """
    if not query:
        return None, []
    threshold: float | None = None
    errors: list[FieldError] = []
    for key, raw in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if key != "threshold":
            continue
        try:
            threshold = msgspec.convert(raw, Threshold, strict=False)
        except msgspec.ValidationError as exc:
            message = clean(str(exc)) + f", got {raw[:32]!r}"
            errors.append(FieldError("query", "threshold", message))
    return (None if errors else threshold), errors
