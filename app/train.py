"""Train the churn classifier on seeded synthetic data and register it in MLflow.

There is no public churn data set on this machine, so :func:`synthesize` draws customers from a
documented generative process over the five contract features:

* ``is_month_to_month`` ~ Bernoulli(0.55);
* ``tenure_months``: month-to-month customers stay shorter (exponential, mean 14 months) than
  customers on a term contract (mean 38 months), capped at 72; about 3 % are new (tenure 0);
* ``monthly_charges`` ~ Normal(68, 28) clipped to [18.25, 125], in cents;
* ``total_charges`` = tenure x monthly x Uniform(0.93, 1.07) (price changes over time), never below
  one month's charge when tenure > 0 (the contract's cross-field rule) and 0 for new customers;
* ``num_support_tickets`` ~ Poisson(0.6 + 0.8 x month_to_month + 0.012 x monthly);
* churn ~ Bernoulli(sigmoid(-1.6 + 1.5 x month_to_month + 0.42 x tickets - 0.045 x tenure
  + 0.018 x (monthly - 68))): contract type, tickets, short tenure and high charges drive churn.

By default the model is a StandardScaler + LogisticRegression pipeline fitted on a DataFrame with
the contract's column names (so ``feature_names_in_`` is set), scored by holdout ROC AUC, logged
with a signature and an input example, registered as a new version, and (unless told not to)
made the champion. The run also gets the reference profile
``reference_profile.json`` (training data per decile bin of each feature, holdout P(churn)
distribution; :mod:`app.profile`) that the service's drift metrics compare scored rows with.

The model is logged in MLflow's ``pickle`` format, not its default ``skops``: loading skops imports
every scikit-learn estimator module (1.5 to 2 s of each cold start). Unpickling runs whatever code
the file names, and so can skops (its trusted list travels with the model, so
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` gates both): serve only from a registry you control.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from app.profile import PROFILE_FILE, Profile
from app.profile import build as build_profile
from app.schemas import FEATURES

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("churn_api")


@dataclass(frozen=True)
class Generation:
    """Parameters of the synthetic data; logged as run parameters."""

    samples: int = 20_000
    seed: int = 7
    month_to_month_share: float = 0.55
    holdout_share: float = 0.25


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    version: str
    roc_auc: float
    promoted: bool


def synthesize(generation: Generation) -> tuple[pd.DataFrame, np.ndarray[Any, np.dtype[np.int64]]]:
    import pandas as pd

    rng = np.random.default_rng(generation.seed)
    n = generation.samples
    month_to_month = rng.random(n) < generation.month_to_month_share
    tenure = np.where(month_to_month, rng.exponential(14, n), rng.exponential(38, n))
    tenure = np.minimum(np.floor(tenure), 72).astype(np.int64)
    tenure[rng.random(n) < 0.03] = 0
    monthly = np.round(np.clip(rng.normal(68, 28, n), 18.25, 125.0), 2)
    total = np.round(tenure * monthly * rng.uniform(0.93, 1.07, n), 2)
    total = np.where(tenure > 0, np.maximum(total, monthly), 0.0)
    tickets = rng.poisson(0.6 + 0.8 * month_to_month + 0.012 * monthly).astype(np.int64)
    logit = -1.6 + 1.5 * month_to_month + 0.42 * tickets - 0.045 * tenure + 0.018 * (monthly - 68)
    churn = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    frame = pd.DataFrame(
        {
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
            "num_support_tickets": tickets,
            "is_month_to_month": month_to_month,
        },
        columns=list(FEATURES),
    )
    return frame, churn


KINDS: Final = ("lr", "rf", "hgb", "gb", "ct")
"""Model kinds :func:`fit` can train: the LR pipeline (the default), a RandomForest, a
HistGradientBoosting and a GradientBoosting classifier, and a ColumnTransformer pipeline that
selects its columns by name (one-hot contract type) in front of a LogisticRegression."""


def make_estimator(kind: str = "lr", seed: int = 7) -> Any:
    """An unfitted classifier of one of :data:`KINDS`."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    if kind == "lr":
        return Pipeline(
            [("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=1000))]
        )
    if kind == "rf":
        return RandomForestClassifier(n_estimators=200, min_samples_leaf=10, random_state=seed)
    if kind == "hgb":
        return HistGradientBoostingClassifier(max_iter=200, random_state=seed)
    if kind == "gb":
        return GradientBoostingClassifier(n_estimators=100, random_state=seed)
    if kind == "ct":
        numeric = [name for name in FEATURES if name != "is_month_to_month"]
        columns = ColumnTransformer(
            [
                ("numeric", StandardScaler(), numeric),
                ("contract", OneHotEncoder(handle_unknown="ignore"), ["is_month_to_month"]),
            ]
        )
        return Pipeline([("columns", columns), ("classify", LogisticRegression(max_iter=1000))])
    raise ValueError(f"unknown model kind {kind!r}; one of {', '.join(KINDS)}")


def fit(generation: Generation, kind: str = "lr") -> tuple[Any, float, pd.DataFrame, Profile]:
    """Fit a model of ``kind``; returns it, its holdout ROC AUC, a few rows as input example, and
    the reference profile (training bins, holdout P(churn) distribution: :mod:`app.profile`)."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    from app.metrics import PROBABILITY_BUCKETS  # not before serve's metrics directory exists

    frame, churn = synthesize(generation)
    x_train, x_test, y_train, y_test = train_test_split(
        frame,
        churn,
        test_size=generation.holdout_share,
        random_state=generation.seed,
        stratify=churn,
    )
    model = make_estimator(kind, generation.seed)
    model.fit(x_train, y_train)
    holdout = model.predict_proba(x_test)[:, 1]
    auc = float(roc_auc_score(y_test, holdout))
    profile = build_profile(x_train.to_numpy(dtype=np.float64), holdout, PROBABILITY_BUCKETS)
    return model, auc, x_test.head(5), profile


def train_and_register(
    tracking_uri: str,
    model_name: str,
    alias: str,
    generation: Generation | None = None,
    *,
    promote: bool = True,
    kind: str = "lr",
    serialization: str = "pickle",
) -> TrainResult:
    """Fit a model of ``kind``, log it in the ``serialization`` format, register it, promote it.

    ``serialization`` is ``pickle`` (this project's default, see the module docstring) or
    ``skops`` (MLflow's default), logged with the trusted types skops needs to load it.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    generation = generation or Generation()
    pipeline, auc, example, profile = fit(generation, kind)
    trusted = _skops_trusted_types(pipeline) if serialization == "skops" else None
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment("churn")
    with mlflow.start_run() as run:
        mlflow.log_params(asdict(generation))
        mlflow.log_metric("roc_auc", auc)
        mlflow.log_text(profile.encode().decode(), PROFILE_FILE)
        signature = infer_signature(example, pipeline.predict_proba(example))
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=signature,
            input_example=example,
            registered_model_name=model_name,
            serialization_format=serialization,  # see module doc
            skops_trusted_types=trusted,
        )
    version = str(info.registered_model_version)
    if promote:
        MlflowClient(
            tracking_uri=tracking_uri, registry_uri=tracking_uri
        ).set_registered_model_alias(model_name, alias, version)
    return TrainResult(run_id=run.info.run_id, version=version, roc_auc=auc, promoted=promote)


def _skops_trusted_types(model: Any) -> list[str]:
    """The types skops does not trust by default that ``model`` holds (logged with it)."""
    import skops.io

    return list(skops.io.get_untrusted_types(data=skops.io.dumps(model)))
