"""The baseline: what a user would write instead of driftloop — FastAPI around the pyfunc.

    BENCH_MODEL_PATH=<mlflow model folder> uvicorn bench.serving.fastapi_app:app --no-access-log

Same MLflow pyfunc, same request body (`{"records": [...]}`), one uvicorn worker, no
validation beyond FastAPI's, no logging, no auth.
"""

from __future__ import annotations

import os
from typing import Any

import mlflow.pyfunc
import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel

model = mlflow.pyfunc.load_model(os.environ["BENCH_MODEL_PATH"])
app = FastAPI()


class PredictRequest(BaseModel):
    records: list[dict[str, Any]]


@app.post("/predict")
def predict(request: PredictRequest) -> dict[str, Any]:
    predictions = model.predict(pd.DataFrame(request.records))
    return {"predictions": predictions.tolist()}


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "alive"}
