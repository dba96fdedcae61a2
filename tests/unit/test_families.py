"""Model families: fit/predict contracts, determinism, robustness, and that the logged MLflow
pyfunc predicts exactly like the in-process model, even loaded where driftloop is absent."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo

from pipelines.families import FAMILIES, FitConfig, FittedModel, fit_model, pip_requirements

REPO_ROOT = Path(__file__).resolve().parents[2]
BIKESHARE = REPO_ROOT / "data" / "bundled" / "bikeshare_2011.csv"
CATEGORICAL = ("colour", "size")
NUMERIC = ("x1", "x2", "x3")
TASKS = ("regression", "binary", "multiclass")
OUR_PACKAGES = ("pipelines", "driftloop", "registry", "monitoring", "bentos")


def synthetic(task: str, n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Features with two categoricals (one with a missing value) and numerics (one NaN, one
    int); a target that depends on x1 and colour. Binary labels are ints, multiclass labels
    strings, so label types must survive the round trip."""
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], size=n).astype(object)
    colour[3] = None
    X = pd.DataFrame(
        {
            "colour": colour,
            "size": rng.choice(["S", "M", "L"], size=n),
            "x1": rng.normal(size=n),
            "x2": rng.integers(0, 10, size=n),
            "x3": rng.normal(size=n),
        }
    )
    X.loc[5, "x1"] = np.nan
    signal = 2.0 * X["x1"].fillna(0) + X["colour"].map({"red": 1.5, "green": 0.0, "blue": -1.5})
    signal = signal.fillna(0) + rng.normal(scale=0.3, size=n)
    if task == "regression":
        y = 10 + 3 * signal
    elif task == "binary":
        y = (signal > 0).astype(int)
    else:
        y = pd.Series(np.where(signal > 1, "high", np.where(signal < -1, "low", "mid")))
    return X, pd.Series(y, name="target")


def config_for(task: str, seed: int = 42) -> FitConfig:
    return FitConfig(
        task="regression" if task == "regression" else "classification",
        categorical=CATEGORICAL,
        numeric=NUMERIC,
        seed=seed,
        max_epochs=60,
    )


def float_signature(X: pd.DataFrame, predictions: np.ndarray) -> mlflow.models.ModelSignature:
    """A signature whose numeric columns are doubles, so rows with NaN pass schema checks."""
    numeric = X.select_dtypes("number").columns
    return infer_signature(X.astype({column: "float64" for column in numeric}), predictions)


def as_served(X: pd.DataFrame) -> pd.DataFrame:
    numeric = X.select_dtypes("number").columns
    return X.astype({column: "float64" for column in numeric})


@pytest.fixture(scope="module")
def fitted() -> dict[tuple[str, str], tuple[FittedModel, pd.DataFrame, pd.Series]]:
    """One model per (family, task), fitted once for the module."""
    models = {}
    for family in FAMILIES:
        for task in TASKS:
            X, y = synthetic(task)
            models[family, task] = (fit_model(family, config_for(task), X, y), X, y)
    return models


@pytest.fixture(scope="module")
def experiment_id(tmp_path_factory: pytest.TempPathFactory):
    """A throwaway SQLite tracking store; the caller's tracking URI is restored after."""
    folder = tmp_path_factory.mktemp("mlflow")
    previous = mlflow.get_tracking_uri() if mlflow.tracking.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(f"sqlite:///{folder}/m.db")
    try:
        yield mlflow.MlflowClient().create_experiment(
            "families", artifact_location=(folder / "art").as_uri()
        )
    finally:
        mlflow.set_tracking_uri(previous)


