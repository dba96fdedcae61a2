"""`driftloop deploy` against a real Prefect server: the work pool, the monitor's interval
and the train family come from the settings, and a worker on that pool runs the flows."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from config.settings import REPO_ROOT
from driftloop import procs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
POOL = "other-pool"


RETRIED = (429, 502, 503)  # what Prefect's own client retries (with backoff)


def api(prefect: procs.Server, path: str, body: dict | None = None) -> object:
    """POST to the Prefect API as Prefect's client does: a 503 is the server's "database
    is locked, try again" on SQLite (a worker that just started polls beside this call)."""
    for attempt in range(8):
        response = httpx.post(f"{prefect.base_url}{path}", json=body or {}, timeout=10)
        if response.status_code not in RETRIED:
            break
        time.sleep(0.25 * 2**attempt)
    response.raise_for_status()
    return response.json()


def test_deploy_follows_the_settings_and_runs_on_that_pool(
    prefect_server: procs.Server, tmp_path: Path
) -> None:
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DRIFTLOOP_", "MLFLOW_", "PREFECT_"))
        },
        "PREFECT_API_URL": prefect_server.base_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DRIFTLOOP_STATE_DIR": str(tmp_path / "state"),
        "DRIFTLOOP_WORK_POOL": POOL,
        "DRIFTLOOP_MONITOR_INTERVAL_S": "4321",
        "DRIFTLOOP_FAMILY": "torch",
    }
    deployed = subprocess.run(
        [str(BIN / "driftloop"), "deploy"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert deployed.returncode == 0, deployed.stderr + deployed.stdout
    assert f"work pool '{POOL}'" in deployed.stdout

    deployments = {d["name"]: d for d in api(prefect_server, "/deployments/filter")}
    assert set(deployments) >= {"train", "package", "monitor"}
    assert {deployments[n]["work_pool_name"] for n in ("train", "package", "monitor")} == {POOL}
    assert deployments["train"]["parameters"] == {"family": "torch"}
    intervals = [s["schedule"]["interval"] for s in deployments["monitor"]["schedules"]]
    assert intervals == [4321.0]
    pool = httpx.get(f"{prefect_server.base_url}/work_pools/{POOL}", timeout=10).json()
    assert pool["type"] == "process"  # created by `driftloop deploy` since it was missing

    # A process worker on that pool picks up a run of the monitor deployment. Its pull
    # step takes the code from DRIFTLOOP_REPO, as on a machine with a checkout.
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process"],
        env={**env, "DRIFTLOOP_REPO": str(REPO_ROOT), "PREFECT_WORKER_QUERY_SECONDS": "2"},
        cwd=str(tmp_path),
        stdout=(tmp_path / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        run = api(prefect_server, f"/deployments/{deployments['monitor']['id']}/create_flow_run")
        assert run["work_pool_name"] == POOL

        def state() -> dict:
            response = httpx.get(f"{prefect_server.base_url}/flow_runs/{run['id']}", timeout=10)
            return response.json()

        def finished() -> bool:
            return state()["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")

        procs.wait_until(finished, 180, interval_s=1, what=f"the monitor run on {POOL!r}")
        final = state()
        log = (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
        assert final["state_type"] == "COMPLETED", log
        assert final["work_pool_name"] == POOL
    finally:
        procs.stop_process_group(worker.pid)
        worker.wait(timeout=30)
