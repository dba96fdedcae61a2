"""The training run's params, metrics and epoch history go in with one `log_batch`."""

from __future__ import annotations

import mlflow
import pytest

from pipelines.train import log_params_and_metrics


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
