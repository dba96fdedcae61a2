"""The champion the gate compares with loads from this state folder's BentoML store when
packaging put that very version there, else from the registry (downloaded)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from config.settings import Settings
from pipelines.train import champion_model_location
from registry import VersionInfo

FRAME = pd.DataFrame({"temp": [0.1, 0.5, 0.9, 0.3], "hum": [0.2, 0.4, 0.6, 0.8]})


def champion(run_id: str | None = "run-1", version: str = "3") -> VersionInfo:
    return VersionInfo(
        name="bikes",
        version=version,
        run_id=run_id,
        source="models:/m-1",
        aliases=("champion",),
        tags={},
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


@pytest.fixture()
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("BENTOML_HOME", raising=False)
    return Settings(model_name="bikes", state_dir=tmp_path / "state")


def store_version(settings: Settings, tmp_path: Path, run_id: str, version: str = "3") -> None:
    """Import a small MLflow model into the state folder's BentoML store as packaging does."""
    import bentoml

    from bentos.store import LABEL_RUN_ID, bentoml_home, model_tag

    folder = tmp_path / f"mlflow-model-{version}"
    model = LinearRegression().fit(FRAME, np.array([1.0, 2.0, 3.0, 4.0]))
    mlflow.sklearn.save_model(model, str(folder), pip_requirements=["scikit-learn"])
    with bentoml_home(settings.resolved_bentoml_home()):
        bentoml.mlflow.import_model(
            model_tag(settings.model_name, version), str(folder), labels={LABEL_RUN_ID: run_id}
        )


def test_no_local_copy_loads_from_the_registry(settings: Settings) -> None:
    assert champion_model_location(settings, champion()) == champion().model_uri


def test_the_packaged_copy_of_the_same_run_loads_without_a_download(
    settings: Settings, tmp_path: Path
) -> None:
    store_version(settings, tmp_path, "run-1")
    location = champion_model_location(settings, champion())
    assert location != champion().model_uri
    assert Path(location, "MLmodel").is_file()
    assert str(settings.resolved_bentoml_home()) in location
    loaded = mlflow.pyfunc.load_model(location)
    assert loaded.predict(FRAME).shape == (4,)


def test_a_copy_from_another_run_or_version_is_not_used(settings: Settings, tmp_path: Path) -> None:
    store_version(settings, tmp_path, "run-other")  # same name and version, other registry
    assert champion_model_location(settings, champion()) == champion().model_uri
    other_version = champion(run_id="run-other", version="4")
    assert champion_model_location(settings, other_version) == other_version.model_uri
    assert champion_model_location(settings, champion(run_id=None)) == champion().model_uri
