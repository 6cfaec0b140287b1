"""The plain successful case of the scoring endpoints, answered without Litestar's per-request work.

A good ``POST /predict`` or ``POST /predict/batch`` (JSON content type, a body within
``MAX_BODY_BYTES``, no query or a valid ``threshold``, a loaded model) costs Litestar more than the
prediction itself: routing, the request object, signature and DTO plumbing, the response object.
:class:`FastPredict` is a pure-ASGI layer in front of the Litestar app that recognises that case,
decodes the raw body with prebuilt strict decoders, scores through the same
:func:`app.service.score_rows` path as the handlers, and sends pre-encoded bytes with the same two
headers Litestar sends.

The protocol front ends' scoring endpoints get the same treatment through their ``fast_door``
(:mod:`app.mlflow_protocol`: ``POST /invocations`` with a JSON body; :mod:`app.inference_protocol`:
``POST /v2/models/MODEL_NAME/infer``): a JSON body with no Content-Type parameters is decoded by
the protocol's own decoder, scored through :func:`app.service.score`, and answered with the bytes
its handler would send.

Any request that is not that case goes to Litestar unchanged: the body read so far is replayed to
it, so those errors still have exactly one owner (the handlers, the DTO and the error map) and the
contract cannot drift between the two paths. A prediction that fails or is refused once scoring
has started (the model raises, the worker is over MAX_QUEUED_ROWS) is answered by the same error
map (:func:`app.errors.error_response`) directly, so the model never runs twice for one request.
"""

from __future__ import annotations

import operator
import re
import typing
from collections.abc import Awaitable, Callable, MutableMapping
from itertools import chain
from typing import Annotated, Any, Final

import msgspec
import numpy as np
from litestar import Request

