"""``nox -s perf``: churn-api against its FastAPI twin and ``mlflow models serve``, in one run.

1. Makes (or reuses) a real MLflow registry with a champion under ``perf/results/tmp/registry``
   (for a skops champion, builds churn-api's skops types cache first, as the image does).
2. Measures the service time t̄ in process and prints the W/t̄ estimate of throughput.
3. For each stack, starts W workers on 127.0.0.1 against that registry (timing the start until
   the first 200), checks its answers against the model in process, drives it with ``wrk`` (one
   thread, fixed concurrency and duration, one fixed POST body per run), and samples the CPU of
   the server's process tree and of wrk, and the server's memory (PSS).
   churn-api also answers one row through its two protocol front ends (MLflow's ``/invocations``
   and the Open Inference Protocol's ``/v2/models/<name>/infer``) at 32 connections, and
   ``mlflow models serve`` (the third stack) answers the same ``/invocations`` body.
4. Measures the cost of the drift counters: the same build with ``DRIFT_METRICS`` on and off,
   side by side, driven in turns at 32 connections (:func:`drift_cost`).
5. Prints the table and the target ratios, and writes ``perf/results/<mode>.json`` (with the
   payloads, server settings, versions and machine) and ``perf/results/<mode>.png``.

Modes: ``--short`` (CI smoke, well under a minute), the default full run, and ``--sweep`` (only
churn-api, one run per granian setting, to pick the settings documented in ``perf/README.md``).
``--baseline COMMIT`` adds an older commit of churn-api as a stack measured right after the
current one (:mod:`baseline`: its own checkout and environment, the same registry and wrk runs)
and the ratios current / baseline to the targets.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import baseline

ROOT = Path(__file__).resolve().parents[1]
PERF = ROOT / "perf"
PAYLOADS = PERF / "payloads"
LUA = PERF / "wrk" / "post.lua"
RESULTS = PERF / "results"
REGISTRY = RESULTS / "tmp" / "registry"
MODEL_NAME = "churn-classifier"
ALIAS = "champion"
PACKAGES = (
    "churn-api", "litestar", "msgspec", "granian", "numpy", "scikit-learn", "pandas", "mlflow",
    "skops", "fastapi", "pydantic", "uvicorn", "uvloop", "httptools", "starlette", "matplotlib",
)  # fmt: skip
MIB = 1024 * 1024


@dataclass(frozen=True)
class Mode:
    name: str
    warmup: int
    duration: int
    concurrencies: tuple[int, ...]
    batch_concurrency: int
    timing_seconds: float
    micro_batching_off: bool
    drift_rounds: int  # interleaved DRIFT_METRICS on/off pairs at c=32 (see drift_cost)


MODES = {
    "short": Mode("short", 1, 2, (1, 32), 8, 0.3, False, 1),
    "models": Mode("models", 3, 10, (32,), 8, 1.0, False, 0),
    "full": Mode("full", 3, 10, (1, 4, 16, 32, 64), 8, 2.0, True, 3),
    "sweep": Mode("sweep", 2, 5, (1, 32), 8, 0.3, False, 0),
}
HEADLINE = 32  # connections of the headline comparison
MLFLOW = "mlflow models serve"
T_BAR = "t_bar_seed_predict_proba_1row_dataframe_us"
# Batch runs use 8 connections. granian's workers accept connections unevenly, so one worker may
# hold up to 8 bodies of 1000 rows: churn-api runs with MAX_QUEUED_ROWS=8192 (default 4096 rows
# per worker, beyond which it answers 503 at once, by design).
SERVICE_ENV = {"MAX_QUEUED_ROWS": "8192"}


@dataclass(frozen=True)
class Stack:
    """One server to measure: how to start it and what to call it."""

    name: str
    command: list[str]
    env: dict[str, str]
    kind: str = "predict"
    """``predict`` (the /predict contract) or ``mlflow`` (only ``/invocations``)."""


INVOCATIONS = "/invocations"
INFER = f"/v2/models/{MODEL_NAME}/infer"
PROTOCOL_PAYLOADS = {INVOCATIONS: "invocations.json", INFER: "infer.json"}


@dataclass
class Server:
    stack: Stack
    port: int
    cwd: Path
    process: subprocess.Popen[bytes] | None = None
    startup_seconds: float = 0.0
    log: Path = field(default_factory=Path)

    def start(self, timeout: float = 120.0) -> None:
        self.log = REGISTRY.parent / f"{_slug(self.stack.name)}.log"
        env = {**os.environ, **self.stack.env, "PYTHONUNBUFFERED": "1"}
        command = [arg.replace("{port}", str(self.port)) for arg in self.stack.command]
        started = time.perf_counter()
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.stack.name} exited at startup:\n{self.log_tail()}")
            try:
                status, _ = request(self.port, "GET", "/health", timeout=2.0)
            except OSError:
                status = 0
            if status == 200:
                self.startup_seconds = time.perf_counter() - started
                return
            time.sleep(0.01)
        raise RuntimeError(f"{self.stack.name} not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # the session this script started
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def pids(self) -> list[int]:
        assert self.process is not None
        return process_tree(self.process.pid)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def pss_mib(self) -> float:
        return sum(pss_kib(pid) for pid in self.pids()) / 1024

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


# --- /proc ---------------------------------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree = [root]
    for pid in tree:
        tree.extend(children.get(pid, []))
    return tree


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy (all processes), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_until_quiet(limit: float, busy_cores: float = 0.3) -> float:
    """Wait (at most ``limit`` s) until the machine uses under ``busy_cores``; returns its use."""
    deadline = time.monotonic() + limit
    while True:
        before, started = busy_cpu_seconds(), time.monotonic()
        time.sleep(2.0)
        busy = (busy_cpu_seconds() - before) / (time.monotonic() - started)
        if busy < busy_cores or time.monotonic() >= deadline:
            return busy
        print(f"   machine busy ({busy:.2f} cores used by others), waiting", flush=True)


def pss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


# --- HTTP checks ---------------------------------------------------------------------------------


def request(
    port: int, method: str, path: str, body: bytes | None = None, timeout: float = 30.0
) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw.strip() else None  # MLflow: "\n"
    finally:
        connection.close()


def check_answers(server: Server, expected: Mapping[str, Any]) -> dict[str, Any]:
    """The stack answers exactly what the model gives in process (6 decimals, label, version)."""
    port, problems = server.port, []
    single = (PAYLOADS / "predict.json").read_bytes()
    batch = (PAYLOADS / "batch-1000.json").read_bytes()
    status, got = request(port, "POST", "/predict", single)
    if status != 200 or got != expected["single"]:
        problems.append(f"/predict: {status} {got} != {expected['single']}")
    status, got = request(port, "POST", "/predict?threshold=0.99", single)
    if status != 200 or got != {**expected["single"], "churn_label": False}:
        problems.append(f"/predict?threshold=0.99: {status} {got}")
    status, got = request(port, "POST", "/predict/batch", batch)
    if status != 200 or got != {"predictions": expected["batch"], "count": len(expected["batch"])}:
        differing = -1
        if status == 200 and isinstance(got, dict):
            pairs = zip(got.get("predictions", []), expected["batch"], strict=False)
            differing = sum(a != b for a, b in pairs)
        problems.append(f"/predict/batch: status {status}, {differing} predictions differ")
    status, got = request(port, "POST", "/predict", b'{"tenure_months": "12"}')
    if status != 422:
        problems.append(f"invalid body answered {status}, not 422")
    status, info = request(port, "GET", "/model-info")
    if status != 200 or info.get("version") != expected["single"]["model_version"]:
        problems.append(f"/model-info: {status} {info}")
    drift = server.stack.env.get("DRIFT_METRICS", "true") != "false"
    if server.stack.name.startswith("churn-api") and info.get("drift_monitoring") is not drift:
        problems.append(f"/model-info: drift_monitoring is not {drift}: {info}")
    return {"ok": not problems, "problems": problems, "scoring": info.get("scoring")}


def check_protocols(server: Server, expected: Mapping[str, Any], paths: Sequence[str]) -> list[str]:
    """The protocol front ends answer the in-process label / probability of the single row."""
    problems = []
    p = expected["single_unrounded"]
    for path in paths:
        status, got = request(
            server.port, "POST", path, (PAYLOADS / PROTOCOL_PAYLOADS[path]).read_bytes()
        )
        if path == INVOCATIONS:
            ok = status == 200 and got == {"predictions": [int(p > 1 - p)]}
        else:
            proba = got.get("outputs", [{}])[0].get("data", [0, -1]) if status == 200 else [0, -1]
            ok = abs(proba[1] - p) <= 1e-9
        if not ok:
            problems.append(f"{path}: {status} {got}")
    return problems


# --- wrk -----------------------------------------------------------------------------------------


def wrk(server: Server, path: str, body: Path, connections: int, duration: int) -> dict[str, Any]:
    """One wrk run; adds the server's and wrk's CPU use over it (in cores, 1.0 = one core busy)."""
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
        "-s", str(LUA), f"http://127.0.0.1:{server.port}{path}", "--", str(body),
    ]  # fmt: skip
    server_cpu = server.cpu_seconds()
    machine_cpu = busy_cpu_seconds()
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    output = process.stdout.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    server_cpu = server.cpu_seconds() - server_cpu
    wrk_cpu = usage.ru_utime + usage.ru_stime
    other_cpu = busy_cpu_seconds() - machine_cpu - server_cpu - wrk_cpu
    line = next((x for x in output.splitlines() if x.startswith("WRK_JSON ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{output}")
    result: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    seconds = result["duration_us"] / 1e6
    errors = sum(result["errors"].values())
    answered = result["requests"] - result["errors"]["status"]  # non-2xx answers are not counted
    return {
        "connections": connections,
        "requests": result["requests"],
        "rps": answered / seconds,
        "errors": errors,
        "errors_detail": result["errors"],
        "latency_ms": {k: v / 1000 for k, v in result["latency_us"].items()},
        "server_cpu_cores": server_cpu / wall,
        "server_cpu_us_per_request": server_cpu / max(result["requests"], 1) * 1e6,
        "wrk_cpu_cores": wrk_cpu / wall,
        "other_cpu_cores": max(other_cpu, 0.0) / wall,
    }


def drive(
    server: Server, mode: Mode, path: str, body: Path, connections: int, quiet_wait: float = 0.0
) -> dict[str, Any]:
    if quiet_wait > 0:
        wait_until_quiet(quiet_wait)
    wrk(server, path, body, connections, mode.warmup)
    settle(server, path, body, connections)
    return wrk(server, path, body, connections, mode.duration)


def settle(server: Server, path: str, body: Path, connections: int) -> None:
    """Wait for the requests a finished wrk run left behind to be scored.

    wrk closes its connections with requests still queued (with a slow champion, a few hundred
    ms of 1000-row batches): churn-api scores them anyway (their rows count against
    MAX_QUEUED_ROWS until then), so the next run would start with 503s. ``connections``
    requests sent at once queue behind them, first in first out, and are answered after them.
    """
    payload = body.read_bytes()
    with ThreadPoolExecutor(connections) as pool:
        for _ in range(10):  # a 503 (queue still full): again, behind what is queued now
            answers = list(
                pool.map(
                    lambda _: request(server.port, "POST", path, payload)[0], range(connections)
                )
            )
            if set(answers) == {200}:
                return
            if not set(answers) <= {200, 503}:
                raise RuntimeError(f"{server.stack.name}: {path} answered {sorted(set(answers))}")


# --- in process ----------------------------------------------------------------------------------


def mean_seconds(call: Callable[[], object], budget: float) -> float:
    """Mean wall time of ``call`` over as many calls as fit in ``budget`` (after a warm-up)."""
    for _ in range(20):
        call()
    calls, started = 0, time.perf_counter()
    while True:
        for _ in range(50):
            call()
        calls += 50
        elapsed = time.perf_counter() - started
        if elapsed >= budget:
            return elapsed / calls


def in_process(uri: str, budget: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """t̄ for the seed design and for churn-api's path, and the answers the servers must give."""
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    import sklearn

    from app.checks import load_champion
    from app.schemas import FEATURES, Prediction, customer_decoder, encoder
    from app.settings import Settings

    champion = load_champion(Settings.from_environ({"MLFLOW_TRACKING_URI": uri}))
    mlflow.set_registry_uri(uri)
    estimator = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}@{ALIAS}")
    raw = (PAYLOADS / "predict.json").read_bytes()
    customer = json.loads(raw)
    batch = json.loads((PAYLOADS / "batch-1000.json").read_bytes())["instances"]
    columns = list(FEATURES)
    row = np.array([[customer[name] for name in columns]], dtype=np.float64)
    rows = np.array([[c[name] for name in columns] for c in batch], dtype=np.float64)
    frame = pd.DataFrame([customer], columns=columns)

    def seed_request() -> object:  # what the twin does per request, around the HTTP layer
        return estimator.predict_proba(pd.DataFrame([customer], columns=columns))[:, 1]

    def service_path() -> bytes:  # decode, row, model, encode (no HTTP, no queue)
        c = customer_decoder.decode(raw)
        x = np.array([(c.tenure_months, c.monthly_charges, c.total_charges,
                       c.num_support_tickets, c.is_month_to_month)], dtype=np.float64)  # fmt: skip
        p = float(champion.predict(x)[0])
        return encoder.encode(Prediction(round(p, 6), p >= 0.5, champion.version))

    def sklearn_numpy() -> object:  # scikit-learn on an unnamed array (it warns about the names)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return estimator.predict_proba(row)
            except ValueError:  # a model that selects columns by name takes no array
                return estimator.predict_proba(frame)

    timings = {
        # t̄: what one prediction costs the seed design (predict_proba on a 1-row DataFrame)
        T_BAR: mean_seconds(lambda: estimator.predict_proba(frame), budget),
        "seed_request_dataframe_from_dict_and_predict_proba_us": mean_seconds(seed_request, budget),
        "sklearn_predict_proba_1row_numpy_us": mean_seconds(sklearn_numpy, budget),
    }
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        timings["sklearn_predict_proba_1row_numpy_unchecked_us"] = mean_seconds(
            sklearn_numpy, budget
        )
        timings["champion_predict_1row_us"] = mean_seconds(lambda: champion.predict(row), budget)
        timings["service_path_1row_us"] = mean_seconds(service_path, budget)
        timings["champion_predict_1000rows_per_row_us"] = mean_seconds(
            lambda: champion.predict(rows), budget
        ) / len(rows)
    if champion.profile is not None:
        from app.drift import DriftTally

        tally = DriftTally()

        def drift_1row_requests() -> None:  # 1000 requests' rows kept, binned and flushed
            for _ in range(1000):
                tally.rows(champion.profile, "bench", row)
            tally.flush()

        timings["drift_count_1row_request_us"] = mean_seconds(drift_1row_requests, budget) / 1000
    timings = {name: seconds * 1e6 for name, seconds in timings.items()}

    def answer(p: float, version: str) -> dict[str, Any]:
        return {"churn_probability": round(p, 6), "churn_label": p >= 0.5, "model_version": version}

    single = float(estimator.predict_proba(frame)[0, 1])
    many = estimator.predict_proba(pd.DataFrame(batch, columns=columns))[:, 1].tolist()
    expected = {
        "single": answer(single, champion.version),
        "single_unrounded": single,
        "batch": [answer(p, champion.version) for p in many],
    }
    return timings, expected


