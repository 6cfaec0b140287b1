"""Wire types of the Open Inference Protocol V2, REST (KServe V2, Seldon MLServer, Triton).

Only JSON tensors: a tensor's ``data`` is kept raw and decoded by its ``datatype`` with a prebuilt
strict decoder (``FP64``/``FP32`` numbers, ``INT64``/``INT32`` integers, ``BOOL`` booleans), flat
or nested one level.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from msgspec import Meta


class Tensor(msgspec.Struct, frozen=True):
    """An input tensor: ``[N, 5]`` in contract column order, or (content type ``pd``) one
    ``[N]`` column named after its feature."""

    name: Annotated[str, Meta(examples=["features"])]
    shape: Annotated[list[int], Meta(examples=[[1, 5]])]
    datatype: Annotated[str, Meta(description="FP64, FP32, INT64, INT32 (BOOL for a pd column).")]
    data: Annotated[msgspec.Raw, Meta(description="Row-major values, flat or nested.")]
    parameters: dict[str, Any] | None = None


class RequestedOutput(msgspec.Struct, frozen=True):
    name: Annotated[str, Meta(description="predict_proba or predict")]
    parameters: dict[str, Any] | None = None


class InferRequest(msgspec.Struct, frozen=True):
    inputs: list[Tensor]
    id: str | None = None
    parameters: Annotated[
        dict[str, Any] | None, Meta(description='`{"content_type": "pd"}`: one input per feature.')
    ] = None
    outputs: Annotated[
        list[RequestedOutput] | None, Meta(description="The outputs to answer; none: both.")
    ] = None


class OutputTensor(msgspec.Struct, frozen=True):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferResponse(msgspec.Struct, frozen=True):
    model_name: str
    model_version: str
    id: str
    outputs: list[OutputTensor]


class MetadataTensor(msgspec.Struct, frozen=True):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(msgspec.Struct, frozen=True):
    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ServerMetadata(msgspec.Struct, frozen=True):
    name: str
    version: str
    extensions: Annotated[
        list[str], Meta(description="None yet: binary tensor data may come later.")
    ]


class Live(msgspec.Struct, frozen=True):
    live: bool


class Ready(msgspec.Struct, frozen=True):
    ready: bool


class ModelReady(msgspec.Struct, frozen=True):
    name: str
    ready: bool


request_decoder: Final = msgspec.json.Decoder(InferRequest)
DATA_TYPES: Final[dict[str, type]] = {
    "FP64": float,
    "FP32": float,
    "INT64": int,
    "INT32": int,
    "BOOL": bool,
}
flat_decoders: Final = {name: msgspec.json.Decoder(list[kind]) for name, kind in DATA_TYPES.items()}  # type: ignore[valid-type]
nested_decoders: Final = {
    name: msgspec.json.Decoder(list[list[kind]])  # type: ignore[valid-type]
    for name, kind in DATA_TYPES.items()
}