from app import inference_protocol, mlflow_protocol
from app.errors import ERROR_SHAPE, error_response
from app.metrics import TALLY
from app.model import Rows
from app.schemas import FEATURES, MAX_BATCH, BatchPrediction, Customer, customer_decoder, encoder
from app.service import Scored, Service, score, score_rows
from app.validation import check_media_type, query_threshold

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Batch rows decode into a twin of Customer without its per-row __post_init__ (same fields, same
# bounds, unknown fields rejected); the cross-field rule is then checked on the whole array at once
# and any row breaking it sends the request to Litestar, which names every offender.
_HINTS: Final = typing.get_type_hints(Customer, include_extras=True)
_Row = msgspec.defstruct(
    "_Row", [(name, _HINTS[name]) for name in FEATURES], forbid_unknown_fields=True, gc=False
)
_Batch = msgspec.defstruct(
    "_Batch",
    [("instances", Annotated[list[_Row], msgspec.Meta(min_length=1, max_length=MAX_BATCH)])],  # type: ignore[valid-type]
    forbid_unknown_fields=True,
)
_batch_decoder: Final = msgspec.json.Decoder(_Batch)
_values: Final = operator.attrgetter(*FEATURES)
_THRESHOLD: Final = re.compile(rb"threshold=([0-9.eE-]{1,32})")
_HEADERS: Final = (b"content-type", b"application/json")


class _Fallback(Exception):
    """This request is not the plain successful case: Litestar answers it."""


def _customer_rows(body: bytes) -> Rows:
    customer = customer_decoder.decode(body)
    return np.array([_values(customer)], dtype=np.float64)


def _batch_rows(body: bytes) -> Rows:
    batch: Any = _batch_decoder.decode(body)  # a _Batch (made by defstruct: mypy cannot see it)
    instances = batch.instances
    flat = np.fromiter(
        chain.from_iterable(map(_values, instances)),
        dtype=np.float64,
        count=len(instances) * len(FEATURES),
    )
    rows = flat.reshape(len(instances), len(FEATURES))
    # Column order is FEATURES: tenure_months, monthly_charges, total_charges, ...
    if ((rows[:, 0] > 0) & (rows[:, 2] < rows[:, 1])).any():
        raise _Fallback
    return rows


class FastPredict:
    """The pure-ASGI layer described in the module docstring."""

    def __init__(
        self, app: ASGIApp, service: Callable[[], Service | None], max_body_bytes: int
    ) -> None:
        self.app = app
        self._service = service
        self._limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        door = _door(path)
        if door is not None:
            await self._protocol(door, scope, receive, send)
            return
        if path not in _PATHS:
            await self.app(scope, receive, send)
            return
        received: list[Message] = []
        try:
            service = self._service()
            if service is None or service.model is None:
                raise _Fallback
            threshold = _threshold(scope["query_string"])
            self._check_headers(scope["headers"])
            body = await self._body(receive, received)
            rows = _PATHS[path](body)
        except Exception:  # noqa: BLE001 - whatever it is, Litestar and the error map answer it
            await self.app(scope, _replay(received, receive), send)
            return
        try:
            predictions = await score_rows(service, rows, threshold)
        except Exception as exc:  # noqa: BLE001 - the model ran (or was refused) once: no replay
            await _answer_error(scope, receive, send, exc)
            return
        if path == "/predict":
            payload = encoder.encode(predictions[0])
        else:
            TALLY.batch(len(predictions))
            payload = encoder.encode(BatchPrediction(predictions=predictions, count=len(rows)))
        scope["path_template"] = path  # what Litestar's router would set (metrics label)
        await _answer(send, payload)

    async def _protocol(self, door: _Door, scope: Scope, receive: Receive, send: Send) -> None:
        """A protocol's plain case (see the module docstring); anything else goes to Litestar."""
        prepare, template, shape = door
        received: list[Message] = []
        try:
            service = self._service()
            if service is None or service.model is None:
                raise _Fallback
            self._check_headers(scope["headers"], protocol=True)
            rows, finish = prepare(service, await self._body(receive, received), scope)
        except Exception:  # noqa: BLE001 - whatever it is, Litestar and the error map answer it
            await self.app(scope, _replay(received, receive), send)
            return
        scope["path_template"] = template
        scope[ERROR_SHAPE] = shape
        try:
            payload = finish(await score(service, rows))
        except Exception as exc:  # noqa: BLE001 - the model ran (or was refused) once: no replay
            await _answer_error(scope, receive, send, exc)
            return
        await _answer(send, payload)

    def _check_headers(self, headers: Any, protocol: bool = False) -> None:
        content_type: str | None = None
        for name, value in headers:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length" and not (value.isdigit() and int(value) <= self._limit):
                raise _Fallback
            elif protocol and name == b"inference-header-content-length":
                raise _Fallback  # binary tensors: refused by the handler
        if protocol and content_type is not None and content_type.lower() != "application/json":
            raise _Fallback  # CSV, charsets and the rest: the handlers decide
        check_media_type(content_type)

    async def _body(self, receive: Receive, received: list[Message]) -> bytes:
        size = 0
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                raise _Fallback
            size += len(message.get("body", b""))
            if size > self._limit:
                raise _Fallback
            if not message.get("more_body", False):
                break
        if len(received) == 1:
            body: bytes = received[0].get("body", b"")
            return body
        return b"".join(message.get("body", b"") for message in received)


_PATHS: Final[dict[str, Callable[[bytes], Rows]]] = {
    "/predict": _customer_rows,
    "/predict/batch": _batch_rows,
}


Prepare = Callable[[Service, bytes, Scope], tuple[Rows, Callable[[Scored], bytes]]]
_Door = tuple[Prepare, str, str]
"""A protocol's plain case: rows and the answer's encoder; its route template; its error shape."""
_INVOCATIONS: Final[_Door] = (mlflow_protocol.fast_door, "/invocations", "mlflow")
_INFER: Final[_Door] = (inference_protocol.fast_door, "/v2/models/{name}/infer", "inference")


def _door(path: str | None) -> _Door | None:
    if path == "/invocations":
        return _INVOCATIONS
    if path is not None and path.startswith("/v2/models/") and path.endswith("/infer"):
        return _INFER  # its door checks the name (a version in the path: Litestar)
    return None


async def _answer(send: Send, payload: bytes) -> None:
    headers = [_HEADERS, (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


def _threshold(query: bytes) -> float | None:
    """None without a query, the value of a lone valid ``threshold=x``; anything else: Litestar."""
    if not query:
        return None
    match = _THRESHOLD.fullmatch(query)
    if match is None:
        raise _Fallback
    value, errors = query_threshold(match.group(1).decode())
    if errors or value is None:
        raise _Fallback
    return value


async def _answer_error(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
    """Answer with the same error map as the Litestar routes (app.errors)."""
    asgi: tuple[Any, Any, Any] = (scope, receive, send)  # Litestar's TypedDict view of ASGI
    request: Request[Any, Any, Any] = Request(*asgi)
    await error_response(request, exc).to_asgi_response(app=None, request=request)(*asgi)


def _replay(received: list[Message], receive: Receive) -> Receive:
    """``receive`` as if nothing had been read from it yet."""
    pending = list(received)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