def log(model: FittedModel, X: pd.DataFrame, experiment_id: str) -> ModelInfo:
    """Log under a fresh run with a NaN-tolerant signature."""
    with mlflow.start_run(experiment_id=experiment_id):
        signature = float_signature(X, model.predict(X))
        return model.log_model("model", input_example=as_served(X.head(5)), signature=signature)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_fit_predict_shapes_and_types(fitted, family: str, task: str) -> None:
    model, X, y = fitted[family, task]
    predictions = model.predict(X)
    assert model.family == family
    assert predictions.shape == (len(X),)
    assert all(isinstance(value, str | int | float) for value in model.params.values())
    if task == "regression":
        assert model.task == "regression" and model.classes is None
        assert predictions.dtype == np.float64
        assert model.predict_proba(X) is None
        assert model.score(X, y) > 0.8
    else:
        assert model.classes == sorted(y.unique().tolist())
        assert {type(label) for label in model.classes} == {type(y.tolist()[0])}
        assert set(predictions) <= set(model.classes)
        proba = model.predict_proba(X)
        assert proba.shape == (len(X), len(model.classes))
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(np.asarray(model.classes)[proba.argmax(axis=1)], predictions)
        assert model.score(X, y) > 0.75
    history = model.history()
    if family == "torch":
        assert set(history) == {"train_loss", "valid_loss"}
        assert (
            len(history["train_loss"])
            == len(history["valid_loss"])
            == model.params["epochs_trained"]
        )
        assert 1 <= model.params["best_epoch"] <= model.params["epochs_trained"]
    else:
        assert history is None


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_gives_same_predictions(family: str) -> None:
    X, y = synthetic("regression", seed=1)
    first = fit_model(family, config_for("regression", seed=7), X, y).predict(X)
    second = fit_model(family, config_for("regression", seed=7), X, y).predict(X)
    np.testing.assert_array_equal(first, second)


def test_torch_training_leaves_global_torch_state_alone() -> None:
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    X, y = synthetic("regression")
    fit_model("torch", config_for("regression"), X, y)
    np.testing.assert_array_equal(torch.rand(3).numpy(), expected.numpy())
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_unseen_category_and_nan_do_not_crash(fitted, family: str, task: str) -> None:
    model, X, _ = fitted[family, task]
    odd = X.head(4).copy()
    odd["colour"] = ["purple", None, "red", "green"]
    odd["size"] = ["XXL", "S", None, "M"]
    odd["x1"] = [np.nan, 1.0, np.nan, 0.0]
    odd["x3"] = np.nan
    predictions = model.predict(odd)
    assert predictions.shape == (4,)
    if task == "regression":
        assert np.isfinite(predictions).all()
    else:
        assert set(predictions) <= set(model.classes)


@pytest.mark.parametrize("family", FAMILIES)
def test_feature_importance_finds_the_signal(fitted, family: str) -> None:
    model, X, y = fitted[family, "regression"]
    importance = model.feature_importance(X, y, max_rows=200)
    assert sorted(importance.index) == sorted(CATEGORICAL + NUMERIC)
    assert importance.is_monotonic_decreasing
    assert importance.index[0] == "x1"
    assert importance["x1"] > 5 * abs(importance["x3"])


def _importance_one_call_per_copy(model, X, y, max_rows: int, seed: int = 0) -> pd.Series:
    """Permutation importance as it was computed before: one `score` call per copy."""
    from pipelines.families.base import _IMPORTANCE_REPEATS

    rng = np.random.default_rng(seed)
    if len(X) > max_rows:
        rows = np.sort(rng.choice(len(X), size=max_rows, replace=False))
        X, y = X.iloc[rows], y.iloc[rows]
    X, y = X.reset_index(drop=True), y.reset_index(drop=True)
    baseline = model.score(X, y)
    drops = {}
    for column in X.columns:
        scores = []
        for _ in range(_IMPORTANCE_REPEATS):
            shuffled = X.copy()
            shuffled[column] = X[column].to_numpy()[rng.permutation(len(X))]
            scores.append(model.score(shuffled, y))
        drops[column] = baseline - float(np.mean(scores))
    return pd.Series(drops, name="importance").sort_values(ascending=False)


