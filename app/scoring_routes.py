"""Routing a ``POST`` to a scoring endpoint before Litestar's router does.

Litestar's router (its path trie, host check, scope copy, exception middleware and the ``@asgi``
route) costs more per scoring request than the rest of the web layer (perf/README.md). So the
request observer hands every request to :class:`ScoringRoutes` first: a ``POST`` whose path is a
scoring endpoint's (``/predict``, ``/predict/batch``, ``/invocations``,
``/v2/models/{name}/infer`` ...) is answered by that endpoint's handler through
:func:`app.asgi.answer` (the one error map included); every other request (other methods, other
routes, a path only Litestar's normalisation matches, such as ``/predict/``, an invalid ``Host``
header) goes to Litestar, which routes the scoring paths to the same handlers.
"""

from __future__ import annotations

from collections.abc import Iterable

from litestar._asgi.utils import is_valid_host  # the router's own check of the Host header
from litestar.handlers import ASGIRouteHandler

from app.asgi import ENDPOINT, ASGIApp, Receive, Scope, Send, answer, raw_header


class ScoringRoutes:
    """``POST`` to a scoring endpoint straight to it; every other request to Litestar (``app``).

    Paths are matched segment by segment (``{name:str}`` matches one non-empty segment); the
    scope gets what Litestar's router would set: ``route_handler`` (read for the error body's
    shape), ``path_params`` and ``path_template`` (the metrics' route label).
    """

    def __init__(self, app: ASGIApp, handlers: Iterable[ASGIRouteHandler]) -> None:
        self.app = app
        self._exact: dict[str, ASGIRouteHandler] = {}
        self._patterns: list[_Pattern] = []
        for handler in handlers:
            if ENDPOINT not in handler.opt:
                continue
            for path in handler.paths:
                if "{" in path:
                    self._patterns.append(_Pattern(path, handler))
                else:
                    self._exact[path] = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST" or not _host_is_valid(scope):  # Litestar answers these
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        handler = self._exact.get(path)
        if handler is not None:
            scope["path_template"] = path
        else:
            for pattern in self._patterns:
                params = pattern.match(path)
                if params is not None:
                    handler = pattern.handler
                    scope["path_params"], scope["path_template"] = params, pattern.template
                    break
            else:
                await self.app(scope, receive, send)
                return
        scope["route_handler"] = handler
        await answer(handler.opt[ENDPOINT], scope, receive, send)


def _host_is_valid(scope: Scope) -> bool:
    host = raw_header(scope, b"host")
    return host is None or bool(is_valid_host(host))


class _Pattern:
    """A route path with parameters (``/v2/models/{name:str}/infer``), matched by segments."""

    def __init__(self, path: str, handler: ASGIRouteHandler) -> None:
        self.handler = handler
        self._segments = path.split("/")
        self._names = {
            index: segment[1:-1].split(":", 1)[0]
            for index, segment in enumerate(self._segments)
            if segment.startswith("{")
        }
        self.template = "/".join(
            "{" + self._names[index] + "}" if index in self._names else segment
            for index, segment in enumerate(self._segments)
        )

    def match(self, path: str) -> dict[str, str] | None:
        """The path parameters, if ``path`` is this route's."""
        parts = path.split("/")
        if len(parts) != len(self._segments):
            return None
        for index, (segment, part) in enumerate(zip(self._segments, parts, strict=True)):
            if index in self._names:
                if not part:
                    return None
            elif segment != part:
                return None
        return {name: parts[index] for index, name in self._names.items()}