# The champion kinds of ``--model`` (app.train.KINDS), each logged the way users log it.
FORMATS = {"lr": "pickle", "rf": "skops", "hgb": "skops", "gb": "pickle", "ct": "pickle"}


def ensure_registry(fresh: bool, kind: str = "lr") -> str:
    """A registry holding a ``kind`` champion; trained here unless one is already there."""
    global REGISTRY
    REGISTRY = RESULTS / "tmp" / ("registry" if kind == "lr" else f"registry-{kind}")
    if fresh and REGISTRY.exists():
        shutil.rmtree(REGISTRY)
    REGISTRY.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{REGISTRY / 'mlflow.db'}"
    os.chdir(REGISTRY)  # MLflow puts run artifacts under ./mlruns
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from app.profile import read

    try:
        found = MlflowClient(uri, uri).get_model_version_by_alias(MODEL_NAME, ALIAS)
        profiled = read(uri, str(found.run_id or ""), f"{MODEL_NAME} v{found.version}") is not None
    except MlflowException:
        profiled = False
    if not profiled:  # none yet, or one from before reference profiles (no drift metrics)
        from app.train import train_and_register

        result = train_and_register(uri, MODEL_NAME, ALIAS, kind=kind, serialization=FORMATS[kind])
        print(f"trained and registered {kind} ({FORMATS[kind]}) {MODEL_NAME} v{result.version}"
              f" in {REGISTRY}")  # fmt: skip
    return uri


