"""Serving settings: DRIFTLOOP_* variables, defaults in the state folder, the serve env."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from config.serving import ServingSettings
from driftloop.serving import service_env


def test_env_vars_configure_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_CANARY_SHARE", "0.25")
    monkeypatch.setenv("DRIFTLOOP_API_KEY", "s3cret")
    monkeypatch.setenv("DRIFTLOOP_MAX_BODY_BYTES", "5000")
    settings = ServingSettings()
    assert settings.canary_share == 0.25 and settings.max_body_bytes == 5000
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_defaults_live_in_the_state_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("BENTOML_HOME", raising=False)
    settings = ServingSettings(state_dir=tmp_path)
    assert settings.resolved_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert settings.resolved_prediction_log_url() == f"sqlite:///{tmp_path / 'predictions.db'}"
    assert settings.resolved_bentoml_home() == tmp_path / "bentoml"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert settings.resolved_tracking_uri() == "http://mlflow:5000"


def test_out_of_range_share_is_refused() -> None:
    with pytest.raises(ValueError, match="canary_share"):
        ServingSettings(canary_share=1.5)


def test_serve_env_carries_every_setting_to_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ServingSettings(
        state_dir=tmp_path,
        tracking_uri="http://m:5000",
        canary_share=0.3,
        api_key="k",
        access_log=True,
        request_timeout_s=7,
        workers=3,
    )
    env = service_env(settings)
    assert env["DRIFTLOOP_CANARY_SHARE"] == "0.3"
    assert env["DRIFTLOOP_API_KEY"] == "k"
    secrets = ServingSettings(
        state_dir=tmp_path, feedback_api_key="fb", routing_salt="s4lt", feedback_with_api_key=True
    )
    env_secrets = service_env(secrets)  # secrets as themselves, not '**********'
    assert env_secrets["DRIFTLOOP_FEEDBACK_API_KEY"] == "fb"
    assert env_secrets["DRIFTLOOP_ROUTING_SALT"] == "s4lt"
    assert env_secrets["DRIFTLOOP_FEEDBACK_WITH_API_KEY"] == "true"
    assert env["MLFLOW_TRACKING_URI"] == env["DRIFTLOOP_TRACKING_URI"] == "http://m:5000"
    assert env["BENTOML_HOME"] == str(tmp_path / "bentoml")
    overrides = json.loads(env["BENTOML_CONFIG_OVERRIDES"])["services"]["driftloop"]
    assert overrides == {
        "logging": {"access": {"enabled": True}},
        "traffic": {"timeout": 7.0},
        "workers": 3,
        "tracing": {"excluded_urls": ["/predict$", "/feedback$"]},
    }
    traced = json.loads(
        service_env(ServingSettings(state_dir=tmp_path, trace_predictions=True))[
            "BENTOML_CONFIG_OVERRIDES"
        ]
    )["services"]["driftloop"]
    assert "tracing" not in traced  # BentoML's own tracing settings apply to every route
    for key, value in env.items():  # the child reads them back from its environment
        monkeypatch.setenv(key, value)
    child = ServingSettings()
    assert child.canary_share == 0.3 and child.open_paths == settings.open_paths


def test_serving_without_a_champion_says_what_to_do(tmp_path: Path) -> None:
    from driftloop.serving import ServingError, check_champion

    settings = ServingSettings(
        model_name="nothing-yet",
        state_dir=tmp_path,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    with pytest.raises(
        ServingError, match=r"no champion for model nothing-yet: run `driftloop train` first"
    ):
        check_champion(settings)


def test_an_unreachable_registry_is_fatal_only_without_cached_aliases(tmp_path: Path) -> None:
    from driftloop.procs import free_port
    from driftloop.serving import ServingError, check_champion

    settings = ServingSettings(
        model_name="m",
        state_dir=tmp_path,
        tracking_uri=f"http://127.0.0.1:{free_port()}",
        registry_timeout_s=1,
    )
    with pytest.raises(ServingError, match="cannot reach the MLflow registry"):
        check_champion(settings)
    cache = settings.serving_state_path() / "aliases.json"
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps({"aliases": {"champion": "3"}}))
    assert check_champion(settings) == (None, None)  # the service starts from the cache


def test_serving_mlflow_timeouts_come_from_registry_timeout_s_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI/stack set the flows' MLflow retries; the service must not inherit them."""
    from bentos.service import _prepare_process

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    settings = ServingSettings(state_dir=tmp_path, registry_timeout_s=2.5)
    env = service_env(settings)
    assert env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert env["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"  # whole seconds, rounded up
    _prepare_process(2.5)  # in the worker, whatever the parent left in the environment
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"
