"""What MLflow's pyfunc flavor of a logged scikit-learn model answers: its classes and method.

``mlflow models serve`` answers ``getattr(estimator, predict_fn)(rows)``, where ``predict_fn`` is
the ``pyfunc_predict_fn`` the model was logged with (stored in the ``python_function`` flavor of
its MLmodel file, ``predict`` by default). The MLflow scoring front end
(:mod:`app.mlflow_protocol`) answers the same from the champion's probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def pyfunc_facts(estimator: Any, model_uri: str) -> dict[str, Any]:
    """``classes`` and ``pyfunc_predict_fn`` of a logged model, for :class:`app.model.Champion`.

    ``model_uri`` is the model's directory or URI (only its MLmodel file is read).
    """
    from mlflow.models import Model

    flavor = Model.load(model_uri).flavors.get("python_function", {})
    classes = getattr(estimator, "classes_", None)
    return {
        "classes": (0, 1) if classes is None else tuple(np.asarray(classes).tolist()),
        "pyfunc_predict_fn": str(flavor.get("predict_fn", "predict")),
    }
