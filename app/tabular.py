"""Rows from MLflow's scoring formats (four JSON layouts and CSV), checked like ``/predict``.

Every layout becomes a list of rows by column name; the five features are picked by name (any
order, other columns dropped) and checked by :mod:`app.rows` like ``/predict`` checks a customer.
A good request is decoded once by a prebuilt decoder (records straight into checked rows); only a
bad one is walked again, so that the error names every offending row and column
(``dataframe_records[3].total_charges: ...``).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec
from msgspec import UNSET

from app.errors import InvalidInput, MalformedRequest
from app.field_errors import clean, json_type
from app.mlflow_wire import INPUT_FIELDS, DataframeSplit, invocation_decoder
from app.model import Rows
from app.rows import checked_rows, invalid, row_errors
from app.schemas import DECODE_ERRORS, FEATURE_TYPES, FEATURES, MAX_BATCH, rows_of

_INTEGER: Final = re.compile(r"[+-]?[0-9]+")
_NUMBER: Final = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")  # no nan, 1_0
_BOOLEANS: Final = {"true": True, "false": False}
ONE_OF: Final = f"exactly one of {', '.join(INPUT_FIELDS)}"


def invocation_rows(body: bytes) -> Rows:
    """The rows of an ``application/json`` request, or the error naming what is wrong."""
    try:
        request = invocation_decoder.decode(body)
    except DECODE_ERRORS as exc:
        raise _json_error(body, exc) from None
    chosen = [name for name in INPUT_FIELDS if getattr(request, name) is not UNSET]
    if len(chosen) != 1:
        raise MalformedRequest(f"The request must be a JSON object with {ONE_OF}; got {chosen}")
    field = chosen[0]
    value = getattr(request, field)
    if isinstance(value, list):  # records (dataframe_records, instances, inputs as records)
        _count(field, len(value))
        return rows_of(value)
    if isinstance(value, DataframeSplit):
        return checked_rows(_split_rows(value), _at_split)
    return checked_rows(_column_rows(value), _at_inputs)


def csv_rows(body: bytes) -> Rows:
    """The rows of a ``text/csv`` request: a header row naming the columns, then the rows."""
    try:
        text = body.decode("utf-8")
        table = list(csv.reader(io.StringIO(text, newline="")))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MalformedRequest(f"Request body is not UTF-8 CSV: {exc}") from None
    if not table or not table[0]:
        raise MalformedRequest("Request body is empty; expected a CSV header row and rows")
    header, lines = [cell.strip() for cell in table[0]], [line for line in table[1:] if line]
    positions = _positions(header, "csv header")
    _count("csv", len(lines))
    rows = []
    for number, line in enumerate(lines):
        if len(line) != len(header):
            raise InvalidInput(f"csv[{number}]: {len(line)} values for {len(header)} columns")
        rows.append({name: _parse(name, line[index]) for name, index in positions.items()})
    return checked_rows(rows, lambda i, c: f"csv[{i}].{c}")


def _split_rows(split: DataframeSplit) -> list[dict[str, Any]]:
    positions = _positions(split.columns, "dataframe_split.columns")
    _count("dataframe_split.data", len(split.data))
    width = len(split.columns)
    for number, values in enumerate(split.data):
        if len(values) != width:
            raise InvalidInput(
                f"dataframe_split.data[{number}]: {len(values)} values for {width} columns"
            )
    return [{name: values[i] for name, i in positions.items()} for values in split.data]


def _column_rows(columns: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    missing = [name for name in FEATURES if name not in columns]
    if missing:
        raise InvalidInput(f"inputs: missing columns {missing}", tuple(missing))
    lengths = {len(columns[name]) for name in FEATURES}
    if len(lengths) != 1:
        raise InvalidInput(f"inputs: the columns have different lengths {sorted(lengths)}")
    _count("inputs", lengths.pop())
    return [
        dict(zip(FEATURES, values, strict=True))
        for values in zip(*(columns[n] for n in FEATURES), strict=True)
    ]


def _positions(columns: Sequence[str], where: str) -> dict[str, int]:
    missing = [name for name in FEATURES if name not in columns]
    if missing:
        raise InvalidInput(f"{where}: missing columns {missing}", tuple(missing))
    repeated = [name for name in FEATURES if list(columns).count(name) > 1]
    if repeated:
        raise InvalidInput(f"{where}: repeated columns {repeated}", tuple(repeated))
    return {name: list(columns).index(name) for name in FEATURES}


def _parse(name: str, cell: str) -> object:
    """A CSV cell as the JSON value it stands for; anything else stays a string (and fails)."""
    text = cell.strip()
    kind = FEATURE_TYPES[name]
    if kind is bool:
        return _BOOLEANS.get(text.lower(), text)
    if kind is int:
        return int(text) if _INTEGER.fullmatch(text) else text
    return float(text) if _NUMBER.fullmatch(text) else text


def _count(where: str, rows: int) -> None:
    if not 1 <= rows <= MAX_BATCH:
        raise InvalidInput(f"{where}: expected 1 to {MAX_BATCH} rows (MAX_BATCH), got {rows}")


def _json_error(body: bytes, first: Exception) -> Exception:
    """Why a JSON body failed the prebuilt decoder, naming every offending value."""
    if not body.strip():
        return MalformedRequest("Request body is empty; expected a JSON object")
    try:
        document = msgspec.json.decode(body)
    except DECODE_ERRORS as exc:
        return MalformedRequest(f"Request body is not valid JSON: {clean(str(exc))}")
    if not isinstance(document, dict):
        return MalformedRequest(f"Expected a JSON object with {ONE_OF}, got {json_type(document)}")
    chosen = [name for name in INPUT_FIELDS if name in document]
    if len(chosen) != 1:
        return MalformedRequest(f"The request must be a JSON object with {ONE_OF}; got {chosen}")
    field, value = chosen[0], document[chosen[0]]
    params = document.get("params")
    if params is not None and not isinstance(params, dict):
        return MalformedRequest(f"params: Expected an object, got {json_type(params)}")
    try:
        if field == "dataframe_split":
            split = msgspec.convert(value, DataframeSplit)
            return invalid(row_errors(_split_rows(split), _at_split), str(first))
        if field == "inputs" and isinstance(value, dict):
            columns = msgspec.convert(value, dict[str, list[Any]])
            return invalid(row_errors(_column_rows(columns), _at_inputs), str(first))
    except msgspec.ValidationError as exc:
        return MalformedRequest(f"{field}: {clean(str(exc))} (at {_at(str(exc))})")
    except InvalidInput as exc:
        return exc
    if not isinstance(value, list):
        return MalformedRequest(f"{field}: Expected an array of objects, got {json_type(value)}")
    if not 1 <= len(value) <= MAX_BATCH:
        return InvalidInput(
            f"{field}: expected 1 to {MAX_BATCH} rows (MAX_BATCH), got {len(value)}"
        )
    return invalid(row_errors(value, lambda i, c: f"{field}[{i}].{c}"), str(first))


def _at_split(number: int, name: str) -> str:
    return f"dataframe_split.data[{number}].{name}"


def _at_inputs(number: int, name: str) -> str:
    return f"inputs.{name}[{number}]"


def _at(message: str) -> str:
    return message.rsplit(" - at `$", 1)[-1].rstrip("`") or "$"
