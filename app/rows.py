"""Rows by column name, checked against the contract; every offending value named if not.

The protocol front ends turn their wire formats into rows as ``{column: value}`` dictionaries and
hand them here. :class:`app.mlflow_wire.Record` checks them, with the contract's types, bounds and
cross-field rule inherited from :class:`app.schemas.Customer` (columns other than the features are
dropped). A failure walks the rows again to name every offending value (``where`` spells a value's
place as the protocol does: ``dataframe_records[3].total_charges``, ``features[3].tenure_months``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import msgspec

from app.errors import InvalidInput
from app.field_errors import clean, feature_problems, json_type
from app.mlflow_wire import Records
from app.model import Rows
from app.schemas import rows_of

MAX_NAMED_ERRORS: Final = 10

Where = Callable[[int, str], str]
"""The path of one value in the request: row index and column name."""


def checked_rows(rows: list[dict[str, Any]], where: Where) -> Rows:
    """Rows by column name as a float64 array in contract order, or the error naming them all."""
    try:
        records = msgspec.convert(rows, Records)
    except msgspec.ValidationError as exc:
        raise invalid(row_errors(rows, where), str(exc)) from None
    return rows_of(records)


def row_errors(rows: Sequence[object], where: Where) -> Iterator[tuple[str, str]]:
    """(feature, message naming the row and column) for every offending value."""
    for number, row in enumerate(rows):
        if not isinstance(row, dict):
            yield "body", f"{where(number, '')[:-1]}: Expected an object, got {json_type(row)}"
            continue
        for name, message in feature_problems(row):
            yield name, f"{where(number, name)}: {message}"


def invalid(errors: Iterator[tuple[str, str]], fallback: str) -> InvalidInput:
    found = list(errors)
    if not found:  # both paths must agree; keep msgspec's own word if they do not
        return InvalidInput(clean(fallback))
    shown = "; ".join(message for _, message in found[:MAX_NAMED_ERRORS])
    if len(found) > MAX_NAMED_ERRORS:
        shown += f"; and {len(found) - MAX_NAMED_ERRORS} more"
    return InvalidInput(shown, tuple(dict.fromkeys(name for name, _ in found)))
