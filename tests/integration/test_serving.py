"""Serving for real: MLflow server → packaging → `bentoml serve` processes → HTTP.

Three served model set-ups, each one `bentoml serve` process shared by its tests:

- canary: champion v1 + challenger v2 at share 0.3, API key, small body limit;
- main: shadow mode, then promotion/rollback under load, the built Bento, and a
  kill -9 during a stream of requests.

Faults (a killed worker, a locked log, MLflow down and back) are in test_faults.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bentoml
import httpx
import mlflow
import pandas as pd
import psutil
import pytest
import sklearn
import skops
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from bentos.packaging import package_version
from bentos.store import bentoml_home
from config.serving import ServingSettings
from driftloop import procs
from driftloop.serving import serve_command
from predlog.log import PredictionLog
from registry import Registry, VersionInfo

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2] / "data" / "bundled" / "bikeshare_2011.csv"
CATEGORICAL = ["mnth", "weathersit"]
TRUSTED = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]
API_KEY = "test-key-0123"
POLL_S = 0.5


# -- models -------------------------------------------------------------------------------


@dataclass
class Models:
    """Two fitted versions (they answer differently) and the feature rows to send."""

    pipelines: list[Pipeline]
    features: pd.DataFrame
    signature: Any


@pytest.fixture(scope="module")
def models() -> Models:
    frame = pd.read_csv(DATA).iloc[:600]
    y = frame.pop("bikers").astype(float)
    X = frame.drop(columns=["casual", "registered", "day"])
    fitted = []
    for iterations in (10, 40):
        pre = ColumnTransformer(
            [("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)], remainder="passthrough"
        )
        pipe = Pipeline(
            [("pre", pre), ("model", HistGradientBoostingRegressor(max_iter=iterations))]
        )
        fitted.append(pipe.fit(X.iloc[:400], y.iloc[:400]))
    return Models(fitted, X.iloc[400:].reset_index(drop=True), infer_signature(X, y))


@contextmanager
def tracking(uri: str) -> Iterator[None]:
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def register(uri: str, model_name: str, models: Models) -> list[VersionInfo]:
    """Log both pipelines as sklearn pyfuncs and register them as versions 1 and 2."""
    registry = Registry(model_name, uri)
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(f"{model_name}-exp")
    infos = []
    with tracking(uri):
        for pipe in models.pipelines:
            with mlflow.start_run(experiment_id=experiment_id) as run:
                logged = mlflow.sklearn.log_model(
                    pipe,
                    name="model",
                    signature=models.signature,
                    input_example=models.features.head(3),
                    pip_requirements=[
                        f"scikit-learn=={sklearn.__version__}",
                        f"skops=={skops.__version__}",
                    ],
                    skops_trusted_types=TRUSTED,
                )
            infos.append(
                registry.register(
                    logged.model_uri,
                    run.info.run_id,
                    tags={"family": "sklearn", "task": "regression", "data_digest": "digest-42"},
                )
            )
    return infos


def records(models: Models, n: int, prefix: str | None = None) -> list[dict[str, Any]]:
    """n feature records (cycling through held-out rows), with request ids if `prefix`."""
    rows = models.features.to_dict(orient="records")
    out = []
    for i in range(n):
        record = {
            k: (v.item() if hasattr(v, "item") else v) for k, v in rows[i % len(rows)].items()
        }
        if prefix is not None:
            record["request_id"] = f"{prefix}-{i}"
        out.append(record)
    return out


# -- services ------------------------------------------------------------------------------


@dataclass
class Served:
    settings: ServingSettings
    home: Path
    server: procs.Server
    bento_tag: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.base_url

    def predict(
        self, body: Any, client: httpx.Client | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        sender = client or httpx
        return sender.post(f"{self.url}/predict", json=body, headers=headers, timeout=15, **kwargs)

    def get(self, path: str) -> dict[str, Any]:
        return httpx.get(f"{self.url}{path}", headers=self.headers, timeout=10).json()

    def log(self) -> PredictionLog:
        return PredictionLog(self.settings.resolved_prediction_log_url())


def start(name: str, settings: ServingSettings, home: Path, bento_tag: str | None = None) -> Served:
    port = procs.free_port()
    argv, env, cwd = serve_command(settings, port, bento_tag=bento_tag)
    env["BENTOML_HOME"] = str(home)
    server = procs.start_server(
        name,
        argv,
        health_url=f"http://127.0.0.1:{port}/readyz",
        base_url=f"http://127.0.0.1:{port}",
        log_path=settings.state_path / f"{name}.log",
        env=env,
        cwd=cwd,
    )
    try:
        server.wait_healthy(timeout_s=120)
    except Exception:
        server.stop()
        raise
    headers = {"Authorization": f"Bearer {API_KEY}"} if settings.api_key else {}
    return Served(settings, home, server, bento_tag, headers)


def kill_9(server: procs.Server) -> list[int]:
    """SIGKILL `bentoml serve` and its workers at once (crash simulation); their pids.

    The serving worker runs in its own session, so killing the arbiter's process
    group alone would leave it running.
    """
    parent = psutil.Process(server.process.pid)
    victims = [*parent.children(recursive=True), parent]
    for victim in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.send_signal(signal.SIGKILL)
    psutil.wait_procs(victims, timeout=10)
    server.process.wait(timeout=10)
    return [v.pid for v in victims]


def settings_for(state: Path, model_name: str, uri: str, **overrides: Any) -> ServingSettings:
    return ServingSettings(
        model_name=model_name,
        state_dir=state,
        tracking_uri=uri,
        alias_poll_interval_s=POLL_S,
        registry_timeout_s=2.0,
        registry_backoff_initial_s=0.5,
        registry_backoff_max_s=2.0,
        **{"workers": 1, **overrides},  # one worker per test service; test_faults runs two
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The BentoML home (model + bento store) all services of this module share."""
    return tmp_path_factory.mktemp("bentoml-home")


