"""The training run's params, metrics and epoch history go in with one `log_batch`; its
dataset inputs carry the schema MLflow would infer."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipelines.tracking import frame_schema, log_params_and_metrics


def test_params_metrics_and_history_in_one_batch(
    mlflow_store: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, _ = mlflow_store
    client = mlflow.MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.get_experiment_by_name("t").experiment_id).info.run_id
    calls = []
    real = mlflow.MlflowClient.log_batch
    monkeypatch.setattr(
        mlflow.MlflowClient,
        "log_batch",
        lambda self, *a, **k: calls.append(1) or real(self, *a, **k),
    )
    log_params_and_metrics(
        run_id,
        {"family": "torch", "n_features": 12, "model.lr": 0.001},
        {"holdout_rmse": 48.07, "holdout_r2": 0.9},
        {"train_loss": [3.0, 2.0, 1.5], "valid_loss": [3.5, 2.5, 2.0]},
        client,
    )
    assert calls == [1]
    run = client.get_run(run_id)
    assert run.data.params == {"family": "torch", "n_features": "12", "model.lr": "0.001"}
    assert run.data.metrics["holdout_rmse"] == pytest.approx(48.07)
    assert run.data.metrics["holdout_r2"] == pytest.approx(0.9)
    history = client.get_metric_history(run_id, "epoch_train_loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 3.0), (1, 2.0), (2, 1.5)]
    assert len(client.get_metric_history(run_id, "epoch_valid_loss")) == 3


def test_no_history_logs_no_epoch_metrics(mlflow_store: tuple[str, str]) -> None:
    uri, _ = mlflow_store
    client = mlflow.MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.get_experiment_by_name("t").experiment_id).info.run_id
    log_params_and_metrics(run_id, {"family": "sklearn"}, {"holdout_rmse": 1.0}, None, client)
    assert set(client.get_run(run_id).data.metrics) == {"holdout_rmse"}


def test_metrics_land_on_the_logged_model_and_tags_on_the_run(
    mlflow_store: tuple[str, str],
) -> None:
    """The model is logged before the metrics: the same batch links the step-0 metrics to
    it (what MLflow's log_model would copy over) and carries the model URI tag."""
    uri, _ = mlflow_store
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name("t").experiment_id
    run_id = client.create_run(experiment_id).info.run_id
    model = client.create_logged_model(experiment_id, name="model", source_run_id=run_id)
    log_params_and_metrics(
        run_id,
        {"family": "torch"},
        {"holdout_rmse": 2.5},
        {"train_loss": [3.0, 2.0]},
        client,
        model_id=model.model_id,
        tags={"driftloop.model_uri": f"models:/{model.model_id}"},
    )
    run = client.get_run(run_id)
    assert run.data.tags["driftloop.model_uri"] == f"models:/{model.model_id}"
    assert run.data.metrics["holdout_rmse"] == pytest.approx(2.5)
    linked = {m.key: (m.step, m.value) for m in client.get_logged_model(model.model_id).metrics}
    assert linked == {"holdout_rmse": (0, 2.5), "epoch_train_loss": (0, 3.0)}


def test_data_range_names_the_rows_along_the_time_column() -> None:
    import pandas as pd

    from data.sources import Snapshot
    from pipelines.tracking import data_range

    def snapshot(frame: pd.DataFrame, time_column: str | None) -> Snapshot:
        return Snapshot(
            frame=frame,
            target="y",
            features=("x",),
            categorical=(),
            numeric=("x",),
            time_column=time_column,
            digest="abcdef0123456789",
            source="t.csv",
            task="regression",
        )

    days = pd.DataFrame({"day": [3.0, 1.0, 90.0], "x": [1, 2, 3], "y": [1, 2, 3]})
    assert data_range(snapshot(days, "day")) == "day 1–90"
    dates = days.assign(when=pd.to_datetime(["2011-01-02", "2011-01-01", "2011-03-31"]))
    assert data_range(snapshot(dates, "when")) == "when 2011-01-01–2011-03-31"
    assert data_range(snapshot(days, None)) == "data abcdef01"


def test_evaluation_plots_render_without_pyplot(tmp_path) -> None:
    """The plots are plain Figures (pyplot keeps none of them alive between runs) whose
    margins leave the longest feature name inside the image."""
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from pipelines.evaluate import evaluation_plots

    before = plt.get_fignums()
    y = pd.Series(np.arange(50.0))
    importance = pd.Series({"x": 0.3, "a_rather_long_feature_name": 0.1})
    figures = evaluation_plots("regression", y, y.to_numpy() + 1.0, importance)
    assert sorted(figures) == ["feature_importance.png", "residuals.png"]
    for name, figure in figures.items():
        figure.savefig(tmp_path / name)
        assert (tmp_path / name).stat().st_size > 1000
    figure = figures["feature_importance.png"]
    renderer = figure._get_renderer()  # the Agg renderer savefig drew with
    labels = figure.axes[0].get_yticklabels()
    assert min(label.get_window_extent(renderer).x0 for label in labels) >= 0
    assert plt.get_fignums() == before


def _frames() -> dict[str, pd.DataFrame]:
    """Frames whose columns cover what `frame_schema` tells apart: dtypes with and without
    nulls, strings with a None or a NaN among them, mixed objects, an empty frame."""
    n = 50
    rng = np.random.default_rng(0)
    with_gaps = rng.normal(size=n)
    with_gaps[3] = np.nan
    stamps = pd.Series(pd.date_range("2011-01-01", periods=n, freq="h"))
    stamps[7] = pd.NaT
    return {
        "dense": pd.DataFrame(
            {
                "i": np.arange(n),
                "f": rng.normal(size=n),
                "b": np.arange(n) % 2 == 0,
                "s": [f"v{i % 3}" for i in range(n)],
                "t": pd.date_range("2011-01-01", periods=n, freq="h"),
            }
        ),
        "gaps": pd.DataFrame(
            {
                "f": with_gaps,
                "t": stamps,
                "s_none": ["a", None] * (n // 2),
                "s_nan": ["a", np.nan] * (n // 2),
                "nullable_int": pd.array([1, None] * (n // 2), dtype="Int64"),
                "category": pd.Categorical(["x", "y"] * (n // 2)),
            }
        ),
        "mixed": pd.DataFrame({"mixed": ["a", 1] * (n // 2)}),  # MLflow infers no schema
        "empty": pd.DataFrame(
            {"i": pd.Series([], dtype="int64"), "s": pd.Series([], dtype=object)}
        ),
    }


@pytest.mark.parametrize("name", ["dense", "gaps", "mixed", "empty"])
def test_frame_schema_is_the_schema_mlflow_infers(name: str) -> None:
    """The dataset inputs keep MLflow's schema (types and required flags), found faster."""
    from mlflow.data.pandas_dataset import PandasDataset

    frame = _frames()[name]
    inferred = mlflow.data.from_pandas(frame, name=name).schema
    assert isinstance(mlflow.data.from_pandas(frame), PandasDataset)
    assert frame_schema(frame) == inferred
    assert (inferred is None) == (name == "mixed")
    if inferred is not None:
        assert frame_schema(frame).to_dict() == inferred.to_dict()


def test_frame_schema_is_the_bundled_datas_schema() -> None:
    from config.settings import Settings
    from data.sources import load_dataset

    settings = Settings()
    frame = load_dataset(settings.dataset_spec(), settings.task).frame
    assert frame_schema(frame) == mlflow.data.from_pandas(frame).schema
    assert frame_schema(frame.head(0)) == mlflow.data.from_pandas(frame.head(0)).schema
