"""The operations pieces in one process: tallies, ids, settings, overload, time limit, 500s, swaps.

The app runs with its real lifespan on the test's event loop (httpx's ASGI transport), so requests
are truly concurrent; models are small real objects (a gate the test opens, a model that fails).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
from litestar import Litestar
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from app import metrics, metrics_dir, serve
from app.errors import StartupError
from app.main import create_app
from app.metrics import field_label
from app.model import Champion, Rows, Scores
from app.reload import LoaderSource, Reloader, ReloadResult
from app.request_ids import RequestIds
from app.service import Service
from app.settings import Settings
from app.tally import Tally, add_histogram

CUSTOMER = {
    "tenure_months": 12,
    "monthly_charges": 79.5,
    "total_charges": 954.0,
    "num_support_tickets": 3,
    "is_month_to_month": True,
}
GATE_SECONDS = 10.0
TOKEN = "unit-test-token-0123456789"


def champion(predict: Callable[[Rows], Scores], version: str = "7") -> Champion:
    return Champion(
        name="churn-classifier", version=version, alias="champion", run_id="r", predict=predict
    )


def constant(probability: float) -> Callable[[Rows], Scores]:
    return lambda rows: np.full(len(rows), probability, dtype=np.float64)


class Gate:
    """A model that blocks in its scoring thread until the test opens the gate."""

    def __init__(self, probability: float = 0.25) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.probability = probability

    def __call__(self, rows: Rows) -> Scores:
        self.entered.set()
        assert self.release.wait(GATE_SECONDS)
        return np.full(len(rows), self.probability, dtype=np.float64)


@asynccontextmanager
async def serving(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # Litestar's own types
    async with (
        app.lifespan(),
        httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as client,
    ):
        yield client


async def entered(gate: Gate) -> None:
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, gate.entered.wait, GATE_SECONDS)


class TestTally:
    @pytest.mark.parametrize("values", [[0.0], [1.0], [0.05, 0.050001, 0.5, 0.99, 0.2, 0.2]])
    def test_bulk_histogram_addition_equals_observing_one_by_one(self, values: list[float]) -> None:
        one_by_one, bulk = CollectorRegistry(), CollectorRegistry()
        bounds = metrics.PROBABILITY_BUCKETS
        expected = Histogram("p", "p", buckets=bounds, registry=one_by_one)
        for value in values:
            expected.observe(value)
        got = Histogram("p", "p", buckets=bounds, registry=bulk)
        counts = np.bincount(
            np.searchsorted(bounds, values, side="left"), minlength=len(bounds) + 1
        )
        add_histogram(got, counts.tolist(), sum(values))
        assert _without_created(generate_latest(bulk)) == _without_created(
            generate_latest(one_by_one)
        )

    def test_single_and_batch_paths_put_scores_in_the_same_buckets(self) -> None:
        scores = np.array([0.0, 0.05, 0.0500001, 0.33, 0.95, 1.0])
        one, many = Tally(), Tally()
        for score in scores:
            one.predictions(np.array([score]), [bool(score >= 0.5)])
        many.predictions(scores, [bool(score >= 0.5) for score in scores])
        assert one._probability.counts == many._probability.counts
        assert one._probability.total == pytest.approx(many._probability.total)
        assert one._labels == many._labels == [4, 2]

    def test_a_latency_beyond_the_largest_bucket_counts_in_inf(self) -> None:
        tally = Tally()
        tally.request("/predict", "POST", 200, 99.0)
        assert tally._latency["/predict"].counts[-1] == 1

    @pytest.mark.parametrize(
        ("field", "label"),
        [
            ("instances[17].total_charges", "total_charges"),
            ("tenure_months", "tenure_months"),
            ("threshold", "threshold"),
            ("body", "body"),
            ("instances", "instances"),
            ("instances[3].nickname", "other"),
            ("x" * 500, "other"),
        ],
    )
    def test_field_labels_are_bounded(self, field: str, label: str) -> None:
        assert field_label(field) == label


def _without_created(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if "_created" not in line]


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


class TestSettings:
    def test_defaults(self) -> None:
        settings = Settings.from_environ({})
        assert settings.access_log is True
        assert settings.model_poll_seconds == 30
        assert settings.admin_token is None
        assert settings.max_queued_rows == 4096
        assert settings.request_timeout_seconds == 10

    def test_values(self) -> None:
        settings = Settings.from_environ(
            {
                "ACCESS_LOG": "off",
                "MODEL_POLL_SECONDS": "0",
                "ADMIN_TOKEN": TOKEN,
                "MAX_QUEUED_ROWS": "1024",
                "REQUEST_TIMEOUT_SECONDS": "2.5",
            }
        )
        assert (settings.access_log, settings.model_poll_seconds) == (False, 0)
        assert (settings.admin_token, settings.max_queued_rows) == (TOKEN, 1024)
        assert settings.request_timeout_seconds == 2.5

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("ACCESS_LOG", "maybe"),
            ("MODEL_POLL_SECONDS", "-1"),
            ("MODEL_POLL_SECONDS", "soon"),
            ("MAX_QUEUED_ROWS", "1023"),
            ("MAX_QUEUED_ROWS", "1e3"),
            ("REQUEST_TIMEOUT_SECONDS", "nan"),
            ("REQUEST_TIMEOUT_SECONDS", "4000"),
            ("ADMIN_TOKEN", "short"),
            ("ADMIN_TOKEN", "has a space in the middle"),
        ],
    )
    def test_a_malformed_value_stops_startup_naming_the_variable(
        self, name: str, value: str
    ) -> None:
        with pytest.raises(StartupError, match=name) as raised:
            Settings.from_environ({name: value})
        if name == "ADMIN_TOKEN":
            assert value not in str(raised.value)  # a secret is never echoed


class TestOverload:
    def test_beyond_max_queued_rows_a_request_gets_503_with_retry_after_at_once(self) -> None:
        gate = Gate()

        async def scenario() -> tuple[list[httpx.Response], httpx.Response]:
            app = create_app(
                Settings(max_queued_rows=1024, request_timeout_seconds=0),
                loader=lambda _: champion(gate),
            )
            async with serving(app) as client:
                full = {"instances": [CUSTOMER] * 1024}
                held = asyncio.ensure_future(client.post("/predict/batch", json=full))
                await entered(gate)
                refused = await asyncio.wait_for(client.post("/predict", json=CUSTOMER), 2)
                gate.release.set()
                done = await held
                after = await client.post("/predict", json=CUSTOMER)
                return [done, after], refused

        (held, after), refused = asyncio.run(scenario())
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["x-request-id"]
        assert refused.json() == {"detail": "Server is overloaded, retry shortly"}
        assert held.status_code == 200
        assert after.status_code == 200  # the count went back down


class TestTimeout:
    def test_a_request_that_cannot_answer_in_time_gets_503_and_the_worker_goes_on(self) -> None:
        gate = Gate()

        async def scenario() -> tuple[httpx.Response, httpx.Response, float]:
            app = create_app(Settings(request_timeout_seconds=0.2), loader=lambda _: champion(gate))
            async with serving(app) as client:
                loop = asyncio.get_running_loop()
                started = loop.time()
                late = await asyncio.wait_for(client.post("/predict", json=CUSTOMER), 5)
                waited = loop.time() - started
                gate.release.set()
                fine = await client.post("/predict", json=CUSTOMER)
                return late, fine, waited

        late, fine, waited = asyncio.run(scenario())
        assert late.status_code == 503
        assert late.headers["retry-after"] == "1"
        assert late.headers["x-request-id"]
        assert late.json() == {"detail": "Request timed out, retry shortly"}
        assert 0.2 <= waited < 2
        assert fine.status_code == 200


class TestUnexpectedErrors:
    def test_a_500_logs_its_traceback_with_the_request_id_and_the_client_gets_only_the_id(
        self, capfd: pytest.CaptureFixture[str]
    ) -> None:
        def broken(rows: Rows) -> Scores:
            raise RuntimeError("boom in /opt/secret/model.py")

        async def scenario() -> httpx.Response:
            app = create_app(Settings(), loader=lambda _: champion(broken))
            async with serving(app) as client:
                return await client.post(
                    "/predict", json=CUSTOMER, headers={"X-Request-ID": "trace-me-1"}
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
        assert "RuntimeError: boom in /opt/secret/model.py" in errors[0]["exc"]
        assert "Traceback" in errors[0]["exc"]
        access = [line for line in lines if line.get("logger") == "churn_api.access"]
        assert [(line["status"], line["request_id"]) for line in access] == [(500, "trace-me-1")]

    def test_no_access_lines_when_access_log_is_off(
        self, capfd: pytest.CaptureFixture[str]
    ) -> None:
        async def scenario() -> int:
            app = create_app(Settings(access_log=False), loader=lambda _: champion(constant(0.1)))
            async with serving(app) as client:
                return (await client.post("/predict", json=CUSTOMER)).status_code

        assert asyncio.run(scenario()) == 200
        assert "churn_api.access" not in capfd.readouterr().err


class TestSwap:
    def test_requests_in_flight_finish_on_the_model_they_started_with(self) -> None:
        gate = Gate(probability=0.25)

        async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
            app = create_app(Settings(), loader=lambda _: champion(gate, "1"))
            async with serving(app) as client:
                first = asyncio.ensure_future(client.post("/predict", json=CUSTOMER))
                await entered(gate)
                service: Service = app.state.service
                service.model = champion(constant(0.75), "2")  # what the reloader does
                second = asyncio.ensure_future(client.post("/predict", json=CUSTOMER))
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
            return champion(constant(0.5), version)

        async def scenario() -> list[httpx.Response]:
            app = create_app(Settings(admin_token=TOKEN), loader=loader)
            auth = {"Authorization": f"Bearer {TOKEN}"}
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
            app = create_app(Settings(), loader=lambda _: champion(constant(0.5)))
            async with serving(app) as client:
                return (await client.post("/admin/reload")).status_code

        assert asyncio.run(scenario()) == 404

    def test_polling_swaps_when_the_version_moves_and_skips_a_rejected_one(self) -> None:
        class Source:
            def __init__(self) -> None:
                self.version = "1"
                self.loads: list[str] = []

            def current_version(self, settings: Settings) -> str:
                return self.version

            def load(self, settings: Settings, version: str) -> Champion:
                self.loads.append(version)
                if version == "bad":
                    raise ValueError("feature guard")
                return champion(constant(0.5), version)

        async def scenario() -> tuple[list[str | None], list[str]]:
            source = Source()
            service = Service(settings=Settings(), scorer=None, model=champion(constant(0.5), "1"))  # type: ignore[arg-type]
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
        source = LoaderSource(lambda _: champion(constant(0.5), "9"))
        assert source.current_version(Settings()) == "9"
        assert source.load(Settings(), "9").version == "9"
        with pytest.raises(LookupError):
            source.load(Settings(), "10")

    def test_a_result_omits_empty_fields(self) -> None:
        encoded = msgspec.json.encode(ReloadResult("unchanged", "1"))
        assert encoded == b'{"status":"unchanged","version":"1"}'


class TestMetricsDirectory:
    def test_unset_makes_a_private_directory(self) -> None:
        environ: dict[str, str] = {}
        directory, private = serve.prepare(None, environ)
        try:
            assert private is not None
            assert private.is_dir()
            assert environ["PROMETHEUS_MULTIPROC_DIR"] == str(private) == directory
        finally:
            if private is not None:
                private.rmdir()

    def test_an_operator_directory_is_created_and_emptied_of_old_metrics_only(
        self, tmp_path: Path
    ) -> None:
        directory = tmp_path / "metrics"
        environ: dict[str, str] = {}
        assert serve.prepare(str(directory), environ) == (str(directory), None)
        assert directory.is_dir()
        assert environ["PROMETHEUS_MULTIPROC_DIR"] == str(directory)
        (directory / "counter_123.db").write_bytes(b"old")
        (directory / "keep.txt").write_text("not ours")
        assert serve.prepare(str(directory), environ) == (str(directory), None)
        assert sorted(path.name for path in directory.iterdir()) == ["keep.txt"]

    def test_live_gauge_files_of_dead_workers_are_removed(self, tmp_path: Path) -> None:
        dead = _dead_pid()
        for name in [
            f"gauge_livesum_{dead}.db",
            f"gauge_livemax_{dead}.db",
            f"counter_{dead}.db",
            f"gauge_livesum_{os.getppid()}.db",
        ]:
            (tmp_path / name).write_bytes(b"")
        assert metrics_dir.forget_dead_workers(str(tmp_path)) == [dead]
        assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
            [f"counter_{dead}.db", f"gauge_livesum_{os.getppid()}.db"]
        )


def _dead_pid() -> int:
    """A process id that no process has right now (a child that has exited and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid
