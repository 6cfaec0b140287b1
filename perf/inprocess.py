"""µs per request of the HTTP layer, in process: the ASGI app driven directly, no socket, no wrk.

    python perf/inprocess.py [--requests 20000] [--repeats 5] [--concurrency 1]

Builds the app as ``churn-api serve`` does (``app.main.create_app``: observer, routing, error map)
with its real lifespan, and a model that is a fixed logistic of the five columns in numpy (a few
µs). By default the rows are scored on the event loop (an inline scorer in place of the
micro-batcher, whose thread hop costs more than the web layer and varies more), so the figure is
the web layer's; ``--threaded`` keeps the real scorer. Each
scenario sends ``--requests`` requests ``--repeats`` times (``--concurrency`` at once, as tasks on
one event loop) after a warm-up, and prints the best and median repeat as CPU µs per request of
this process (``time.process_time``: other processes on a shared machine move it less than wall
time; per 1000-row batch for the batch scenario, which sends 1/50 of the requests). Compare two
commits in one run of this script on each, on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import sklearn  # noqa: F401 - preloaded, as churn-api serve does: else the scoring thread's
import threadpoolctl  # noqa: F401 - first import of them runs beside the first scenarios

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.main import create_app
from app.model import Champion
from app.schemas import EXAMPLE_CUSTOMER
from app.settings import Settings

CUSTOMER = EXAMPLE_CUSTOMER
WEIGHTS = np.array([-0.03, 0.012, -0.0001, 0.35, 1.1])


def predict(rows: Any) -> Any:
    return 1.0 / (1.0 + np.exp(-(rows @ WEIGHTS - 0.8)))


def scenarios() -> dict[str, tuple[str, bytes, bytes, int]]:
    """name: (path, query, body, the number of scenario requests one figure counts)."""
    batch = json.dumps({"instances": [CUSTOMER] * 1000}).encode()
    records = json.dumps({"dataframe_records": [CUSTOMER]}).encode()
    features = {"name": "x", "shape": [1, 5], "datatype": "FP64", "data": [12, 79.5, 954.0, 3, 1]}
    tensor = json.dumps({"inputs": [features]}).encode()
    return {
        "/predict": ("/predict", b"", json.dumps(CUSTOMER).encode(), 1),
        "/predict?threshold=0.3": ("/predict", b"threshold=0.3", json.dumps(CUSTOMER).encode(), 1),
        "/predict/batch 1000 rows": ("/predict/batch", b"", batch, 1),
        "/invocations": ("/invocations", b"", records, 1),
        "/v2/.../infer": ("/v2/models/churn-classifier/infer", b"", tensor, 1),
        "/predict 422": ("/predict", b"", b'{"tenure_months": "x"}', 1),
    }


def scope(path: str, query: bytes, body: bytes) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": query, "client": ("127.0.0.1", 5), "server": ("127.0.0.1", 8000),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(body))],
    }  # fmt: skip


async def one(app: Any, path: str, query: bytes, body: bytes) -> int:
    """One request; ``receive`` as granian's: futures of the body, its empty end, then pending."""
    status = 0
    loop = asyncio.get_running_loop()
    messages = [
        {"type": "http.request", "body": body, "more_body": False},
        {"type": "http.request", "body": b"", "more_body": False},
    ]

    def receive() -> asyncio.Future[dict[str, Any]]:
        future = loop.create_future()
        if messages:
            future.set_result(messages.pop(0))
        return future  # the last stays pending until the app cancels it (a client still there)

    async def send(sent: dict[str, Any]) -> None:
        nonlocal status
        if sent["type"] == "http.response.start":
            status = sent["status"]

    await app(scope(path, query, body), receive, send)
    return status


async def run(app: Any, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    results = {}
    for name, (path, query, body, _) in scenarios().items():
        requests = args.requests // 50 if "batch" in name else args.requests
        expected = 422 if "422" in name else 200
        for _ in range(max(requests // 10, 10)):  # warm-up
            assert await one(app, path, query, body) == expected, name
        figures = []
        for _ in range(args.repeats):
            started = time.process_time()
            for _ in range(requests // args.concurrency):
                statuses = await asyncio.gather(
                    *(one(app, path, query, body) for _ in range(args.concurrency))
                )
                assert statuses.count(expected) == len(statuses), (name, statuses)
            figures.append((time.process_time() - started) / requests * 1e6)
        results[name] = {"best_us": min(figures), "median_us": statistics.median(figures)}
        print(
            f"{name:28} best {min(figures):8.1f} µs   median {statistics.median(figures):8.1f} µs"
        )
    return results


class Inline:
    """Scores on the event loop (see the module docstring)."""

    async def score(self, model: Champion, rows: Any) -> Any:
        return model.predict(rows)

    def close(self) -> None:
        pass


class Fixed:
    """The one champion, never swapped (an :class:`app.reload.ModelSource`)."""

    def __init__(self, champion: Champion) -> None:
        self.champion = champion

    def first(self, settings: Settings) -> Champion:
        return self.champion

    def current_version(self, settings: Settings) -> str:
        return self.champion.version

    def load(self, settings: Settings, version: str) -> Champion:
        return self.champion


async def main(args: argparse.Namespace) -> None:
    served = Champion(
        name="churn-classifier", version="1", alias="champion", run_id="r", predict=predict
    )
    app = create_app(Settings(access_log=args.access_log), source=Fixed(served))
    async with app.lifespan():
        if not args.threaded:
            app.state.service.scorer = Inline()
        results = await run(app, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--threaded", action="store_true", help="the real micro-batcher")
    parser.add_argument("--access-log", action="store_true", help="write access lines (to stderr)")
    parser.add_argument("--json", help="also write the figures to this file")
    asyncio.run(main(parser.parse_args()))
