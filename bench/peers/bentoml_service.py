"""The plain BentoML peer: the MLflow pyfunc behind one `batchable=True` API, nothing else.

    BENCH_MODEL_PATH=<mlflow model folder> bentoml serve bench.peers.bentoml_service:PlainService

What a BentoML user writes by hand: no validation beyond BentoML's, no logging, no auth.
Requests are `{"records": [...]}`; BentoML's adaptive batching concatenates the records
of concurrent requests into one model call.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml


@bentoml.service(workers=1)
class PlainService:
    def __init__(self) -> None:
        import mlflow.pyfunc

        self.model = mlflow.pyfunc.load_model(os.environ["BENCH_MODEL_PATH"])

    @bentoml.api(batchable=True, max_batch_size=2048, max_latency_ms=10_000)
    def predict(self, records: list[dict[str, Any]]) -> list[float]:
        import pandas as pd

        return self.model.predict(pd.DataFrame(records)).tolist()
