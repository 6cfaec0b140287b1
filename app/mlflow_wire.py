"""Wire types of MLflow's scoring protocol (``POST /invocations`` of ``mlflow models serve``).

A request is a JSON object with exactly one of ``dataframe_split``, ``dataframe_records``,
``instances`` or ``inputs`` and an optional ``params`` object; other top-level keys are ignored,
as MLflow ignores them. Rows are the contract's customers (:class:`app.schemas.Customer`: the same
types, bounds and cross-field rule, inherited), except that columns the model does not use are
dropped, as MLflow drops them.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from msgspec import UNSET, Meta, UnsetType

from app.schemas import Customer


class Record(Customer, forbid_unknown_fields=False, frozen=True, gc=False):
    """One row by column name; columns other than the five features are dropped."""


class Positional(Customer, array_like=True, frozen=True, gc=False):
    """One row as its five values in contract column order (checked like a :class:`Record`)."""


class DataframeSplit(msgspec.Struct, frozen=True):
    """pandas' ``orient="split"``: column names, then rows of values in that column order."""

    columns: list[str]
    data: list[list[Any]]
    index: list[Any] | None = None


Records = list[Record]
Columns = dict[str, list[Any]]


class Invocation(msgspec.Struct, frozen=True):
    """An ``application/json`` request body: exactly one of the four input fields."""

    dataframe_split: DataframeSplit | UnsetType = UNSET
    dataframe_records: Records | UnsetType = UNSET
    instances: Records | UnsetType = UNSET
    inputs: Columns | Records | UnsetType = UNSET
    params: dict[str, Any] | None = None
    """Accepted and ignored, as MLflow does for scikit-learn models."""


INPUT_FIELDS: Final = ("dataframe_split", "dataframe_records", "instances", "inputs")


class Predictions(msgspec.Struct, frozen=True):
    predictions: Annotated[
        list[Any],
        Meta(
            description=(
                "One answer per row, in input order: the model's `predict` label, or "
                "`[P(no churn), P(churn)]` for a model logged with "
                '`pyfunc_predict_fn="predict_proba"`.'
            ),
            examples=[[1, 0]],
        ),
    ]


invocation_decoder: Final = msgspec.json.Decoder(Invocation)
encoder: Final = msgspec.json.Encoder()