@pytest.mark.parametrize("task", TASKS)
def test_feature_importance_batched_equals_one_call_per_copy(
    fitted, task: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scoring every shuffled copy from one predict call gives the per-copy figures."""
    import pipelines.families.base as base

    model, X, y = fitted["sklearn", task]
    expected = _importance_one_call_per_copy(model, X, y, max_rows=150)
    calls = []
    predict = type(model).predict
    monkeypatch.setattr(
        type(model), "predict", lambda self, f: calls.append(len(f)) or predict(self, f)
    )
    got = model.feature_importance(X, y, max_rows=150)
    pd.testing.assert_series_equal(got, expected, rtol=1e-12)
    assert len(calls) == 1  # the baseline and every copy in one call
    monkeypatch.setattr(base, "_IMPORTANCE_ROWS_PER_CALL", 400)  # chunks of two copies
    calls.clear()
    pd.testing.assert_series_equal(model.feature_importance(X, y, max_rows=150), expected)
    assert calls and max(calls) <= 400


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_logged_pyfunc_predicts_like_the_model(
    fitted, experiment_id: str, family: str, task: str
) -> None:
    model, X, _ = fitted[family, task]
    info = log(model, X, experiment_id)
    served = mlflow.pyfunc.load_model(info.model_uri).predict(as_served(X))
    assert isinstance(served, np.ndarray)
    expected = model.predict(X)
    assert served.dtype == expected.dtype
    np.testing.assert_array_equal(served, expected)


def test_logged_requirements_are_explicit_pins(fitted, experiment_id: str) -> None:
    model, X, _ = fitted["torch", "regression"]
    info = log(model, X, experiment_id)
    requirements = mlflow.pyfunc.get_model_dependencies(info.model_uri)
    assert Path(requirements).read_text().split() == pip_requirements("torch")


def test_pip_requirements_are_pinned_and_installable() -> None:
    sklearn_reqs, torch_reqs = pip_requirements("sklearn"), pip_requirements("torch")
    assert all("==" in req and "+" not in req for req in torch_reqs)
    assert not any(req.startswith("torch==") for req in sklearn_reqs)
    assert [req for req in torch_reqs if req not in sklearn_reqs] == [torch_reqs[-1]]
    assert torch_reqs[-1].startswith("torch==")
    with pytest.raises(ValueError, match="sklearn, torch"):
        pip_requirements("xgboost")


def test_served_models_load_without_driftloop(fitted, experiment_id: str, tmp_path: Path) -> None:
    """Load both families in a fresh interpreter that cannot import driftloop's code, as
    BentoML does; torch also loads with pickle deserialization disallowed."""
    cases = {}
    for family in FAMILIES:
        model, X, _ = fitted[family, "multiclass"]
        info = log(model, X, experiment_id)
        folder = tmp_path / family
        mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(folder))
        cases[family] = str(folder)
    as_served(synthetic("multiclass")[0]).to_parquet(tmp_path / "input.parquet")
    script = textwrap.dedent(
        f"""
        import importlib.util, json, os, sys
        sys.path.append({sysconfig.get_paths()["purelib"]!r})
        ours = {OUR_PACKAGES!r}
        reachable = [name for name in ours if importlib.util.find_spec(name) is not None]
        assert not reachable, f"driftloop code is importable: {{reachable}}"
        import mlflow.pyfunc, pandas as pd
        X = pd.read_parquet("input.parquet")
        cases = {cases!r}
        os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
        out = {{"torch": mlflow.pyfunc.load_model(cases["torch"]).predict(X).tolist()}}
        os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
        out["sklearn"] = mlflow.pyfunc.load_model(cases["sklearn"]).predict(X).tolist()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ours)
        assert not loaded, loaded
        print(json.dumps(out))
        """
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    for family in FAMILIES:
        model, X, _ = fitted[family, "multiclass"]
        assert served[family] == model.predict(X).tolist()


def test_importing_families_does_not_import_torch() -> None:
    code = "import sys, pipelines.families; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_unknown_family_is_refused() -> None:
    X, y = synthetic("regression", n=20)
    with pytest.raises(ValueError, match=r"'xgboost'.*sklearn, torch"):
        fit_model("xgboost", config_for("regression"), X, y)


def test_bad_inputs_name_the_fix() -> None:
    X, y = synthetic("regression", n=50)
    with pytest.raises(ValueError, match=r"lacks feature columns \['x3'\]"):
        fit_model("sklearn", config_for("regression"), X.drop(columns="x3"), y)
    with pytest.raises(ValueError, match="1 missing values"):
        fit_model("sklearn", config_for("regression"), X, y.where(y.index != 0))
    with pytest.raises(ValueError, match="task 'ranking'"):
        FitConfig(task="ranking", categorical=(), numeric=("x1",))
    with pytest.raises(ValueError, match="both categorical and numeric"):
        FitConfig(task="regression", categorical=("x1",), numeric=("x1",))


@pytest.fixture(scope="module")
def bikeshare() -> tuple[FitConfig, pd.DataFrame, pd.Series, pd.DataFrame, pd.Series]:
    """The bundled data, time-ordered, last 20 % held out; leaks and the day column dropped."""
    frame = pd.read_csv(BIKESHARE)
    y = frame.pop("bikers")
    X = frame.drop(columns=["casual", "registered", "day"])
    categorical = ("mnth", "weathersit")
    config = FitConfig(
        task="regression",
        categorical=categorical,
        numeric=tuple(column for column in X.columns if column not in categorical),
    )
    cut = int(len(X) * 0.8)
    return config, X.iloc[:cut], y.iloc[:cut], X.iloc[cut:], y.iloc[cut:]


# Measured on the last-20 % holdout (October to December): sklearn R² 0.84, torch 0.69 to 0.73
# across seeds; the floors leave room for noise but fail a model no better than the mean.
@pytest.mark.parametrize(("family", "floor"), [("sklearn", 0.75), ("torch", 0.6)])
def test_bikeshare_beats_the_mean(bikeshare, family: str, floor: float) -> None:
    config, X_train, y_train, X_holdout, y_holdout = bikeshare
    model = fit_model(family, config, X_train, y_train)
    assert model.score(X_holdout, y_holdout) > floor
    importance = model.feature_importance(X_holdout, y_holdout)
    assert importance.index[0] == "hr"


def test_torch_family_without_torch_names_the_extra() -> None:
    """With torch not importable the sklearn path still trains and never imports torch,
    and asking for the torch family fails in one line naming the extra to install."""
    code = """
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, NoTorch())
import numpy as np, pandas as pd
import driftloop.cli, pipelines.train, pipelines.monitor, bentos.service  # noqa: F401
from pipelines.families import FitConfig, MissingFamilyError, fit_model, require_family