def warm_skops_cache() -> None:
    """Build churn-api's skops types cache (``SKOPS_TYPES_CACHE``, app/skops_types.py) before any
    server starts, in a process of its own, as the Containerfile does when it builds the image:
    the startup measured is then a deployed server's, not the first start on a new machine (which
    also searches scikit-learn, NumPy and SciPy for the types skops trusts and writes the file)."""
    code = (  # the file the servers will read: their settings, from the same environment
        "from app.settings import load; from app.skops_types import cache_file, import_skops; "
        "import_skops(cache_file(load().skops_types_cache))"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# --- the run -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stacks(
    uri: str,
    workers: int,
    mode: Mode,
    extra_env: Mapping[str, str],
    older: tuple[str, Path] | None = None,
) -> list[Stack]:
    """The stacks of a run; ``older`` (name, Python) adds a baseline commit after churn-api."""
    env = {"MLFLOW_TRACKING_URI": uri, "MODEL_NAME": MODEL_NAME, "MODEL_ALIAS": ALIAS}
    service = [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", "{port}",
               "--workers", str(workers)]  # fmt: skip
    twin = [sys.executable, "-m", "uvicorn", "perf.twin:create_app", "--factory",
            "--app-dir", str(ROOT), "--host", "127.0.0.1", "--port", "{port}",
            "--workers", str(workers)]  # fmt: skip
    ours = {**env, **SERVICE_ENV, **extra_env}
    result = [Stack("churn-api", service, {**ours, "MICRO_BATCHING": "true"})]
    if older is not None:  # the same settings, the commit's own code and environment
        name, python = older
        result.append(Stack(name, baseline.command(python, workers), result[0].env))
    if mode.micro_batching_off:
        off = {**ours, "MICRO_BATCHING": "false"}
        result.append(Stack("churn-api MICRO_BATCHING=false", service, off))
    result.append(Stack("FastAPI twin", twin, env))
    mlflow = [sys.executable, "-m", "mlflow", "models", "serve",
              "-m", f"models:/{MODEL_NAME}@{ALIAS}", "--env-manager", "local",
              "-h", "127.0.0.1", "-p", "{port}", "-w", str(workers)]  # fmt: skip
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # its uvicorn
    result.append(Stack(MLFLOW, mlflow, {**env, "PATH": path}, kind="mlflow"))
    return result


