"""The whole loop scaled out on one PostgreSQL, with no disk shared between the parts.

One throwaway PostgreSQL holds the MLflow backend store (artifacts served by `mlflow
server --artifacts-destination`), the Prefect server's database and the prediction log.
`driftloop deploy` sends the deployments to a pool; a process worker with its own EMPTY
state folder and working folder (another machine) runs `train`, `package` and `monitor`
from them. Two `bentoml serve` replicas with separate state folders log to the shared
log. A load client talks to both throughout: drift on both replicas → the monitor (on
the worker) sees rows of both and hands the `train` deployment its rows as an MLflow
artifact → v2 → promoted → rolled back; both replicas follow every move within the
alias poll interval + 1 s, and no request fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from config.serving import ServingSettings
from config.settings import BUNDLED_DATA, REPO_ROOT
from driftloop import procs
from driftloop.serving import serve_command

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
POOL = "scale-out"
MODEL = "bikeshare-demand"  # the default: its committed contract is the first one
POLL_S = 1.0  # alias_poll_interval_s of both replicas
APRIL, JULY = 91, 182  # day-of-year bounds of the bundled data (as the demo uses them)
WINDOW_ROWS = 300  # monitor_window_rows: the check reads the latest 300 requests
MONITOR_ENV = {
    "DRIFTLOOP_MONITOR_WINDOW_ROWS": str(WINDOW_ROWS),
    "DRIFTLOOP_MIN_WINDOW_ROWS": "100",
    "DRIFTLOOP_MIN_RETRAIN_LABELLED_ROWS": "100",
    "DRIFTLOOP_OOD_MAX_POINTS": "2000",
    "DRIFTLOOP_OOD_MAX_QUERIES": "300",
    # A retrained version becomes challenger whatever the gate says: this test is about
    # where things run and what travels, not about which model wins.
    "DRIFTLOOP_GATE_LOSERS_AS_CHALLENGER": "true",
    "DRIFTLOOP_MONITOR_INTERVAL_S": "86400",  # runs are started by the test
}


@dataclass
class Stack:
    mlflow: procs.Server
    prefect: procs.Server
    log_url: str
    env: dict[str, str]  # what every part of the stack is told (no state folder)

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.request(method, f"{self.prefect.base_url}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """PostgreSQL, MLflow and Prefect on it, the deployments sent to POOL."""
    # Not under pytest's basetemp: the cluster may run as the `postgres` account.
    folder = Path(tempfile.mkdtemp(prefix="driftloop-scale-"))
    with ExitStack() as stop:
        stop.callback(shutil.rmtree, folder, True)
        cluster = procs.start_postgres(folder / "cluster")
        stop.callback(cluster.stop)
        databases = {name: cluster.create_database(name) for name in ("mlflow", "prefect", "log")}
        mlflow_port, prefect_port = procs.free_port(), procs.free_port()
        mlflow = procs.start_mlflow_server(
            "mlflow-pg",
            mlflow_port,
            folder / "mlflow",
            folder / "mlflow" / "mlflow.log",
            cluster.url(databases["mlflow"]),
        )
        stop.callback(mlflow.stop)
        prefect = procs.start_server(
            "prefect-pg",
            procs.prefect_server_argv(prefect_port),
            health_url=f"http://127.0.0.1:{prefect_port}/api/health",
            base_url=f"http://127.0.0.1:{prefect_port}/api",
            log_path=folder / "prefect" / "prefect.log",
            env=procs.prefect_server_env(
                folder / "prefect", database_url=cluster.url(databases["prefect"], "asyncpg")
            ),
        )
        stop.callback(prefect.stop)
        mlflow.wait_healthy(timeout_s=180)
        prefect.wait_healthy(timeout_s=180)
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("DRIFTLOOP_", "MLFLOW_", "PREFECT_", "BENTOML_"))
            },
            "PREFECT_API_URL": prefect.base_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLFLOW_TRACKING_URI": mlflow.base_url,
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "DRIFTLOOP_MODEL_NAME": MODEL,
            "DRIFTLOOP_PREDICTION_LOG_URL": cluster.url(databases["log"]),
            "DRIFTLOOP_WORK_POOL": POOL,
            **MONITOR_ENV,
        }
        deployer = folder / "deployer"
        deployed = subprocess.run(
            [str(BIN / "driftloop"), "deploy"],
            env={
                **env,
                "DRIFTLOOP_STATE_DIR": str(deployer / "state"),
                "PREFECT_HOME": str(deployer / "prefect"),
            },
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert deployed.returncode == 0, deployed.stderr + deployed.stdout
        yield Stack(mlflow, prefect, cluster.url(databases["log"]), env)


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[Path]:
    """A process worker on POOL with an empty state folder, its own working folder and
    its own Prefect home: nothing on disk in common with the test or the replicas."""
    machine = Path(tempfile.mkdtemp(prefix="driftloop-worker-"))
    state = machine / "state"
    state.mkdir()
    (machine / "tmp").mkdir()
    process = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process"],
        env={
            **stack.env,
            "DRIFTLOOP_STATE_DIR": str(state),
            "DRIFTLOOP_REPO": str(REPO_ROOT),
            "PREFECT_HOME": str(machine / "prefect"),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "TMPDIR": str(machine / "tmp"),
            # One OpenMP thread per fit: on a shared 2-core test machine more threads than
            # cores make gradient boosting many times slower, not faster.
            "OMP_NUM_THREADS": "1",
        },
        cwd=str(machine),
        stdout=(machine / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield machine
    finally:
        procs.stop_process_group(process.pid)
        process.wait(timeout=30)
        shutil.rmtree(machine, ignore_errors=True)


def run_deployment(stack: Stack, name: str, parameters: dict[str, Any]) -> str:
    deployment = stack.api("GET", f"/deployments/name/{name}")
    assert deployment["work_pool_name"] == POOL
    run = stack.api(
        "POST", f"/deployments/{deployment['id']}/create_flow_run", {"parameters": parameters}
    )
    return run["id"]


def wait_run(stack: Stack, run_id: str, worker: Path, timeout_s: float) -> dict[str, Any]:
    """The flow run once it has finished; it must have COMPLETED."""
    final = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
    procs.wait_until(
        lambda: stack.api("GET", f"/flow_runs/{run_id}")["state_type"] in final,
        timeout_s,
        interval_s=1,
        what=f"flow run {run_id}",
    )
    run = stack.api("GET", f"/flow_runs/{run_id}")
    log = (worker / "worker.log").read_text(errors="replace")[-4000:]
    assert run["state_type"] == "COMPLETED", f"{run['name']}: {run['state_name']}\n{log}"
    return run


@dataclass
class Replica:
    name: str
    server: procs.Server
    answers: list[tuple[float, str]] = field(default_factory=list)  # (received at, version)
    failures: list[str] = field(default_factory=list)  # "<monotonic time> <what>"
    slowest_s: float = 0.0
    labelled: int = 0


def start_replica(name: str, stack: Stack, state: Path) -> Replica:
    settings = ServingSettings(
        model_name=MODEL,
        state_dir=state,
        tracking_uri=stack.mlflow.base_url,
        prediction_log_url=stack.log_url,
        alias_poll_interval_s=POLL_S,
        registry_timeout_s=2.0,
        registry_backoff_initial_s=0.5,
        registry_backoff_max_s=2.0,
        # A nice'd shared 2-core machine training on the same cores can keep a request
        # waiting for CPU longer than the default 10 s; the slowest answer is printed.
        request_timeout_s=30.0,
    )
    port = procs.free_port()
    argv, env, cwd = serve_command(settings, port)
    server = procs.start_server(
        name,
        argv,
        health_url=f"http://127.0.0.1:{port}/readyz",
        base_url=f"http://127.0.0.1:{port}",
        log_path=state / f"{name}.log",
        # One OpenMP thread per replica, as on the worker: two replicas and a training on
        # two shared cores otherwise spin OpenMP threads against each other (requests
        # stalled past 15 s while the worker trained without this).
        env={**stack.env, **env, "OMP_NUM_THREADS": "1"},
        cwd=cwd,
    )
    return Replica(name, server)


def load(
    replica: Replica, rows: list[dict[str, Any]], labels: list[float], stop: threading.Event
) -> None:
    """Single-record requests in a loop; every answer is labelled (in batches of 20)."""
    pending: list[dict[str, Any]] = []
    with httpx.Client(base_url=replica.server.base_url, timeout=35) as client:
        i = 0
        while not stop.is_set():
            record = {**rows[i % len(rows)], "request_id": f"{replica.name}-{uuid.uuid4().hex}"}
            label = labels[i % len(rows)]
            i += 1
            sent_at = time.monotonic()
            try:
                response = client.post("/predict", json={"records": [record]})
            except httpx.HTTPError as exc:
                replica.failures.append(f"{sent_at:.1f} predict: {exc!r}")
                continue
            if response.status_code != 200:
                failed = f"{sent_at:.1f} predict {response.status_code}: {response.text[:200]}"
                replica.failures.append(failed)
                continue
            replica.answers.append((time.monotonic(), str(response.json()["model_version"])))
            replica.slowest_s = max(replica.slowest_s, replica.answers[-1][0] - sent_at)
            pending.append({"request_id": record["request_id"], "label": label})
            if len(pending) >= 20:
                try:
                    sent = client.post("/feedback", json={"labels": pending})
                except httpx.HTTPError as exc:
                    replica.failures.append(f"{time.monotonic():.1f} feedback: {exc!r}")
                else:
                    if sent.status_code == 200:
                        replica.labelled += len(pending)
                    else:
                        failed = f"{time.monotonic():.1f} feedback {sent.status_code}"
                        replica.failures.append(f"{failed}: {sent.text[:200]}")
                pending = []
            time.sleep(0.01)  # a steady stream, not a benchmark


def switch_time(replica: Replica, since: float, version: str) -> float:
    """Seconds from `since` to the replica's first answer by `version` after it."""
    return next(t for t, v in replica.answers if t > since and v == version) - since


