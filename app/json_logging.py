"""Every other log line as JSON on stderr: one object a line, extras and traceback included."""

from __future__ import annotations

import logging
import sys
import time
import traceback
from typing import Any, Final

import msgspec

_encoder: Final = msgspec.json.Encoder()


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