X = pd.DataFrame({"a": np.arange(60.0), "c": ["x", "y"] * 30})
y = pd.Series(np.arange(60.0), name="t")
config = FitConfig(task="regression", categorical=("c",), numeric=("a",))
fit_model("sklearn", config, X, y).predict(X)
require_family("sklearn")
try:
    fit_model("torch", config, X, y)
except MissingFamilyError as exc:
    print(exc)
assert "torch" not in sys.modules, "torch imported"
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == (
        "the torch family needs torch, which is not installed: pip install 'driftloop[torch]'"
    )


def test_cli_names_the_extra_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`driftloop train --family torch` without torch: exit 2 and the pip command, verbatim
    (not eaten as Rich markup), before Prefect or MLflow start."""
    from typer.testing import CliRunner

    import pipelines.families
    from driftloop.cli import app

    monkeypatch.setenv("DRIFTLOOP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(pipelines.families, "_installed", lambda module: module != "torch")
    result = CliRunner().invoke(app, ["train", "--family", "torch", "--no-package"])
    assert result.exit_code == 2, result.output
    assert "pip install 'driftloop[torch]'" in result.output
    assert not (tmp_path / "state").exists()  # nothing started, nothing written


@pytest.mark.parametrize("task", ["binary", "multiclass"])
@pytest.mark.parametrize("family", FAMILIES)
def test_serving_finds_the_logged_classifiers_probabilities(
    fitted, experiment_id: str, family: str, task: str
) -> None:
    """Serving reaches predict_proba of both families' logged pyfuncs (no params needed)."""
    from registry.decision import probability_function

    model, X, _ = fitted[family, task]
    info = log(model, X, experiment_id)
    found = probability_function(mlflow.pyfunc.load_model(info.model_uri))
    assert found is not None
    proba, classes = found
    assert classes == model.classes
    np.testing.assert_allclose(proba(as_served(X)), model.predict_proba(X), rtol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_regressor_has_no_probabilities(fitted, experiment_id: str, family: str) -> None:
    from registry.decision import probability_function

    model, X, _ = fitted[family, "regression"]
    info = log(model, X, experiment_id)
    assert probability_function(mlflow.pyfunc.load_model(info.model_uri)) is None
