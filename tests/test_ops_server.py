"""Operations against the real server (granian, 2 workers): metrics, request ids, logs, schema fuzz.

One server serves the whole module; each test measures deltas of the counters it checks, so the
order of the tests does not matter.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from conftest import Registry
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from ops_support import (
    Server,
    scrape,
    server_for,
    total,
    wait_for,
)
from prometheus_client import multiprocess
from support import VALID

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("ops-server")
    with server_for(registry.copy(workdir), workdir) as running:
        yield running


def per_worker_predict_counts(server: Server) -> dict[str, float]:
    """``POST /predict`` 200s counted in each worker's own counter file."""
    counts = {}
    for path in sorted(server.metrics_dir.glob("counter_*.db")):
        families = multiprocess.MultiProcessCollector.merge([str(path)])  # type: ignore[no-untyped-call]
        counts[path.name] = sum(
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == "churn_http_requests_total"
            and sample.labels == {"route": "/predict", "method": "POST", "status": "200"}
        )
    return counts


def send_predictions(base_url: str, count: int, threads: int = 8) -> None:
    def one(_: int) -> int:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            return client.post("/predict", json=VALID).status_code

    with ThreadPoolExecutor(threads) as pool:  # one connection per request: spread over workers
        assert set(pool.map(one, range(count))) == {200}


class TestMetrics:
    def test_request_counter_adds_up_over_both_workers(self, server: Server) -> None:
        before = scrape(server.base_url)
        files_before = per_worker_predict_counts(server)
        sent = 0
        for _ in range(5):  # bounded: until both workers have answered some of them
            send_predictions(server.base_url, 100)
            sent += 100
            files = per_worker_predict_counts(server)
            grew = [name for name, value in files.items() if value > files_before.get(name, 0)]
            if len(grew) >= 2:
                break
        else:
            pytest.fail(f"the requests never reached both workers: {files}")

        def counted() -> float:
            after = scrape(server.base_url)
            return total(
                after, "churn_http_requests_total", route="/predict", status="200"
            ) - total(before, "churn_http_requests_total", route="/predict", status="200")

        wait_for(lambda: counted() == sent, 10, server)  # workers flush once a second
        after = scrape(server.base_url)

        def delta(name: str, **labels: str) -> float:
            return total(after, name, **labels) - total(before, name, **labels)

        assert delta("churn_http_request_duration_seconds_count", route="/predict") == sent
        assert (
            delta("churn_http_request_duration_seconds_bucket", route="/predict", le="+Inf") == sent
        )
        assert delta("churn_predictions_total") == sent
        assert delta("churn_probability_count") == sent
        assert 0 < delta("churn_probability_sum") < sent
        files = per_worker_predict_counts(server)  # flushed now: the workers' files add up too
        assert sum(files.values()) - sum(files_before.values()) == sent

    def test_batch_sizes_and_predictions_by_label(self, server: Server) -> None:
        before = scrape(server.base_url)
        batch = {"instances": [VALID] * 10 + [{**VALID, "num_support_tickets": 0}] * 5}
        with httpx.Client(base_url=server.base_url) as client:
            for _ in range(4):
                assert client.post("/predict/batch", json=batch).status_code == 200
            threshold_one = client.post("/predict/batch", params={"threshold": 1}, json=batch)
            assert threshold_one.status_code == 200

        def delta(name: str, **labels: str) -> float:
            return total(scrape(server.base_url), name, **labels) - total(before, name, **labels)

        wait_for(lambda: delta("churn_batch_size_count") == 5, 10, server)
        assert delta("churn_batch_size_sum") == 5 * 15
        assert delta("churn_batch_size_bucket", le="8.0") == 0
        assert delta("churn_batch_size_bucket", le="16.0") == 5
        assert delta("churn_predictions_total") == 5 * 15
        assert delta("churn_predictions_total", label="false") >= 15  # threshold 1: all false
        assert delta("churn_probability_count") == 5 * 15

    def test_validation_failures_are_counted_by_field_without_indexes(self, server: Server) -> None:
        before = scrape(server.base_url)
        bad = {"instances": [VALID, {**VALID, "tenure_months": "12", "nickname": "x"}]}
        with httpx.Client(base_url=server.base_url) as client:
            assert client.post("/predict/batch", json=bad).status_code == 422
            assert client.post("/predict", params={"threshold": 2}, json=VALID).status_code == 422

        def delta(field: str) -> float:
            name = "churn_validation_failures_total"
            return total(scrape(server.base_url), name, field=field) - total(
                before, name, field=field
            )

        wait_for(lambda: delta("tenure_months") == 1, 10, server)
        assert delta("other") == 1  # unknown names never become label values
        assert delta("threshold") == 1

    def test_model_info_and_load_time_cover_every_worker(self, server: Server) -> None:
        samples = scrape(server.base_url)
        info = [(labels, value) for labels, value in samples["churn_model_info"] if value]
        assert len(info) == 1
        assert info[0][0]["alias"] == "champion"
        assert info[0][1] == server.workers
        assert total(samples, "churn_model_load_seconds") > 0

    def test_scrape_is_prometheus_text_format(self, server: Server) -> None:
        response = httpx.get(f"{server.base_url}/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        names = set(scrape(server.base_url))
        assert {"churn_http_requests_total", "churn_probability_bucket"} <= names


class TestRequestIds:
    @pytest.mark.parametrize(
        ("method", "path", "body", "status"),
        [
            ("POST", "/predict", VALID, 200),
            ("POST", "/predict", {"tenure_months": -1}, 422),
            ("GET", "/no-such-path", None, 404),
            ("DELETE", "/predict", None, 405),
            ("GET", "/health", None, 200),
            ("GET", "/livez", None, 200),
            ("GET", "/metrics", None, 200),
        ],
    )
    def test_a_valid_incoming_id_comes_back_on_every_answer(
        self, server: Server, method: str, path: str, body: Any, status: int
    ) -> None:
        request_id = f"client-{method}-{status}-{time.monotonic_ns()}"
        response = httpx.request(
            method, server.base_url + path, json=body, headers={"X-Request-ID": request_id}
        )
        assert response.status_code == status
        assert response.headers["x-request-id"] == request_id

    @pytest.mark.parametrize(
        "given_id", ["", "x" * 129, "has space", "semi;colon", "-leading-dash", "é"]
    )
    def test_an_invalid_incoming_id_is_replaced(self, server: Server, given_id: str) -> None:
        response = httpx.get(
            f"{server.base_url}/livez",
            headers=[(b"X-Request-ID", given_id.encode())],  # raw bytes: UTF-8 included
        )
        returned = response.headers["x-request-id"]
        assert returned != given_id
        assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", returned)

    def test_generated_ids_are_unique(self, server: Server) -> None:
        with httpx.Client(base_url=server.base_url) as client:
            ids = [client.get("/livez").headers["x-request-id"] for _ in range(50)]
        assert len(set(ids)) == 50

    def test_too_large_body_still_gets_an_id(self, server: Server) -> None:
        response = httpx.post(
            f"{server.base_url}/predict",
            content=b"[" + b"1," * 600_000 + b"1]",
            headers={"content-type": "application/json", "x-request-id": "big-body-1"},
        )
        assert response.status_code == 413
        assert response.headers["x-request-id"] == "big-body-1"


class TestLogs:
    def test_each_request_has_one_json_access_line(self, server: Server) -> None:
        request_id = f"log-line-{time.monotonic_ns()}"
        response = httpx.post(
            f"{server.base_url}/predict?threshold=0.3",
            json=VALID,
            headers={"X-Request-ID": request_id},
        )
        assert response.status_code == 200

        def lines() -> list[dict[str, Any]]:
            return [
                json.loads(line)
                for line in server.log_text().splitlines()
                if line.startswith("{") and request_id in line
            ]

        wait_for(lambda: len(lines()) == 1, 10, server)
        line = lines()[0]
        assert line["logger"] == "churn_api.access"
        assert line["method"] == "POST"
        assert line["path"] == "/predict"
        assert line["status"] == 200
        assert 0 < line["duration_ms"] < 10_000
        assert line["model_version"] == response.json()["model_version"]
        assert line["request_id"] == request_id
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])

    def test_service_log_lines_are_json(self, server: Server) -> None:
        serving = [
            json.loads(line)
            for line in server.log_text().splitlines()
            if line.startswith("{") and "serving churn-classifier" in line
        ]
        assert len(serving) == server.workers
        assert all(line["level"] == "info" and line["logger"] == "churn_api" for line in serving)


