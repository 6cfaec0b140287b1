"""``nox -s perf -- --baseline COMMIT``: an older commit of churn-api measured in the same run.

The commit is exported with ``git archive`` into ``perf/results/tmp/baseline-<sha>/`` and gets its
own virtual environment, installed by ``uv sync --locked`` from that commit's own
``pyproject.toml`` and ``uv.lock`` (an older commit may pin other versions). It is started the way
that commit starts (``python -m app serve --workers W``, its README's ``churn-api serve``) on the
same registry and champion, with the same settings as the current build, and measured with the
same wrk runs right after it; :func:`targets` gives the ratios of the issue's "done when".
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TMP = ROOT / "perf" / "results" / "tmp"
GOAL = 0.95  # the current build must reach at least this share of the baseline's figures


def resolve(commit: str) -> str:
    """The full hash of ``commit`` (anything ``git rev-parse`` takes: a hash, a tag, a branch)."""
    found = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if found.returncode != 0:
        raise SystemExit(f"perf: --baseline {commit} is not a commit of {ROOT}")
    return found.stdout.strip()


def prepare(commit: str) -> tuple[str, Path]:
    """The commit's full hash and the Python of its own environment (made once, then reused)."""
    sha = resolve(commit)
    where = TMP / f"baseline-{sha[:12]}"
    python = where / ".venv" / "bin" / "python"
    ready = where / ".ready"
    if not ready.exists():
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        archive = subprocess.Popen(["git", "archive", sha], cwd=ROOT, stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(where)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise SystemExit(f"perf: git archive {sha} failed")
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
        }
        print(f"baseline {sha[:12]}: installing its own environment (uv sync --locked)", flush=True)
        subprocess.run(
            ["uv", "sync", "--locked", "--no-dev", "--compile-bytecode", "--quiet"],
            cwd=where, env={**env, "UV_PROJECT_ENVIRONMENT": str(where / ".venv")}, check=True,
        )  # fmt: skip
        ready.write_text(sha + "\n")
    return sha, python


def command(python: Path, workers: int) -> list[str]:
    """How the baseline commit starts: ``churn-api serve`` through its own interpreter."""
    return [
        str(python), "-m", "app", "serve", "--host", "127.0.0.1", "--port", "{port}",
        "--workers", str(workers),
    ]  # fmt: skip


def targets(
    stacks: Mapping[str, Any], compared: Mapping[str, Any], headline: int
) -> list[tuple[str, float, str, bool]]:
    """Current over baseline: /predict req/s at ``headline`` connections and batch rows/s.

    Judged on the medians of the runs in turns (both servers up, driven alternately); the runs of
    the table (each stack measured after the other) are given for reference.
    """
    name, goal = compared["name"], f">= {GOAL:.2f}"
    ours, theirs = stacks["churn-api"], stacks[name]
    key = str(headline)
    ratio = compared["in_turns"]["ratio"]
    rounds = compared["in_turns"]["rounds"]
    table = {
        "predict": ours["single"][key]["rps"] / theirs["single"][key]["rps"],
        "batch_1000": ours["batch_1000"]["rps"] / theirs["batch_1000"]["rps"],
    }
    p99 = ours["single"][key]["latency_ms"]["p99"] / theirs["single"][key]["latency_ms"]["p99"]
    turns = f"median of {rounds} rounds in turns"
    return [
        (f"/predict req/s vs {name} (c={headline}, {turns})", ratio["predict"], goal,
         ratio["predict"] >= GOAL),
        (f"batch rows/s vs {name} (1000-row bodies, {turns})", ratio["batch_1000"], goal,
         ratio["batch_1000"] >= GOAL),
        (f"/predict req/s vs {name} (c={headline}, table above)", table["predict"],
         "(for reference)", True),
        (f"batch rows/s vs {name} (table above)", table["batch_1000"], "(for reference)", True),
        (f"/predict p99 vs {name} (c={headline}, table above)", p99, "(for reference)", True),
    ]  # fmt: skip
