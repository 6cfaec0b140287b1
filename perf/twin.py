"""The comparison point: the same service written the straightforward FastAPI + pydantic way.

Same endpoints, same bounds and strictness, same registry champion (``MODEL_NAME@MODEL_ALIAS`` from
``MLFLOW_TRACKING_URI``), loaded once per worker. Each request builds pydantic objects and a pandas
DataFrame and calls the MLflow-loaded pipeline directly: the design ``churn-api`` is measured
against. Its error bodies are FastAPI's own. Run it as uvicorn does in ``perf/bench.py``:

    uvicorn perf.twin:create_app --factory --workers 2
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import pandas as pd
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

FEATURES = [
    "tenure_months",
    "monthly_charges",
    "total_charges",
    "num_support_tickets",
    "is_month_to_month",
]


class Customer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    tenure_months: int = Field(ge=0, le=600)
    monthly_charges: float = Field(gt=0, lt=10_000)
    total_charges: float = Field(ge=0, le=6_000_000)
    num_support_tickets: int = Field(ge=0, le=1_000)
    is_month_to_month: bool

    @model_validator(mode="after")
    def total_covers_monthly(self) -> Customer:
        if self.tenure_months > 0 and self.total_charges < self.monthly_charges:
            raise ValueError("total_charges must be >= monthly_charges when tenure_months > 0")
        return self


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    instances: list[Customer] = Field(min_length=1, max_length=1024)


class Prediction(BaseModel):
    churn_probability: float
    churn_label: bool
    model_version: str


class BatchPrediction(BaseModel):
    predictions: list[Prediction]
    count: int


Threshold = Annotated[float | None, Query(ge=0, le=1)]


def create_app() -> FastAPI:
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import mlflow.sklearn
        from mlflow import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
        name = os.environ.get("MODEL_NAME", "churn-classifier")
        alias = os.environ.get("MODEL_ALIAS", "champion")
        version = MlflowClient(uri, uri).get_model_version_by_alias(name, alias)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        state["model"] = mlflow.sklearn.load_model(f"models:/{name}/{version.version}")
        state["info"] = {
            "name": name,
            "version": str(version.version),
            "alias": alias,
            "run_id": version.run_id,
            "threshold": float(os.environ.get("DECISION_THRESHOLD", "0.5")),
            "features": FEATURES,
        }
        yield

    app = FastAPI(title="churn-api FastAPI twin", lifespan=lifespan)

    def score(customers: list[Customer], threshold: float | None) -> list[Prediction]:
        if "model" not in state:
            raise HTTPException(503, "Model not loaded")
        frame = pd.DataFrame([c.model_dump() for c in customers], columns=FEATURES)
        probabilities = state["model"].predict_proba(frame)[:, 1]
        cut = state["info"]["threshold"] if threshold is None else threshold
        return [
            Prediction(
                churn_probability=round(float(p), 6),
                churn_label=bool(p >= cut),
                model_version=state["info"]["version"],
            )
            for p in probabilities
        ]

    @app.post("/predict")
    def predict(customer: Customer, threshold: Threshold = None) -> Prediction:
        return score([customer], threshold)[0]

    @app.post("/predict/batch")
    def predict_batch(batch: BatchRequest, threshold: Threshold = None) -> BatchPrediction:
        predictions = score(batch.instances, threshold)
        return BatchPrediction(predictions=predictions, count=len(predictions))

    @app.get("/health")
    def health() -> JSONResponse:
        if "model" not in state:
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/model-info")
    def model_info() -> dict[str, Any]:
        if "info" not in state:
            raise HTTPException(503, "Model not loaded")
        return dict(state["info"])

    return app
