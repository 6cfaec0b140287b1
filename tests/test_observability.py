"""app/observability.py in one process: request ids, JSON error and access lines, the time limit.

The app runs with its real lifespan on the test's event loop (httpx's ASGI transport), so requests
are truly concurrent; models are small real objects (a gated model the test releases, a model that
fails).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from support import VALID, BrokenModel, ConstantModel, GatedModel, app_with, champion, serving

from app.request_ids import RequestIds
from app.settings import Settings


class TestRequestIds:
    @pytest.mark.parametrize(
        "given", [b"abc", b"A" * 128, b"0.1:2/3+4=5@6-7_8", b"f47ac10b-58cc-4372-a567-0e02b2c3d479"]
    )
    def test_valid_ids_are_kept(self, given: bytes) -> None:
        assert RequestIds().pick([(b"x-request-id", given)]) == given

    @pytest.mark.parametrize(
        "given", [b"", b"A" * 129, b"a b", b"a\nb", b"-a", b"\xc3\xa9", b"a;b", b"a,b"]
    )
    def test_invalid_ids_are_replaced(self, given: bytes) -> None:
        assert RequestIds().pick([(b"x-request-id", given)]) != given

    def test_new_ids_are_unique_and_short(self) -> None:
        ids = RequestIds()
        made = {ids.new() for _ in range(10_000)}
        assert len(made) == 10_000
        assert all(len(made_id) <= 32 for made_id in made)


class TestLogLines:
    def test_a_500_logs_its_traceback_with_the_request_id_and_the_client_gets_only_the_id(
        self, capfd: pytest.CaptureFixture[str]
    ) -> None:
        async def scenario() -> httpx.Response:
            app = app_with(Settings(), lambda _: champion(BrokenModel()))
            async with serving(app) as client:
                return await client.post(
                    "/predict", json=VALID, headers={"X-Request-ID": "trace-me-1"}
                )

        response = asyncio.run(scenario())
        assert response.status_code == 500
        assert response.json() == {"detail": "Internal server error"}
        assert response.headers["x-request-id"] == "trace-me-1"
        assert "secret" not in response.text
        lines = [
            json.loads(line) for line in capfd.readouterr().err.splitlines() if "{" in line[:1]
        ]
        errors = [line for line in lines if line["level"] == "error"]
        assert len(errors) == 1
        assert errors[0]["request_id"] == "trace-me-1"
        assert "RuntimeError: boom in /opt/models/secret_model.py" in errors[0]["exc"]
        assert "Traceback" in errors[0]["exc"]
        access = [line for line in lines if line.get("logger") == "churn_api.access"]
        assert [(line["status"], line["request_id"]) for line in access] == [(500, "trace-me-1")]

    def test_no_access_lines_when_access_log_is_off(
        self, capfd: pytest.CaptureFixture[str]
    ) -> None:
        async def scenario() -> int:
            app = app_with(Settings(access_log=False), lambda _: champion(ConstantModel(0.1)))
            async with serving(app) as client:
                return (await client.post("/predict", json=VALID)).status_code

        assert asyncio.run(scenario()) == 200
        assert "churn_api.access" not in capfd.readouterr().err


class TestTimeout:
    def test_a_request_that_cannot_answer_in_time_gets_503_and_the_worker_goes_on(self) -> None:
        gate = GatedModel(0.25)

        async def scenario() -> tuple[httpx.Response, httpx.Response, float]:
            app = app_with(Settings(request_timeout_seconds=0.2), lambda _: champion(gate))
            async with serving(app) as client:
                loop = asyncio.get_running_loop()
                started = loop.time()
                late = await asyncio.wait_for(client.post("/predict", json=VALID), 5)
                waited = loop.time() - started
                gate.release.set()
                fine = await client.post("/predict", json=VALID)
                return late, fine, waited

        late, fine, waited = asyncio.run(scenario())
        assert late.status_code == 503
        assert late.headers["retry-after"] == "1"
        assert late.headers["x-request-id"]
        assert late.json() == {"detail": "Request timed out, retry shortly"}
        assert 0.2 <= waited < 2
        assert fine.status_code == 200
