"""The training flow for real: `driftloop` CLI → Prefect server → MLflow server.

Covers both model families and both task types, the gate's aliases, signatures and
dataset digests on every version, bad data that registers nothing, and rollback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models import get_model_info

from config.settings import Settings
from driftloop import procs
from registry import Registry

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "driftloop")


@pytest.fixture(scope="module")
def env(
    mlflow_server: procs.Server,
    prefect_server: procs.Server,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    state = tmp_path_factory.mktemp("train-state")
    yield {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server.base_url,
        "PREFECT_API_URL": prefect_server.base_url,
        "DRIFTLOOP_STATE_DIR": str(state),
        "BENTOML_HOME": str(state / "bentoml"),
    }


def driftloop(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def versions(env: dict[str, str], model: str) -> list[dict[str, object]]:
    result = driftloop(env, "models", "--model-name", model, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def churn_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user dataset with its own schema and a binary text target."""
    rng = np.random.default_rng(7)
    n = 800
    tenure = rng.integers(1, 72, n)
    fee = rng.normal(60, 20, n).round(2)
    calls = rng.poisson(1.5, n)
    plan = rng.choice(["basic", "plus", "pro"], n)
    risk = 0.04 * calls - 0.03 * tenure / 12 + 0.01 * (fee - 60) / 10 + (plan == "basic") * 0.3
    churned = np.where(risk + rng.normal(0, 0.2, n) > 0.2, "yes", "no")
    path = tmp_path_factory.mktemp("user") / "churn.csv"
    pd.DataFrame(
        {
            "tenure_months": tenure,
            "monthly_fee": fee,
            "support_calls": calls,
            "plan": plan,
            "churned": churned,
        }
    ).to_csv(path, index=False)
    return path


def test_bikeshare_sklearn_then_torch_registers_two_versions(env: dict[str, str]) -> None:
    first = driftloop(env, "train", "--family", "sklearn", "--no-package", "--json")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["alias"] == "champion" and result["version"] == "1"
    assert result["metrics"]["r2"] > 0.7

    second = driftloop(env, "train", "--family", "torch", "--no-package", "--json")
    assert second.returncode == 0, second.stderr
    torch_result = json.loads(second.stdout)
    assert torch_result["version"] == "2"
    # Both scored on the same holdout: a winner by the margin waits as challenger (policy
    # 'challenger'), a loser is registered without an alias.
    assert torch_result["champion_version"] == "1"
    new, old = torch_result["metrics"]["rmse"], torch_result["champion_metrics"]["rmse"]
    won = (old - new) / old >= Settings().promotion_margin - 1e-9
    assert torch_result["alias"] == ("challenger" if won else "none")
    assert "champion v1" in torch_result["reason"]

    listed = versions(env, "bikeshare-demand")
    assert [(v["version"], v["aliases"], v["family"]) for v in listed] == [
        ("2", ["challenger"] if won else [], "torch"),
        ("1", ["champion"], "sklearn"),
    ]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    for row in listed:
        info = get_model_info(f"models:/bikeshare-demand/{row['version']}")
        inputs = {spec.name for spec in info.signature.inputs.inputs}
        assert {"temp", "hr", "mnth", "weathersit"} <= inputs
        assert "bikers" not in inputs and "casual" not in inputs
        assert len(str(row["data_digest"])) == 16
        run = client.get_run(
            client.get_model_version("bikeshare-demand", str(row["version"])).run_id
        )
        assert run.inputs.dataset_inputs, "dataset lineage logged with mlflow.data"
        contexts = {
            tag.value
            for d in run.inputs.dataset_inputs
            for tag in d.tags
            if tag.key == "mlflow.data.context"
        }
        assert contexts == {"training", "holdout"}
        for dataset_input in run.inputs.dataset_inputs:  # the schema MLflow would infer
            columns = json.loads(dataset_input.dataset.schema)["mlflow_colspec"]
            by_name = {column["name"]: column for column in columns}
            assert by_name["bikers"]["type"] == "long" and by_name["bikers"]["required"]
            assert by_name["weathersit"]["type"] == "string"
        assert run.data.tags["data_digest"] == row["data_digest"]
        # Params and metrics (one log_batch): the family, every holdout metric.
        assert run.data.params["family"] == row["family"]
        assert run.data.params["rows_train"].isdigit()
        assert {"holdout_rmse", "holdout_r2"} <= set(run.data.metrics)
        # The evaluation files, plots and reference sample (uploaded side by side).
        logged = {a.path for a in client.list_artifacts(run.info.run_id)}
        logged |= {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        logged |= {a.path for a in client.list_artifacts(run.info.run_id, "reference")}
        assert {
            "contract.json",
            "validation.json",
            "schema.json",
            "feature_importance.json",
            "plots/residuals.png",
            "plots/feature_importance.png",
            "reference/train_sample.parquet",
        } <= logged
        png = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path="plots/residuals.png"
            )
        )
        assert png.read_bytes().startswith(b"\x89PNG")
        if row["family"] == "torch":  # the loss per epoch, one step each
            epochs = client.get_metric_history(run.info.run_id, "epoch_train_loss")
            assert len(epochs) >= 2 and sorted(m.step for m in epochs) == list(range(len(epochs)))

    table = driftloop(env, "models")
    assert table.returncode == 0 and "torch" in table.stdout


