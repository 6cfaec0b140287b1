"""Rows from Open Inference Protocol input tensors, checked like ``/predict``; outputs back.

Two layouts are accepted: one ``[N, 5]`` tensor (any name; FP64, FP32, INT64 or INT32) with the
columns in contract order, or, with the request parameter ``content_type: "pd"``, one ``[N]``
tensor per feature named after it (``is_month_to_month`` as BOOL). A numeric value stands for an
integer feature only when it is integral, and for ``is_month_to_month`` only as 0 or 1; then every
row passes the contract's check (:func:`app.tabular.checked_rows`). Binary tensor data and shared
memory are refused with a 400 saying so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec
import numpy as np

from app.errors import InvalidInput, MalformedRequest
from app.inference_wire import (
    DATA_TYPES,
    InferRequest,
    OutputTensor,
    RequestedOutput,
    Tensor,
    flat_decoders,
    nested_decoders,
)
from app.model import Rows, Scores
from app.rows import checked_rows
from app.schemas import FEATURES, MAX_BATCH

OUTPUTS: Final = ("predict_proba", "predict")
JSON_ONLY: Final = (
    "binary tensor data is not supported: send JSON tensors (tritonclient: binary_data=False, "
    "and name the outputs with binary_data=False)"
)
_INTEGER_FEATURES: Final = frozenset({"tenure_months", "num_support_tickets"})
_BOOLEAN_FEATURE: Final = "is_month_to_month"
_NUMERIC: Final = ("FP64", "FP32", "INT64", "INT32")


def request_rows(request: InferRequest) -> Rows:
    """The rows of an infer request in contract order, or the error naming row and feature."""
    _refuse_binary(request)
    content_type = (request.parameters or {}).get("content_type")
    if content_type == "pd":
        return _columns(request.inputs)
    if content_type not in (None, "np"):
        raise MalformedRequest(
            f"parameters.content_type: expected 'pd' or none, got {content_type!r}"
        )
    if len(request.inputs) != 1:
        raise MalformedRequest(
            f"expected one input tensor of shape [N, {len(FEATURES)}] "
            f"(columns {', '.join(FEATURES)}), "
            'or parameters {"content_type": "pd"} with one input per feature; '
            f"got {len(request.inputs)} inputs"
        )
    tensor = request.inputs[0]
    if tensor.datatype not in _NUMERIC:
        raise InvalidInput(
            f"{tensor.name}: datatype must be one of {', '.join(_NUMERIC)}, got {tensor.datatype!r}"
        )
    if len(tensor.shape) != 2 or tensor.shape[1] != len(FEATURES):
        raise InvalidInput(f"{tensor.name}: shape must be [N, {len(FEATURES)}], got {tensor.shape}")
    count = _count(tensor.name, tensor.shape[0])
    values = _values(tensor, count * len(FEATURES))
    width = len(FEATURES)
    rows = [
        {name: _typed(name, values[i * width + j]) for j, name in enumerate(FEATURES)}
        for i in range(count)
    ]
    return checked_rows(rows, lambda i, c: f"{tensor.name}[{i}].{c}")


def outputs(
    requested: Sequence[RequestedOutput] | None, churn: Scores, labels: Sequence[bool]
) -> list[OutputTensor]:
    """The requested outputs (none: both): ``predict_proba`` [N, 2] FP64, ``predict`` [N] INT64."""
    names = [output.name for output in requested] if requested else list(OUTPUTS)
    answered = []
    for name in names:
        if name == "predict_proba":
            answered.append(OutputTensor(name, [len(churn), 2], "FP64", _pairs(churn)))
        else:
            answered.append(OutputTensor(name, [len(churn)], "INT64", [int(b) for b in labels]))
    return answered


def _pairs(churn: Scores) -> list[float]:
    """``[1 - p, p]`` of each row, row after row; one row (most requests) without numpy calls."""
    if len(churn) == 1:
        probability = float(churn[0])
        return [1.0 - probability, probability]
    pairs: list[float] = np.column_stack([1.0 - churn, churn]).ravel().tolist()
    return pairs


def check_outputs(requested: Sequence[RequestedOutput] | None) -> None:
    """Only this model's outputs, as JSON tensors."""
    for output in requested or ():
        if output.name not in OUTPUTS:
            raise InvalidInput(
                f"outputs: unknown output {output.name!r}; this model has {', '.join(OUTPUTS)}"
            )
        parameters = output.parameters or {}
        if parameters.get("binary_data") is True:
            raise MalformedRequest(f"outputs {output.name!r}: {JSON_ONLY}")
        _refuse(parameters, f"outputs {output.name!r}")


