"""The in-process world the tests share: payloads, fake models and champions built in memory.

Fixtures live in ``conftest.py``; real processes, registries and load live in ``ops_support.py``.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import httpx
import numpy as np
from litestar import Litestar

from app.admission import Bounded
from app.main import create_app
from app.model import Champion, Rows, Scores
from app.schemas import FEATURES
from app.settings import Settings

Payload = dict[str, Any]

VALID: Final[Payload] = {
    "tenure_months": 12,
    "monthly_charges": 79.5,
    "total_charges": 954.0,
    "num_support_tickets": 3,
    "is_month_to_month": True,
}
"""A contract-valid customer (the README example)."""

CUSTOMERS: Final[list[Payload]] = [
    VALID,
    {**VALID, "tenure_months": 0, "total_charges": 0.0},
    {
        "tenure_months": 600,
        "monthly_charges": 9999.99,
        "total_charges": 6_000_000.0,
        "num_support_tickets": 1000,
        "is_month_to_month": False,
    },
    {
        "tenure_months": 1,
        "monthly_charges": 0.01,
        "total_charges": 0.01,
        "num_support_tickets": 0,
        "is_month_to_month": False,
    },
    {
        "tenure_months": 60,
        "monthly_charges": 110.0,
        "total_charges": 6600.0,
        "num_support_tickets": 7,
        "is_month_to_month": True,
    },
]
"""Distinct contract-valid customers, bounds included."""

GATE_SECONDS: Final = 10.0


def customer(**changes: Any) -> Payload:
    """:data:`VALID` with some fields replaced."""
    return {**VALID, **changes}


def row(payload: Mapping[str, Any]) -> list[float]:
    """A customer as the model sees it: floats in contract column order."""
    return [float(payload[name]) for name in FEATURES]


def payloads(rows: Rows) -> list[Payload]:
    """Rows in contract column order as JSON customers (integers and the boolean as such)."""
    return [
        {
            "tenure_months": int(r[0]),
            "monthly_charges": float(r[1]),
            "total_charges": float(r[2]),
            "num_support_tickets": int(r[3]),
            "is_month_to_month": bool(r[4]),
        }
        for r in rows
    ]


def training_like(samples: int, seed: int) -> Rows:
    """Customers from the generative process ``churn-api train`` fits on, as float64 rows."""
    from app.train import Generation, synthesize

    frame, _ = synthesize(Generation(samples=samples, seed=seed))
    return frame.to_numpy(dtype=np.float64)


class FakeModel:
    """A deterministic stand-in for ``predict_proba(rows)[:, 1]`` that records every call.

    P(churn) is a logistic of a linear combination of the five columns, so each column moves the
    answer and a swapped column would show.
    """

    WEIGHTS: Final = np.array([-0.03, 0.012, -0.0001, 0.35, 1.1])
    BIAS: Final = -0.8

    def __init__(self) -> None:
        self.calls: list[Rows] = []
        self._lock = threading.Lock()

    def __call__(self, rows: Rows) -> Scores:
        with self._lock:
            self.calls.append(rows.copy())
        return self.probabilities(rows)

    @classmethod
    def probabilities(cls, rows: Rows) -> Scores:
        # Element-wise, not a matrix product: a row's answer is bit-for-bit the same in any batch.
        logit = np.full(len(rows), cls.BIAS)
        for column, weight in enumerate(cls.WEIGHTS):
            logit = logit + rows[:, column] * weight
        return np.asarray(1.0 / (1.0 + np.exp(-logit)), dtype=np.float64)

    @classmethod
    def probability(cls, payload: Mapping[str, Any]) -> float:
        """The unrounded P(churn) this model gives one customer."""
        return float(cls.probabilities(np.array([row(payload)], dtype=np.float64))[0])


class ConstantModel:
    """Answers the same probability for every row."""

    def __init__(self, probability: float) -> None:
        self.probability = probability

    def __call__(self, rows: Rows) -> Scores:
        return np.full(len(rows), self.probability, dtype=np.float64)


class GatedModel(FakeModel):
    """Blocks inside its first call until released, so requests pile up behind it.

    It answers as :class:`FakeModel` (and records every call), or ``probability`` for every row
    if given; ``fail`` makes every call raise once released.
    """

    def __init__(self, probability: float | None = None, *, fail: bool = False) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.probability_given = probability
        self.fail = fail

    def __call__(self, rows: Rows) -> Scores:
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(GATE_SECONDS)
        if self.fail:
            raise RuntimeError("model failed")
        scores = super().__call__(rows)
        if self.probability_given is None:
            return scores
        return np.full(len(rows), self.probability_given, dtype=np.float64)

    async def entered_call(self) -> None:
        """Wait (bounded, off the event loop) until the scoring thread is inside the first call."""
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, self.entered.wait, GATE_SECONDS)


class BrokenModel:
    """A model that fails the way real code fails: with an exception naming a file path."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, rows: Rows) -> Scores:
        self.calls += 1
        raise RuntimeError(f"boom in /opt/models/secret_model.py with {len(rows)} rows")


def champion(predict: Any, version: str = "7") -> Champion:
    return Champion(
        name="churn-classifier", version=version, alias="champion", run_id="r1", predict=predict
    )


Loader = Callable[[Settings], Champion | None]


class LoaderSource:
    """A test's champion source (:class:`app.reload.ModelSource`): a loader function, asked when a
    worker starts and again by every check; the version it returned is the alias's version."""

    def __init__(self, loader: Loader) -> None:
        self._loader = loader
        self._loaded: Champion | None = None

    def first(self, settings: Settings) -> Champion | None:
        return self._loader(settings)

    def current_version(self, settings: Settings) -> str:
        self._loaded = self._loader(settings)
        if self._loaded is None:
            raise LookupError("the loader returned no model")
        return self._loaded.version

    def load(self, settings: Settings, version: str) -> Champion:
        if self._loaded is None or self._loaded.version != version:
            raise LookupError(f"version {version} is not the one the loader returned")
        return self._loaded


def app_with(settings: Settings, loader: Loader) -> Litestar:
    """The app serving what ``loader`` returns (asked again by a reload), not the registry's."""
    return create_app(settings, source=LoaderSource(loader))


@asynccontextmanager
async def serving(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """The app's real lifespan and truly concurrent requests on this event loop.

    (Litestar's AsyncTestClient hands each request to a blocking portal, one at a time.)
    """
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # Litestar's narrower types
    async with (
        app.lifespan(),
        httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as client,
    ):
        yield client


async def held(app: Litestar, rows: int) -> None:
    """Wait (bounded) until the app's worker holds ``rows`` rows, queued or being scored.

    That is admission control's count (``MAX_QUEUED_ROWS`` is checked against it). The scorer
    takes what arrived in one turn of the event loop as the loop's next callback, so this returns
    after one more turn: everything counted is then in the scorer's queue.
    """
    scorer = app.state.service.scorer
    assert isinstance(scorer, Bounded)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GATE_SECONDS
    while scorer.rows < rows and loop.time() < deadline:
        await asyncio.sleep(0.005)  # poll interval of a bounded wait for a real condition
    await asyncio.sleep(0)


def rounded(probability: float) -> float:
    assert math.isfinite(probability)
    return round(probability, 6)