def measure_stack(
    stack: Stack,
    mode: Mode,
    expected: Mapping[str, Any],
    concurrencies: Sequence[int],
    quiet_wait: float = 0.0,
) -> dict[str, Any]:
    server = Server(stack, free_port(), REGISTRY)
    print(f"\n== {stack.name}: starting", flush=True)
    busy_before = wait_until_quiet(quiet_wait) if quiet_wait > 0 else None
    server.start()
    try:
        pss_idle = server.pss_mib()
        protocols = [INVOCATIONS] if stack.kind == "mlflow" else []
        if stack.name == "churn-api":
            protocols = [INVOCATIONS, INFER]
        problems = check_protocols(server, expected, protocols)
        scoring = None
        if stack.kind != "mlflow":
            answers = check_answers(server, expected)
            problems, scoring = [*answers["problems"], *problems], answers["scoring"]
        checks = {"ok": not problems, "problems": problems, "scoring": scoring}
        if not checks["ok"]:
            raise RuntimeError(f"{stack.name} answers wrong: {checks['problems']}")
        print(f"   first 200 after {server.startup_seconds:.2f}s; answers check out", flush=True)
        result: dict[str, Any] = {
            "settings": {"command": stack.command, "env": stack.env},
            "other_cpu_cores_before_start": busy_before,
            "startup_seconds": server.startup_seconds,
            "pss_mib_idle": pss_idle,
            "checks": checks,
        }
        if stack.kind == "predict":
            single: dict[str, Any] = {}
            for connections in concurrencies:
                single[str(connections)] = run = drive(
                    server, mode, "/predict", PAYLOADS / "predict.json", connections, quiet_wait
                )
                print(f"   /predict c={connections}: {_short(run)}", flush=True)
            result["single"] = single
        result["protocols"] = {}
        for path in protocols:
            body = PAYLOADS / PROTOCOL_PAYLOADS[path]
            result["protocols"][path] = run = drive(server, mode, path, body, HEADLINE, quiet_wait)
            print(f"   {path} c={HEADLINE}: {_short(run)}", flush=True)
        if stack.kind == "predict":
            batch = drive(
                server,
                mode,
                "/predict/batch",
                PAYLOADS / "batch-1000.json",
                mode.batch_concurrency,
                quiet_wait,
            )
            batch["rows_per_s"] = batch["rps"] * 1000
            print(f"   /predict/batch c={mode.batch_concurrency}: {_short(batch)}", flush=True)
            result["batch_1000"] = batch
        result["pss_mib_after_load"] = server.pss_mib()
        result["processes"] = len(server.pids())
        return result
    finally:
        server.stop()


