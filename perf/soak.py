"""``nox -s soak``: the real server under steady load for minutes, with a hot-swap every minute.

1. Makes (or reuses) a registry with two versions of the champion under
   ``perf/results/tmp/soak-registry`` and starts ``churn-api serve`` (2 workers) on it.
2. Measures the maximum with wrk (``/predict`` at 32 connections, 1000-row batches at 4), then
   offers two wrk processes' load at fixed rates (``perf/wrk/paced.lua``: each request booked a
   slot of a schedule, so the rate does not fall when latency rises) of 45 % of the ``/predict``
   maximum plus 15 % of the batch maximum: 60 % of capacity in all. A 10 s trial at those rates
   checks them; each minute's achieved rate corrects the next minute's offered rate (by at most
   10 % a minute, within 0.8-1.25x the target), so the load stays at its target; the JSON
   records target, offered and achieved per minute.
3. Every minute: one wrk run per path (latency and rate of that minute), the alias moved to the
   other version at the half minute (the workers poll every 5 s and swap), and the RSS, PSS and
   USS of every server process (main and workers) sampled every 10 s from
   ``/proc/PID/smaps_rollup``.
4. Writes ``perf/results/<out>.json`` and ``.png`` and exits 1 if, over the second half, memory
   (the PSS of the whole server, main process and workers: shared pages are counted once; RSS
   and USS are recorded and plotted too) grew by more than 5 %, any request failed (wrk's
   connect, read, write, timeout or non-2xx counts), a swap did not complete, or the last
   minute's p99 of either path is more than 1.5x that of the first minute.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bench

REGISTRY = bench.RESULTS / "tmp" / "soak-registry"
PACED = bench.PERF / "wrk" / "paced.lua"
BODIES = {"predict": bench.PAYLOADS / "predict.json", "batch": bench.PAYLOADS / "batch-1000.json"}
PATHS = {"predict": "/predict", "batch": "/predict/batch"}
SHARES = {"predict": 0.45, "batch": 0.15}  # of each path's own maximum: 60 % in all
# Connections the offered rate is spread over: enough that some are free when latency rises
# (at 60 % of the maximum, a /predict answer takes a few ms; 128 connections carry 4,000 req/s
# through answers of 30 ms). Batches: 6 bodies of 1000 rows in flight at most, within one
# worker's MAX_QUEUED_ROWS (8192) even if all land on it (16 gave 503s after a stall).
CONNECTIONS = {"predict": 128, "batch": 6}
CORRECTION = (0.9, 1.1)  # bounds of one minute's change of the offered rate
# Bounds of the offered rate, as multiples of the target: a server that cannot keep up (the
# machine busy with other work) is not offered ever more, to be flooded once it is free again.
OFFERED = (0.8, 1.25)
SAMPLE_SECONDS = 10
MINUTE = 60
LIMITS = {"memory_growth": 0.05, "p99_ratio": 1.5}
JUDGED = ("pss_mib",)  # the memory measure the growth limit applies to (see verdict)
SERVICE_ENV = {
    **bench.SERVICE_ENV,
    "MODEL_POLL_SECONDS": "5",
    "ACCESS_LOG": "false",  # ~3 million access lines in 10 minutes would fill the disk, not RAM
}


def ensure_versions() -> tuple[str, list[str]]:
    """The registry URI and its two versions (trained here once, ~20 s)."""
    REGISTRY.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{REGISTRY / 'mlflow.db'}"
    known = REGISTRY / "versions.json"
    if known.exists() and (REGISTRY / "mlflow.db").exists():
        return uri, list(json.loads(known.read_text()))
    os.chdir(REGISTRY)  # MLflow puts run artifacts under ./mlruns
    from app.train import Generation, train_and_register

    first = train_and_register(uri, bench.MODEL_NAME, bench.ALIAS).version
    second = train_and_register(
        uri, bench.MODEL_NAME, bench.ALIAS, Generation(seed=8), promote=False
    ).version
    known.write_text(json.dumps([first, second]))
    return uri, [first, second]


def memory(pids: list[int]) -> dict[str, dict[str, int]]:
    """RSS, PSS (and its anonymous part) and USS (private pages) in KiB of each process, from
    /proc/PID/smaps_rollup."""
    found = {}
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        values = {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines()[1:]}
        found[str(pid)] = {
            "rss_kib": values.get("Rss", 0),
            "pss_kib": values.get("Pss", 0),
            "pss_anon_kib": values.get("Pss_Anon", 0),
            "uss_kib": values.get("Private_Clean", 0) + values.get("Private_Dirty", 0),
        }
    return found


def paced(port: int, name: str, rate: float, seconds: int) -> subprocess.Popen[bytes]:
    """wrk offering ``rate`` requests per second on ``name``'s path for ``seconds``."""
    command = [
        "wrk", "-t1", f"-c{CONNECTIONS[name]}", f"-d{seconds}s", "--timeout", "10s",
        "-s", str(PACED), f"http://127.0.0.1:{port}{PATHS[name]}", "--", str(BODIES[name]),
        f"{rate:.3f}",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    output = process.communicate(timeout=MINUTE * 3)[0].decode()
    line = next((x for x in output.splitlines() if x.startswith("WRK_JSON ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{output}")
    result: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    return {
        "requests": result["requests"],
        "rps": result["requests"] / (result["duration_us"] / 1e6),
        "errors": sum(result["errors"].values()),
        "errors_detail": result["errors"],
        "latency_ms": {k: v / 1000 for k, v in result["latency_us"].items()},
    }


def serving(port: int, version: str) -> int:
    """Workers serving ``version`` (``churn_model_info`` is a live sum)."""
    from prometheus_client.parser import text_string_to_metric_families

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "churn_model_info" and sample.labels.get("version") == version
        )
    )


def calibrate(server: bench.Server) -> dict[str, Any]:
    """Each path's maximum, its target rate, and a 10 s trial offering the targets together."""
    mode = bench.Mode("soak", 3, 10, (32,), 4, 0.0, False, 0)  # 3 s warm-up + 10 s per path
    maxima = {
        "predict": bench.drive(server, mode, "/predict", BODIES["predict"], 32),
        "batch": bench.drive(server, mode, "/predict/batch", BODIES["batch"], 4),
    }
    targets = {name: SHARES[name] * maxima[name]["rps"] for name in SHARES}
    running = {name: paced(server.port, name, targets[name], 10) for name in SHARES}
    trial = {name: finish(process) for name, process in running.items()}
    return {
        "max": {name: {"rps": run["rps"], "p99_ms": run["latency_ms"]["p99"]}
                for name, run in maxima.items()},
        "targets_rps": targets,
        "connections": CONNECTIONS,
        "trial": trial,
        "offered_rps": {name: corrected(targets[name], targets[name], trial[name]["rps"])
                        for name in SHARES},
    }  # fmt: skip


def corrected(offered: float, target: float, achieved: float) -> float:
    """The next offered rate: ``offered`` scaled by target / achieved, within :data:`CORRECTION`
    and within :data:`OFFERED` times the target."""
    low, high = CORRECTION
    factor = high if achieved <= 0 else min(max(target / achieved, low), high)
    return min(max(offered * factor, OFFERED[0] * target), OFFERED[1] * target)


def soak(server: bench.Server, uri: str, versions: list[str], minutes: int) -> dict[str, Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.set_registered_model_alias(bench.MODEL_NAME, bench.ALIAS, versions[0])
    if not _wait(lambda: serving(server.port, versions[0]) == 2, 60):
        raise RuntimeError(f"version {versions[0]} not served by both workers")
    calibration = calibrate(server)
    targets = calibration["targets_rps"]
    offered = dict(calibration["offered_rps"])
    print(
        f"calibration: max {json.dumps(calibration['max'])}, target {_rates(targets)}, trial"
        f" {_rates({n: r['rps'] for n, r in calibration['trial'].items()})}, offered"
        f" {_rates(offered)}",
        flush=True,
    )
    samples: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    for minute in range(minutes):
        begun = time.monotonic()
        cpu = (bench.busy_cpu_seconds(), server.cpu_seconds())
        running = {name: paced(server.port, name, offered[name], MINUTE) for name in SHARES}
        swap: dict[str, Any] = {}
        for tick in range(MINUTE // SAMPLE_SECONDS):
            _sleep_until(begun + tick * SAMPLE_SECONDS)
            samples.append({"t": time.monotonic() - started, **_totals(memory(server.pids()))})
            if tick == 3:
                version = versions[(minute + 1) % 2]
                moved = time.monotonic()
                client.set_registered_model_alias(bench.MODEL_NAME, bench.ALIAS, version)
                done = _wait(lambda: serving(server.port, version) == 2, SAMPLE_SECONDS - 1)  # noqa: B023
                swap = {"version": version, "done": done, "seconds": time.monotonic() - moved}
        result = {name: finish(process) for name, process in running.items()}
        wall = time.monotonic() - begun
        server_cores = (server.cpu_seconds() - cpu[1]) / wall
        busy_cores = (bench.busy_cpu_seconds() - cpu[0]) / wall
        runs.append(
            {
                "minute": minute + 1,
                **result,
                "swap": swap,
                "server_cpu_cores": server_cores,
                "machine_busy_cores": busy_cores,  # includes wrk and other users of the machine
                "rate_rps": {
                    name: {"target": targets[name], "offered": offered[name],
                           "achieved": result[name]["rps"]}
                    for name in SHARES
                },
            }
        )  # fmt: skip
        offered = {n: corrected(offered[n], targets[n], result[n]["rps"]) for n in SHARES}
        swapped = f"in {swap['seconds']:.1f}s" if swap["done"] else "NOT DONE"
        print(
            f"minute {minute + 1}: /predict {result['predict']['rps']:,.0f} req/s p99"
            f" {result['predict']['latency_ms']['p99']:.1f} ms, batch {result['batch']['rps']:.1f}"
            f" req/s p99 {result['batch']['latency_ms']['p99']:.1f} ms, errors"
            f" {result['predict']['errors'] + result['batch']['errors']}, load"
            f" {load_fraction(runs[-1], calibration):.0%} of max, swap to"
            f" v{swap['version']} {swapped},"
            f" PSS {samples[-1]['pss_mib']:.0f} MiB, CPU server {server_cores:.2f} of"
            f" {busy_cores:.2f} busy cores",
            flush=True,
        )
    samples.append({"t": time.monotonic() - started, **_totals(memory(server.pids()))})
    return {"calibration": calibration, "minutes": runs, "memory": samples}


def _rates(rates: dict[str, float]) -> str:
    return ", ".join(f"{name} {rate:,.1f}/s" for name, rate in rates.items())


def load_fraction(run: dict[str, Any], calibration: dict[str, Any]) -> float:
    """The minute's achieved load as a share of capacity: the sum over paths of rate / maximum."""
    maxima = calibration["max"]
    return sum(float(run[name]["rps"]) / float(maxima[name]["rps"]) for name in SHARES)


def _totals(processes: dict[str, dict[str, int]]) -> dict[str, Any]:
    return {
        "processes": processes,
        "rss_mib": sum(p["rss_kib"] for p in processes.values()) / 1024,
        "pss_mib": sum(p["pss_kib"] for p in processes.values()) / 1024,
        "uss_mib": sum(p["uss_kib"] for p in processes.values()) / 1024,
        "pss_anon_mib": sum(p["pss_anon_kib"] for p in processes.values()) / 1024,
    }


def _wait(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except OSError:
            pass
        time.sleep(0.2)  # poll interval of a bounded wait for a real condition
    return False


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    samples = result["memory"]
    half = samples[-1]["t"] / 2
    second = [s for s in samples if s["t"] >= half]
    growth = {
        key: _mean([s[key] for s in second[-3:]]) / _mean([s[key] for s in second[:3]]) - 1
        for key in ("pss_mib", "rss_mib", "uss_mib", "pss_anon_mib")
    }
    runs = result["minutes"]
    p99_ratio = {
        name: runs[-1][name]["latency_ms"]["p99"] / runs[0][name]["latency_ms"]["p99"]
        for name in SHARES
    }
    load = [load_fraction(run, result["calibration"]) for run in runs]
    failed = sum(run[name]["errors"] for run in runs for name in SHARES)
    # Judged on the PSS of the whole server: each page counted once, however many of the main
    # process and its workers share it (RSS counts a shared page in every process, so copy-on-write
    # sharing lost after the fork would not show as growth there, and USS misses the shared part).
    # PSS also moves a little with other processes mapping the same files (uv hard-links every
    # environment's libraries from one cache); RSS, USS and PSS's anonymous part (heap: what a
    # leak grows, unmoved by other processes' file mappings) are recorded and plotted beside it.
    problems = [
        f"{key} grew {value:.1%} over the second half"
        for key, value in growth.items()
        if key in JUDGED and value > LIMITS["memory_growth"]
    ]
    problems += [f"{failed} requests failed"] if failed else []
    problems += [
        f"{name} p99 last minute {ratio:.2f}x the first"
        for name, ratio in p99_ratio.items()
        if ratio > LIMITS["p99_ratio"]
    ]
    problems += [f"minute {r['minute']}: swap not done" for r in runs if not r["swap"]["done"]]
    return {
        "ok": not problems,
        "problems": problems,
        "memory_growth_second_half": growth,
        "p99_ratio_last_to_first_minute": p99_ratio,
        "load_fraction_of_max_per_minute": load,
        "load_target_fraction": sum(SHARES.values()),
        "requests": sum(run[name]["requests"] for run in runs for name in SHARES),
        "failed": failed,
        "swaps": sum(1 for run in runs if run["swap"]["done"]),
        "pss_mib_start_end": [samples[0]["pss_mib"], samples[-1]["pss_mib"]],
        "rss_mib_start_end": [samples[0]["rss_mib"], samples[-1]["rss_mib"]],
        "uss_mib_start_end": [samples[0]["uss_mib"], samples[-1]["uss_mib"]],
        "pss_anon_mib_start_end": [samples[0]["pss_anon_mib"], samples[-1]["pss_anon_mib"]],
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (memory_axis, latency_axis, load_axis) = plt.subplots(1, 3, figsize=(15, 4.2))
    samples = result["memory"]
    minutes = [s["t"] / MINUTE for s in samples]
    memory_axis.plot(minutes, [s["pss_mib"] for s in samples], "-o", ms=3, label="PSS, all")
    memory_axis.plot(minutes, [s["rss_mib"] for s in samples], "-o", ms=3, label="RSS, all")
    memory_axis.plot(minutes, [s["uss_mib"] for s in samples], "-o", ms=3, label="USS, all")
    memory_axis.plot(minutes, [s["pss_anon_mib"] for s in samples], "-o", ms=3,
                     label="PSS anonymous, all")  # fmt: skip
    for pid in samples[0]["processes"]:
        values = [s["processes"].get(pid, {}).get("pss_kib", math.nan) / 1024 for s in samples]
        memory_axis.plot(minutes, values, ":", label=f"PSS pid {pid}")
    memory_axis.set(title="server memory, main + 2 workers (judged: PSS, all)", xlabel="minute",
                    ylabel="MiB")  # fmt: skip
    memory_axis.set_ylim(bottom=0)
    runs = result["minutes"]
    for name, color in (("predict", "C0"), ("batch", "C3")):
        x = [run["minute"] for run in runs]
        for key, style in (("p50", "-o"), ("p99", "--o")):
            latency_axis.plot(x, [run[name]["latency_ms"][key] for run in runs], style,
                              color=color, ms=3, label=f"{PATHS[name]} {key}")  # fmt: skip
    latency_axis.set(title="latency per minute (hot-swap in each)", xlabel="minute", ylabel="ms")
    latency_axis.set_yscale("log")
    x = [run["minute"] for run in runs]
    load_axis.plot(x, [100 * v for v in result["verdict"]["load_fraction_of_max_per_minute"]],
                   "-o", ms=3, color="k", label="achieved, both paths")  # fmt: skip
    for name, color in (("predict", "C0"), ("batch", "C3")):
        maximum = result["calibration"]["max"][name]["rps"]
        for key, style in (("target", ":"), ("achieved", "-o")):
            load_axis.plot(x, [100 * run["rate_rps"][name][key] / maximum for run in runs], style,
                           color=color, ms=3, label=f"{PATHS[name]} {key}")  # fmt: skip
    load_axis.set(title="load, % of each path's maximum", xlabel="minute", ylabel="%")
    load_axis.set_ylim(bottom=0)
    for axis in (memory_axis, latency_axis, load_axis):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    check = result["verdict"]
    load = _mean(check["load_fraction_of_max_per_minute"])
    figure.suptitle(
        f"soak: {len(runs)} min, 2 workers, {check['requests']:,} requests, {check['failed']}"
        f" failed, {check['swaps']} swaps, load {load:.0%} of max",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=int, default=10, help="minutes of load (default 10)")
    parser.add_argument("--out", default="soak", help="result name under perf/results/")
    args = parser.parse_args(argv)
    if args.minutes < 2:
        parser.error("--minutes must be at least 2 (a first and a last minute)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the server started
    if shutil.which("wrk") is None:
        print("soak: wrk is not installed (Debian/Ubuntu: apt-get install wrk)", file=sys.stderr)
        return 2
    uri, versions = ensure_versions()
    env = {"MLFLOW_TRACKING_URI": uri, "MODEL_NAME": bench.MODEL_NAME, "MODEL_ALIAS": bench.ALIAS}
    command = [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", "{port}",
               "--workers", "2"]  # fmt: skip
    stack = bench.Stack("churn-api soak", command, {**env, **SERVICE_ENV})
    server = bench.Server(stack, bench.free_port(), REGISTRY)
    server.start()
    try:
        result: dict[str, Any] = {
            "minutes_requested": args.minutes,
            "settings": {"command": command, "env": stack.env, "limits": LIMITS},
            "machine": bench.machine(),
            "versions": bench.versions(),
            "payloads": {p.name: bench.payload_facts(p) for p in BODIES.values()},
            **soak(server, uri, versions, args.minutes),
        }
    finally:
        server.stop()
    result["verdict"] = check = verdict(result)
    out = bench.RESULTS / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in check.items() if k != "load_fraction_of_max_per_minute"}))
    print(f"wrote {out.with_suffix('.json')} and .png: {'PASS' if check['ok'] else 'FAIL'}")
    return 0 if check["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
