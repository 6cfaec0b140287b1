"""Every request's id, timing, access log line, metrics, time limit and hang-up, in one ASGI layer.

:class:`RequestObserver` wraps the whole Litestar app (routing and its exception handling), so it
sees every answer: 404s, 413s and the 500s the error map produced. Per request it

* takes a valid incoming ``X-Request-ID`` or makes one (:mod:`app.request_ids`), and returns it
  on the response;
* times the request and counts it in :data:`app.tally.TALLY` by route template and status;
* writes one JSON access line (:mod:`app.access_log`) with the model version that answered;
* notices a client that went away before its answer was sent, and counts and logs that request
  as 499 (nginx's code), never as a server error. Before the body is complete ``receive`` raises
  :class:`app.errors.ClientDisconnected` (answered 499 by the error map), so no front end sees a
  half-read body and the model never runs for it. After it, a request still unanswered
  ``LISTEN_AFTER`` seconds later keeps one ``receive`` pending (:mod:`app.hang_up`) for the
  server's ``http.disconnect``; one answered sooner was answered before anyone could notice;
* answers ``503`` with ``Retry-After`` (:class:`app.errors.TimedOut`, through the one error map)
  if the request has not started its response within ``REQUEST_TIMEOUT_SECONDS``.

One watchdog task per worker (:meth:`RequestObserver.watch`) does the timing of both, so a request
pays for no timer and no listener of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from app.access_log import AccessLog, answered_by
from app.asgi import ASGIApp, Message, Receive, Scope, Send, send_rendered
from app.errors import (
    REQUEST_ID_KEY,
    UNEXPECTED,
    ClientDisconnected,
    Rendered,
    TimedOut,
    render,
    shape_of,
)
from app.hang_up import LISTEN_AFTER, HangUps
from app.metrics import UNMATCHED_ROUTE
from app.request_ids import REQUEST_ID_HEADER, RequestIds
from app.tally import TALLY, Tally

_MAX_LOGGED_PATH: Final = 256
CLIENT_CLOSED: Final = ClientDisconnected.status_code
WATCH_SECONDS: Final = 0.005
"""How often the watchdog looks at the requests in flight (deadlines, hang-ups)."""

log = logging.getLogger("churn_api")


class RequestObserver:
    """The pure-ASGI layer described in the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        current_version: Callable[[], str | None],
        access_log: AccessLog | None,
        timeout: float,
        tally: Tally = TALLY,
    ) -> None:
        self.app = app
        self._current_version = current_version
        self._access_log = access_log
        self._timeout = timeout
        self._tally = tally
        self._ids = RequestIds()
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._hang_ups = HangUps()
        self._wake: asyncio.Event | None = None  # set by watch(): a request wakes it up

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        if self._wake is not None and not self._wake.is_set():
            self._wake.set()  # the watchdog sleeps while no request is in flight
        request_id = self._ids.pick(scope["headers"])
        scope[REQUEST_ID_KEY] = request_id.decode()
        answered_by.set(None)
        status = 500
        response_started = False
        task = asyncio.current_task()
        timed = task if self._timeout > 0 else None
        gone = False  # the client went away after its body, before its answer was sent

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                if timed is not None:  # an answer under way is never cut off by the time limit
                    self._deadlines.pop(timed, None)
                headers = message.get("headers")
                if isinstance(headers, list):
                    headers.append((REQUEST_ID_HEADER, request_id))
                else:
                    message["headers"] = [*(headers or ()), (REQUEST_ID_HEADER, request_id)]
            await send(message)

        async def receive_or_raise() -> Message:
            # A client gone before its body is complete ends the request here, for every front
            # end: the error map answers 499 (to nobody) instead of a 500 for a half-read body.
            nonlocal gone
            if task in self._hang_ups:  # after the body: a front end that listens itself
                gone = self._hang_ups.stop(task) or gone
                message = await receive()
                gone = gone or message["type"] == "http.disconnect"
                return message
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            if not message.get("more_body", False) and task is not None:
                self._hang_ups.read(task, receive)
            return message

        if timed is not None:
            self._deadlines[timed] = started + self._timeout
        try:
            await self.app(scope, receive_or_raise, send_with_id)
        except ClientDisconnected:  # a front end that let it through: the client's, not ours
            status = CLIENT_CLOSED
        except asyncio.CancelledError:
            if timed is None or timed not in self._expired:
                if not response_started:
                    status = CLIENT_CLOSED  # cancelled from outside (client gone, shutdown)
                raise
            timed.uncancel()
            status = TimedOut.status_code
            log.warning("request timed out", extra=self._context(scope, request_id, started))
            if not response_started:
                await _answer(send, render(TimedOut(), shape_of(scope)), request_id)
        except Exception as exc:  # the error map answered everything it could; this is a bug here
            status = 500
            log.error(
                "unhandled error outside the error map",
                extra=self._context(scope, request_id, started),
                exc_info=exc,
            )
            if not response_started:
                await _answer(send, render(UNEXPECTED, shape_of(scope)), request_id)
        finally:
            if timed is not None:
                self._deadlines.pop(timed, None)
                self._expired.discard(timed)
            if (self._hang_ups.stop(task) or gone) and status < 500:
                status = CLIENT_CLOSED
            self._finish(scope, status, started, request_id)

    def _finish(self, scope: Scope, status: int, started: float, request_id: bytes) -> None:
        elapsed = time.perf_counter() - started
        route = scope.get("path_template") or UNMATCHED_ROUTE  # set by Litestar's router
        method = scope["method"]
        self._tally.request(route, method, status, elapsed)
        if self._access_log is not None:
            self._access_log.write(
                {
                    "level": "info",
                    "logger": "churn_api.access",
                    "method": method,
                    "path": scope["path"][:_MAX_LOGGED_PATH],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "model_version": answered_by.get() or self._current_version(),
                    "request_id": request_id.decode(),
                }
            )

    def _context(self, scope: Scope, request_id: bytes, started: float) -> dict[str, Any]:
        return {
            "request_id": request_id.decode(),
            "method": scope["method"],
            "path": scope["path"][:_MAX_LOGGED_PATH],
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    async def watch(self, interval: float) -> None:
        """One task per worker: cancels requests past their deadline, listens for hang-ups (a
        request unanswered ``LISTEN_AFTER`` s after its body: :class:`app.hang_up.HangUps`);
        with nothing in flight it sleeps until a request arrives."""
        self._wake = wake = asyncio.Event()
        try:
            while True:
                if not self._deadlines and not self._hang_ups:
                    wake.clear()
                    await wake.wait()
                await asyncio.sleep(interval)
                now = time.perf_counter()
                for task, deadline in list(self._deadlines.items()):
                    if deadline <= now and task not in self._expired and not task.done():
                        self._expired.add(task)
                        task.cancel()
                self._hang_ups.listen(read_before=now - LISTEN_AFTER)
        finally:
            self._wake = None


async def _answer(send: Send, answer: Rendered, request_id: bytes) -> None:
    with contextlib.suppress(OSError, RuntimeError):  # the client may be gone
        await send_rendered(send, answer, [(REQUEST_ID_HEADER, request_id)])
