"""Every request's id, timing, access log line, metrics and time limit, in one pure-ASGI layer.

:class:`RequestObserver` wraps the whole Litestar app (routing and its exception handling), so it
sees every answer: 404s, 413s and the 500s the error map produced. Per request it

* takes a valid incoming ``X-Request-ID`` or makes one, and returns it on the response;
* times the request and counts it in :data:`app.metrics.TALLY` by route template and status;
* writes one JSON access line to stderr (``ACCESS_LOG``), with the model version that answered
  (the lines of one event-loop turn in one ``write``);
* answers ``503`` with ``Retry-After`` if the request has not started its response within
  ``REQUEST_TIMEOUT_SECONDS`` (one watchdog task per worker checks deadlines, so a request pays for
  no timer of its own).

Other log lines are JSON too (:class:`JsonFormatter` on the root logger), one object a line.
Access lines bypass the ``logging`` module: a record, a handler lock and a formatter cost ~10 µs a
line against ~1 µs to encode it, and this runs for every request. Writes end on line boundaries
and are at most ``PIPE_BUF`` bytes, so the lines of several workers never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import select
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from itertools import count
from typing import Any, Final

import msgspec

from app.metrics import TALLY, UNMATCHED_ROUTE, Tally

# Plain ASGI types (Litestar's TypedDicts do not allow the extra scope key this layer adds).
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER: Final = b"x-request-id"
REQUEST_ID_KEY: Final = "churn_api.request_id"
"""Scope key holding the request's id (for the error handlers' log lines)."""
MAX_REQUEST_ID_CHARS: Final = 128
_VALID_REQUEST_ID: Final = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:/+=@-]{0,127}")
_MAX_LOGGED_PATH: Final = 256

answered_by: ContextVar[str | None] = ContextVar("churn_api.answered_by", default=None)
"""The model version that scored this request; set by the predict path, read for the access log."""

_encoder: Final = msgspec.json.Encoder()
_TIMEOUT_BODY: Final = _encoder.encode({"detail": "Request timed out, retry shortly"})
_ERROR_BODY: Final = _encoder.encode({"detail": "Internal server error"})

log = logging.getLogger("churn_api")


class RequestIds:
    """Makes request ids: a random per-process prefix and a counter (unique, and ~0.2 µs each)."""

    def __init__(self) -> None:
        self._restart()
        # An app built before granian forks (``churn-api serve``) gives every worker its own prefix.
        os.register_at_fork(after_in_child=self._restart)

    def _restart(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = count(1)

    def new(self) -> bytes:
        return b"%s-%x" % (self._prefix.encode(), next(self._counter))

    def pick(self, headers: list[tuple[bytes, bytes]] | Any) -> bytes:
        """The client's ``X-Request-ID`` if it is valid (1-128 safe characters), else a new id."""
        for name, value in headers:
            if name == REQUEST_ID_HEADER:
                if _VALID_REQUEST_ID.fullmatch(value):
                    return bytes(value)
                break
        return self.new()


class AccessLog:
    """One JSON line per request on a file descriptor (stderr by default).

    The lines of one event-loop turn are written together at the end of that turn, in writes of
    at most ``PIPE_BUF`` bytes that end on a line boundary, so a busy worker makes one system call
    for many requests and the lines of several workers still never interleave.
    """

    def __init__(self, fd: int = 2) -> None:
        self._fd = fd
        self._second = -1
        self._stamp = ""
        self._pending: list[bytes] = []

    def write(self, fields: dict[str, Any]) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        line = {"ts": f"{self._stamp}.{int((now - second) * 1000):03d}Z", **fields}
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(_encoder.encode(line) + b"\n")

    def flush(self) -> None:
        lines, self._pending = self._pending, []
        chunk = b""
        for line in lines:
            if chunk and len(chunk) + len(line) > select.PIPE_BUF:
                self._write(chunk)
                chunk = b""
            chunk += line
        if chunk:
            self._write(chunk)

    def _write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # a closed log pipe must not fail the request
            os.write(self._fd, data)


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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = self._ids.pick(scope["headers"])
        scope[REQUEST_ID_KEY] = request_id.decode()
        answered_by.set(None)
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                if task is not None:  # an answer under way is never cut off by the time limit
                    self._deadlines.pop(task, None)
                headers = message.get("headers")
                if isinstance(headers, list):
                    headers.append((REQUEST_ID_HEADER, request_id))
                else:
                    message["headers"] = [*(headers or ()), (REQUEST_ID_HEADER, request_id)]
            await send(message)

        task = asyncio.current_task() if self._timeout > 0 else None
        if task is not None:
            self._deadlines[task] = started + self._timeout
        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            if task is None or task not in self._expired:
                if not response_started:
                    status = 499  # cancelled from outside (client gone, shutdown): nginx's code
                raise
            task.uncancel()
            status = 503
            log.warning(
                "request timed out",
                extra=self._context(scope, request_id, started),
            )
            if not response_started:
                await _answer(send, 503, _TIMEOUT_BODY, request_id, retry_after=True)
        except Exception as exc:  # the error map answered everything it could; this is a bug here
            status = 500
            log.error(
                "unhandled error outside the error map",
                extra=self._context(scope, request_id, started),
                exc_info=exc,
            )
            if not response_started:
                await _answer(send, 500, _ERROR_BODY, request_id)
        finally:
            if task is not None:
                self._deadlines.pop(task, None)
                self._expired.discard(task)
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

    async def watch_deadlines(self, interval: float) -> None:
        """Cancel requests past their deadline; runs as one task per worker."""
        while True:
            await asyncio.sleep(interval)
            now = time.perf_counter()
            for task, deadline in list(self._deadlines.items()):
                if deadline <= now and task not in self._expired and not task.done():
                    self._expired.add(task)
                    task.cancel()


async def _answer(
    send: Send, status: int, body: bytes, request_id: bytes, *, retry_after: bool = False
) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (REQUEST_ID_HEADER, request_id),
    ]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    with contextlib.suppress(OSError, RuntimeError):  # the client may be gone
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, the record's extras, exc."""

    _STANDARD: Final = frozenset(
        vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime"}
    )

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                fields[key] = value
        if record.exc_info:
            fields["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        try:
            return _encoder.encode(fields).decode()
        except (TypeError, msgspec.EncodeError):  # an extra that is not JSON: keep its str()
            return _encoder.encode({key: str(value) for key, value in fields.items()}).decode()


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (pytest swaps it per test)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            sys.stderr.write(line)
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never fail the caller
            self.handleError(record)


def configure_logging() -> None:
    """JSON lines on stderr for every logger that reaches the root; once per process.

    granian configures only its own loggers in a worker (and the app is built without Litestar's
    logging config), so this is the one handler: the service's INFO lines (which champion a worker
    serves, swaps) and libraries' warnings come out as JSON. A test's log capture still sees them.
    """
    root = logging.getLogger()
    if not any(isinstance(handler, _StderrHandler) for handler in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    service = logging.getLogger("churn_api")
    if service.level == logging.NOTSET:
        service.setLevel(logging.INFO)
