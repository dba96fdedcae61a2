"""The floor: the pyfunc's own `predict` in process, no HTTP (run as its own process).

    python -m bench.serving.floor MODEL_FOLDER RECORDS_JSON --seconds 2

Prints, per payload size, calls/s and p50/p95/p99 of one `predict` call on a prebuilt
DataFrame (the work any server must do at least once per request or batch).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def measure(model_path: str, records: list[dict], sizes: list[int], seconds: float) -> dict:
    import mlflow.pyfunc
    import numpy as np
    import pandas as pd

    model = mlflow.pyfunc.load_model(model_path)
    out = {}
    for size in sizes:
        frame = pd.DataFrame([records[i % len(records)] for i in range(size)])
        for _ in range(20):  # warm-up
            model.predict(frame)
        times = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            model.predict(frame)
            times.append(time.perf_counter() - started)
        ms = np.array(times) * 1000
        out[str(size)] = {
            "calls": len(times),
            "rps": len(times) / float(np.sum(times)),
            "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_path")
    parser.add_argument("records_json")
    parser.add_argument("--sizes", default="1,100")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    records = json.loads(Path(args.records_json).read_text())
    sizes = [int(s) for s in args.sizes.split(",")]
    print(json.dumps(measure(args.model_path, records, sizes, args.seconds)))


if __name__ == "__main__":
    main()
