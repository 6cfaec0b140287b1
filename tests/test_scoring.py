"""Scoring paths: each kind of real fitted model gets its fastest path, and that path is exact.

"Exact" is what a user checks: on contract-valid rows the path did not see at load (another seed),
scored all at once and one at a time, it answers the model's own ``predict_proba`` on a DataFrame
to 1e-9. A model whose answers on an array differ from those on a DataFrame keeps the DataFrame.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from app.errors import StartupError
from app.model import champion_from_estimator
from app.schemas import FEATURES
from app.scoring import TOLERANCE, Proven, build, fastest_proven
from app.train import Generation, make_estimator, synthesize

EXPECTED = {"lr": "linear", "rf": "forest", "hgb": "numpy", "gb": "boosting", "ct": "numpy"}


def fresh_rows(count: int, seed: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Contract-valid rows like the service's callers send (the synthetic population)."""
    frame, _ = synthesize(Generation(samples=count, seed=seed))
    return frame.to_numpy(dtype=np.float64)


def reference(estimator: Any, rows: np.ndarray[Any, np.dtype[np.float64]]) -> Any:
    frame = pd.DataFrame(rows, columns=list(FEATURES)).astype(
        {"tenure_months": "int64", "num_support_tickets": "int64", "is_month_to_month": bool}
    )
    return estimator.predict_proba(frame)[:, 1]


@pytest.fixture(scope="module")
def fitted() -> dict[str, Any]:
    frame, churn = synthesize(Generation(samples=3000, seed=3))
    models = {}
    for kind in EXPECTED:
        model = make_estimator(kind, seed=3)
        if kind == "rf":
            model.set_params(n_estimators=40)
        models[kind] = model.fit(frame, churn)
    return models


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_each_kind_gets_its_fastest_path_and_it_equals_predict_proba(
    fitted: dict[str, Any], kind: str
) -> None:
    predict, proven = fastest_proven(fitted[kind])
    path = proven.path
    rows = fresh_rows(500, seed=12345)
    expected = reference(fitted[kind], rows)

    assert path == EXPECTED[kind]
    np.testing.assert_allclose(predict(rows), expected, rtol=0, atol=TOLERANCE)
    for index in range(0, len(rows), 50):  # one at a time, as a lone request is scored
        np.testing.assert_allclose(
            predict(rows[index : index + 1]), expected[index : index + 1], rtol=0, atol=TOLERANCE
        )


@pytest.mark.parametrize("prebuilt", [False, True], ids=["rebuilt", "built-before-fork"])
@pytest.mark.parametrize("kind", list(EXPECTED))
def test_a_path_proved_before_is_rebuilt_from_the_probe_rows_alone(
    fitted: dict[str, Any], kind: str, prebuilt: bool
) -> None:
    rows = fresh_rows(100, seed=99)
    _, proof = fastest_proven(fitted[kind])
    handed_on = Proven.decode(proof.encode())  # as the check child hands it to the server
    if prebuilt:
        handed_on = build(fitted[kind], handed_on)
    predict, again = fastest_proven(fitted[kind], already=handed_on)

    assert again == proof
    np.testing.assert_allclose(predict(rows), reference(fitted[kind], rows), rtol=0, atol=TOLERANCE)


def test_a_path_whose_probe_scores_do_not_match_is_refused(fitted: dict[str, Any]) -> None:
    _, proof = fastest_proven(fitted["gb"])
    wrong = Proven(proof.path, tuple(1.0 - score for score in proof.probe_scores))

    with pytest.raises(StartupError, match="boosting scoring path does not match"):
        fastest_proven(fitted["gb"], already=wrong)


class NamesMatter:
    """Wraps a fitted model; on a plain array (no column names) it answers something else."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.classes_ = model.classes_
        self.feature_names_in_ = model.feature_names_in_

    def predict_proba(self, rows: Any) -> Any:
        proba = self.model.predict_proba(rows)
        return proba if isinstance(rows, pd.DataFrame) else proba[:, ::-1]


def test_a_model_that_answers_differently_on_an_array_keeps_the_dataframe_path(
    fitted: dict[str, Any],
) -> None:
    model = NamesMatter(fitted["lr"])
    champion = champion_from_estimator(model, name="m", version="1", alias="a", run_id="r")
    rows = fresh_rows(50, seed=5)

    assert champion.scoring == "dataframe"
    np.testing.assert_array_equal(champion.predict(rows), reference(model, rows))