def wait_for(served: Served, predicate: Any, what: str, timeout_s: float = 20.0) -> None:
    procs.wait_until(lambda: predicate(served.get("/metadata")), timeout_s, 0.2, what)


# ==========================================================================================
# canary + security
# ==========================================================================================


@pytest.fixture(scope="module")
def canary(
    mlflow_server: procs.Server,
    models: Models,
    home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Served, Registry]]:
    name = f"serve-canary-{uuid.uuid4().hex[:6]}"
    uri = mlflow_server.base_url
    v1, _ = register(uri, name, models)
    registry = Registry(name, uri)
    package_version(name, v1.version, uri, home=home)  # v2 stays unpackaged: imported live
    registry.set_alias("champion", v1.version, reason="test")
    state = tmp_path_factory.mktemp("canary")
    settings = settings_for(
        state, name, uri, canary_share=0.3, api_key=API_KEY, max_body_bytes=50_000
    )
    served = start("serve-canary", settings, home)
    yield served, registry
    served.server.stop()


def test_valid_request_answers_with_predictions_ids_and_version(
    canary: tuple[Served, Registry], models: Models
) -> None:
    served, _ = canary
    body = {"records": records(models, 2)}
    body["records"][0]["request_id"] = "caller-id-1"
    response = served.predict(body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_version"] == "1" and response.headers["x-model-version"] == "1"
    assert len(answer["predictions"]) == 2 and all(
        isinstance(p, float) for p in answer["predictions"]
    )
    assert answer["request_ids"][0] == "caller-id-1" and len(answer["request_ids"][1]) == 32


def test_missing_or_wrong_key_is_401(canary: tuple[Served, Registry], models: Models) -> None:
    served, _ = canary
    body = {"records": records(models, 1)}
    assert served.predict(body, headers={"Authorization": ""}).status_code == 401
    wrong = served.predict(body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "Bearer" in wrong.json()["detail"]
    # An API key but no feedback key: nobody may post labels (tests/integration/test_feedback.py).
    feedback = httpx.post(
        f"{served.url}/feedback", json={"labels": [{"request_id": "x", "label": 1}]}
    )
    assert feedback.status_code == 403
    assert "DRIFTLOOP_FEEDBACK_API_KEY" in feedback.json()["detail"]


def test_invalid_records_get_422_naming_field_value_and_expectation(
    canary: tuple[Served, Registry], models: Models
) -> None:
    served, _ = canary
    bad = records(models, 2)
    bad[1]["temp"] = "hot"
    del bad[1]["hum"]
    response = served.predict({"records": bad})
    assert response.status_code == 422
    detail = {tuple(d["loc"]): d for d in response.json()["detail"]}
    assert detail[("records", 1, "temp")]["msg"] == "expected a number, got 'hot'"
    assert detail[("records", 1, "temp")]["input"] == "hot"
    assert detail[("records", 1, "hum")]["msg"] == "missing feature 'hum' (expected a number)"


def test_predict_is_counted_and_timed_by_route_and_status_on_metrics(
    canary: tuple[Served, Registry], models: Models
) -> None:
    """The gateway answers /predict itself; BentoML's request metrics (outside it) still
    count and time each answer by route and status, and it still says who served it."""
    served, _ = canary

    def seen(name: str, status: str) -> float:
        lines = [
            line
            for line in httpx.get(f"{served.url}/metrics").text.splitlines()
            if line.startswith(name + "{")
            and 'endpoint="/predict"' in line
            and f'http_response_code="{status}"' in line
        ]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)

    before = {s: seen("bentoml_service_request_total", s) for s in ("200", "422")}
    ok = served.predict({"records": records(models, 1)})
    assert ok.status_code == 200 and ok.headers["server"].startswith("BentoML Service/")
    assert served.predict({"records": [{"temp": "hot"}]}).status_code == 422
    for status in ("200", "422"):
        assert seen("bentoml_service_request_total", status) == before[status] + 1, status
        assert seen("bentoml_service_request_duration_seconds_count", status) >= 1, status


def test_oversized_bodies_get_413_and_non_json_415(
    canary: tuple[Served, Registry], models: Models
) -> None:
    served, _ = canary
    assert served.predict({"records": records(models, 400)}).status_code == 413
    pickle = httpx.post(
        f"{served.url}/predict",
        content=b"\x80\x04K\x01.",
        headers={**served.headers, "Content-Type": "application/vnd.bentoml+pickle"},
    )
    assert pickle.status_code == 415


def test_canary_share_is_respected_and_sticky(
    canary: tuple[Served, Registry], models: Models
) -> None:
    served, registry = canary
    registry.set_alias("challenger", "2", reason="canary test")
    # v2 was never packaged: the service imports it from MLflow in the background.
    wait_for(served, lambda m: (m["challenger"] or {}).get("version") == "2", "challenger v2")
    ids_seen: dict[str, str] = {}
    with httpx.Client(headers=served.headers, timeout=15) as client:
        for batch in range(10):
            body = {"records": records(models, 100, prefix=f"canary-{batch}")}
            response = served.predict(body, client)
            assert response.status_code == 200, response.text
            answer = response.json()
            ids_seen.update(zip(answer["request_ids"], answer["model_versions"], strict=True))
        assert len(ids_seen) == 1000
        to_challenger = sum(version == "2" for version in ids_seen.values())
        assert 250 <= to_challenger <= 350, to_challenger  # 30 % ± 5 %
        again = served.predict({"records": records(models, 100, prefix="canary-3")}, client).json()
        assert again["model_versions"] == [ids_seen[i] for i in again["request_ids"]]
        # An entity key wins over request ids: one entity, one model.
        entity = [dict(r, entity_id="station-7") for r in records(models, 20)]
        assert len(set(served.predict({"records": entity}, client).json()["model_versions"])) == 1
    meta = served.get("/metadata")
    assert meta["routing"] == {
        "canary_share": 0.3,
        "canary_share_from": "setting canary_share (DRIFTLOOP_CANARY_SHARE)",
        "mode": "canary",
        "sticky_by": "entity_id, else request_id",
    }
    assert [f["name"] for f in meta["schema"]["features"]][:2] == ["season", "mnth"]
    metrics = httpx.get(f"{served.url}/metrics").text
    labels = f'model_name="{registry.model_name}",model_version="2",role="challenger"'
    assert f"driftloop_predictions_total{{{labels}}}" in metrics


def test_the_canary_share_follows_the_registry_tag_without_a_restart(
    canary: tuple[Served, Registry], models: Models
) -> None:
    served, registry = canary
    if registry.aliases().get("challenger") != "2":
        registry.set_alias("challenger", "2", reason="share test")
    wait_for(served, lambda m: (m["challenger"] or {}).get("version") == "2", "challenger v2")
    pid = served.server.process.pid
    body = {"records": records(models, 100, prefix="share")}
    try:
        registry.set_canary_share(1.0, reason="integration: everything to the challenger")
        wait_for(served, lambda m: m["routing"]["canary_share"] == 1.0, "share 1.0 followed")
        routing = served.get("/metadata")["routing"]
        assert routing["canary_share_from"] == "registry tag driftloop.canary_share"
        answer = served.predict(body).json()
        assert set(answer["model_versions"]) == {"2"}

        registry.set_canary_share(None, reason="integration: back to the setting")
        wait_for(served, lambda m: m["routing"]["canary_share"] == 0.3, "setting's 0.3 again")
        answer = served.predict(body).json()
        assert set(answer["model_versions"]) == {"1", "2"}  # 30 % of 100 keys: both answer
    finally:
        registry.set_canary_share(None, reason="integration: cleanup")
    assert served.server.process.pid == pid and served.server.process.poll() is None
    recorded = [m for m in registry.history.list(5) if m.action == "canary-share"]
    assert any("→ 1:" in m.reason for m in recorded)


def test_the_prefect_package_flow_builds_the_bento_of_a_version(
    canary: tuple[Served, Registry], prefect_server: procs.Server, tmp_path: Path
) -> None:
    """`package_flow` on a real Prefect server, for the version the service imported live."""
    served, registry = canary
    script = (
        "from pipelines.package import package_flow; "
        f"print(package_flow('2', model_name='{registry.model_name}'))"
    )
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server.base_url,
        "MLFLOW_TRACKING_URI": registry.tracking_uri,
        "DRIFTLOOP_STATE_DIR": str(tmp_path),
        "BENTOML_HOME": str(served.home),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-2000:]
    tag = f"{registry.model_name}-service:v2"
    assert result.stdout.strip().splitlines()[-1] == tag
    assert registry.get("2").tags["bento_tag"] == tag


