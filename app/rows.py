"""Rows by column name, checked against the contract; every offending value named if not.

The protocol front ends turn their wire formats into rows as ``{column: value}`` dictionaries and
hand them here. :class:`app.mlflow_wire.Record` checks them, with the contract's types, bounds and
cross-field rule inherited from :class:`app.schemas.Customer` (columns other than the features are
dropped). A failure walks the rows again to name every offending value (``where`` spells a value's
place as the protocol does: ``dataframe_records[3].total_charges``, ``features[3].tenure_months``).
"""

from __future__ import annotations

import operator
import typing
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from typing import Any, Final

import msgspec
import numpy as np

from app.errors import InvalidInput
from app.mlflow_wire import Record, Records
from app.model import Rows
from app.schemas import CROSS_FIELD_RULE, FEATURES, Customer, breaks_cross_field_rule
from app.validation import clean, json_type

MAX_NAMED_ERRORS: Final = 10
TYPES: Final = typing.get_type_hints(Customer, include_extras=True)
_values: Final = operator.attrgetter(*FEATURES)

Where = Callable[[int, str], str]
"""The path of one value in the request: row index and column name."""


def checked_rows(rows: list[dict[str, Any]], where: Where) -> Rows:
    """Rows by column name as a float64 array in contract order, or the error naming them all."""
    try:
        records = msgspec.convert(rows, Records)
    except msgspec.ValidationError as exc:
        raise invalid(row_errors(rows, where), str(exc)) from None
    return array(records)


def array(records: list[Record]) -> Rows:
    flat = np.fromiter(chain.from_iterable(map(_values, records)), dtype=np.float64,
                       count=len(records) * len(FEATURES))  # fmt: skip
    return flat.reshape(len(records), len(FEATURES))


def row_errors(rows: Sequence[object], where: Where) -> Iterator[tuple[str, str]]:
    """(feature, message naming the row and column) for every offending value."""
    for number, row in enumerate(rows):
        if not isinstance(row, dict):
            yield "body", f"{where(number, '')[:-1]}: Expected an object, got {json_type(row)}"
            continue
        good = True
        for name in FEATURES:
            if name not in row:
                good = False
                yield name, f"{where(number, name)}: Field required"
                continue
            try:
                msgspec.convert(row[name], TYPES[name])
            except msgspec.ValidationError as exc:
                good = False
                yield name, f"{where(number, name)}: {clean(str(exc))}"
        if good and breaks_cross_field_rule(
            row["tenure_months"], row["monthly_charges"], row["total_charges"]
        ):
            yield "total_charges", f"{where(number, 'total_charges')}: {CROSS_FIELD_RULE}"


def invalid(errors: Iterator[tuple[str, str]], fallback: str) -> InvalidInput:
    found = list(errors)
    if not found:  # both paths must agree; keep msgspec's own word if they do not
        return InvalidInput(clean(fallback))
    shown = "; ".join(message for _, message in found[:MAX_NAMED_ERRORS])
    if len(found) > MAX_NAMED_ERRORS:
        shown += f"; and {len(found) - MAX_NAMED_ERRORS} more"
    return InvalidInput(shown, tuple(dict.fromkeys(name for name, _ in found)))
