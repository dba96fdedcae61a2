"""What WAL mode saves MLflow's SQLite store: a training run's registry writes, timed
against two real `mlflow server`s side by side, one on MLflow's default rollback journal
and one in WAL mode (`config.mlflow_store`, what driftloop's servers use since session 21).

    python -m bench.training.mlflow_store              # 6 alternated rounds, a table
    python -m bench.training.mlflow_store --json       # the figures (make bench §4)

Both servers are started here in a temp folder by `driftloop.procs.start_mlflow_server`,
as the tests and benchmarks start theirs; the journal one is given its store's URI,
which skips the WAL step (what every server did before). Each round runs, on each server
in turn (the first alternates), `--trainings` times what one training run asks of the
registry: the run with its tags, a `log_batch` of params and metrics, the run's end, a
model version with its tags, three version tags, the alias and the alias read back (12
calls). Reported per training run: the client's wall time and the server's CPU time
(its process tree). Also one SQLite commit by itself in each mode (no server, the same
disk): the fsyncs MLflow's writes wait for.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

from bench.common import QUIET_ENV, REPO, tree_cpu_s
from bench.serving.commit_cost import commit_times
from driftloop import procs

MODES = ("journal", "wal")
COMMITS = 200


def commit_ms(folder: Path, mode: str) -> float:
    """Mean milliseconds of a one-row commit to a fresh SQLite file in `folder` in
    journal `mode` (``delete`` or ``wal``), ``synchronous`` at SQLite's default (FULL)
    as MLflow leaves it (`bench.serving.commit_cost.commit_times`)."""
    times = commit_times(folder, "FULL", COMMITS, journal_mode=mode)
    return sum(times) / len(times) * 1000


def training_writes(client: Any, experiment_id: str, model: str, n: int) -> None:
    """The registry calls of one training run (`pipelines.tracking`, `registry.client`)."""
    from mlflow.entities import Metric, Param

    run = client.create_run(experiment_id, tags={"driftloop.registration_key": f"k{n}"})
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(f"holdout_m{i}", float(i), now, 0) for i in range(8)],
        params=[Param(f"p{i}", str(i)) for i in range(12)],
    )
    client.set_terminated(run_id)
    version = client.create_model_version(
        model, f"runs:/{run_id}/model", run_id, tags={"driftloop.registration_key": f"k{n}"}
    )
    for key in ("bento", "gate_decision", "data_range"):
        client.set_model_version_tag(model, version.version, key, f"{key} of {n}")
    client.set_registered_model_alias(model, "champion", version.version)
    client.get_model_version_by_alias(model, "champion")


def measure(rounds: int, trainings: int) -> dict[str, Any]:
    from mlflow import MlflowClient

    result: dict[str, Any] = {"rounds": rounds, "trainings_per_round": trainings}
    with (
        # Next to the checkout (the state folder's disk), not a /tmp that may be tmpfs.
        tempfile.TemporaryDirectory(prefix="driftloop-bench-mlflow-store-", dir=REPO) as tmp,
        ExitStack() as stack,
    ):
        root = Path(tmp)
        result["commit_ms"] = {"journal": commit_ms(root, "delete"), "wal": commit_ms(root, "wal")}
        servers, clients, experiments = {}, {}, {}
        for mode in MODES:
            state = root / mode
            state.mkdir()
            uri = f"sqlite:///{state / 'mlflow.db'}" if mode == "journal" else None
            server = procs.start_mlflow_server(
                f"mlflow-{mode}", procs.free_port(), state, state / "mlflow.log", uri, QUIET_ENV
            )
            stack.callback(server.stop)
            servers[mode] = server
        for mode, server in servers.items():
            server.wait_healthy(150)
            client = MlflowClient(server.base_url, server.base_url)
            experiments[mode] = client.create_experiment("bench")
            client.create_registered_model("bench-model")
            training_writes(client, experiments[mode], "bench-model", -1)  # warm-up
            clients[mode] = client
        with closing(sqlite3.connect(root / "journal" / "mlflow.db")) as conn:
            result["journal_mode"] = conn.execute("PRAGMA journal_mode").fetchone()[0]
        wall: dict[str, list[float]] = {mode: [] for mode in MODES}
        cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
        for round_ in range(rounds):
            order = MODES if round_ % 2 == 0 else MODES[::-1]
            for mode in order:
                pid = servers[mode].process.pid
                cpu_before, started = tree_cpu_s(pid), time.perf_counter()
                for n in range(trainings):
                    training_writes(
                        clients[mode], experiments[mode], "bench-model", round_ * trainings + n
                    )
                wall[mode].append((time.perf_counter() - started) / trainings * 1000)
                cpu[mode].append((tree_cpu_s(pid) - cpu_before) / trainings * 1000)
    result["wall_ms"], result["server_cpu_ms"] = wall, cpu
    result["median_wall_ms"] = {mode: statistics.median(wall[mode]) for mode in MODES}
    result["median_server_cpu_ms"] = {mode: statistics.median(cpu[mode]) for mode in MODES}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--trainings", type=int, default=5, help="training runs per round")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    result = measure(args.rounds, args.trainings)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"one SQLite commit: journal {result['commit_ms']['journal']:.2f} ms, "
        f"WAL {result['commit_ms']['wal']:.2f} ms"
    )
    for mode in MODES:
        walls = ", ".join(f"{w:.1f}" for w in result["wall_ms"][mode])
        print(
            f"{mode:8s} per training run: wall {result['median_wall_ms'][mode]:.1f} ms "
            f"(rounds: {walls}), server CPU {result['median_server_cpu_ms'][mode]:.1f} ms"
        )


if __name__ == "__main__":
    main()
