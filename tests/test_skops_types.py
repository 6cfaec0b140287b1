"""The skops trusted-type cache (app/skops_types.py): same answers, same trust, no crawl.

Each case runs a fresh interpreter (``skops.io`` builds its list once per process, at import) on
a real fitted model dumped with skops. Through a registry and the real server, every skops
champion of tests/test_champions.py loads the same way.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import skops.io
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from support import training_like

from app.skops_types import OFF, cache_file

ONLY_CRAWLED = "sklearn.semi_supervised"  # imported by the crawl, not by skops nor a forest

LOAD = """
import json, sys
from pathlib import Path
import numpy as np
from app.skops_types import cache_file, import_skops
model, cache, trusted = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
rows = np.asarray(json.loads(sys.argv[4]))
skops_io = import_skops(cache_file(cache))
try:
    estimator = skops_io.load(model, trusted=trusted)
except skops_io.exceptions.UntrustedTypesFoundException as exc:
    print(json.dumps({"refused": str(exc)}))
else:
    print(json.dumps({
        "probabilities": estimator.predict_proba(rows)[:, 1].tolist(),
        "crawled": sys.argv[5] in sys.modules,
    }))
"""


def load(model: Path, cache: Path | str, rows: np.ndarray[Any, Any], trusted: Any) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", LOAD, str(model), str(cache), json.dumps(trusted),
         json.dumps(rows.tolist()), ONLY_CRAWLED],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.splitlines()[-1])


class Dumped(NamedTuple):
    """A model dumped with skops, rows to score, its own answers, and the types it needs."""

    path: Path
    rows: np.ndarray[Any, Any]
    expected: list[float]
    trusted: list[str]

    def load(self, cache: Path | str) -> Any:
        return load(self.path, cache, self.rows, self.trusted)


@pytest.fixture(scope="module")
def forest(tmp_path_factory: pytest.TempPathFactory) -> Dumped:
    rows = training_like(400, seed=3)
    labels = (rows[:, 3] + rows[:, 0] / 20 > 2).astype(int)
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(rows, labels)
    path = tmp_path_factory.mktemp("skops") / "forest.skops"
    skops.io.dump(model, path)
    trusted = skops.io.get_untrusted_types(file=path)  # logged with the model, as MLflow does
    return Dumped(path, rows[:50], model.predict_proba(rows[:50])[:, 1].tolist(), trusted)


def dumped(function: Any, directory: Path) -> Dumped:
    """A pipeline that applies ``function`` to the rows before a logistic regression."""
    rows = training_like(300, seed=5)
    labels = (rows[:, 3] > 1).astype(int)
    model = make_pipeline(FunctionTransformer(function), LogisticRegression(max_iter=2000))
    model.fit(rows, labels)
    path = directory / f"{function.__name__}.skops"
    skops.io.dump(model, path)
    expected = model.predict_proba(rows[:20])[:, 1].tolist()
    return Dumped(path, rows[:20], expected, skops.io.get_untrusted_types(file=path))


def test_the_list_is_kept_once_and_the_next_load_answers_the_same_without_the_crawl(
    forest: Dumped, tmp_path: Path
) -> None:
    expected = forest.expected
    cache = tmp_path / "cache" / "types.json"
    first = forest.load(cache)
    assert first == {"probabilities": expected, "crawled": True}
    kept = json.loads(cache.read_text())
    assert "sklearn.ensemble._forest.RandomForestClassifier" in kept["names"]
    assert kept["versions"].startswith("scikit-learn ")
    second = forest.load(cache)
    assert second == {"probabilities": expected, "crawled": False}
    assert json.loads(cache.read_text()) == kept


@pytest.mark.parametrize(
    "tampered",
    [
        {"names": ["os.system", "builtins.eval"]},  # outside scikit-learn: never taken
        {"versions": "scikit-learn 0.1, skops 0.1"},  # another install's list
        "not json",
    ],
)
def test_a_tampered_or_stale_file_is_rebuilt(forest: Dumped, tmp_path: Path, tampered: Any) -> None:
    good = tmp_path / "good.json"
    forest.load(good)
    kept = json.loads(good.read_text())
    cache = tmp_path / "tampered.json"
    cache.write_text(tampered if isinstance(tampered, str) else json.dumps({**kept, **tampered}))
    assert forest.load(cache) == {"probabilities": forest.expected, "crawled": True}
    assert json.loads(cache.read_text()) == kept


def test_a_kept_list_trusts_no_more_than_skops_does(tmp_path: Path) -> None:
    rows = training_like(300, seed=4)
    labels = (rows[:, 3] > 1).astype(int)
    model = HistGradientBoostingClassifier(max_iter=5).fit(rows, labels)
    path = tmp_path / "boosting.skops"
    skops.io.dump(model, path)
    untrusted = skops.io.get_untrusted_types(file=path)
    assert untrusted  # skops trusts HistGradientBoosting's tree predictors only when told
    cache = tmp_path / "types.json"
    uncached = load(path, cache, rows[:5], None)
    cached = load(path, cache, rows[:5], None)
    assert "refused" in uncached
    assert cached == uncached
    trusted = load(path, cache, rows[:5], untrusted)
    assert trusted["probabilities"] == pytest.approx(model.predict_proba(rows[:5])[:, 1], abs=0)


def test_off_keeps_no_file(forest: Dumped, tmp_path: Path) -> None:
    assert cache_file(OFF) is None
    assert cache_file(None) == Path.home() / ".cache" / "churn-api" / "skops-sklearn-types.json"
    assert forest.load(OFF) == {"probabilities": forest.expected, "crawled": True}
    assert list(tmp_path.iterdir()) == []


def test_a_model_that_uses_a_ufunc_loads_the_same_from_the_kept_lists(tmp_path: Path) -> None:
    model = dumped(np.log1p, tmp_path)
    assert model.trusted == []  # skops trusts NumPy's ufuncs by default
    cache = tmp_path / "types.json"
    first = model.load(cache)
    assert first["crawled"]
    # (vectorised log1p may differ in the last bit between array layouts)
    assert first["probabilities"] == pytest.approx(model.expected, rel=0, abs=1e-12)
    kept = json.loads(cache.read_text())
    assert any(name.endswith(".log1p") for name in kept["ufuncs"]["numpy numpy.ufunc"])
    assert any(name.endswith(".expit") for name in kept["ufuncs"]["scipy.special numpy.ufunc"])
    assert model.load(cache) == {**first, "crawled": False}
    assert json.loads(cache.read_text()) == kept  # nothing searched for again, nothing rewritten


def test_a_kept_ufunc_list_never_widens_trust(tmp_path: Path) -> None:
    model = dumped(np.nan_to_num, tmp_path)  # a Python function, not a ufunc: skops refuses it
    assert model.trusted == ["numpy.nan_to_num"]
    cache = tmp_path / "types.json"
    refused = load(model.path, cache, model.rows, None)
    assert "refused" in refused
    kept = json.loads(cache.read_text())
    tampered = {**kept["ufuncs"], "numpy numpy.ufunc": ["numpy.nan_to_num", "os.system"]}
    cache.write_text(json.dumps({**kept, "ufuncs": tampered}))
    assert load(model.path, cache, model.rows, None) == refused
    assert json.loads(cache.read_text()) == kept  # that list searched for again and kept anew
    trusted = load(model.path, cache, model.rows, model.trusted)
    assert trusted["probabilities"] == pytest.approx(model.expected, rel=0, abs=1e-12)
