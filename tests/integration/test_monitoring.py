"""Monitoring that acts, for real: MLflow server, Prefect server and bentoml serve.

The full loop (drift → retrain → challenger → promotion → bad version → rollback) runs
as `driftloop demo` against a stack on free ports; the edge cases run `driftloop
monitor` on windows written to the prediction log the service uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from data.sources import load_snapshot
from data.split import time_split
from driftloop import procs
from predlog.log import FeedbackRecord, PredictionLog, PredictionRecord

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "driftloop")
BUNDLED = Path(__file__).parents[2] / "data" / "bundled" / "bikeshare_2011.csv"


def run(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.slow
def test_the_loop_retrains_promotes_and_rolls_back(tmp_path: Path) -> None:
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")
        },
        "DRIFTLOOP_STATE_DIR": str(tmp_path / "state"),
        "DRIFTLOOP_MLFLOW_PORT": str(procs.free_port()),
        "DRIFTLOOP_PREFECT_PORT": str(procs.free_port()),
        "DRIFTLOOP_SERVE_PORT": str(procs.free_port()),
        "DRIFTLOOP_EVIDENTLY_PORT": str(procs.free_port()),
    }
    try:
        demo = run(env, "demo", timeout=1200)
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        # Newest first, one page: read it oldest first, as the story happened.
        history = json.loads(run(env, "history", "--limit", "200", "--json").stdout)[::-1]
    finally:
        run(env, "down")
    by_monitor = [(h["action"], h) for h in history if h["actor"] == "monitor"]
    actions = [action for action, _ in by_monitor]
    assert actions == ["retrain", "promote", "rollback"], actions
    retrain, promote, rollback = (h for _, h in by_monitor)
    assert "drift share" in retrain["reason"] or "OOD rate" in retrain["reason"]
    assert retrain["figures"]["window_rows"] >= 200
    # The retrained version arrived through the gate as challenger, then won live.
    challenger = next(h for h in history if h["action"] == "set-challenger")
    assert promote["moves"]["champion"][1] == challenger["moves"]["challenger"][1]
    assert promote["figures"]["challenger_metric"] < promote["figures"]["champion_metric"]
    # The bad version was force-promoted, then rolled back to the good one.
    forced = next(h for h in history if h["actor"] == "demo")
    assert rollback["moves"]["champion"] == [
        forced["moves"]["champion"][1],
        forced["moves"]["champion"][0],
    ]
    assert rollback["figures"]["champion_metric"] > rollback["figures"]["previous_metric"]
    assert "service follows the rollback" in demo.stdout
    # Every check is a run in the Evidently workspace `evidently ui` shows, tagged by decision.
    from monitoring.workspace import open_workspace

    workspace = open_workspace(tmp_path / "state" / "evidently")
    (project,) = workspace.search_project("bikeshare-demand")
    decisions = {
        workspace.get_run(project.id, run).metadata["decision"]
        for run in workspace.list_runs(project.id)
    }
    assert {"retrain", "promote", "rollback"} <= decisions, decisions
    # The demo ends with screenshots of the key pages (headless Chromium), listed.
    shots = sorted((tmp_path / "state" / "screenshots").glob("*.png"))
    names = {p.stem for p in shots}
    assert {"mlflow-model", "mlflow-champion", "prefect-runs", "service-docs"} <= names, names
    assert "evidently-dashboard" in names, names
    assert all(p.stat().st_size > 10_000 for p in shots)  # a rendered page, not an empty one
    assert all(str(p) in "".join(demo.stdout.split()) for p in shots), demo.stdout[-2000:]


# -- edge cases on windows written straight into the prediction log ------------------------


@pytest.fixture(scope="module")
def trained(
    mlflow_server: procs.Server,
    prefect_server: procs.Server,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dict[str, str], pd.DataFrame, list[str]]]:
    """A model trained on January–March with a random holdout, and that holdout."""
    state = tmp_path_factory.mktemp("monitor-state")
    bikes = pd.read_csv(BUNDLED)
    jan_mar = state / "jan_mar.csv"
    bikes[bikes["day"] < 91].to_csv(jan_mar, index=False)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server.base_url,
        "PREFECT_API_URL": prefect_server.base_url,
        "DRIFTLOOP_STATE_DIR": str(state),
        "DRIFTLOOP_MODEL_NAME": "monitor-edge",
    }
    drop = ["--drop", "casual", "--drop", "registered", "--drop", "day"]
    result = run(env, "train", "--data", str(jan_mar), "--target", "bikers", *drop, "--no-package")
    assert result.returncode == 0, result.stderr
    snapshot = load_snapshot(jan_mar, "bikers", drop_columns=("casual", "registered", "day"))
    _, holdout = time_split(snapshot.frame, None, 0.2, seed=42)  # the flow's own random split
    yield env, holdout, list(snapshot.features)


def write_window(env: dict[str, str], rows: pd.DataFrame, features: list[str]) -> None:
    """Log rows as the service would: champion answers plus their feedback labels."""
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    model = mlflow.pyfunc.load_model("models:/monitor-edge@champion")
    numeric = [c for c in features if pd.api.types.is_numeric_dtype(rows[c])]
    predictions = model.predict(rows[features].astype({c: "float64" for c in numeric}))
    log = PredictionLog(f"sqlite:///{env['DRIFTLOOP_STATE_DIR']}/predictions.db")
    stamp = time.time()
    records, labels = [], []
    for i, (values, prediction, label) in enumerate(
        zip(rows[features].to_dict(orient="records"), predictions, rows["bikers"], strict=True)
    ):
        request_id = f"w{stamp}-{i}"
        clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in values.items()}
        records.append(
            PredictionRecord(
                request_id, "monitor-edge", "1", "champion", clean, float(prediction), 1.0
            )
        )
        labels.append(
            FeedbackRecord(request_id=request_id, model_name="monitor-edge", label=float(label))
        )
    log.append(records, labels)
    log.close()


def monitor(env: dict[str, str]) -> tuple[int, dict[str, object], str]:
    result = run(env, "monitor", "--json", timeout=300)
    try:
        return result.returncode, json.loads(result.stdout), result.stderr
    except json.JSONDecodeError:
        raise AssertionError(result.stdout + result.stderr) from None


def test_empty_window_is_reported_and_nothing_happens(trained: tuple) -> None:
    env, _, _ = trained
    code, check, stderr = monitor(env)
    assert code == 0, stderr
    assert check["decision"]["action"] == "none"
    assert any("empty" in m for m in check["messages"])


def test_window_without_drift_triggers_nothing(trained: tuple) -> None:
    env, holdout, features = trained
    write_window(env, holdout, features)
    code, check, stderr = monitor(env)
    assert code == 0, stderr
    figures = check["figures"]
    assert figures["window_rows"] == len(holdout)
    assert figures["drift_share"] < 0.5 and figures["ood_rate"] < 0.2, figures
    assert check["decision"]["action"] == "none", check["decision"]
    assert Path(check["report_html"]).exists()


def test_nans_and_unseen_categories_do_not_crash(trained: tuple) -> None:
    env, holdout, features = trained
    odd = holdout.head(300).copy()
    odd.loc[odd.index[:100], "temp"] = float("nan")
    odd.loc[odd.index[100:200], "mnth"] = "Smarch"
    write_window(env, odd, features)
    code, check, stderr = monitor(env)
    assert code == 0, stderr
    assert check["decision"]["action"] in ("none", "retrain")
    assert check["decision"]["reason"]
    assert check["figures"]["window_rows"] > 0


def test_unreachable_registry_is_a_clear_failed_check(trained: tuple) -> None:
    env, _, _ = trained
    dead = {**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{procs.free_port()}"}
    code, check, stderr = monitor(dead)
    assert code == 1
    assert "registry unreachable" in check["error"]
    assert check["decision"]["action"] == "none"
    assert "Traceback" not in stderr