# ==========================================================================================
# shadow, the built Bento, rollback under load, durability
# ==========================================================================================


@pytest.fixture(scope="module")
def main(
    mlflow_server: procs.Server,
    models: Models,
    home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Served, Registry]]:
    name = f"serve-main-{uuid.uuid4().hex[:6]}"
    uri = mlflow_server.base_url
    for info in register(uri, name, models):
        package_version(name, info.version, uri, home=home)
    registry = Registry(name, uri)
    registry.set_alias("champion", "1", reason="test")
    settings = settings_for(tmp_path_factory.mktemp("main"), name, uri, canary_share=0.0)
    served = start("serve-main", settings, home)
    yield served, registry
    served.server.stop()


def test_packaging_builds_a_labelled_bento_and_tags_the_mlflow_version(
    main: tuple[Served, Registry],
) -> None:
    served, registry = main
    name = registry.model_name
    info = registry.get("1")
    assert info.tags["bento_tag"] == f"{name}-service:v1"
    assert info.tags["bento_model_tag"] == f"{name}:v1"
    with bentoml_home(served.home):
        bento = bentoml.bentos.get(f"{name}-service:v1")
        again = package_version(name, "1", registry.tracking_uri, home=served.home)
    assert bento.info.labels["mlflow_model_name"] == name
    assert bento.info.labels["mlflow_model_version"] == "1"
    assert bento.info.labels["mlflow_run_id"] == info.run_id
    assert bento.info.labels["data_digest"] == "digest-42"
    assert [str(m.tag) for m in bento.info.models] == [f"{name}:v1"]
    assert again.built is False and again.bento_tag == f"{name}-service:v1"  # immutable


