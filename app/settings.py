"""Settings: each one declared once, as a field of :class:`Settings`, and read once at startup.

A field is the whole declaration: its variable is the field's name in upper case (or the ``name``
of its ``msgspec.field``), then its default, its bounds (``msgspec.Meta`` on the type) and its
docstring, the meaning that README's and docs/operations.md's settings tables are tested against.
Adding a setting is adding a field (and its table row)::

    drain_seconds: Annotated[float, Meta(ge=0.0, le=60.0)] = 5.0
    \"\"\"how long a stopping worker keeps answering\"\"\"

A value outside its declaration raises :class:`~app.errors.StartupError` naming the variable
however the ``Settings`` is made: from strings (:meth:`Settings.from_environ`, converted with
``msgspec.convert(..., strict=False)``) or directly (``Settings(workers=0)``). A
:data:`~app.declared.Secret` never appears in a repr or an error. :func:`load` is the process's
one read of ``os.environ``; tests pass an ``environ`` mapping instead of patching it. How a field
is read and checked is :mod:`app.declared`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, Final

import msgspec
from msgspec import Meta

from app import declared as declaration
from app.declared import Declared, Exported, Secret, Text
from app.errors import StartupError
from app.schemas import MAX_BATCH, Threshold

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
    decision_threshold: Threshold = 0.5
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
    mlflow_allow_pickle_deserialization: Annotated[bool, Meta(extra=Exported)] = True
    """MLflow's own variable: `false` refuses to deserialize a pickled or skops model (both can
    run code from the artifact); churn-api's own reader of SQLite registries honours it too"""
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
    """the champion check in `churn-api serve`'s child process, and every worker's startup, must
    finish by then; otherwise the server stops with exit status 1 and one line such as `churn-api:
    worker 4242 not ready after 60s (STARTUP_TIMEOUT_SECONDS), stuck in loading and checking
    churn-classifier@champion, serving churn-classifier version 3; stopping`"""
    metrics_dir: Text | None = msgspec.field(default=None, name="PROMETHEUS_MULTIPROC_DIR")
    """the workers' shared metrics directory (see Metrics); unset, `churn-api serve` makes a
    private temporary one"""

    drift_metrics: bool = True
    """count every scored row in its reference bin of each feature (feature drift); `false` turns
    it off"""
    import_pyarrow: bool = False
    """let `churn-api serve` import pyarrow (pandas imports it when installed, and MLflow installs
    it): nothing churn-api does uses it, and without it a 2-worker server takes ~30 MiB less
    memory; `true` for a champion whose own code needs Arrow"""
    skops_types_cache: Text | None = None
    """file keeping the types skops trusts by default between starts (skops builds those lists
    by importing all of scikit-learn and searching every loaded module for each NumPy and SciPy
    ufunc, ~1 s of loading a skops champion); unset:
    `~/.cache/churn-api/skops-sklearn-types.json`; `off`: no file. Protect it like the registry"""

    def __post_init__(self) -> None:
        declaration.check(self)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value}" for name, value in declaration.shown(self))
        return f"Settings({shown})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return list(declaration.shown(self))

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Every declared variable of ``environ`` (default ``os.environ``); unset or empty: the
        default."""
        env = os.environ if environ is None else environ
        for old, new in RETIRED.items():
            if env.get(old, "").strip():
                raise StartupError(f"setting {old} is no longer read: set {new} instead")
        return cls(**declaration.read(cls, env))

    def exported(self) -> dict[str, str]:
        """The variables a library reads itself (:data:`~app.declared.Exported`), as it reads
        them."""
        return {f.env: str(getattr(self, f.name)) for f in declared() if f.exported}


def declared() -> tuple[Declared, ...]:
    """The settings in declaration order."""
    return declaration.fields(Settings)


def load() -> Settings:
    """This process's settings: the one read of ``os.environ``, at startup.

    MLflow reads its own HTTP variables from ``os.environ`` on every request; they are written
    back once here (an operator's values were read into the settings and are kept), so an
    unreachable registry fails a start within seconds instead of retrying for minutes.
    """
    settings = Settings.from_environ(os.environ)
    os.environ.update(settings.exported())
    return settings
