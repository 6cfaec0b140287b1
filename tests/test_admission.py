"""app/admission.py: a bounded amount of queued work per worker, and a fast 503 beyond it."""

from __future__ import annotations

import asyncio

import httpx
from support import VALID, GatedModel, app_with, champion, serving

from app.settings import Settings


def test_beyond_max_queued_rows_a_request_gets_503_with_retry_after_at_once() -> None:
    gate = GatedModel(0.25)

    async def scenario() -> tuple[list[httpx.Response], httpx.Response]:
        app = app_with(
            Settings(max_queued_rows=1024, request_timeout_seconds=0),
            lambda _: champion(gate),
        )
        async with serving(app) as client:
            full = {"instances": [VALID] * 1024}
            held = asyncio.ensure_future(client.post("/predict/batch", json=full))
            await gate.entered_call()
            refused = await asyncio.wait_for(client.post("/predict", json=VALID), 2)
            gate.release.set()
            done = await held
            after = await client.post("/predict", json=VALID)
            return [done, after], refused

    (held, after), refused = asyncio.run(scenario())
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["x-request-id"]
    assert refused.json() == {"detail": "Server is overloaded, retry shortly"}
    assert held.status_code == 200
    assert after.status_code == 200  # the count went back down
