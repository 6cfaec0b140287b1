"""``POST /admin/reload``: reload the champion now. Exists only when ``ADMIN_TOKEN`` is set.

The caller sends ``Authorization: Bearer <ADMIN_TOKEN>``; the token is compared in constant time.
The worker that receives the request asks the server's other workers to check too (see
:mod:`app.reload`), checks the alias itself and answers what it did: 200 with ``swapped`` or
``unchanged``, or 502 with ``failed`` and the reason (the old model keeps serving).
"""

from __future__ import annotations

import hmac
from typing import Any, Final

from litestar import Request, Response, post
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import HTTPRouteHandler

from app.reload import Reloader, ReloadResult
from app.settings import Settings

_BEARER: Final = "bearer "


@post("/admin/reload", status_code=200, include_in_schema=False)
async def reload_champion(request: Request[Any, Any, Any], state: State) -> Response[ReloadResult]:
    """Check the registry alias now and swap in its version if it moved."""
    if not authorized(request.headers.get("authorization"), state.service.settings.admin_token):
        raise NotAuthorizedException(
            detail="A valid bearer token is required",
            headers={"WWW-Authenticate": 'Bearer realm="churn-api admin"'},
        )
    reloader: Reloader = state.reloader
    reloader.request_everywhere()
    result = await reloader.check(force=True)
    return Response(result, status_code=502 if result.status == "failed" else 200)


def authorized(header: str | None, token: str | None) -> bool:
    """``header`` is ``Bearer <token>``; compared in constant time (hmac.compare_digest)."""
    if not token or header is None or header[: len(_BEARER)].lower() != _BEARER:
        return False
    given = header[len(_BEARER) :].strip().encode()
    return hmac.compare_digest(given, token.encode())


def admin_routes(settings: Settings) -> list[HTTPRouteHandler]:
    """The admin endpoints for these settings: none at all without ``ADMIN_TOKEN``."""
    return [reload_champion] if settings.admin_token else []
