"""What the alias follower's registry poll costs the requests at concurrency 1.

    python -m bench.serving.poll_cost            # 3 rounds of 5 s per server and body

Each serving worker asks the MLflow server for the model's aliases every
`alias_poll_interval_s` (1 s by default, so a promotion or rollback reaches the clients
within ~2 s). This serves the bench model three ways at once — the FastAPI wrapper,
`driftloop serve` with the default poll and the same with a poll once an hour — and
loads each in turn at concurrency 1 (wrk, rotated order, 1- and 100-record bodies), so
the difference between the two driftloop rows is the poll's cost to the requests.

First it prints the CPU time of one poll in this process, both ways the follower can read
the registry: ``MlflowClient.get_registered_model`` (``registry.Registry``, what it did
before session 9) and the plain GET it uses now (``bentos.alias_poll``).
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from bench.model import prepare_model
from bench.servers import driftloop_server, fastapi_server, mlflow_server
from bench.serving.loadgen import run_load
from bench.serving.run import API_KEY, _settings

ROUNDS = 3
SECONDS = 5.0


def poll_cpu_ms(tracking_uri: str, model_name: str, polls: int = 200) -> dict[str, float]:
    """CPU ms per registry read, MLflow client vs plain GET (same answer checked)."""
    import time

    from bentos.alias_poll import alias_source
    from registry import Registry

    client = Registry(model_name, tracking_uri)
    plain = alias_source(tracking_uri, model_name, 5.0, client)
    assert plain.aliases_and_tags() == client.aliases_and_tags()
    out: dict[str, float] = {}
    for name, source in (("MlflowClient", client), ("plain GET", plain)):
        source.aliases_and_tags()  # connection open, imports done
        began = time.process_time()
        for _ in range(polls):
            source.aliases_and_tags()
        out[name] = 1000 * (time.process_time() - began) / polls
    return out


def main() -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with (
        tempfile.TemporaryDirectory(prefix="driftloop-poll-cost-") as folder,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(folder)
        registry = stack.enter_context(mlflow_server(tmp / "mlflow"))
        model = prepare_model(tmp / "model", tracking_uri=registry.base_url)
        for name, ms in poll_cpu_ms(registry.base_url, model.model_name).items():
            print(f"one alias poll through {name}: {ms:.2f} ms of CPU", flush=True)
        fastapi = stack.enter_context(fastapi_server("fastapi", tmp, model.local_model))
        polling = stack.enter_context(
            driftloop_server("poll-1s", tmp, _settings(model, tmp / "s-1s"))
        )
        hourly = stack.enter_context(
            driftloop_server(
                "poll-1h", tmp, _settings(model, tmp / "s-1h", alias_poll_interval_s=3600)
            )
        )
        targets = {
            "FastAPI wrapper": (fastapi.base_url + "/predict", {}),
            "driftloop, alias poll every 1 s (default)": (polling.base_url + "/predict", auth),
            "driftloop, alias poll every hour": (hourly.base_url + "/predict", auth),
        }
        print("| records | server | req/s | p50 ms | p99 ms | max ms |")
        print("|---|---|---|---|---|---|")
        for size in (1, 100):
            body = model.body(size)
            for url, headers in targets.values():
                run_load(url, body, 1, 1.0, headers)  # warm-up
            names = list(targets)
            for round_ in range(ROUNDS):
                for name in names[round_:] + names[:round_]:
                    url, headers = targets[name]
                    got = run_load(url, body, 1, SECONDS, headers)
                    print(
                        f"| {size} | {name} | {got.rps:.0f} | {got.p50_ms:.1f} | "
                        f"{got.p99_ms:.1f} | {got.max_ms:.1f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
