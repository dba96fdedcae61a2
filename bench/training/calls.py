"""HTTP calls, wall and CPU time of each `train_flow` run in one process (a diagnosis tool).

    PREFECT_API_URL=… MLFLOW_TRACKING_URI=… DRIFTLOOP_STATE_DIR=… \\
        python -m bench.training.calls [--runs 3] [--model NAME]

Runs `pipelines.train.train_flow` `--runs` times in this process against the servers
named by the environment, counting every request made through `requests` (MLflow) and
`httpx` (Prefect) per run, by method and path. Prints one JSON line per run: wall s, CPU s
of this process (`time.process_time`: all its threads), the number of calls and the calls
by endpoint, and the Prefect task durations. Not part of `make bench`; for old-vs-new
comparisons (run it from a copy of the old code with that copy first on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import urlparse

_calls: Counter[str] = Counter()
_lock = threading.Lock()


def _count(method: str, url: Any) -> None:
    path = urlparse(str(url)).path
    # Artifact paths and ids vary per run: keep the endpoint, drop what follows it.
    for marker in ("/artifacts/", "/flow_runs/", "/task_runs/"):
        if marker in path:
            path = path.split(marker, 1)[0] + marker + "…"
    with _lock:
        _calls[f"{method.upper()} {path}"] += 1


def count_http_calls() -> None:
    """Wrap `requests.Session.request` and `httpx`'s `send` (sync and async) to count."""
    import httpx
    import requests

    request = requests.Session.request

    def counted_request(self: Any, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
        _count(method, url)
        return request(self, method, url, *args, **kwargs)

    requests.Session.request = counted_request  # type: ignore[method-assign]
    send = httpx.Client.send

    def counted_send(self: Any, req: Any, *args: Any, **kwargs: Any) -> Any:
        _count(req.method, req.url)
        return send(self, req, *args, **kwargs)

    httpx.Client.send = counted_send  # type: ignore[method-assign]
    asend = httpx.AsyncClient.send

    async def counted_asend(self: Any, req: Any, *args: Any, **kwargs: Any) -> Any:
        _count(req.method, req.url)
        return await asend(self, req, *args, **kwargs)

    httpx.AsyncClient.send = counted_asend  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default=None, help="registered model name (default: settings)")
    args = parser.parse_args()
    count_http_calls()
    from bench.training.flow import task_durations
    from pipelines.train import in_process_run, train_flow

    for n in range(1, args.runs + 1):
        with _lock:
            _calls.clear()
        wall, cpu = time.perf_counter(), time.process_time()
        with in_process_run():
            state = train_flow(model_name=args.model, return_state=True)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        with _lock:
            calls = dict(_calls.most_common())
        result = state.result()
        tasks = task_durations(state.state_details.flow_run_id)
        print(
            json.dumps(
                {
                    "run": n,
                    "version": result["version"],
                    "alias": result["alias"],
                    "wall_s": round(wall, 3),
                    "cpu_s": round(cpu, 3),
                    "http_calls": sum(calls.values()),
                    "tasks": {name: round(s, 3) for name, s in tasks.items()},
                    "by_endpoint": calls,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