class TestEndpoints:
    def test_livez_answers_without_the_model(self, server: Server) -> None:
        response = httpx.get(f"{server.base_url}/livez")
        assert (response.status_code, response.json()) == (200, {"status": "ok"})

    def test_admin_reload_does_not_exist_without_a_token(self, server: Server) -> None:
        response = httpx.post(
            f"{server.base_url}/admin/reload", headers={"Authorization": "Bearer anything"}
        )
        assert response.status_code == 404


FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
"""Examples per operation and mode; ``nox -s fuzz`` raises it (at least 1,000 requests in all)."""
LEAKS = re.compile(r'Traceback|File "|\.py\b|site-packages|/(?:usr|home|opt|tmp|work|root)/')


def test_schemathesis_finds_no_server_error(server: Server) -> None:
    """Every operation of /schema/openapi.json, valid and invalid inputs, bounded examples.

    No answer is a 5xx, and no body holds a traceback or a file path.
    """
    import requests
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{server.base_url}/schema/openapi.json")
    seen: dict[str, int] = {}
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()  # type: ignore[union-attr]  # an Err would raise: fine
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                key = f"{operation.method.upper()} {operation.path} {mode.value}"
                try:
                    seen[key] = fuzz(
                        operation.as_strategy(generation_mode=mode), server.base_url, session
                    )
                except Unsatisfiable:  # no invalid input exists (an operation without inputs)
                    assert mode is GenerationMode.NEGATIVE
    operations = {key.rsplit(" ", 1)[0] for key in seen}
    print(f"schemathesis: {sum(seen.values())} requests over {len(operations)} operations: {seen}")
    assert {f"{op} positive" for op in operations} <= set(seen)  # every operation, valid input
    assert {"POST /predict positive", "POST /predict/batch negative"} <= set(seen)
    if FUZZ_EXAMPLES >= 300:
        assert sum(seen.values()) >= 1000


def fuzz(cases: Any, base_url: str, session: Any) -> int:
    """Send hypothesis' examples of ``cases``; return how many requests were made."""
    sent = 0

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def call(case: Any) -> None:
        nonlocal sent
        response = case.call(base_url=base_url, session=session, timeout=30)
        sent += 1
        assert response.status_code < 500, (case.as_curl_command(), response.text)
        assert not LEAKS.search(response.text), (case.as_curl_command(), response.text)
        assert response.headers.get("x-request-id")

    call()
    return sent
