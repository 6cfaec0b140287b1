"""The array types every module scores with, defined once (imported by the model and its paths)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Rows = npt.NDArray[np.float64]
"""Rows of features, shape ``[N, 5]``, in ``app.schemas.FEATURES`` column order."""
Scores = npt.NDArray[np.float64]
"""P(churn) per row, shape ``[N]``."""
