"""Serving now vs two other commits' `bentos/`, a few cells, alternating rounds.

    python -m bench.serving.switch_interval [ROUNDS]

Written to find the cost of the always-on 1 ms GIL switch interval (main at 26e82b4)
against the same interval scoped to large bodies (now) and against main before the
hardening (BEFORE_COMMIT). Starts an MLflow server and three `driftloop serve`
processes (the `bench` helpers), then for 1 record c=8, 100 records c=64 and 1 record
c=64 runs each server ROUNDS times for 4 s in rotated order and prints the median
requests/s of each with the ratios to "before". Not part of `make bench`.
"""

from __future__ import annotations

import contextlib
import statistics
import sys

from bench.common import workdir
from bench.model import prepare_model
from bench.servers import checkout_bentos, driftloop_server, mlflow_server
from bench.serving import run as srun
from bench.serving.loadgen import run_load
from bench.serving.run import API_KEY, _settings

ALWAYS_ON_COMMIT = "26e82b4"  # main with sys.setswitchinterval(0.001) at worker start
CELLS = ((1, 8), (100, 64), (1, 64))


def main(rounds: int) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with workdir("switch-interval") as tmp, contextlib.ExitStack() as stack:
        registry = stack.enter_context(mlflow_server(tmp / "mlflow"))
        model = prepare_model(tmp / "model", tracking_uri=registry.base_url)
        codes = {
            "now": None,
            "always-1ms": checkout_bentos(ALWAYS_ON_COMMIT, tmp / "always-code"),
            "before": checkout_bentos(srun.BEFORE_COMMIT, tmp / "before-code"),
        }
        urls = {}
        for key, code in codes.items():
            server = stack.enter_context(
                driftloop_server(key, tmp, _settings(model, tmp / f"s-{key}"), code=code)
            )
            urls[key] = server.base_url + "/predict"
        keys = list(urls)
        for size, concurrency in CELLS:
            body = model.body(size)
            found: dict[str, list[float]] = {k: [] for k in keys}
            for url in urls.values():
                run_load(url, body, concurrency, 1.0, auth)  # warm-up
            for r in range(rounds):
                for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                    found[key].append(run_load(urls[key], body, concurrency, 4.0, auth).rps)
            med = {k: statistics.median(v) for k, v in found.items()}
            runs = " ".join(f"{k}={med[k]:.0f} {[round(x) for x in v]}" for k, v in found.items())
            print(
                f"{size} record(s) c={concurrency}: {runs} "
                f"now/before={med['now'] / med['before']:.3f} "
                f"always-1ms/before={med['always-1ms'] / med['before']:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4)
