"""Labels you can trust, for real: MLflow server → `bentoml serve` → HTTP /feedback.

One served classifier (target `busy`: "Yes"/"No") whose label rule comes from its data
contract through the MLflow model's metadata, with an API key and a separate feedback
key. Forged labels (wrong scope, made-up ids, relabelling, values outside the classes)
must leave the prediction log — and so the monitor's live metric — exactly as it was.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
import sklearn
import skops
from mlflow import MlflowClient
from mlflow.models import infer_signature
from pydantic import SecretStr
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from test_serving import (
    API_KEY,
    CATEGORICAL,
    DATA,
    TRUSTED,
    Served,
    settings_for,
    start,
    tracking,
)

from bentos.routing import SALT_FILE
from data.contract import LABEL_RULE_KEY, build_contract, label_rule
from driftloop import procs
from monitoring.drift import measure_performance
from monitoring.figures import live_metric
from registry import Registry

pytestmark = pytest.mark.integration

FEEDBACK_KEY = "feedback-key-4567"
N = 120


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bentoml-home-feedback")


@pytest.fixture(scope="module")
def labelled(
    mlflow_server: procs.Server, home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Served, pd.DataFrame]]:
    """A Yes/No classifier served with both keys; the feature rows it will be asked about."""
    frame = pd.read_csv(DATA).iloc[:600]
    busy = pd.Series(np.where(frame.pop("bikers") > 60, "Yes", "No"), name="busy")
    X = frame.drop(columns=["casual", "registered", "day"])
    pre = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)], remainder="passthrough"
    )
    pipe = Pipeline([("pre", pre), ("model", HistGradientBoostingClassifier(max_iter=10))])
    pipe.fit(X.iloc[:400], busy.iloc[:400])
    contract = build_contract(pd.concat([X, busy], axis=1).iloc[:400], "busy", None)
    rule = label_rule(contract, "classification", busy.iloc[:400])
    name = f"serve-feedback-{uuid.uuid4().hex[:6]}"
    uri = mlflow_server.base_url
    client = MlflowClient(uri)
    with tracking(uri), mlflow.start_run(experiment_id=client.create_experiment(name)) as run:
        logged = mlflow.sklearn.log_model(
            pipe,
            name="model",
            signature=infer_signature(X, busy),
            input_example=X.head(3),
            metadata={LABEL_RULE_KEY: rule},
            pip_requirements=[
                f"scikit-learn=={sklearn.__version__}",
                f"skops=={skops.__version__}",
            ],
            skops_trusted_types=[*TRUSTED, "numpy.dtypes.ObjectDType"],
        )
    registry = Registry(name, uri)
    version = registry.register(logged.model_uri, run.info.run_id, tags={"task": "classification"})
    registry.set_alias("champion", version.version, reason="test")
    settings = settings_for(
        tmp_path_factory.mktemp("feedback"),
        name,
        uri,
        api_key=SecretStr(API_KEY),
        feedback_api_key=SecretStr(FEEDBACK_KEY),
    )
    served = start("serve-feedback", settings, home)
    yield served, X.iloc[400:].reset_index(drop=True)
    served.server.stop()


def post_labels(served: Served, labels: list[dict[str, Any]], key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(
        f"{served.url}/feedback", json={"labels": labels}, headers=headers, timeout=15
    )


def test_only_trusted_labels_reach_the_log_and_the_live_metric(
    labelled: tuple[Served, pd.DataFrame],
) -> None:
    served, features = labelled
    rows = features.head(N).to_dict(orient="records")
    body = {"records": [{**row, "request_id": f"fb-{i}"} for i, row in enumerate(rows)]}
    answer = served.predict(body)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert set(predictions) <= {"Yes", "No"}
    log = served.log()
    try:
        # Honest labels: the truth is the model's answer except for every fourth record.
        truth = [p if i % 4 else ("No" if p == "Yes" else "Yes") for i, p in enumerate(predictions)]
        honest = [{"request_id": f"fb-{i}", "label": truth[i]} for i in range(100)]
        forged = [{"request_id": f"fb-{i}", "label": predictions[i]} for i in range(N)]

        # 1. wrong scope: nothing stored
        assert post_labels(served, forged, None).status_code == 401
        with_predict_key = post_labels(served, forged, API_KEY)
        assert with_predict_key.status_code == 403
        assert "this key cannot post labels" in with_predict_key.json()["detail"]
        assert log.feedback() == []

        # 2. labels outside the target's classes: 422 naming field, value and classes
        for bad in ["yes", "Maybe", 1]:
            refused = post_labels(served, [{"request_id": "fb-0", "label": bad}], FEEDBACK_KEY)
            assert refused.status_code == 422, refused.text
            [error] = refused.json()["detail"]
            assert error["loc"] == ["labels", 0, "label"] and error["input"] == bad
            assert "of target 'busy'; allowed: 'No', 'Yes'" in error["msg"], error["msg"]
        assert log.feedback() == []

        # 3. the feedback key: known ids stored, made-up ones listed and dropped
        made_up = [{"request_id": f"made-up-{i}", "label": "Yes"} for i in range(5)]
        stored = post_labels(served, honest + made_up, FEEDBACK_KEY)
        assert stored.status_code == 200, stored.text
        assert stored.json()["accepted"] == 100
        assert stored.json()["unknown_request_ids"] == [x["request_id"] for x in made_up]
        only_made_up = post_labels(served, made_up, FEEDBACK_KEY)
        assert only_made_up.status_code == 422
        window = log.frame()
        metric, n, _ = live_metric(window, "1", "classification", ("champion",))
        honest_only = measure_performance(truth[:100], predictions[:100], "classification")
        assert (metric, n) == (pytest.approx(honest_only.value), 100)
        assert metric < 1.0  # every fourth honest label disagrees with the model

        # 4. relabelling with the right key: the first label stays, the rest is history
        relabel = post_labels(served, forged, FEEDBACK_KEY)
        assert relabel.status_code == 200, relabel.text
        assert relabel.json()["accepted"] == N - 100  # only the never-labelled ones count
        assert len(relabel.json()["already_labelled"]) == 100
        after = log.frame()
        labelled_before = window["label"].notna()
        pd.testing.assert_series_equal(
            after["label"][labelled_before], window["label"][labelled_before]
        )
        metric_after, n_after, _ = live_metric(
            after[labelled_before], "1", "classification", ("champion",)
        )
        assert (metric_after, n_after) == (metric, n)
        assert all(f.request_id.startswith("fb-") for f in log.feedback())
        assert len(log.label_history()) == 100
    finally:
        log.close()


def test_metadata_says_who_may_post_labels_and_the_label_rule_but_no_secret(
    labelled: tuple[Served, pd.DataFrame],
) -> None:
    served, _ = labelled
    meta = httpx.get(f"{served.url}/metadata", headers=served.headers, timeout=10).json()
    assert meta["feedback_auth"] == "the feedback key (DRIFTLOOP_FEEDBACK_API_KEY)"
    assert meta["schema"]["label_rule"]["classes"] == ["No", "Yes"]
    salt_file = served.settings.serving_state_path() / SALT_FILE
    assert salt_file.stat().st_mode & 0o777 == 0o600
    secret = salt_file.read_text().strip()
    text = httpx.get(f"{served.url}/metadata", headers=served.headers, timeout=10).text
    assert secret not in text and FEEDBACK_KEY not in text and API_KEY not in text
