"""The training flow as a user runs it (`driftloop train`), timed, with its task breakdown.

    PREFECT_API_URL=… MLFLOW_TRACKING_URI=… DRIFTLOOP_STATE_DIR=… python -m bench.training.flow

Runs `pipelines.train.train_flow` three times in one process against real servers: the
first version (no champion yet), a second one (scores the champion, goes through the
gate) and a third without its Bento and OOD index (``package_bento=False``: what
packaging costs, from a run as warm as the second). Prints JSON: import time, each
run's wall time, its Prefect task durations, the seconds its full garbage-collector
passes took (`gc.callbacks`) and the CPU seconds it cost: this process's (all threads)
and, when ``DRIFTLOOP_BENCH_SERVER_PIDS`` names them (`bench.servers.tracking_servers`),
the MLflow and Prefect servers' process trees'.
"""

from __future__ import annotations

import json
import time
from typing import Any

# (label, train_flow's arguments) of each run, in order: the benchmark's target is the
# second; the third is the same work less packaging (the Bento and the OOD index).
RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("first version", {}),
    ("second version", {}),
    ("third version, no Bento or OOD index", {"package_bento": False}),
)


def task_runs(flow_run_id: Any) -> tuple[dict[str, float], float]:
    """(seconds per task, seconds in which at least one task ran) of one flow run, from
    the Prefect API. Some tasks run side by side, so the first can add up to more than
    the second."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    durations: dict[str, float] = {}
    spans = []
    for run in runs:
        if run.start_time and run.end_time:
            name = run.name.rsplit("-", 1)[0]
            seconds = (run.end_time - run.start_time).total_seconds()
            durations[name] = durations.get(name, 0.0) + seconds
            spans.append((run.start_time.timestamp(), run.end_time.timestamp()))
    return durations, covered_seconds(spans)


def covered_seconds(spans: list[tuple[float, float]]) -> float:
    """Length of the union of the (start, end) intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def task_durations(flow_run_id: Any) -> dict[str, float]:
    """Seconds per task of one flow run, from the Prefect API."""
    return task_runs(flow_run_id)[0]


class FullCollections:
    """Count and time the cyclic collector's full (generation 2) passes."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.count += 1
            self.seconds += time.perf_counter() - self._started


def server_pids() -> dict[str, int]:
    """The servers' pids by name, from ``DRIFTLOOP_BENCH_SERVER_PIDS`` (none when unset)."""
    import os

    from bench.servers import SERVER_PIDS_ENV

    named = (item.split("=", 1) for item in os.environ.get(SERVER_PIDS_ENV, "").split(",") if item)
    return {name: int(pid) for name, pid in named}


def cpu_now(servers: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far: this process (``process``) and each server's process tree."""
    from bench.common import tree_cpu_s

    return {"process": time.process_time(), **{n: tree_cpu_s(p) for n, p in servers.items()}}


def main() -> None:
    import gc

    process_started = time.perf_counter()
    collections = FullCollections()
    gc.callbacks.append(collections)
    from prefect import get_client

    from pipelines.train import in_process_run, train_flow

    imported = time.perf_counter()
    servers = server_pids()
    runs = []
    for label, arguments in RUNS:
        started = time.perf_counter()
        passes, pause = collections.count, collections.seconds
        cpu_before = cpu_now(servers)
        with in_process_run():  # as `driftloop train` runs it
            state = train_flow(**arguments, return_state=True)
        seconds = time.perf_counter() - started
        cpu_after = cpu_now(servers)
        result = state.result()
        entry: dict[str, Any] = {
            "label": label,
            "seconds": seconds,
            "version": result["version"],
            "alias": result["alias"],
            "metrics": result["metrics"],
            "full_gc_passes": collections.count - passes,
            "full_gc_s": collections.seconds - pause,
            "cpu_s": {name: cpu_after[name] - cpu_before[name] for name in cpu_before},
        }
        try:
            entry["tasks"], entry["tasks_covered_s"] = task_runs(state.state_details.flow_run_id)
            with get_client(sync_client=True) as client:
                flow_run = client.read_flow_run(state.state_details.flow_run_id)
            entry["flow_run_s"] = flow_run.total_run_time.total_seconds()
        except Exception as exc:  # the breakdown is a nicety; the wall time is the figure
            entry["tasks_error"] = f"{type(exc).__name__}: {exc}"
        runs.append(entry)
    print(json.dumps({"import_s": imported - process_started, "runs": runs}))


if __name__ == "__main__":
    main()
