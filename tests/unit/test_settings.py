"""Settings: bundled defaults, env overrides, ecosystem variables, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from config.settings import BUNDLED_DATA, Settings, load_settings
from data.sources import load_dataset


def test_defaults_serve_the_bundled_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = Settings(state_dir=tmp_path)
    spec = settings.dataset_spec()
    assert spec.path == BUNDLED_DATA and spec.path.exists()
    assert spec.target == "bikers" and spec.time_column == "day"
    assert set(spec.drop_columns) == {"casual", "registered"}
    assert settings.resolved_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_env_vars_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_MODEL_NAME", "churn")
    monkeypatch.setenv("DRIFTLOOP_PROMOTION_MARGIN", "0.1")
    monkeypatch.setenv("DRIFTLOOP_FAMILY", "torch")
    settings = Settings()
    assert (settings.model_name, settings.promotion_margin, settings.family) == (
        "churn",
        0.1,
        "torch",
    )


def test_cli_overrides_beat_env_and_none_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_MODEL_NAME", "from-env")
    assert load_settings(model_name="from-flag").model_name == "from-flag"
    assert load_settings(model_name=None).model_name == "from-env"


def test_mlflow_tracking_uri_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert Settings().resolved_tracking_uri() == "http://mlflow.internal:5000"
    explicit = Settings(tracking_uri="http://other:5000")
    assert explicit.resolved_tracking_uri() == "http://other:5000"


def test_prefect_api_url_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert Settings().resolved_prefect_api_url() == "http://127.0.0.1:4200/api"


def test_user_data_needs_a_target(tmp_path: Path) -> None:
    data = tmp_path / "x.csv"
    data.write_text("a,b\n1,2\n")
    with pytest.raises(ValidationError, match="--target is required"):
        Settings(data=data)
    spec = Settings(data=data, target="b").dataset_spec()
    assert spec.time_column is None and spec.drop_columns == ()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("model_name", "bad name!", "not usable"),
        ("task", "clustering", "regression"),
        ("family", "xgboost", "sklearn"),
        ("holdout_fraction", 1.5, "less than"),
        ("data", Path("/nope/missing.csv"), "does not exist"),
    ],
)
def test_bad_values_are_named(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(**{field: value})
    assert field in str(info.value) and message in str(info.value)


def test_the_dataset_spec_loads_what_it_describes(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("when,code,x,y,noise\n2,1,0.5,3,9\n1,2,0.7,4,8\n3,1,0.1,5,7\n")
    spec = Settings(data=tmp_path / "d.csv", target="y", time_column="when").dataset_spec()
    spec = type(spec)(
        spec.path, spec.target, spec.time_column, ("noise",), categorical_columns=("code",)
    )
    snapshot = load_dataset(spec, "regression")
    assert snapshot.target == "y" and snapshot.task == "regression"
    assert list(snapshot.frame["when"]) == [1, 2, 3]  # sorted by the time column
    assert "noise" not in snapshot.frame.columns
    assert "code" in snapshot.categorical and "x" in snapshot.numeric
