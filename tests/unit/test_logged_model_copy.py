"""Packaging without reading back what the flow just wrote: the logged model's folder kept
locally is the version's model, imported as the download would be; the tag merge uses
the version as just read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.linear_model import LinearRegression

from bentos.store import (
    LABEL_RUN_ID,
    MLFLOW_MODEL_FOLDER,
    bentoml_home,
    import_version,
    is_logged_model_of,
)
from pipelines.tracking import keep_logged_model
from registry import Registry

FRAME = pd.DataFrame({"temp": [0.1, 0.5, 0.9, 0.3], "hr": [1.0, 5.0, 9.0, 13.0]})
TARGET = np.array([1.0, 3.0, 5.0, 4.0])


@pytest.fixture
def tracking(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A SQLite store with file artifacts, as MLflow's global tracking URI; (uri, exp id)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = MlflowClient(uri).create_experiment("t", (tmp_path / "art").as_uri())
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield uri, experiment
    finally:
        mlflow.set_tracking_uri(before)


def log_model(experiment: str, kept: Path | None) -> tuple[str, str]:
    """(run id, model URI) of a small sklearn model logged as the flow logs one."""
    with mlflow.start_run(experiment_id=experiment) as run, keep_logged_model(kept):
        info = mlflow.sklearn.log_model(
            LinearRegression().fit(FRAME, TARGET),
            name="model",
            signature=infer_signature(FRAME, TARGET),
            input_example=FRAME.head(2),
            pip_requirements=["scikit-learn"],
        )
    return run.info.run_id, info.model_uri


def files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_the_kept_folder_is_what_the_registered_version_downloads(
    tracking: tuple[str, str], tmp_path: Path
) -> None:
    uri, experiment = tracking
    original = MlflowClient.log_model_artifacts
    kept = tmp_path / "kept" / "model"
    run_id, model_uri = log_model(experiment, kept)
    assert MlflowClient.log_model_artifacts is original  # put back after the log
    other_run, other_uri = log_model(experiment, None)  # nothing kept outside the block
    registry = Registry("copy-a", uri)
    first = registry.register(model_uri, run_id)
    second = registry.register(other_uri, other_run)

    downloaded = registry.download_model(first, tmp_path / "download")
    assert files(kept) == files(downloaded)
    assert "MLmodel" in files(kept) and len(files(kept)) > 3
    assert is_logged_model_of(kept, first)
    assert not is_logged_model_of(kept, second)  # another run's model is never used
    assert not is_logged_model_of(tmp_path / "missing", first)


def test_import_uses_the_kept_folder_and_downloads_otherwise(
    tracking: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, experiment = tracking
    kept = tmp_path / "kept" / "model"
    run_id, model_uri = log_model(experiment, kept)
    other_run, other_uri = log_model(experiment, None)
    registry = Registry("copy-b", uri)
    first = registry.register(model_uri, run_id)
    second = registry.register(other_uri, other_run)
    downloads: list[str] = []
    download = registry.download_model

    def counted(version: object, dst: Path) -> Path:
        downloads.append(str(getattr(version, "version", version)))
        return download(version, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(registry, "download_model", counted)
    with bentoml_home(tmp_path / "bentoml"):
        model = import_version(registry, "1", info=first, logged_copy=kept)
        assert downloads == []
        assert model.info.labels[LABEL_RUN_ID] == run_id
        assert files(Path(model.path_of(MLFLOW_MODEL_FOLDER))) == files(kept)
        # A copy that is not the version's model: downloaded, as without one.
        other = import_version(registry, "2", info=second, logged_copy=kept)
        assert downloads == ["2"]
        assert other.info.labels[LABEL_RUN_ID] == other_run


def test_set_tags_merges_into_the_tags_just_read_without_reading_again(
    mlflow_store: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, run_id = mlflow_store
    tags = {"family": "sklearn", "data_digest": "abc", "contract_revision": "1"}
    written = {"bento_tag": "x-service:v1", "bento_model_tag": "x:v1"}
    stored = {}
    for name, pass_current in (("merge-read", False), ("merge-given", True)):
        registry = Registry(name, uri)
        info = registry.register(f"runs:/{run_id}/model", run_id, tags)
        assert info.stored_tags is not None
        reads: list[str] = []
        get = registry.client.get_model_version

        def counted(model: str, version: str, _get=get, _reads=reads) -> object:
            _reads.append(version)
            return _get(model, version)

        monkeypatch.setattr(registry.client, "get_model_version", counted)
        registry.set_tags("1", written, current=info.stored_tags if pass_current else None)
        assert reads == ([] if pass_current else ["1"])
        stored[name] = MlflowClient(uri).get_model_version(name, "1").tags
        assert registry.get("1").tags["bento_model_tag"] == "x:v1"
        assert registry.get("1").tags["data_digest"] == "abc"
    assert stored["merge-read"] == stored["merge-given"]
