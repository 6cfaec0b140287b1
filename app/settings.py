"""Settings, read once from the environment and checked before anything starts.

A malformed or out-of-range value raises :class:`~app.errors.StartupError` naming the variable, so
the service stops with one clear line instead of failing on the first request. Tests pass an
``environ`` mapping instead of patching ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Final, TypeVar

import msgspec

from app.errors import StartupError
from app.schemas import MAX_BATCH

DEFAULT_TRACKING_URI: Final = "sqlite:///mlflow.db"

T = TypeVar("T")


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    tracking_uri: str = DEFAULT_TRACKING_URI
    """MLFLOW_TRACKING_URI: where the registry is (also used as the registry URI)."""
    model_name: str = "churn-classifier"
    """MODEL_NAME: the registered model's name."""
    model_alias: str = "champion"
    """MODEL_ALIAS: the alias whose version the service serves."""
    decision_threshold: float = 0.5
    """DECISION_THRESHOLD: default threshold on P(churn) for ``churn_label``, in [0, 1]."""
    max_body_bytes: int = 1_048_576
    """MAX_BODY_BYTES: largest request body accepted; larger ones get 413."""
    micro_batching: bool = True
    """MICRO_BATCHING: score concurrent requests of a worker together in one model call."""
    max_batch_rows: int = 2048
    """MAX_BATCH_ROWS: most rows one micro-batched model call takes (a request is never split)."""
    workers: int = 2
    """WORKERS: granian worker processes started by ``churn-api serve``."""
    access_log: bool = True
    """ACCESS_LOG: one JSON line per request on stderr (method, path, status, duration, ids)."""
    model_poll_seconds: float = 30.0
    """MODEL_POLL_SECONDS: how often each worker checks whether the alias moved; 0 turns it off."""
    admin_token: str | None = None
    """ADMIN_TOKEN: bearer token for ``POST /admin/reload`` (at least 16 characters); unset, the
    endpoint does not exist."""
    max_queued_rows: int = 4096
    """MAX_QUEUED_ROWS: rows a worker may hold waiting or being scored; beyond it 503 at once."""
    request_timeout_seconds: float = 10.0
    """REQUEST_TIMEOUT_SECONDS: a request not answering by then gets 503 at once; 0 turns it off."""
    model_threads: int = 1
    """MODEL_THREADS: native threads (OpenMP, BLAS) one model call may use in a worker; with one
    worker per CPU, more only oversubscribes the CPUs."""
    startup_timeout_seconds: float = 60.0
    """STARTUP_TIMEOUT_SECONDS: a worker not ready by then (or a champion check not done) stops
    ``churn-api serve`` with exit status 1 and one line naming the model and the stuck stage."""
    drift_metrics: bool = True
    """DRIFT_METRICS: count scored rows per reference bin of each feature (app.drift)."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        return cls(
            tracking_uri=reader.text("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI),
            model_name=reader.text("MODEL_NAME", "churn-classifier"),
            model_alias=reader.text("MODEL_ALIAS", "champion"),
            decision_threshold=reader.number("DECISION_THRESHOLD", 0.5, low=0.0, high=1.0),
            max_body_bytes=reader.integer("MAX_BODY_BYTES", 1_048_576, low=1, high=1 << 30),
            micro_batching=reader.flag("MICRO_BATCHING", True),
            max_batch_rows=reader.integer("MAX_BATCH_ROWS", 2048, low=1, high=1 << 20),
            workers=reader.integer("WORKERS", 2, low=1, high=256),
            access_log=reader.flag("ACCESS_LOG", True),
            model_poll_seconds=reader.number("MODEL_POLL_SECONDS", 30.0, low=0.0, high=86_400.0),
            admin_token=reader.secret("ADMIN_TOKEN", min_chars=16),
            max_queued_rows=reader.integer("MAX_QUEUED_ROWS", 4096, low=MAX_BATCH, high=1 << 24),
            request_timeout_seconds=reader.number(
                "REQUEST_TIMEOUT_SECONDS", 10.0, low=0.0, high=3600.0
            ),
            model_threads=reader.integer("MODEL_THREADS", 1, low=1, high=256),
            startup_timeout_seconds=reader.number(
                "STARTUP_TIMEOUT_SECONDS", 60.0, low=1.0, high=3600.0
            ),
            drift_metrics=reader.flag("DRIFT_METRICS", True),
        )


class _Reader:
    """Casts one variable at a time and fails loudly with its name."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def _get(self, name: str, default: T, cast: Callable[[str], T], expected: str) -> T:
        raw = self._environ.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return cast(raw.strip())
        except (ValueError, msgspec.ValidationError):
            raise StartupError(f"setting {name} must be {expected}, got {raw!r}") from None

    def text(self, name: str, default: str) -> str:
        return self._get(name, default, str, "a non-empty string")

    def number(self, name: str, default: float, *, low: float, high: float) -> float:
        expected = f"a number in [{low:g}, {high:g}]"
        return self._get(name, default, _bounded(float, low, high), expected)

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        expected = f"an integer in [{low}, {high}]"
        return self._get(name, default, _bounded(int, low, high), expected)

    def secret(self, name: str, *, min_chars: int) -> str | None:
        """An optional token: unset means None; set, it must be long and free of whitespace."""
        raw = self._environ.get(name)
        if raw is None or raw == "":
            return None
        if len(raw) < min_chars or any(c.isspace() or not c.isprintable() for c in raw):
            raise StartupError(  # never echo the value: it is a secret
                f"setting {name} must be at least {min_chars} printable characters "
                "without whitespace"
            )
        return raw

    def flag(self, name: str, default: bool) -> bool:
        return self._get(name, default, _flag, "one of true/false/1/0/yes/no/on/off")


def _bounded(kind: Callable[[str], T], low: T, high: T) -> Callable[[str], T]:
    def cast(raw: str) -> T:
        value = kind(raw)
        if not low <= value <= high:  # type: ignore[operator]  # NaN fails this too
            raise ValueError(raw)
        return value

    return cast


def _flag(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)