def _columns(inputs: Sequence[Tensor]) -> Rows:
    by_name: dict[str, Tensor] = {}
    for tensor in inputs:
        if tensor.name not in FEATURES:
            raise InvalidInput(
                f"inputs: unknown input {tensor.name[:64]!r}; with content_type pd the inputs "
                f"are the features {', '.join(FEATURES)}"
            )
        if tensor.name in by_name:
            raise InvalidInput(f"inputs: {tensor.name} is given twice", (tensor.name,))
        by_name[tensor.name] = tensor
    missing = [name for name in FEATURES if name not in by_name]
    if missing:
        raise InvalidInput(f"inputs: missing features {missing}", tuple(missing))
    counts = {name: _column_length(tensor) for name, tensor in by_name.items()}
    if len(set(counts.values())) != 1:
        raise InvalidInput(f"inputs: the features have different lengths {counts}")
    count = _count("inputs", counts[FEATURES[0]])
    columns = {name: _values(by_name[name], count) for name in FEATURES}
    rows = [{name: _typed(name, columns[name][i]) for name in FEATURES} for i in range(count)]
    return checked_rows(rows, lambda i, c: f"{c}[{i}]")


def _column_length(tensor: Tensor) -> int:
    if tensor.datatype not in DATA_TYPES:
        raise InvalidInput(
            f"{tensor.name}: datatype must be one of {', '.join(DATA_TYPES)}, "
            f"got {tensor.datatype!r}",
            (tensor.name,),
        )
    if len(tensor.shape) == 1 or (len(tensor.shape) == 2 and tensor.shape[1] == 1):
        return tensor.shape[0]
    raise InvalidInput(
        f"{tensor.name}: shape must be [N] or [N, 1], got {tensor.shape}", (tensor.name,)
    )


def _count(where: str, rows: int) -> int:
    if not 1 <= rows <= MAX_BATCH:
        raise InvalidInput(f"{where}: expected 1 to {MAX_BATCH} rows (MAX_BATCH), got {rows}")
    return rows


def _values(tensor: Tensor, expected: int) -> list[Any]:
    """The tensor's data as a flat list of values of its datatype (strictly: 1.5 is no INT64)."""
    try:
        values: list[Any] = flat_decoders[tensor.datatype].decode(tensor.data)
    except msgspec.ValidationError:
        try:
            nested = nested_decoders[tensor.datatype].decode(tensor.data)
        except msgspec.ValidationError as exc:
            message = str(exc).replace("`$", f"`{tensor.name}.data")
            raise InvalidInput(f"{tensor.name}: {tensor.datatype} data: {message}") from None
        values = [value for inner in nested for value in inner]
    if len(values) != expected:
        raise InvalidInput(
            f"{tensor.name}: shape {tensor.shape} needs {expected} values, got {len(values)}"
        )
    return values


def _typed(name: str, value: Any) -> Any:
    """A tensor value as the JSON value it stands for in the contract (else it stays and fails)."""
    if name == _BOOLEAN_FEATURE:
        return bool(value) if not isinstance(value, bool) and value in (0, 1) else value
    if name in _INTEGER_FEATURES and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _refuse_binary(request: InferRequest) -> None:
    parameters = request.parameters or {}
    if parameters.get("binary_data_output") is True:
        raise MalformedRequest(f"parameters.binary_data_output: {JSON_ONLY}")
    for tensor in request.inputs:
        _refuse(tensor.parameters or {}, f"input {tensor.name[:64]!r}")
        if "binary_data_size" in (tensor.parameters or {}):
            raise MalformedRequest(f"input {tensor.name[:64]!r}: {JSON_ONLY}")
    check_outputs(request.outputs)


def _refuse(parameters: Mapping[str, Any], where: str) -> None:
    if any(key.startswith("shared_memory") for key in parameters):
        raise MalformedRequest(f"{where}: shared memory is not supported; send JSON tensors")
    if "classification" in parameters:
        raise MalformedRequest(f"{where}: the classification extension is not supported")