def test_shadow_mode_logs_both_models_and_answers_with_the_champion(
    main: tuple[Served, Registry], models: Models
) -> None:
    served, registry = main
    registry.set_alias("challenger", "2", reason="shadow test")
    wait_for(served, lambda m: (m["challenger"] or {}).get("version") == "2", "challenger v2")
    response = served.predict({"records": records(models, 5, prefix="shadow")})
    assert response.status_code == 200 and response.json()["model_versions"] == ["1"] * 5
    log = served.log()
    rows = log.predictions(request_ids=[f"shadow-{i}" for i in range(5)])
    log.close()
    assert (
        sorted((r.role, r.model_version) for r in rows)
        == [("champion", "1")] * 5 + [("shadow", "2")] * 5
    )
    shadow = {r.request_id: r.prediction for r in rows if r.role == "shadow"}
    champion = {r.request_id: r.prediction for r in rows if r.role == "champion"}
    assert shadow != champion  # two different models really predicted
    registry.clear_alias("challenger", reason="end of shadow test")
    wait_for(served, lambda m: m["challenger"] is None, "challenger cleared")


def test_the_built_bento_serves_the_same_answers_as_the_repo(
    main: tuple[Served, Registry], models: Models, tmp_path_factory: pytest.TempPathFactory
) -> None:
    served, registry = main
    tag = f"{registry.model_name}-service:v1"
    settings = settings_for(
        tmp_path_factory.mktemp("bento"), registry.model_name, registry.tracking_uri
    )
    bento = start("serve-bento", settings, served.home, bento_tag=tag)
    try:
        body = {"records": records(models, 30, prefix="same")}
        from_bento = bento.predict(body).json()
        from_repo = served.predict(body).json()
        assert from_bento["predictions"] == from_repo["predictions"]
        assert from_bento["model_version"] == from_repo["model_version"] == "1"
        assert bento.get("/metadata")["bento"] == tag
    finally:
        bento.server.stop()


