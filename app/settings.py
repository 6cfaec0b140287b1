"""Settings: each one declared once, as a field of :class:`Settings`, and read once at startup.

A field is the whole declaration of a setting. Its environment variable is the field's name in
upper case (or the ``name`` given to ``msgspec.field``), its default is the field's default, its
bounds are ``msgspec.Meta`` constraints on its type and its docstring is what it means (README's
and docs/operations.md's settings tables are tested against these fields and docstrings). Adding a
setting is adding a field::

    drain_seconds: Annotated[float, Meta(ge=0.0, le=60.0)] = 5.0
    \"\"\"How long a stopping worker keeps answering.\"\"\"

A value outside its declaration raises :class:`~app.errors.StartupError` naming the variable,
however the ``Settings`` is made: from the environment (:meth:`Settings.from_environ`, which
converts the strings with ``msgspec.convert(..., strict=False)``) or directly
(``Settings(workers=0)``), so the service stops with one clear line instead of failing on the
first request. A :data:`Secret` never appears in a repr or an error. :func:`load` is the process's
one read of ``os.environ``; tests pass an ``environ`` mapping instead of patching it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final

import msgspec
import msgspec.inspect as mi
from msgspec import Meta

from app.errors import StartupError
from app.schemas import MAX_BATCH

Text = Annotated[str, Meta(min_length=1)]
"""A non-empty string (surrounding whitespace is dropped when read from the environment)."""
Secret = Annotated[str, Meta(min_length=16, pattern=r"^[!-~]+$", extra={"secret": True})]
"""A token: printable ASCII without whitespace, taken as given, never shown in a repr or error."""

Exported: Final = {"exported": True}
"""``Meta(extra=Exported)``: a library's own variable, written back by :func:`load` for it."""

# Read as false/true besides msgspec's own 0/1/false/true (any case).
_FLAG_WORDS: Final = {"no": "false", "off": "false", "yes": "true", "on": "true"}
# Variables that used to set what a setting sets now: refused, so an old deployment is not
# silently served with another value.
RETIRED: Final = {"GRANIAN_WORKERS": "WORKERS", "GRANIAN_HOST": "HOST", "GRANIAN_PORT": "PORT"}


