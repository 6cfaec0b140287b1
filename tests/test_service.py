"""The service core's rounding: what ``/predict`` shows is ``np.round(p, 6)``, one row or many."""

from __future__ import annotations

import numpy as np

from app.service import rounded


def test_one_row_is_rounded_exactly_as_numpy_rounds_it() -> None:
    rng = np.random.default_rng(20261204)
    ties = (np.arange(1_000_000) + 0.5) / 1e6  # halfway cases, where roundings differ first
    values = np.concatenate([rng.random(500_000), ties, np.arange(1_000_001) / 1e6, [0.0, 1.0]])

    ours = np.array([rounded(values[i : i + 1])[0] for i in range(len(values))])

    assert np.array_equal(ours, np.round(values, 6))


def test_many_rows_are_rounded_as_numpy_rounds_them_in_order() -> None:
    values = np.array([0.1234565, 0.9999996, 0.0000004, 0.5])

    assert rounded(values) == np.round(values, 6).tolist()
    assert rounded(values) == [0.123456, 1.0, 0.0, 0.5]
