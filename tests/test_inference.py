"""Scoring off the event loop: micro-batching gives every request exactly its lone answer."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from conftest import MakeClient
from support import (
    CUSTOMERS,
    GATE_SECONDS,
    VALID,
    FakeModel,
    GatedModel,
    app_with,
    champion,
    customer,
    held,
    serving,
)

from app.inference import MicroBatcher
from app.model import Rows, Scores
from app.settings import Settings


def requests(sizes: list[int]) -> list[Rows]:
    """Distinct valid rows, ``sizes[i]`` of them for request ``i``."""
    result = []
    ticket = 0
    for size in sizes:
        rows = []
        for _ in range(size):
            rows.append([12.0, 79.5, 954.0, float(ticket % 1001), float(ticket % 2)])
            ticket += 1
        result.append(np.array(rows, dtype=np.float64))
    return result


async def score_behind_a_busy_model(
    model: GatedModel, batches: list[Rows], max_rows: int = 2048, others: Any = None
) -> list[Scores | BaseException]:
    """Occupy the scoring thread with one call, queue ``batches``, then let everything run."""
    loop = asyncio.get_running_loop()
    batcher = MicroBatcher(loop, max_rows)
    gated = champion(model)
    try:
        first = asyncio.ensure_future(batcher.score(gated, batches[0][:1]))
        assert await loop.run_in_executor(None, model.entered.wait, GATE_SECONDS)
        queued = [
            asyncio.ensure_future(batcher.score(others if others and i % 2 else gated, rows))
            for i, rows in enumerate(batches)
        ]
        loop.call_soon(model.release.set)  # after every task above has queued its rows
        results = await asyncio.gather(first, *queued, return_exceptions=True)
    finally:
        batcher.close()
    return list(results[1:])


class TestMicroBatcher:
    def test_queued_requests_share_one_model_call_and_each_gets_its_own_answer(self) -> None:
        model = GatedModel()
        batches = requests([1, 3, 1, 5, 2, 1])

        results = asyncio.run(score_behind_a_busy_model(model, batches))

        assert [len(call) for call in model.calls] == [1, 13]  # the gate, then all queued rows
        for rows, scores in zip(batches, results, strict=True):
            assert isinstance(scores, np.ndarray)
            np.testing.assert_array_equal(scores, FakeModel.probabilities(rows))

    def test_a_call_never_exceeds_max_rows_and_never_splits_a_request(self) -> None:
        model = GatedModel()
        batches = requests([4, 4, 4, 4, 4, 4, 25])

        results = asyncio.run(score_behind_a_busy_model(model, batches, max_rows=10))

        sizes = [len(call) for call in model.calls[1:]]
        assert sizes == [8, 8, 8, 25]  # pairs of 4-row requests; the 25-row request whole
        for rows, scores in zip(batches, results, strict=True):
            assert isinstance(scores, np.ndarray)
            np.testing.assert_array_equal(scores, FakeModel.probabilities(rows))

    def test_rows_of_different_models_are_never_scored_together(self) -> None:
        model, other = GatedModel(), FakeModel()
        batches = requests([2, 2, 2, 2])

        results = asyncio.run(score_behind_a_busy_model(model, batches, others=champion(other)))

        assert [len(call) for call in other.calls] == [2, 2]  # requests 1 and 3, one by one
        assert [len(call) for call in model.calls] == [1, 2, 2]
        for rows, scores in zip(batches, results, strict=True):
            assert isinstance(scores, np.ndarray)
            np.testing.assert_array_equal(scores, FakeModel.probabilities(rows))

    def test_a_failing_call_fails_each_waiting_request_and_the_thread_goes_on(self) -> None:
        model = GatedModel(fail=True)

        results = asyncio.run(score_behind_a_busy_model(model, requests([1, 2, 3])))

        assert all(isinstance(result, RuntimeError) for result in results)

        async def after() -> Scores:
            batcher = MicroBatcher(asyncio.get_running_loop(), 16)
            try:
                return await batcher.score(champion(FakeModel()), requests([2])[0])
            finally:
                batcher.close()

        np.testing.assert_array_equal(
            asyncio.run(after()), FakeModel.probabilities(requests([2])[0])
        )


def many_customers(count: int) -> list[dict[str, Any]]:
    return [
        customer(
            tenure_months=(7 * i) % 73,
            monthly_charges=20.0 + i,
            total_charges=20.0 + i + 31.0 * i,
            num_support_tickets=i % 9,
            is_month_to_month=bool(i % 2),
        )
        for i in range(count)
    ]


class TestOverHTTP:
    def test_requests_piled_up_behind_a_busy_model_each_get_the_lone_request_answer(
        self, make_client: MakeClient
    ) -> None:
        payloads = many_customers(64)
        lone = make_client(FakeModel())
        expected = [lone.post("/predict", json=payload).json() for payload in payloads]
        expected_batch = lone.post("/predict/batch", json={"instances": CUSTOMERS}).json()
        model = GatedModel()

        async def concurrently() -> list[Any]:
            app = app_with(Settings(micro_batching=True), lambda _: champion(model))
            async with serving(app) as client:
                gate = asyncio.ensure_future(client.post("/predict", json=VALID))
                loop = asyncio.get_running_loop()
                assert await loop.run_in_executor(None, model.entered.wait, GATE_SECONDS)
                answers = [
                    *(asyncio.ensure_future(client.post("/predict", json=p)) for p in payloads),
                    *(
                        asyncio.ensure_future(
                            client.post("/predict/batch", json={"instances": CUSTOMERS})
                        )
                        for _ in range(8)
                    ),
                ]
                # Wait (bounded) until every request's rows are held behind the gate, then release.
                await held(app, 1 + len(payloads) + 8 * len(CUSTOMERS))
                model.release.set()
                assert (await gate).status_code == 200
                return [response.json() for response in await asyncio.gather(*answers)]

        answers = asyncio.run(concurrently())

        assert answers[:64] == expected
        assert answers[64:] == [expected_batch] * 8
        # The gate's own call, then everything that piled up behind it in one call.
        assert [len(call) for call in model.calls] == [1, 64 + 8 * len(CUSTOMERS)]

    @pytest.mark.parametrize("micro_batching", [True, False])
    def test_concurrent_requests_each_get_exactly_the_lone_request_answer(
        self, make_client: MakeClient, micro_batching: bool
    ) -> None:
        payloads = many_customers(64)
        settings = Settings(micro_batching=micro_batching)
        lone = make_client(FakeModel(), settings=settings)
        expected = [lone.post("/predict", json=payload).json() for payload in payloads]

        async def concurrently() -> list[Any]:
            app = app_with(settings, lambda _: champion(FakeModel()))
            async with serving(app) as client:
                answers = await asyncio.gather(*(client.post("/predict", json=p) for p in payloads))
            return [response.json() for response in answers]

        assert asyncio.run(concurrently()) == expected

    def test_micro_batching_on_and_off_give_identical_answers(
        self, make_client: MakeClient
    ) -> None:
        on = make_client(FakeModel(), settings=Settings(micro_batching=True))
        off = make_client(FakeModel(), settings=Settings(micro_batching=False))
        calls: list[tuple[str, Any, dict[str, str]]] = [
            *(("/predict", payload, {}) for payload in CUSTOMERS),
            ("/predict", VALID, {"threshold": "0.1"}),
            ("/predict/batch", {"instances": CUSTOMERS}, {}),
            ("/predict/batch", {"instances": CUSTOMERS}, {"threshold": "0.9"}),
        ]

        for path, body, params in calls:
            first = on.post(path, json=body, params=params)
            second = off.post(path, json=body, params=params)
            assert first.status_code == second.status_code == 200
            assert first.json() == second.json()