class Settings(msgspec.Struct, frozen=True, kw_only=True, rename="upper"):
    tracking_uri: Text = msgspec.field(default="sqlite:///mlflow.db", name="MLFLOW_TRACKING_URI")
    """where the registry is (also the registry URI)"""
    model_name: Text = "churn-classifier"
    """registered model name"""
    model_alias: Text = "champion"
    """alias the service serves"""
    decision_threshold: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.5
    """default threshold on P(churn) for `churn_label`"""
    max_body_bytes: Annotated[int, Meta(ge=1, le=1 << 30)] = 1_048_576
    """largest request body accepted (413 beyond)"""
    micro_batching: bool = True
    """score a worker's concurrent requests together in one model call; `false`: one call per
    request in a thread pool"""
    max_batch_rows: Annotated[int, Meta(ge=1, le=1 << 20)] = 2048
    """most rows one micro-batched model call takes (a request is never split)"""
    model_threads: Annotated[int, Meta(ge=1, le=256)] = 1
    """native threads (OpenMP, BLAS) one model call may use in a worker; with one worker per CPU,
    more only oversubscribes the CPUs"""
    host: Text = "127.0.0.1"
    """address `churn-api serve` binds (`--host` overrides; the image sets `0.0.0.0`)"""
    port: Annotated[int, Meta(ge=1, le=65_535)] = 8000
    """port `churn-api serve` binds (`--port` overrides)"""
    workers: Annotated[int, Meta(ge=1, le=256)] = 2
    """granian worker processes of `churn-api serve` (`--workers` overrides; unset in the image:
    the CPUs the container may use)"""
    mlflow_http_request_max_retries: Annotated[int, Meta(ge=0, le=100, extra=Exported)] = 2
    """MLflow's own variable: retries of a failed registry request (MLflow's default, 7, makes an
    unreachable registry take minutes to fail a start)"""
    mlflow_http_request_backoff_factor: Annotated[int, Meta(ge=0, le=120, extra=Exported)] = 1
    """MLflow's own variable: back-off before a retry, in seconds, doubled on each retry"""
    mlflow_http_request_timeout: Annotated[int, Meta(ge=1, le=3600, extra=Exported)] = 5
    """MLflow's own variable: seconds one registry request may take"""
    access_log: bool = True
    """one JSON access line per request on stderr"""
    model_poll_seconds: Annotated[float, Meta(ge=0.0, le=86_400.0)] = 30.0
    """how often each worker checks whether the alias moved; `0` turns polling off"""
    admin_token: Secret | None = None
    """bearer token of `POST /admin/reload`; unset, the endpoint does not exist. Compared in
    constant time, never logged"""
    max_queued_rows: Annotated[int, Meta(ge=MAX_BATCH, le=1 << 24)] = 4096
    """rows a worker may hold waiting or being scored (at least one full batch); beyond it 503 at
    once"""
    request_timeout_seconds: Annotated[float, Meta(ge=0.0, le=3600.0)] = 10.0
    """a request that has not started its answer by then gets 503; `0` turns it off"""
    startup_timeout_seconds: Annotated[float, Meta(ge=1.0, le=3600.0)] = 60.0
    """a worker not ready by then (or a champion check not done) stops `churn-api serve` with exit
    status 1 and one line naming the model and the stuck stage"""
    metrics_dir: Text | None = msgspec.field(default=None, name="PROMETHEUS_MULTIPROC_DIR")
    """the workers' shared metrics directory (see Metrics); unset, `churn-api serve` makes a
    private temporary one"""

    def __post_init__(self) -> None:
        for field in declared():
            value = getattr(self, field.name)
            try:
                msgspec.convert(value, field.type)
            except msgspec.ValidationError:
                raise StartupError(field.problem(value)) from None

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{name}={shown}' for name, shown in self._shown())})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return list(self._shown())

    def _shown(self) -> Iterator[tuple[str, str]]:
        for field in declared():
            value = getattr(self, field.name)
            yield field.name, "'***'" if field.secret and value is not None else repr(value)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Every declared variable of ``environ`` (default ``os.environ``); unset or empty: the
        default."""
        env = os.environ if environ is None else environ
        for old, new in RETIRED.items():
            if env.get(old, "").strip():
                raise StartupError(f"setting {old} is no longer read: set {new} instead")
        values: dict[str, Any] = {}
        for field in declared():
            raw = env.get(field.env)
            text = (raw if field.secret else raw.strip()) if raw is not None else ""
            if not text:
                continue
            if field.kind == "bool":
                text = _FLAG_WORDS.get(text.lower(), text)
            try:
                values[field.name] = msgspec.convert(text, field.type, strict=False)
            except msgspec.ValidationError:
                raise StartupError(field.problem(raw)) from None
        return cls(**values)

    def exported(self) -> dict[str, str]:
        """The variables a library reads itself (:data:`Exported`), as it reads them."""
        return {f.env: str(getattr(self, f.name)) for f in declared() if f.exported}


@dataclass(frozen=True)
class Declared:
    """One setting as its field declares it, for checks, messages and the docs' tables."""

    name: str
    env: str
    type: Any
    default: Any
    kind: str
    allowed: str
    secret: bool
    exported: bool

    def problem(self, value: object) -> str:
        if self.secret:  # never echo the value
            return f"setting {self.env} must be {self.allowed}"
        return f"setting {self.env} must be {self.allowed}, got {value!r}"


def declared() -> tuple[Declared, ...]:
    """The settings in declaration order."""
    if not _DECLARED:
        info = mi.type_info(Settings)
        assert isinstance(info, mi.StructType)
        fields = zip(msgspec.structs.fields(Settings), info.fields, strict=True)
        _DECLARED.extend(_declared(field, shape.type) for field, shape in fields)
    return tuple(_DECLARED)


_DECLARED: list[Declared] = []


def _declared(field: msgspec.structs.FieldInfo, shape: mi.Type) -> Declared:
    if isinstance(shape, mi.UnionType):  # ``X | None``: None means unset
        shape = next(t for t in shape.types if not isinstance(t, mi.NoneType))
    extra: dict[str, Any] = {}
    if isinstance(shape, mi.Metadata):
        extra, shape = shape.extra or {}, shape.type
    secret = bool(extra.get("secret"))
    if isinstance(shape, mi.BoolType):
        kind, allowed = "bool", "one of true/false/1/0/yes/no/on/off"
    elif isinstance(shape, mi.IntType):
        kind, allowed = "int", f"an integer in [{shape.ge}, {shape.le}]"
    elif isinstance(shape, mi.FloatType):
        kind, allowed = "float", f"a number in [{shape.ge:g}, {shape.le:g}]"
    elif isinstance(shape, mi.StrType) and secret:
        kind = "str"
        allowed = f"at least {shape.min_length} printable ASCII characters without whitespace"
    elif isinstance(shape, mi.StrType):
        kind, allowed = "str", "a non-empty string"
    else:
        raise TypeError(f"setting {field.encode_name}: no reader for {shape}")
    exported = bool(extra.get("exported"))
    return Declared(
        field.name, field.encode_name, field.type, field.default, kind, allowed, secret, exported
    )


def load() -> Settings:
    """This process's settings: the one read of ``os.environ``, at startup.

    MLflow reads its own HTTP variables from ``os.environ`` on every request; they are written
    back once here (an operator's values were read into the settings and are kept), so an
    unreachable registry fails a start within seconds instead of retrying for minutes.
    """
    settings = Settings.from_environ(os.environ)
    os.environ.update(settings.exported())
    return settings