def test_rollback_under_load_switches_within_the_interval_without_failures(
    main: tuple[Served, Registry], models: Models
) -> None:
    served, registry = main
    registry.promote("2", reason="rollback test")  # champion 2, previous 1
    wait_for(served, lambda m: m["champion"]["version"] == "2", "champion v2")
    answers: list[tuple[float, int, str | None]] = []
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        body = {"records": records(models, 1)}
        with httpx.Client(timeout=15) as client:
            while not stop.is_set():
                try:
                    response = served.predict(body, client)
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                version = (
                    response.json().get("model_version") if response.status_code == 200 else None
                )
                answers.append((time.monotonic(), response.status_code, version))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        procs.wait_until(lambda: len(answers) > 50, 20, what="load before the rollback")
        moved_at = time.monotonic()
        registry.rollback(reason="rollback test")
        procs.wait_until(
            lambda: bool(answers) and answers[-1][2] == "1", 10, what="answers from v1"
        )
        time.sleep(1.0)  # keep the load on after the switch
    finally:
        stop.set()
        worker.join(20)
    assert failures == []
    assert {status for _, status, _ in answers} == {200}
    switched_at = next(t for t, _, version in answers if t > moved_at and version == "1")
    assert switched_at - moved_at < POLL_S + 3.0
    after = [version for t, _, version in answers if t >= switched_at]
    assert set(after) == {"1"}  # no flapping back to the rolled-back version


