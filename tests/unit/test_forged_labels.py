"""Forged labels cannot move a model: the service's front door and label policy, then the
monitor's own figures and decision on what the log holds afterwards.

In process (no BentoML server; the real `bentoml serve` version is in
tests/integration/test_feedback.py): the gateway in front of `ServingApp`, champion v1
and a shadow challenger v2, honest labels that favour v1. An attacker who wants v2
promoted (or v1 rolled back) posts labels equal to v2's predictions every way they can.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from mlflow.types import ColSpec, Schema
from pydantic import SecretStr

from bentos.app import ServingApp
from bentos.gateway import Gateway, parsed_list
from bentos.schema import LabelSchema, RecordSchema
from bentos.store import LoadedModel
from config.serving import ServingSettings
from monitoring.figures import live_metric
from monitoring.policy import Action, Figures, Thresholds, decide

SCHEMA = RecordSchema.from_mlflow(Schema([ColSpec("double", "temp")]))
RULE = {"target": "y", "task": "regression", "kind": "numeric", "classes": None}
LABELS = LabelSchema.from_mlflow(Schema([ColSpec("double")]), {**RULE, "min": -50, "max": 50})
PREDICT_KEY, FEEDBACK_KEY = "predict-key", "feedback-key"
N, HONEST = 150, 120  # predictions; of them honestly labelled (the rest wait for labels)
THRESHOLDS = Thresholds(min_labelled_rows=100, live_promotion_margin=0.05, rollback_margin=0.1)


class Model:
    def __init__(self, factor: float) -> None:
        self.factor = factor

    def predict(self, frame: pd.DataFrame) -> Any:
        return (frame["temp"] * self.factor).to_numpy()


class Aliases:
    def aliases(self) -> dict[str, str]:
        return {"champion": "1", "challenger": "2"}


def service(app: ServingApp) -> Any:
    """Stands in for BentoML's routes: the list the gateway parsed → the app's handler
    (as `bentos.service` does: the gateway hands BentoML an empty list)."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        items = parsed_list()
        assert items is not None, "the gateway did not parse the body"
        if scope["path"] == "/predict":
            response = await app.predict(items)
        else:
            response = await app.feedback(items)
        await response(scope, receive, send)

    return Gateway(asgi, backend=lambda: app)


@pytest.fixture
def app(tmp_path: Path) -> Any:
    models = {"1": Model(1.0), "2": Model(2.0)}

    def loader(version: str, allow_import: bool) -> LoadedModel:
        return LoadedModel(version, f"m:v{version}", models[version], SCHEMA, LABELS)

    settings = ServingSettings(
        state_dir=tmp_path,
        tracking_uri="http://127.0.0.1:9",
        api_key=SecretStr(PREDICT_KEY),
        feedback_api_key=SecretStr(FEEDBACK_KEY),
    )
    app = ServingApp(settings, model_name="m", source=Aliases(), loader=loader)
    app.follower.poll_once()
    yield app
    app.writer.close()
    app.log.close()


def post(app: ServingApp, path: str, body: Any, key: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=service(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(path, json=body, headers=headers)

    return asyncio.run(go())


def temps() -> list[float]:
    return [round((i % 40) / 2 - 10, 2) for i in range(N)]  # -10 .. 9.5


def decisions(frame: pd.DataFrame) -> dict[str, Action]:
    """What the monitor would decide on this log, as a promotion and as a rollback check."""
    now = datetime.now(UTC)
    v1, n1, _ = live_metric(frame, "1", "regression", ("champion",))
    v2, n2, _ = live_metric(frame, "2", "regression", ("challenger", "shadow"))
    common = dict(now=now, metric_name="rmse", higher_is_better=False)
    promote = Figures(
        **common,
        champion_version="1",
        champion_metric=v1,
        champion_labelled_rows=n1,
        challenger_version="2",
        challenger_metric=v2,
        challenger_labelled_rows=n2,
    )
    # The same log read as "v1 was just promoted over v2": would v1 be rolled back?
    rollback = Figures(
        **common,
        champion_version="1",
        champion_metric=v1,
        champion_labelled_rows=n1,
        previous_version="2",
        previous_metric=v2,
        last_promotion_at=now - timedelta(minutes=5),
    )
    return {
        "promote": decide(promote, THRESHOLDS).action,
        "rollback": decide(rollback, THRESHOLDS).action,
    }


def test_forged_labels_cannot_cause_a_promotion_or_a_rollback(app: ServingApp) -> None:
    records = [{"temp": t, "request_id": f"r{i}"} for i, t in enumerate(temps())]
    answered = post(app, "/predict", {"records": records}, PREDICT_KEY)
    assert answered.status_code == 200, answered.text
    truth = temps()  # v1 (prediction = temp) is right, v2 (2 × temp) is wrong
    honest = [{"request_id": f"r{i}", "label": truth[i]} for i in range(HONEST)]
    stored = post(app, "/feedback", {"labels": honest}, FEEDBACK_KEY)
    assert stored.status_code == 200 and stored.json()["accepted"] == HONEST
    before = app.log.frame(roles=("champion", "challenger", "shadow"))
    # Honest labels judge v2 worse: it is retired, never promoted; v1 is not rolled back.
    honest_outcome = {"promote": Action.RETIRE_CHALLENGER, "rollback": Action.NONE}
    assert decisions(before) == honest_outcome

    # The attacker's labels: v2's own predictions, for every prediction.
    forged = [{"request_id": f"r{i}", "label": 2 * truth[i]} for i in range(N)]
    refused = {
        "no key": post(app, "/feedback", {"labels": forged}, None),
        "the predict key": post(app, "/feedback", {"labels": forged}, PREDICT_KEY),
        "a guessed key": post(app, "/feedback", {"labels": forged}, "feedback-key-2"),
    }
    assert {who: r.status_code for who, r in refused.items()} == {
        "no key": 401,
        "the predict key": 403,
        "a guessed key": 401,
    }
    assert "this key cannot post labels" in refused["the predict key"].json()["detail"]
    # With the feedback key: already labelled predictions keep their first label, made-up
    # ids are not stored, out-of-contract values are refused whole.
    relabel = post(app, "/feedback", {"labels": forged[:HONEST]}, FEEDBACK_KEY)
    assert relabel.status_code == 200 and relabel.json()["accepted"] == 0
    assert len(relabel.json()["already_labelled"]) == HONEST
    made_up = [{"request_id": f"forged-{i}", "label": 0.0} for i in range(200)]
    assert post(app, "/feedback", {"labels": made_up}, FEEDBACK_KEY).status_code == 422
    huge = [{"request_id": f"r{HONEST}", "label": 2**64}]
    assert post(app, "/feedback", {"labels": huge}, FEEDBACK_KEY).status_code == 422

    after = app.log.frame(roles=("champion", "challenger", "shadow"))
    pd.testing.assert_frame_equal(after, before)  # not one label changed or appeared
    assert app.log.known_request_ids([f"forged-{i}" for i in range(200)]) == set()
    assert decisions(after) == honest_outcome

    # The control: had the service stored those labels (newest wins, no scope), the very
    # same monitor would have promoted v2 and rolled v1 back.
    labels_by_id = {x["request_id"]: x["label"] for x in forged}
    poisoned = before.assign(label=before["request_id"].map(labels_by_id))
    assert decisions(poisoned) == {"promote": Action.PROMOTE, "rollback": Action.ROLLBACK}