@pytest.mark.parametrize("family", ["sklearn", "torch"])
def test_user_csv_classification_trains_with_four_flags(
    env: dict[str, str], churn_csv: Path, family: str
) -> None:
    model = f"churn-{family}"
    result = driftloop(
        env,
        "train",
        "--data",
        str(churn_csv),
        "--target",
        "churned",
        "--task",
        "classification",
        "--model-name",
        model,
        "--family",
        family,
        "--no-package",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["task"] == "classification" and out["alias"] == "champion"
    assert set(out["metrics"]) == {"accuracy", "f1_macro", "roc_auc", "log_loss"}
    assert out["metrics"]["accuracy"] > 0.6
    assert 0.0 < out["metrics"]["log_loss"] < np.log(2)  # better than a coin
    assert out["task_explanation"] == (
        "task: classification (set by --task/DRIFTLOOP_TASK) — target 'churned' has 2 "
        "classes (no, yes): positive class 'yes' (its name reads as the positive answer), "
        "threshold 0.5 on P(yes)"
    )
    listed = versions(env, model)
    assert [v["task"] for v in listed] == ["classification"]
    # The label rule travels with the model: serving refuses labels outside these classes;
    # the decision rule too: serving labels by it and answers the probabilities.
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    metadata = get_model_info(f"models:/{model}/{out['version']}").metadata
    rule = metadata["driftloop_label"]
    assert rule["target"] == "churned" and rule["classes"] == ["no", "yes"]
    assert metadata["driftloop_decision"] == {
        "classes": ["no", "yes"],
        "positive_class": "yes",
        "threshold": 0.5,
    }
    tags = Registry(model, env["MLFLOW_TRACKING_URI"]).get(out["version"]).tags
    assert (tags["positive_class"], tags["decision_threshold"]) == ("yes", "0.5")
    assert float(tags["holdout_f1_macro"]) == pytest.approx(out["metrics"]["f1_macro"], rel=1e-5)


BAD_DATA = {
    "missing target": ("a,b\n1,2\n3,4\n", "--target", "price", "'price' is not a column"),
    "empty file": ("", "--target", "y", "empty"),
    "all-NaN target": ("x,y\n1,\n2,\n3,\n", "--target", "y", "y"),
    "not CSV": (b"\x80\x04\x95pickle\x00\x00", "--target", "y", "not"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_fails_clearly_and_registers_nothing(
    env: dict[str, str], tmp_path: Path, case: str
) -> None:
    content, flag, value, expected = BAD_DATA[case]
    path = tmp_path / ("data.pkl" if case == "not CSV" else "data.csv")
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    model = "bad-" + case.replace(" ", "-").lower()
    result = driftloop(
        env, "train", "--data", str(path), flag, value, "--model-name", model, "--no-package"
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert expected.lower() in result.stderr.lower()
    assert "Traceback" not in result.stderr
    assert versions(env, model) == []


def test_wrong_column_types_break_the_contract_and_register_nothing(
    env: dict[str, str], tmp_path: Path
) -> None:
    bikes = pd.read_csv(procs.Path(__file__).parents[2] / "data/bundled/bikeshare_2011.csv")
    bikes["temp"] = bikes["temp"].astype(object)
    bikes.loc[5:9, "temp"] = "hot"
    path = tmp_path / "bikes.csv"
    bikes.to_csv(path, index=False)
    before = versions(env, "bikeshare-demand")
    result = driftloop(
        env,
        "train",
        "--data",
        str(path),
        "--target",
        "bikers",
        "--time-column",
        "day",
        "--drop",
        "casual",
        "--drop",
        "registered",
        "--no-package",
    )
    assert result.returncode == 1
    assert "temp" in result.stderr and "hot" in result.stderr
    assert "nothing was registered" in result.stderr
    assert versions(env, "bikeshare-demand") == before


def test_unknown_task_is_bad_usage(env: dict[str, str], churn_csv: Path) -> None:
    result = driftloop(
        env,
        "train",
        "--data",
        str(churn_csv),
        "--target",
        "churned",
        "--task",
        "clustering",
        "--model-name",
        "churn-x",
    )
    assert result.returncode == 2
    assert "unknown task 'clustering'" in result.stderr


def test_rollback_after_two_promotions_restores_earlier_champion(
    env: dict[str, str], churn_csv: Path
) -> None:
    model = "churn-rollback"
    for _ in range(3):
        trained = driftloop(
            env,
            "train",
            "--data",
            str(churn_csv),
            "--target",
            "churned",
            "--model-name",
            model,
            "--no-package",
        )
        assert trained.returncode == 0, trained.stderr
    assert driftloop(env, "promote", "2", "-m", model, "--reason", "v2 won").returncode == 0
    assert driftloop(env, "promote", "3", "-m", model, "--reason", "v3 won").returncode == 0
    rolled = driftloop(env, "rollback", "-m", model, "--reason", "v3 degraded")
    assert rolled.returncode == 0, rolled.stderr
    aliases = {v["version"]: v["aliases"] for v in versions(env, model)}
    assert aliases["2"] == ["champion"] and aliases["3"] == ["previous"]

    history = json.loads(driftloop(env, "history", "-m", model, "--json").stdout)
    promotions = [h for h in history if h["action"] in ("promote", "rollback")]
    assert [(h["action"], h["moves"]["champion"], h["reason"]) for h in promotions] == [
        ("rollback", ["3", "2"], "v3 degraded"),  # newest first
        ("promote", ["2", "3"], "v3 won"),
        ("promote", ["1", "2"], "v2 won"),
    ]
    shown = driftloop(env, "history", "-m", model)
    assert "v3 degraded" in shown.stdout and "rollback" in shown.stdout


@pytest.mark.slow
def test_a_packaged_training_bentos_the_registered_model_without_downloading_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The flow packages the model folder it logged (kept locally, not downloaded back):
    the Bento's model is byte for byte what the registry version downloads."""
    import bentoml

    from bentos.store import LABEL_RUN_ID, MLFLOW_MODEL_FOLDER, bentoml_home

    model = "pkg-flow"
    trained = driftloop(env, "train", "--model-name", model, "--json", timeout=600)
    assert trained.returncode == 0, trained.stderr
    result = json.loads(trained.stdout)
    assert result["version"] == "1" and result["bento_tag"] == f"{model}-service:v1"
    registry = Registry(model, env["MLFLOW_TRACKING_URI"])
    info = registry.get("1")
    assert info.tags["bento_tag"] == f"{model}-service:v1"
    assert info.tags["bento_model_tag"] == f"{model}:v1"
    assert info.tags["data_digest"] == result["data_digest"]  # merged, not replaced
    downloaded = registry.download_model(info, tmp_path / "download")
    with bentoml_home(Path(env["BENTOML_HOME"])):
        bento = bentoml.bentos.get(f"{model}-service:v1")
        stored = bentoml.models.get(f"{model}:v1")
    assert [str(m.tag) for m in bento.info.models] == [f"{model}:v1"]
    assert bento.info.labels[LABEL_RUN_ID] == info.run_id == stored.info.labels[LABEL_RUN_ID]
    folder = Path(stored.path_of(MLFLOW_MODEL_FOLDER))

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    assert files(folder) == files(downloaded) and "MLmodel" in files(folder)
