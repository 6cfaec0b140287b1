"""app/metrics.py in one process: the pre-aggregating tally, bounded labels, the metrics directory.

The tally is observed the way Prometheus sees it: what its flush adds to the exposition of the
process's registry (before and after, so other tests' counts do not matter).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from app import metrics, metrics_dir, serve
from app.metrics import field_label
from app.tally import Tally

Counts = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def exposed(*names: str) -> Counts:
    """Every sample of the named metric families in this process's registry."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in REGISTRY.collect()
        if family.name in names
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def added(before: Counts, after: Counts) -> Counts:
    """What ``after`` adds to ``before``, sample by sample (nothing-added samples left out)."""
    return {key: value - before.get(key, 0.0) for key, value in after.items()
            if value != before.get(key, 0.0)}  # fmt: skip


def flushed(tally: Tally, *names: str) -> Counts:
    """What flushing ``tally`` adds to the named metric families."""
    before = exposed(*names)
    tally.flush()
    return added(before, exposed(*names))


class TestTally:
    @pytest.mark.parametrize("values", [[0.0], [1.0], [0.05, 0.050001, 0.5, 0.99, 0.2, 0.2]])
    def test_bulk_histogram_addition_equals_observing_one_by_one(self, values: list[float]) -> None:
        one_by_one = CollectorRegistry()
        expected = Histogram("p", "p", buckets=metrics.PROBABILITY_BUCKETS, registry=one_by_one)
        for value in values:
            expected.observe(value)
        tally = Tally()
        tally.predictions(np.array(values), [value >= 0.5 for value in values])

        got = flushed(tally, "churn_probability")

        want = {
            (sample.name.replace("p_", "churn_probability_"), tuple(sorted(sample.labels.items()))):
            sample.value
            for family in one_by_one.collect()
            for sample in family.samples
            if not sample.name.endswith("_created") and sample.value
        }  # fmt: skip
        assert got.keys() == want.keys()
        assert got == pytest.approx(want)

    def test_single_and_batch_paths_put_scores_in_the_same_buckets(self) -> None:
        scores = np.array([0.0, 0.05, 0.0500001, 0.33, 0.95, 1.0])
        one, many = Tally(), Tally()
        for score in scores:
            one.predictions(np.array([score]), [bool(score >= 0.5)])
        many.predictions(scores, [bool(score >= 0.5) for score in scores])
        names = ("churn_probability", "churn_predictions")

        from_one, from_many = flushed(one, *names), flushed(many, *names)

        buckets = {key: value for key, value in from_one.items() if key[0].endswith("_bucket")}
        assert buckets == {k: v for k, v in from_many.items() if k[0].endswith("_bucket")}
        total = ("churn_probability_sum", ())
        assert from_one[total] == pytest.approx(from_many[total])
        labels = [from_one[("churn_predictions_total", (("label", label),))] for label in
                  ("false", "true")]  # fmt: skip
        assert labels == [from_many[("churn_predictions_total", (("label", label),))]
                          for label in ("false", "true")] == [4, 2]  # fmt: skip

    def test_a_latency_beyond_the_largest_bucket_counts_in_inf(self) -> None:
        tally = Tally()
        tally.request("/predict", "POST", 200, 99.0)

        got = flushed(tally, "churn_http_request_duration_seconds")

        inf = (
            "churn_http_request_duration_seconds_bucket",
            (("le", "+Inf"), ("route", "/predict")),
        )
        assert got[inf] == 1
        assert [key for key in got if key[0].endswith("_bucket")] == [inf]  # no finite bucket

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
        dead = dead_pid()
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


def dead_pid() -> int:
    """A process id that no process has right now (a child that has exited and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid
