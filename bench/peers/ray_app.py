"""The Ray Serve peer: the MLflow pyfunc in one deployment with `@serve.batch`.

    <ray venv>/bin/python bench/peers/ray_app.py MODEL_FOLDER --port 8000

Runs in the Ray venv (no driftloop imports). Requests are `{"records": [...]}` on
`/predict`; `@serve.batch` gathers concurrent requests (max 64, 2 ms wait, the same as
the MLServer peer) into one model call. Ends Ray on SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import threading

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

START_ATTEMPTS = 3


@serve.deployment(num_replicas=1, max_ongoing_requests=256)
class Model:
    def __init__(self, model_path: str) -> None:
        import mlflow.pyfunc

        self.model = mlflow.pyfunc.load_model(model_path)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def predict(self, batches: list[list[dict]]) -> list[list[float]]:
        import numpy as np
        import pandas as pd

        rows = [row for batch in batches for row in batch]
        predictions = np.asarray(self.model.predict(pd.DataFrame(rows)))
        out, start = [], 0
        for batch in batches:
            out.append(predictions[start : start + len(batch)].tolist())
            start += len(batch)
        return out

    async def __call__(self, request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse({"predictions": await self.predict(body["records"])})


def main() -> None:
    import ray

    parser = argparse.ArgumentParser()
    parser.add_argument("model_path")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # Ray gives its raylet a fixed 30 s to register with the GCS; on a busy 2-core
    # machine that is sometimes too short, and a second start usually makes it.
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception as exc:
            print(f"ray start {attempt}/{START_ATTEMPTS} failed: {exc}", flush=True)
            ray.shutdown()
            if attempt == START_ATTEMPTS:
                raise
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(Model.bind(args.model_path), route_prefix="/predict", name="bench")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ray serve ready", flush=True)
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