def test_the_loop_runs_scaled_out_without_a_shared_disk(
    stack: Stack, worker: Path, tmp_path: Path
) -> None:
    import mlflow

    from config.names import CHALLENGER, CHAMPION
    from data.live import LIVE_REQUEST_ID
    from pipelines.tracking import RETRAIN_DATA_ARTIFACTS
    from registry import Registry

    started = time.monotonic()
    marks: dict[str, float] = {}
    registry = Registry(MODEL, stack.mlflow.base_url)
    # v1 on January–March, trained on the worker through the `train` deployment.
    first = run_deployment(stack, "train/train", {"time_until": APRIL, "package_bento": False})
    wait_run(stack, first, worker, 300)
    marks["v1 trained"] = time.monotonic()
    assert registry.aliases() == {CHAMPION: "1"}
    packaged = run_deployment(stack, "package/package", {"version": "1"})

    replicas = [start_replica(n, stack, tmp_path / n) for n in ("replica-a", "replica-b")]
    stop = threading.Event()
    clients: list[threading.Thread] = []
    try:
        for replica in replicas:
            replica.server.wait_healthy(timeout_s=180)
        marks["replicas ready"] = time.monotonic()
        # April–June traffic: drifted against a model of January–March.
        schema = run_schema(stack, registry.get("1").run_id, tmp_path / "schema")
        bikes = pd.read_csv(BUNDLED_DATA)
        spring = bikes[(bikes["day"] >= APRIL) & (bikes["day"] < JULY)].sample(
            frac=1.0, random_state=0
        )
        rows = [
            {k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
            for r in spring[schema["features"]].to_dict(orient="records")
        ]
        labels = [float(v) for v in spring[schema["target"]]]
        clients = [
            threading.Thread(target=load, args=(r, rows, labels, stop), daemon=True)
            for r in replicas
        ]
        for client in clients:
            client.start()
        try:
            procs.wait_until(
                lambda: all(r.labelled >= WINDOW_ROWS // 2 + 20 for r in replicas),
                300,
                interval_s=0.5,
                what="labelled traffic on both replicas",
            )
        except TimeoutError as exc:
            seen = [(r.name, len(r.answers), r.labelled, r.failures[:3]) for r in replicas]
            raise AssertionError(f"{exc}: (replica, answers, labelled, failures) {seen}") from exc
        wait_run(stack, packaged, worker, 300)
        assert registry.get("1").tags.get("bento_tag") == f"{MODEL}-service:v1"

        # The monitor, on the worker, sees drift and hands `train` its rows via MLflow.
        check = run_deployment(stack, "monitor/monitor", {})
        marks["traffic labelled"] = time.monotonic()
        wait_run(stack, check, worker, 300)
        marks["monitor done"] = time.monotonic()
        retrains = [m for m in registry.history.list(10) if m.action == "retrain"]
        assert len(retrains) == 1, [(m.action, m.reason) for m in registry.history.list(10)]
        procs.wait_until(
            lambda: registry.aliases().get(CHALLENGER) == "2",
            400,
            interval_s=1,
            what="the retrained v2 as challenger",
        )
        train_runs = stack.api(
            "POST",
            "/flow_runs/filter",
            {"deployments": {"name": {"any_": ["train"]}}, "sort": "START_TIME_DESC"},
        )
        retrain = next(r for r in train_runs if r["id"] != first)
        handed = retrain["parameters"]["live_rows"]
        assert handed.startswith("runs:/"), handed  # an artifact URI, not a path
        wait_run(stack, retrain["id"], worker, 300)
        marks["v2 trained"] = time.monotonic()
        v2 = registry.get("2")
        assert v2.tags["recent_rows_added"] == handed
        assert v2.tags.get("bento_tag") == f"{MODEL}-service:v2"  # packaged by the retrain
        window = pd.read_parquet(
            mlflow.artifacts.download_artifacts(
                artifact_uri=handed,
                dst_path=str(tmp_path / "window"),
                tracking_uri=stack.mlflow.base_url,
            )
        )
        # The monitor's window held the requests of both replicas.
        served_by = {rid.rsplit("-", 1)[0] for rid in window[LIVE_REQUEST_ID]}
        assert served_by == {"replica-a", "replica-b"}, served_by
        assert len(window) >= 100
        copied = mlflow.MlflowClient(stack.mlflow.base_url).list_artifacts(
            v2.run_id, RETRAIN_DATA_ARTIFACTS
        )
        assert [Path(a.path).name for a in copied] == [Path(handed).name]

        # Promote, then roll back: both replicas follow each move, no request fails.
        moves: dict[str, dict[str, float]] = {}
        for action, expected in (("promote", "2"), ("rollback", "1")):
            if action == "promote":
                registry.promote("2", reason="scale-out test", actor="test")
            else:
                registry.rollback(reason="scale-out test", actor="test")
            moved_at = marks[action] = time.monotonic()
            procs.wait_until(
                lambda e=expected, m=moved_at: all(
                    any(t > m and v == e for t, v in r.answers) for r in replicas
                ),
                POLL_S + 10,
                interval_s=0.1,
                what=f"both replicas answering v{expected} after the {action}",
            )
            moves[action] = {r.name: switch_time(r, moved_at, expected) for r in replicas}
            time.sleep(POLL_S)  # keep the load on after the switch
        assert registry.aliases()[CHAMPION] == "1"
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=30)
        for replica in replicas:
            replica.server.stop()
    print(
        f"scale-out loop: {time.monotonic() - started:.0f} s after the servers were up; "
        f"moves (s to the first answer of the new version) {moves}; answers "
        f"{[len(r.answers) for r in replicas]}; slowest answer "
        f"{[round(r.slowest_s, 2) for r in replicas]} s; events at "
        f"{ {k: round(v - started, 1) for k, v in marks.items()} } s"
    )
    for replica in replicas:
        failed = [f"{float(f.split()[0]) - started:.1f} s: {f}" for f in replica.failures[:5]]
        assert replica.failures == [], (replica.name, failed)
        after = [v for t, v in replica.answers if t >= moved_at + moves["rollback"][replica.name]]
        assert set(after) == {"1"}, (replica.name, after)  # no flapping back
    for action, took in moves.items():
        assert max(took.values()) <= POLL_S + 1.0, (action, took)


def run_schema(stack: Stack, run_id: str, folder: Path) -> dict[str, Any]:
    """features / target / ... of a version, as its training run logged them."""
    import mlflow

    local = mlflow.artifacts.download_artifacts(
        run_id=run_id,
        artifact_path="schema.json",
        dst_path=str(folder),
        tracking_uri=stack.mlflow.base_url,
    )
    return json.loads(Path(local).read_text())
