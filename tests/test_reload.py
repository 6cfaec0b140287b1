"""app/reload.py and app/admin.py in one process: hot-swaps by poll and by POST /admin/reload.

The app runs with its real lifespan on the test's event loop (httpx's ASGI transport), so requests
are truly concurrent; models are small real objects (a gated model the test releases).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import msgspec
import pytest
from ops_support import ADMIN_TOKEN
from support import VALID, ConstantModel, GatedModel, LoaderSource, app_with, champion, serving

from app.model import Champion
from app.reload import Reloader, ReloadResult
from app.service import Service
from app.settings import Settings


class TestSwap:
    def test_requests_in_flight_finish_on_the_model_they_started_with(self) -> None:
        gate = GatedModel(0.25)

        async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
            app = app_with(Settings(), lambda _: champion(gate, "1"))
            async with serving(app) as client:
                first = asyncio.ensure_future(client.post("/predict", json=VALID))
                await gate.entered_call()
                service: Service = app.state.service
                service.model = champion(ConstantModel(0.75), "2")  # what the reloader does
                second = asyncio.ensure_future(client.post("/predict", json=VALID))
                gate.release.set()
                return (await first).json(), (await second).json()

        first, second = asyncio.run(scenario())
        assert (first["model_version"], first["churn_probability"]) == ("1", 0.25)
        assert (second["model_version"], second["churn_probability"]) == ("2", 0.75)

    def test_admin_reload_swaps_keeps_the_old_model_on_failure_and_needs_the_token(self) -> None:
        versions = iter(["7", "8", "broken"])

        def loader(_: Settings) -> Champion:
            version = next(versions)
            if version == "broken":
                raise RuntimeError("registry says no")
            return champion(ConstantModel(0.5), version)

        async def scenario() -> list[httpx.Response]:
            app = app_with(Settings(admin_token=ADMIN_TOKEN), loader)
            auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            async with serving(app) as client:
                return [
                    await client.post("/admin/reload"),
                    await client.post("/admin/reload", headers={"Authorization": "Bearer nope"}),
                    await client.post("/admin/reload", headers=auth),
                    await client.get("/model-info"),
                    await client.post("/admin/reload", headers=auth),
                    await client.get("/model-info"),
                ]

        no_token, wrong, swapped, info, failed, still = asyncio.run(scenario())
        assert (no_token.status_code, wrong.status_code) == (401, 401)
        assert swapped.json() == {"status": "swapped", "version": "8", "previous": "7"}
        assert info.json()["version"] == "8"
        assert failed.status_code == 502
        assert failed.json()["version"] == "8"
        assert "registry says no" in failed.json()["detail"]
        assert still.json()["version"] == "8"

    def test_the_admin_endpoint_is_absent_without_a_token(self) -> None:
        async def scenario() -> int:
            app = app_with(Settings(), lambda _: champion(ConstantModel(0.5)))
            async with serving(app) as client:
                return (await client.post("/admin/reload")).status_code

        assert asyncio.run(scenario()) == 404

    def test_polling_swaps_when_the_version_moves_and_skips_a_rejected_one(self) -> None:
        class Source:
            def __init__(self) -> None:
                self.version = "1"
                self.loads: list[str] = []

            def first(self, settings: Settings) -> Champion:
                return champion(ConstantModel(0.5), self.version)

            def current_version(self, settings: Settings) -> str:
                return self.version

            def load(self, settings: Settings, version: str) -> Champion:
                self.loads.append(version)
                if version == "bad":
                    raise ValueError("feature guard")
                return champion(ConstantModel(0.5), version)

        async def scenario() -> tuple[list[str | None], list[str]]:
            source = Source()
            service = Service(
                settings=Settings(),
                scorer=None,  # type: ignore[arg-type]  # polling never scores
                model=champion(ConstantModel(0.5), "1"),
            )
            reloader = Reloader(service, source, poll_seconds=0.02, trigger=None)
            task = asyncio.create_task(reloader.run())
            seen: list[str | None] = []
            for version in ["2", "bad", "3"]:
                source.version = version
                expected = "2" if version == "bad" else version
                for _ in range(250):  # bounded: 5 s
                    await asyncio.sleep(0.02)
                    if (
                        service.model is not None
                        and service.model.version == expected
                        and (version != "bad" or "bad" in source.loads)
                    ):
                        break
                seen.append(service.model.version if service.model else None)
            await asyncio.sleep(0.1)  # a few more polls: the rejected version is not retried
            task.cancel()
            return seen, source.loads

        seen, loads = asyncio.run(scenario())
        assert seen == ["2", "2", "3"]
        assert loads == ["2", "bad", "3"]


class TestLoaderSource:
    def test_the_version_is_the_one_the_loader_returned(self) -> None:
        source = LoaderSource(lambda _: champion(ConstantModel(0.5), "9"))
        assert source.current_version(Settings()) == "9"
        assert source.load(Settings(), "9").version == "9"
        with pytest.raises(LookupError):
            source.load(Settings(), "10")

    def test_a_result_omits_empty_fields(self) -> None:
        encoded = msgspec.json.encode(ReloadResult("unchanged", "1"))
        assert encoded == b'{"status":"unchanged","version":"1"}'