def test_every_acknowledged_prediction_survives_kill_9(
    main: tuple[Served, Registry], models: Models
) -> None:
    served, _ = main
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def stream(worker: int) -> None:
        with httpx.Client(timeout=5) as client:
            n = 0
            while not stop.is_set():
                ids = [f"kill-{worker}-{n}-{k}" for k in range(3)]
                n += 1
                body = {
                    "records": [
                        dict(r, request_id=i) for r, i in zip(records(models, 3), ids, strict=True)
                    ]
                }
                try:
                    response = served.predict(body, client)
                except httpx.HTTPError:
                    return  # the server is gone
                if response.status_code == 200:
                    with lock:
                        acknowledged.extend(response.json()["request_ids"])

    workers = [threading.Thread(target=stream, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()
    try:
        procs.wait_until(lambda: len(acknowledged) > 600, 30, what="a stream of answers")
        killed = kill_9(served.server)  # mid-stream; the clients notice by themselves
        for w in workers:
            w.join(20)
    finally:
        stop.set()
        for w in workers:
            w.join(20)
    assert not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in killed
    )
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{served.url}/healthz", timeout=2)
    with lock:
        answered = set(acknowledged)
    log = served.log()
    logged = log.known_request_ids(answered)
    log.close()
    assert answered and answered <= logged, f"{len(answered - logged)} answered ids not logged"


# ==========================================================================================
# a classifier: probabilities and the recorded threshold
# ==========================================================================================


def register_classifier(uri: str, model_name: str, thresholds: list[float]) -> pd.DataFrame:
    """One fitted busy/quiet classifier, registered once per threshold (each version records
    its decision rule as training does); returns feature rows to send."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from registry.decision import DECISION_KEY, Decision

    frame = pd.read_csv(DATA).iloc[:1500]
    y = (frame.pop("bikers") > 100).map({True: "busy", False: "quiet"})
    X = frame.drop(columns=["casual", "registered", "day"])
    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)  # as the family's
    pre = ColumnTransformer([("cat", encoder, CATEGORICAL)], remainder="passthrough")
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0)
    pipe = Pipeline([("pre", pre), ("model", model)]).fit(X.iloc[:1000], y.iloc[:1000])
    registry = Registry(model_name, uri)
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(f"{model_name}-exp")
    with tracking(uri):
        for threshold in thresholds:
            rule = Decision(tuple(pipe.classes_.tolist()), "busy", threshold)
            with mlflow.start_run(experiment_id=experiment_id) as run:
                logged = mlflow.sklearn.log_model(
                    pipe,
                    name="model",
                    signature=infer_signature(X, y),
                    input_example=X.head(3),
                    metadata={DECISION_KEY: rule.to_dict()},
                    pip_requirements=[
                        f"scikit-learn=={sklearn.__version__}",
                        f"skops=={skops.__version__}",
                    ],
                    skops_trusted_types=TRUSTED,
                )
            registry.register(
                logged.model_uri,
                run.info.run_id,
                tags={"family": "sklearn", "task": "classification", **rule.tags()},
            )
    return X.iloc[1000:].reset_index(drop=True)


@pytest.mark.slow  # its own `bentoml serve`: 72 s measured on the shared, loaded 2 cores
def test_a_served_classifier_answers_probabilities_and_its_threshold_decides(
    mlflow_server: procs.Server, home: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    name = f"serve-clf-{uuid.uuid4().hex[:6]}"
    uri = mlflow_server.base_url
    features = register_classifier(uri, name, [0.5, 0.9])  # v1: 0.5, v2: 0.9
    registry = Registry(name, uri)
    registry.set_alias("champion", "1", reason="test")
    settings = settings_for(tmp_path_factory.mktemp("clf"), name, uri)
    served = start("serve-clf", settings, home)
    try:
        rows = features.head(200).to_dict(orient="records")
        first = served.predict({"records": rows}).json()
        assert first["model_version"] == "1"
        probabilities = first["probabilities"]
        assert all(sorted(p) == ["busy", "quiet"] for p in probabilities)
        assert all(abs(sum(p.values()) - 1.0) < 1e-9 for p in probabilities)
        p_busy = [p["busy"] for p in probabilities]
        assert first["predictions"] == ["busy" if p >= 0.5 else "quiet" for p in p_busy]
        # The served probabilities are the pipeline's own (served through bentos.lean).
        with tracking(uri):
            pipeline = mlflow.sklearn.load_model(f"models:/{name}/1")
        sent = pd.DataFrame(rows).astype(features.dtypes.to_dict())
        own = pipeline.predict_proba(sent)[:, list(pipeline.classes_).index("busy")]
        assert p_busy == pytest.approx(own.tolist(), rel=1e-12, abs=0)
        rule = served.get("/metadata")["champion"]["classifier"]
        assert (rule["positive_class"], rule["decision_threshold"]) == ("busy", 0.5)

        registry.promote("2", reason="a stricter threshold")
        wait_for(served, lambda m: m["champion"]["version"] == "2", "champion v2")
        second = served.predict({"records": rows}).json()
        assert second["model_version"] == "2"
        assert [p["busy"] for p in second["probabilities"]] == pytest.approx(p_busy)
        assert second["predictions"] == ["busy" if p >= 0.9 else "quiet" for p in p_busy]
        flipped = sum(
            a != b for a, b in zip(first["predictions"], second["predictions"], strict=True)
        )
        assert flipped == sum(0.5 <= p < 0.9 for p in p_busy) > 0

        log = served.log()
        logged = log.predictions(model_name=name)
        log.close()
        assert len(logged) == 400
        assert [r.scores["busy"] for r in logged] == pytest.approx(p_busy + p_busy)
    finally:
        served.server.stop()