Scenario = tuple[str, Path, int]  # path, body, connections
PREDICT_C32: Scenario = ("/predict", PAYLOADS / "predict.json", HEADLINE)


def in_turns(
    named: Mapping[str, Stack],
    scenarios: Mapping[str, Scenario],
    rounds: int,
    mode: Mode,
    expected: Mapping[str, Any],
    quiet_wait: float,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Start every stack side by side, then drive each scenario on each in turns, ``rounds`` times.

    The order of the stacks is reversed every round (a, b, then b, a), so a slow moment of the
    machine hits all of them; the idle servers only wake for their once-a-second flush. Returns,
    per stack and scenario, the wrk run of every round.
    """
    servers = {key: Server(stack, free_port(), REGISTRY) for key, stack in named.items()}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        key: {scenario: [] for scenario in scenarios} for key in servers
    }
    try:
        for server in servers.values():
            server.start()
            checks = check_answers(server, expected)
            if not checks["ok"]:
                raise RuntimeError(f"{server.stack.name} answers wrong: {checks['problems']}")
        for round_ in range(rounds):
            order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
            for scenario, (path, body, connections) in scenarios.items():
                for key in order:
                    run = drive(servers[key], mode, path, body, connections, quiet_wait)
                    runs[key][scenario].append(run)
                    print(f"   {servers[key].stack.name} {path} c={connections}: {_short(run)}",
                          flush=True)  # fmt: skip
    finally:
        for server in servers.values():
            server.stop()
    return runs


def median_rps(runs: Sequence[Mapping[str, Any]]) -> float:
    return float(statistics.median(float(run["rps"]) for run in runs))


def drift_cost(
    uri: str, workers: int, mode: Mode, expected: Mapping[str, Any], quiet_wait: float
) -> dict[str, Any]:
    """``POST /predict`` at c=32 on the same build with DRIFT_METRICS on and off, in turns
    (:func:`in_turns`); the figure is the ratio of the median req/s."""
    base = stacks(uri, workers, mode, {})[0]
    named = {
        setting: Stack(f"churn-api DRIFT_METRICS={setting}", base.command,
                       {**base.env, "DRIFT_METRICS": setting})
        for setting in ("true", "false")
    }  # fmt: skip
    print(f"\n== drift counters: DRIFT_METRICS true/false, {mode.drift_rounds} rounds", flush=True)
    found = in_turns(named, {"predict": PREDICT_C32}, mode.drift_rounds, mode, expected, quiet_wait)
    runs = {setting: by_scenario["predict"] for setting, by_scenario in found.items()}
    median = {setting: median_rps(each) for setting, each in runs.items()}
    return {
        "connections": HEADLINE,
        "rounds": mode.drift_rounds,
        "runs": runs,
        "median_rps": median,
        "ratio_on_off": median["true"] / median["false"],
    }


def baseline_in_turns(
    ours: Stack, theirs: Stack, mode: Mode, expected: Mapping[str, Any], quiet_wait: float
) -> dict[str, Any]:
    """The current build and the baseline commit side by side, in turns (:func:`in_turns`):
    ``/predict`` at c=32 and 1000-row batches; the ratios of the median req/s."""
    batch: Scenario = ("/predict/batch", PAYLOADS / "batch-1000.json", mode.batch_concurrency)
    scenarios = {"predict": PREDICT_C32, "batch_1000": batch}
    rounds = max(mode.drift_rounds, 1)
    print(f"\n== {ours.name} and {theirs.name} in turns, {rounds} rounds", flush=True)
    found = in_turns({"current": ours, "baseline": theirs}, scenarios, rounds, mode, expected,
                     quiet_wait)  # fmt: skip
    median = {key: {s: median_rps(runs) for s, runs in each.items()} for key, each in found.items()}
    return {
        "rounds": rounds,
        "scenarios": {name: {"path": path, "connections": c}
                      for name, (path, _, c) in scenarios.items()},
        "runs": found,
        "median_rps": median,
        "ratio": {s: median["current"][s] / median["baseline"][s] for s in scenarios},
    }  # fmt: skip


def _short(run: Mapping[str, Any]) -> str:
    latency = run["latency_ms"]
    return (
        f"{run['rps']:,.0f} req/s, p50 {latency['p50']:.2f} p99 {latency['p99']:.2f} ms, "
        f"errors {run['errors']}, server {run['server_cpu_cores']:.2f} cores "
        f"({run['server_cpu_us_per_request']:,.0f} µs/req), wrk {run['wrk_cpu_cores']:.2f}, "
        f"others {run['other_cpu_cores']:.2f}"
    )


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")


def machine() -> dict[str, Any]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    memory = next(
        (int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
         if line.startswith("MemTotal")),
        0,
    )  # fmt: skip
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_mib": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
    }


def payload_facts(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    document = json.loads(raw)
    return {
        "path": str(path.relative_to(ROOT)),
        "bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "rows": len(document["instances"]) if "instances" in document else 1,
        "first_row": document["instances"][0] if "instances" in document else document,
    }


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    found["wrk"] = subprocess.run(
        ["wrk", "-v"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[0]
    return found


def summarise(result: dict[str, Any], workers: int) -> list[str]:
    """The table and the targets, as printed and as written into the README."""
    stacks_ = result["stacks"]
    timings = result["in_process"]
    lines = [
        "| stack | scenario | req/s | rows/s | p50 ms | p95 ms | p99 ms | max ms | errors "
        "| server CPU (cores) | server CPU µs/req | wrk CPU | other CPU |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, stack in stacks_.items():
        runs = [(f"/predict c={c}", run) for c, run in stack.get("single", {}).items()]
        runs += [(f"{path} 1 row c={run['connections']}", run)
                 for path, run in stack.get("protocols", {}).items()]  # fmt: skip
        if "batch_1000" in stack:
            runs.append((f"/predict/batch 1000 rows c={stack['batch_1000']['connections']}",
                         stack["batch_1000"]))  # fmt: skip
        for scenario, run in runs:
            rows = run.get("rows_per_s", run["rps"])
            lat = run["latency_ms"]
            lines.append(
                f"| {name} | {scenario} | {run['rps']:,.0f} | {rows:,.0f} | {lat['p50']:.2f} "
                f"| {lat['p95']:.2f} | {lat['p99']:.2f} | {lat['max']:.1f} | {run['errors']} "
                f"| {run['server_cpu_cores']:.2f} | {run['server_cpu_us_per_request']:,.0f} "
                f"| {run['wrk_cpu_cores']:.2f} | {run['other_cpu_cores']:.2f} |"
            )
    lines += ["", "| stack | startup to first 200 s | PSS idle MiB | PSS after load MiB |",
              "|---|--:|--:|--:|"]  # fmt: skip
    for name, stack in stacks_.items():
        lines.append(
            f"| {name} | {stack['startup_seconds']:.2f} | {stack['pss_mib_idle']:.0f} "
            f"| {stack['pss_mib_after_load']:.0f} |"
        )
    ours, twin = stacks_["churn-api"], stacks_["FastAPI twin"]
    head, base = ours["single"][str(HEADLINE)], twin["single"][str(HEADLINE)]
    estimate = workers / (timings[T_BAR] / 1e6)
    linear = result["model"]["kind"] == "lr"
    skops = result["model"]["format"] == "skops"
    targets = [
        ("req/s vs twin (c=32)", head["rps"] / base["rps"], ">= 10x",
         head["rps"] >= 10 * base["rps"]),
        ("p99 vs twin (c=32)", head["latency_ms"]["p99"] / base["latency_ms"]["p99"], "<= 0.1x",
         head["latency_ms"]["p99"] <= base["latency_ms"]["p99"] / 10),
        ("batch rows/s (1000-row bodies)", ours["batch_1000"]["rows_per_s"],
         ">= 1,000,000" if linear else "(measured: the goal is the LR pipeline's)",
         ours["batch_1000"]["rows_per_s"] >= 1e6 or not linear),
        (f"req/s vs W/t̄ = {workers}/{timings[T_BAR]:.0f}µs "
         f"= {estimate:,.0f}", head["rps"] / estimate, ">= 1x", head["rps"] >= estimate),
        ("PSS vs twin (after load)", ours["pss_mib_after_load"] / twin["pss_mib_after_load"],
         "<= 0.5x", ours["pss_mib_after_load"] <= twin["pss_mib_after_load"] / 2),
        ("startup to first 200", ours["startup_seconds"], "<= 3 s", ours["startup_seconds"] <= 3),
        ("startup vs twin", ours["startup_seconds"] / twin["startup_seconds"],
         "<= 0.5x" if skops else "(measured: the goal is a skops champion's)",
         ours["startup_seconds"] <= twin["startup_seconds"] / 2 or not skops),
        ("req/s twin vs W/t̄", base["rps"] / estimate, "(for reference)", True),
    ]  # fmt: skip
    targets += protocol_targets(stacks_)
    if "baseline" in result:
        targets += baseline.targets(stacks_, result["baseline"], HEADLINE)
    if "drift_cost" in result:
        drift = result["drift_cost"]
        targets.append((
            f"req/s DRIFT_METRICS on / off (c=32, median of {drift['rounds']} interleaved rounds)",
            drift["ratio_on_off"], ">= 0.95", drift["ratio_on_off"] >= 0.95,
        ))  # fmt: skip
    lines += ["", "| target | measured | goal | met |", "|---|--:|---|---|"]
    for what, value, goal, met in targets:
        shown = f"{value:,.0f}" if value >= 1000 else f"{value:.2f}"
        lines.append(f"| {what} | {shown} | {goal} | {'yes' if met else 'NO'} |")
    result["targets"] = [
        {"target": what, "value": value, "goal": goal, "met": met}
        for what, value, goal, met in targets
    ]
    return lines


def protocol_targets(stacks_: Mapping[str, Any]) -> list[tuple[str, float, str, bool]]:
    """/invocations against mlflow models serve; both protocols against /predict (c=32)."""
    ours = stacks_["churn-api"]
    predict = ours["single"][str(HEADLINE)]
    invocations, infer = ours["protocols"][INVOCATIONS], ours["protocols"][INFER]
    found = [
        ("/invocations req/s vs /predict (c=32)", invocations["rps"] / predict["rps"], ">= 0.8x",
         invocations["rps"] >= 0.8 * predict["rps"]),
        ("/v2 infer req/s vs /predict (c=32)", infer["rps"] / predict["rps"], ">= 0.8x",
         infer["rps"] >= 0.8 * predict["rps"]),
    ]  # fmt: skip
    cpu = predict["server_cpu_us_per_request"]  # steadier than req/s when others share the CPU
    for name, run in (("/invocations", invocations), ("/v2 infer", infer)):
        found.append((f"{name} server CPU per request vs /predict (c=32)",
                      run["server_cpu_us_per_request"] / cpu, "(for reference)", True))  # fmt: skip
    if MLFLOW in stacks_:
        theirs = stacks_[MLFLOW]["protocols"][INVOCATIONS]
        ratio = invocations["rps"] / theirs["rps"]
        p99 = invocations["latency_ms"]["p99"] / theirs["latency_ms"]["p99"]
        found += [
            ("/invocations req/s vs mlflow models serve (c=32)", ratio, ">= 10x", ratio >= 10),
            ("/invocations p99 vs mlflow models serve (c=32)", p99, "<= 0.1x", p99 <= 0.1),
        ]
    return found


def plot(result: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency, throughput) = plt.subplots(1, 2, figsize=(11, 4.2))
    measured = [(n, s) for n, s in result["stacks"].items() if "single" in s]
    for (name, stack), color in zip(measured, ["C0", "C2", "C3", "C1", "C4"], strict=False):
        connections = [int(c) for c in stack["single"]]
        runs = list(stack["single"].values())
        for key, style in (("p50", "-"), ("p99", "--")):
            latency.plot(connections, [r["latency_ms"][key] for r in runs], style, color=color,
                         marker="o", label=f"{name} {key}")  # fmt: skip
        throughput.plot(connections, [r["rps"] for r in runs], "-o", color=color, label=name)
    titles = (
        (latency, "POST /predict latency", "ms (log)"),
        (throughput, "POST /predict throughput", "requests/s (log)"),
    )
    for axis, title, unit in titles:
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("concurrent connections (wrk, 1 thread)")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    workers = result["workers"]
    figure.suptitle(f"churn-api vs others, {workers} workers each, {result['machine']['cpu']}"
                    f" ({result['machine']['cpus']} CPUs)", fontsize=9)  # fmt: skip
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def sweep(
    uri: str, workers: int, mode: Mode, expected: Mapping[str, Any], quiet_wait: float
) -> None:
    """churn-api alone at c=32 (and c=1) under each granian setting read from GRANIAN_* vars."""
    rloop = os.environ.get("RLOOP_PATH")  # a --target install of rloop, kept out of the venv
    variants: dict[str, dict[str, str]] = {
        "defaults": {},
        "loop asyncio": {"GRANIAN_LOOP": "asyncio"},
        "loop uvloop": {"GRANIAN_LOOP": "uvloop"},
        **({"loop rloop": {"GRANIAN_LOOP": "rloop", "PYTHONPATH": rloop}} if rloop else {}),
        "task-impl rust": {"GRANIAN_TASK_IMPL": "rust"},
        "runtime-threads 2": {"GRANIAN_RUNTIME_THREADS": "2"},
        "runtime-mode st": {"GRANIAN_RUNTIME_MODE": "st"},
        "http 1": {"GRANIAN_HTTP": "1"},
        "backpressure 32": {"GRANIAN_BACKPRESSURE": "32"},
    }
    only = os.environ.get("SWEEP_ONLY")
    if only:
        variants = {k: v for k, v in variants.items() if k in only.split(",")}
    results = {}
    for name, env in variants.items():
        stack = stacks(uri, workers, mode, env)[0]
        stack = Stack(f"churn-api [{name}]", stack.command, stack.env)
        results[name] = measure_stack(stack, mode, expected, (1, HEADLINE), quiet_wait)
    print(
        "\n| granian setting | c=1 p50 ms | c=32 req/s | c=32 p99 ms | c=32 server µs/req "
        "| batch rows/s | others' CPU |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|")
    for name, run in results.items():
        one, many, batch = run["single"]["1"], run["single"][str(HEADLINE)], run["batch_1000"]
        print(
            f"| {name} | {one['latency_ms']['p50']:.2f} | {many['rps']:,.0f} "
            f"| {many['latency_ms']['p99']:.2f} | {many['server_cpu_us_per_request']:.0f} "
            f"| {batch['rows_per_s']:,.0f} | {many['other_cpu_cores']:.2f} |"
        )
    out = RESULTS / "sweep.json"
    out.write_text(json.dumps({"machine": machine(), "variants": variants, "results": results},
                              indent=1))  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--short", action="store_true", help="CI smoke: short runs, 2 concurrencies"
    )
    parser.add_argument("--sweep", action="store_true", help="churn-api only, per granian setting")
    parser.add_argument("--workers", type=int, default=2, help="workers per stack (default 2)")
    parser.add_argument("--fresh", action="store_true", help="train a new registry first")
    parser.add_argument(
        "--model",
        choices=(*FORMATS, "all"),
        default="lr",
        help="champion kind (default lr); 'all' runs every kind in the compact 'models' mode",
    )
    parser.add_argument(
        "--baseline",
        metavar="COMMIT",
        help="also measure this older commit of churn-api (its own checkout and environment)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        metavar="S",
        help="before each server, wait up to S seconds for other processes to go quiet",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the servers started
    if shutil.which("wrk") is None:
        print("perf: wrk is not installed (Debian/Ubuntu: apt-get install wrk)", file=sys.stderr)
        return 2
    if args.model == "all":
        return run_all_models(args)
    mode = MODES["sweep" if args.sweep else "short" if args.short else "full"]
    return run_one(args, mode, args.model)


def run_one(args: argparse.Namespace, mode: Mode, kind: str) -> int:
    """One champion kind: in-process timings, then every stack under load; writes the results."""
    started = time.perf_counter()
    uri = ensure_registry(args.fresh, kind)
    if FORMATS[kind] == "skops":
        warm_skops_cache()
    timings, expected = in_process(uri, mode.timing_seconds)
    estimate = args.workers / (timings[T_BAR] / 1e6)
    print("in process (µs): " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
    print(f"W/t̄ estimate: {args.workers} workers / {timings[T_BAR]:.0f} µs"
          f" = {estimate:,.0f} req/s")  # fmt: skip
    if args.sweep:
        sweep(uri, args.workers, mode, expected, args.quiet_wait)
        return 0
    older: tuple[str, Path] | None = None
    compared: dict[str, Any] | None = None
    if args.baseline:
        sha, python = baseline.prepare(args.baseline)
        older = (f"baseline {args.baseline}", python)
        compared = {"name": older[0], "commit": sha, "python": str(python)}
    result: dict[str, Any] = {
        "mode": mode.name,
        "model": {"kind": kind, "format": FORMATS[kind]},
        "workers": args.workers,
        "load": {
            "generator": "wrk, 1 thread, keep-alive",
            "warmup_s": mode.warmup,
            "duration_s": mode.duration,
            "concurrencies": mode.concurrencies,
            "batch_concurrency": mode.batch_concurrency,
        },
        "payloads": {p.name: payload_facts(p) for p in sorted(PAYLOADS.glob("*.json"))},
        "machine": machine(),
        "versions": versions(),
        "in_process": {**timings, "estimate_rps": estimate},
        "stacks": {},
    }
    if compared is not None:
        result["baseline"] = compared
    measured = stacks(uri, args.workers, mode, {}, older)
    for stack in measured:
        result["stacks"][stack.name] = measure_stack(
            stack, mode, expected, mode.concurrencies, args.quiet_wait
        )
    if compared is not None:
        compared["in_turns"] = baseline_in_turns(
            measured[0], measured[1], mode, expected, args.quiet_wait
        )
    if mode.drift_rounds:
        result["drift_cost"] = drift_cost(uri, args.workers, mode, expected, args.quiet_wait)
    table = summarise(result, args.workers)
    result["seconds"] = time.perf_counter() - started
    print("\n" + "\n".join(table))
    RESULTS.mkdir(exist_ok=True)
    name = result_name(mode, kind)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text("\n".join(table) + "\n")
    if len(mode.concurrencies) > 1:
        plot(result, RESULTS / f"{name}.png")
    print(f"\nwrote perf/results/{name}.json and .md ({result['seconds']:.0f} s)")
    return 0


def result_name(mode: Mode, kind: str) -> str:
    """``perf/results/<name>.json``: the LR pipeline keeps the mode's own name (README links it)."""
    return mode.name if kind == "lr" and mode.name != "models" else f"{mode.name}-{kind}"


def run_all_models(args: argparse.Namespace) -> int:
    """Every champion kind in the 'models' mode (``--short``: the short mode), then one table."""
    mode = MODES["short" if args.short else "models"]
    rows = [
        "| champion (format) | scoring path | churn-api req/s (p99 ms) | twin req/s (p99 ms) "
        "| ratio | p99 ratio | batch rows/s | startup s (twin) | PSS MiB (twin) |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for kind in FORMATS:
        if run_one(args, mode, kind) != 0:
            return 1
        result = json.loads((RESULTS / f"{result_name(mode, kind)}.json").read_text())
        ours, twin = result["stacks"]["churn-api"], result["stacks"]["FastAPI twin"]
        a, b = ours["single"][str(HEADLINE)], twin["single"][str(HEADLINE)]
        rows.append(
            f"| {kind} ({FORMATS[kind]}) | {ours['checks'].get('scoring', '?')} "
            f"| {a['rps']:,.0f} ({a['latency_ms']['p99']:.1f}) "
            f"| {b['rps']:,.0f} ({b['latency_ms']['p99']:.1f}) | {a['rps'] / b['rps']:.1f}x "
            f"| {a['latency_ms']['p99'] / b['latency_ms']['p99']:.2f} "
            f"| {ours['batch_1000']['rows_per_s']:,.0f} "
            f"| {ours['startup_seconds']:.1f} ({twin['startup_seconds']:.1f}) "
            f"| {ours['pss_mib_after_load']:.0f} ({twin['pss_mib_after_load']:.0f}) |"
        )
    print("\n" + "\n".join(rows))
    (RESULTS / f"{mode.name}-all.md").write_text("\n".join(rows) + "\n")
    print(f"wrote perf/results/{mode.name}-all.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
