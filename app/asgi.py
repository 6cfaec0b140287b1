"""The scoring endpoints as Litestar ``@asgi`` route handlers, raw ASGI inside.

A scoring request costs Litestar's typed handlers more than the prediction itself (the request
object, signature and DTO plumbing, the response object: ~40 µs in process against ~6 µs for an
``@asgi`` handler, see perf/README.md). :func:`scoring_route` makes an ``@asgi`` handler from an
endpoint ``(service, scope, receive) -> bytes`` (the 200 body); whatever it raises is answered by
the one error map (:func:`app.error_handlers.rendered`), so each endpoint has exactly one path.
Its OpenAPI operation is a typed handler declaration that is never routed (``documented``;
:mod:`app.docs` puts it into the document).

A ``POST`` to a scoring endpoint is routed by :class:`app.scoring_routes.ScoringRoutes`, in
front of Litestar's router, to the same handlers (:func:`answer`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from litestar import Litestar, asgi
from litestar.exceptions import MethodNotAllowedException
from litestar.handlers import ASGIRouteHandler, HTTPRouteHandler

from app.error_handlers import rendered
from app.errors import BodyTooLarge, ClientDisconnected, Rendered

if TYPE_CHECKING:
    from app.service import Service

# Plain ASGI types (Litestar's TypedDicts do not allow the extra scope keys the layers add).
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Endpoint = Callable[["Service", Scope, Receive], Awaitable[bytes]]

DOCUMENTED: Final = "documented"
"""Route ``opt`` key of an ``@asgi`` scoring route: its OpenAPI declaration (a typed handler)."""
ENDPOINT: Final = "endpoint"
"""Route ``opt`` key of an ``@asgi`` scoring route: the endpoint that answers it."""
_JSON: Final = (b"content-type", b"application/json")
_ALLOW: Final = "POST, OPTIONS"
_OPTIONS: Final = (b"allow", b"OPTIONS, POST")


def scoring_route(
    path: str | list[str], documented: HTTPRouteHandler, opt: dict[str, Any] | None = None
) -> Callable[[Endpoint], ASGIRouteHandler]:
    """An ``@asgi`` route for ``POST path`` answered by the decorated endpoint (module docstring).

    Other methods get what Litestar's router answers for a POST-only route: 204 with ``Allow`` to
    OPTIONS, 405 with ``Allow`` otherwise.
    """

    def decorate(endpoint: Endpoint) -> ASGIRouteHandler:
        async def handle(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["method"] != "POST":
                await _not_post(scope, send)
                return
            await answer(endpoint, scope, receive, send)

        handle.__name__ = handle.__qualname__ = endpoint.__name__
        handle.__doc__ = endpoint.__doc__
        options = {**(opt or {}), DOCUMENTED: documented, ENDPOINT: endpoint}
        return asgi(path, copy_scope=False, opt=options)(handle)

    return decorate


async def answer(endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
    """The endpoint's 200, or what the error map answers for what it raised."""
    try:
        payload = await endpoint(scope["litestar_app"].state.service, scope, receive)
    except Exception as exc:  # noqa: BLE001 - the error map logs and answers every error
        await send_rendered(send, rendered(scope, exc))
        return
    await send_json(send, 200, payload)


async def send_rendered(
    send: Send, answer: Rendered, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """An error answer of the error map (its own headers after ``headers``)."""
    status, extra, body = answer
    own = [(name.lower().encode(), value.encode()) for name, value in extra.items()]
    await send_json(send, status, body, [*headers, *own])


async def _not_post(scope: Scope, send: Send) -> None:
    if scope["method"] != "OPTIONS":
        raise MethodNotAllowedException(headers={"Allow": _ALLOW})
    await send({"type": "http.response.start", "status": 204, "headers": [_OPTIONS]})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def send_json(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """A whole JSON answer: the same two headers as Litestar's (and any others given)."""
    start = [_JSON, (b"content-length", b"%d" % len(body)), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def header(scope: Scope, name: bytes) -> str | None:
    """The value of request header ``name`` (lower case), if the request has it."""
    value = raw_header(scope, name)
    return None if value is None else value.decode("latin-1")


def raw_header(scope: Scope, name: bytes) -> bytes | None:
    """The bytes of request header ``name`` (lower case), if the request has it."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, or :class:`BodyTooLarge` as soon as it is known to exceed ``limit``."""
    length = header(scope, b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise BodyTooLarge(limit)
    message = await receive()
    if message["type"] != "http.request":
        raise ClientDisconnected()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise BodyTooLarge(limit)
        return body
    chunks, size = [body], len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def route_path_parameters(app: Litestar) -> None:
    """Let ``@asgi`` routes with path parameters (``/v2/models/{name}/infer``) route HTTP requests.

    Litestar 2.25 stores an ``@asgi`` route's path parameters under the key ``"asgi"`` but looks
    them up under the request's method (``routing_trie/traversal.py``: ``key = method or ...``),
    a KeyError (500) for every such request. This stores them under each method as well, once,
    after the routes are built; tests/test_protocols_core.py would show a 500 without it.
    """
    pending = [app.asgi_router.root_route_map_node]
    while pending:
        node = pending.pop()
        pending.extend(node.children.values())
        if node.is_asgi and "asgi" in node.path_parameters:
            for method in ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"):
                node.path_parameters.setdefault(method, node.path_parameters["asgi"])
