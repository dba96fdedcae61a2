"""CPU and wall time per 1-record request at concurrency 1: the model call on the event
loop (`inline_predict_records=1`, the default) vs handed to the model thread (0).

    python -m bench.serving.inline_cost

In process, no HTTP: `ServingApp.predict` with the real prediction log (SQLite WAL,
fsynced commit before each answer) and a trivial model, so what differs is the two thread
hand-offs per request. 4 alternating rounds of 1,000 requests.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.types import ColSpec, Schema

from bentos.app import ServingApp
from bentos.schema import LabelSchema, RecordSchema
from bentos.store import LoadedModel
from config.serving import ServingSettings

SCHEMA = RecordSchema.from_mlflow(Schema([ColSpec("double", "temp"), ColSpec("string", "city")]))


class Model:
    def predict(self, frame: Any) -> Any:
        return (frame["temp"] * 2.0).to_numpy()


class Aliases:
    def aliases(self) -> dict[str, str]:
        return {"champion": "1"}


def make(tmp: Path, inline: int) -> ServingApp:
    cfg = ServingSettings(
        state_dir=tmp,
        tracking_uri="http://127.0.0.1:9",
        inline_predict_records=inline,
        alias_poll_interval_s=3600,
    )
    app = ServingApp(
        cfg,
        model_name="m",
        source=Aliases(),
        loader=lambda v, a: LoadedModel(v, f"m:v{v}", Model(), SCHEMA, LabelSchema("number")),
    )
    app.follower.poll_once()
    return app


async def bench(app: ServingApp, n: int) -> tuple[float, float, float]:
    recs = [{"temp": 1.0, "city": "dc"}]
    for _ in range(50):
        await app.predict(recs)
    c, w = time.process_time(), time.perf_counter()
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        r = await app.predict(recs)
        lat.append(time.perf_counter() - t)
        assert r.status_code == 200
    lat.sort()
    return (
        1000 * (time.process_time() - c) / n,
        1000 * (time.perf_counter() - w) / n,
        1000 * lat[int(0.99 * n)],
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        apps = {1: make(Path(d) / "a", 1), 0: make(Path(d) / "b", 0)}
        res: dict[int, list[tuple[float, float, float]]] = {1: [], 0: []}
        for r in range(4):
            for k in (1, 0) if r % 2 == 0 else (0, 1):
                res[k].append(asyncio.run(bench(apps[k], 1000)))
        for k, rows in res.items():
            cpu = ", ".join(f"{x[0]:.2f}" for x in rows)
            wall = ", ".join(f"{x[1]:.2f}" for x in rows)
            p99 = ", ".join(f"{x[2]:.1f}" for x in rows)
            print(f"inline_predict_records={k}: CPU ms/request {cpu}; wall {wall}; p99 {p99}")
        for a in apps.values():
            a.writer.close()
            a.log.close()


if __name__ == "__main__":
    main()
