"""The service's behaviour in process (no BentoML server): answers, routing, shadow, log."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow.types import ColSpec, Schema

from bentos.app import ServingApp
from bentos.schema import LabelSchema, RecordSchema
from bentos.store import LoadedModel
from config.serving import ServingSettings

SCHEMA = RecordSchema.from_mlflow(Schema([ColSpec("double", "temp"), ColSpec("string", "city")]))


class Model:
    """A pyfunc stand-in: prediction = temp * factor."""

    def __init__(self, factor: float, broken: bool = False) -> None:
        self.factor, self.broken, self.calls, self.nan = factor, broken, 0, False

    def predict(self, frame: pd.DataFrame) -> Any:
        self.calls += 1
        if self.broken:
            raise RuntimeError("challenger exploded")
        out = (frame["temp"] * self.factor).to_numpy()
        if self.nan:
            out[0] = float("nan")
        return out


class Registry:
    def __init__(self, aliases: dict[str, str]) -> None:
        self.current, self.down = aliases, False

    def aliases(self) -> dict[str, str]:
        if self.down:
            raise ConnectionError("refused")
        return dict(self.current)


_OPEN: list[ServingApp] = []


@pytest.fixture(autouse=True)
def _close_apps() -> Any:
    yield
    while _OPEN:
        app = _OPEN.pop()
        app.writer.close()
        app.log.close()


def make_app(
    tmp_path: Path,
    aliases: dict[str, str],
    share: float = 0.0,
    broken: set[str] = frozenset(),
    **settings: Any,
) -> tuple[ServingApp, dict[str, Model], Registry]:
    models = {v: Model(float(v), broken=v in broken) for v in ("1", "2")}

    def loader(version: str, allow_import: bool) -> LoadedModel:
        return LoadedModel(version, f"m:v{version}", models[version], SCHEMA, LabelSchema("number"))

    registry = Registry(aliases)
    config = ServingSettings(
        state_dir=tmp_path, tracking_uri="http://127.0.0.1:9", canary_share=share, **settings
    )
    app = ServingApp(config, model_name="m", source=registry, loader=loader)
    _OPEN.append(app)
    app.follower.poll_once()
    return app, models, registry


def run(app: ServingApp, coro: Any) -> tuple[int, dict[str, Any]]:
    async def go() -> tuple[int, dict[str, Any]]:
        response = await coro
        return response.status_code, json.loads(response.body)

    return asyncio.run(go())


def records(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"temp": float(i), "city": "dc", "request_id": f"r{i}", **extra} for i in range(n)]


def test_champion_answers_and_every_prediction_is_logged(tmp_path: Path) -> None:
    app, models, _ = make_app(tmp_path, {"champion": "1"})
    status, body = run(app, app.predict(records(3)))
    assert status == 200
    assert body == {
        "predictions": [0.0, 1.0, 2.0],
        "request_ids": ["r0", "r1", "r2"],
        "model_version": "1",
        "model_versions": ["1", "1", "1"],
    }
    logged = app.log.predictions()
    assert [(r.request_id, r.role, r.prediction) for r in logged] == [
        ("r0", "champion", 0.0),
        ("r1", "champion", 1.0),
        ("r2", "champion", 2.0),
    ]
    assert logged[0].features == {"temp": 0.0, "city": "dc"}
    assert models["1"].calls == 1  # one model call for the request's three records


def test_shadow_mode_logs_both_and_answers_with_the_champion(tmp_path: Path) -> None:
    app, _, _ = make_app(tmp_path, {"champion": "1", "challenger": "2"}, share=0.0)
    status, body = run(app, app.predict(records(2)))
    assert status == 200 and body["model_versions"] == ["1", "1"]
    roles = sorted((r.request_id, r.role, r.model_version) for r in app.log.predictions())
    assert roles == [
        ("r0", "champion", "1"),
        ("r0", "shadow", "2"),
        ("r1", "champion", "1"),
        ("r1", "shadow", "2"),
    ]


def test_a_failing_challenger_falls_back_to_the_champion(tmp_path: Path) -> None:
    app, _, _ = make_app(tmp_path, {"champion": "1", "challenger": "2"}, share=1.0, broken={"2"})
    status, body = run(app, app.predict(records(2)))
    assert status == 200 and body["model_versions"] == ["1", "1"]


def test_canary_routes_by_entity_so_an_entity_sees_one_model(tmp_path: Path) -> None:
    app, _, _ = make_app(tmp_path, {"champion": "1", "challenger": "2"}, share=0.5)
    entities = [f"e{i}" for i in range(40)]
    batch = [{"temp": 1.0, "city": "dc", "entity_id": e} for e in entities]
    _, first = run(app, app.predict(batch))
    _, again = run(app, app.predict(batch))  # new request ids, same entities
    assert first["model_versions"] == again["model_versions"]
    assert set(first["model_versions"]) == {"1", "2"} and first["model_version"] is None


def test_invalid_records_get_422_and_nothing_is_logged(tmp_path: Path) -> None:
    app, _, _ = make_app(tmp_path, {"champion": "1"})
    status, body = run(app, app.predict([{"temp": "hot", "city": "dc"}]))
    assert status == 422
    assert body["detail"][0]["loc"] == ["records", 0, "temp"]
    assert app.log.count() == 0


def test_no_champion_means_503_with_the_fix(tmp_path: Path) -> None:
    app, _, _ = make_app(tmp_path, {})
    status, body = run(app, app.predict(records(1)))
    assert status == 503 and "run `driftloop train` first" in body["detail"]
    assert app.readyz()[0] == 503


def test_readyz_is_degraded_while_the_registry_is_down(tmp_path: Path) -> None:
    app, _, registry = make_app(tmp_path, {"champion": "1"})
    assert app.readyz()[1]["status"] == "ready"
    registry.down = True
    app.follower.poll_once()
    status, body = app.readyz()
    assert status == 200 and body["status"] == "degraded" and body["champion"] == "1"
    status, _ = run(app, app.predict(records(1)))
    assert status == 200


def test_feedback_stores_labels_of_known_ids_only_and_the_first_one_wins(
    tmp_path: Path,
) -> None:
    app, _, _ = make_app(tmp_path, {"champion": "1"})
    run(app, app.predict(records(2)))
    status, body = run(
        app, app.feedback([{"request_id": "r0", "label": 3}, {"request_id": "nope", "label": 1}])
    )
    assert status == 200
    assert body == {"accepted": 1, "already_labelled": [], "unknown_request_ids": ["nope"]}
    status, body = run(
        app, app.feedback([{"request_id": "r0", "label": 99}, {"request_id": "r1", "label": 4}])
    )
    assert body == {"accepted": 1, "already_labelled": ["r0"], "unknown_request_ids": []}
    assert app.log.frame()["label"].tolist() == [3, 4]  # r0 keeps its first label
    assert [(f.request_id, f.label) for f, _ in app.log.label_history()] == [("r0", 99)]
    assert "nope" not in app.log.known_request_ids(["nope"])
    status, body = run(app, app.feedback([{"request_id": "r0", "label": "x"}]))
    assert status == 422 and body["detail"][0]["msg"] == "expected a number, got 'x'"


def test_feedback_for_no_known_id_is_422_naming_each_id(tmp_path: Path) -> None:
    app, _, _ = make_app(tmp_path, {"champion": "1"})
    status, body = run(app, app.feedback([{"request_id": "ghost", "label": 1}]))
    assert status == 422
    [error] = body["detail"]
    assert error["loc"] == ["labels", 0, "request_id"] and error["input"] == "ghost"
    assert "no prediction of model 'm' was logged with request id 'ghost'" in error["msg"]
    assert app.log.feedback() == [] and app.log.label_history() == []


@pytest.mark.parametrize(("share", "mode"), [(0.0, "shadow"), (0.3, "canary")])
def test_metadata_describes_routing_and_schema(tmp_path: Path, share: float, mode: str) -> None:
    app, _, _ = make_app(tmp_path, {"champion": "1", "challenger": "2"}, share=share)
    _, meta = app.metadata()
    assert meta["champion"]["version"] == "1" and meta["challenger"]["version"] == "2"
    assert meta["routing"]["mode"] == mode and meta["routing"]["canary_share"] == share
    assert [f["name"] for f in meta["schema"]["features"]] == ["temp", "city"]


def test_a_locked_log_gives_503_and_not_ready_then_recovers_without_restart(
    tmp_path: Path,
) -> None:
    app, _, _ = make_app(tmp_path, {"champion": "1"}, prediction_log_commit_timeout_s=0.3)
    app.writer.probe_interval_s = 0.05
    assert run(app, app.predict(records(1)))[0] == 200
    holder = sqlite3.connect(tmp_path / "predictions.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        status, body = run(app, app.predict(records(2, entity_id="private")))
        assert status == 503
        assert body["detail"].startswith("prediction log locked: database is locked")
        assert "INSERT" not in body["detail"] and "private" not in body["detail"]
        status, body = run(app, app.predict(records(1)))  # fails fast while unwritable
        assert status == 503 and "locked" in body["detail"]
        status, ready = app.readyz()
        assert status == 503 and ready["status"] == "not_ready"
        assert ready["reason"] == "prediction log locked: database is locked"
        assert ready["prediction_log"]["writable"] is False
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    deadline = time.monotonic() + 5
    while app.readyz()[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert app.readyz()[1]["status"] == "ready"
    assert run(app, app.predict(records(1)))[0] == 200


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_readyz_restarts_a_dead_writer_and_says_so(tmp_path: Path) -> None:
    app, _, _ = make_app(tmp_path, {"champion": "1"})
    original = app.log.append

    def dies(*args: object, **kwargs: object) -> None:
        app.log.append = original  # type: ignore[method-assign]
        raise SystemExit("simulated thread death")

    app.log.append = dies  # type: ignore[method-assign]
    status, body = run(app, app.predict(records(1)))
    assert status == 503 and "writer failed" in body["detail"]
    deadline = time.monotonic() + 5
    while app.writer.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    status, body = app.readyz()
    assert status == 503 and "writer had stopped and was restarted" in body["reason"]
    assert app.readyz()[0] == 200 and app.writer.restarts == 1
    assert run(app, app.predict(records(1)))[0] == 200


@pytest.mark.parametrize("fault", ["raises", "nan"])
def test_previous_answers_for_a_failing_champion(tmp_path: Path, fault: str) -> None:
    app, models, _ = make_app(tmp_path, {"champion": "2", "previous": "1"})
    if fault == "raises":
        models["2"].broken = True
    else:
        models["2"].nan = True
    status, body = run(app, app.predict(records(3)))
    assert status == 200
    assert body["model_versions"] == ["1", "1", "1"] and body["predictions"] == [0.0, 1.0, 2.0]
    logged = [(r.request_id, r.role, r.model_version) for r in app.log.predictions()]
    assert logged == [("r0", "fallback", "1"), ("r1", "fallback", "1"), ("r2", "fallback", "1")]
    reason = "error" if fault == "raises" else "non_finite"
    counted = app.metrics.registry.get_sample_value(
        "driftloop_fallback_predictions_total",
        {"model_name": "m", "failed_version": "2", "answered_by": "1", "reason": reason},
    )
    assert counted == 3.0
    status, ready = app.readyz()
    assert status == 200 and ready["status"] == "degraded"
    assert "champion v2 failed" in ready["reason"] and "previous v1" in ready["reason"]
    assert ready["fallback"]["last"]["reason"] == reason
    assert app.metadata()[1]["fallback"]["records"] == 3
    assert app.follower.snapshot.aliases["champion"] == "2"  # no alias moved by the service


def test_a_failing_champion_without_previous_is_a_500_naming_the_error(tmp_path: Path) -> None:
    app, models, _ = make_app(tmp_path, {"champion": "2"})
    models["2"].nan = True
    status, body = run(app, app.predict(records(2)))
    assert status == 500 and "non-finite" in body["detail"]
    assert app.log.count() == 0


def test_a_champion_that_cannot_be_loaded_is_shown_in_readyz(tmp_path: Path) -> None:
    app, _, registry = make_app(tmp_path, {"champion": "1"})
    registry.current = {"champion": "7"}  # no such model: the loader fails
    app.follower.poll_once()
    status, body = app.readyz()
    assert status == 200 and body["status"] == "degraded"
    assert "champion v7 cannot be loaded (KeyError: '7'); serving v1" in body["reason"]
    assert body["failed_loads"]["7"]["attempts"] == 1


def test_the_registry_share_overrides_the_setting_without_a_restart(tmp_path: Path) -> None:
    app, _, registry = make_app(tmp_path, {"champion": "1", "challenger": "2"}, share=0.0)
    tags: dict[str, str] = {}
    registry.aliases_and_tags = lambda: (dict(registry.current), dict(tags))  # type: ignore[attr-defined]
    app.follower.poll_once()
    routing = app.metadata()[1]["routing"]
    assert routing["canary_share"] == 0.0 and routing["mode"] == "shadow"
    assert routing["canary_share_from"] == "setting canary_share (DRIFTLOOP_CANARY_SHARE)"
    _, body = run(app, app.predict(records(200)))
    assert set(body["model_versions"]) == {"1"}

    tags["driftloop.canary_share"] = "1"
    app.follower.poll_once()
    routing = app.metadata()[1]["routing"]
    assert routing["canary_share"] == 1.0 and routing["mode"] == "canary"
    assert routing["canary_share_from"] == "registry tag driftloop.canary_share"
    _, body = run(app, app.predict(records(200)))
    assert set(body["model_versions"]) == {"2"}

    tags["driftloop.canary_share"] = "lots"  # set by hand in the MLflow UI
    app.follower.poll_once()
    routing = app.metadata()[1]["routing"]
    assert routing["canary_share"] == 0.0 and "is not a share" in routing["canary_share_error"]


def test_a_fallback_logs_which_champion_failed_and_why_for_the_monitor(tmp_path: Path) -> None:
    from predlog.fallbacks import fallback_counts

    app, models, _ = make_app(tmp_path, {"champion": "2", "previous": "1"})
    models["2"].broken = True
    assert run(app, app.predict(records(3)))[0] == 200
    assert run(app, app.predict(records(2)))[0] == 200
    deadline = time.monotonic() + 10  # the event is written off the model thread
    counts = fallback_counts(app.log, "m", "2", "1", None, 100)
    # Wait for the whole expected state: under load the event can land before the rows
    # are visible to this second connection (seen once in a full unit run).
    while (counts.error is None or counts.fallback_rows < 5) and time.monotonic() < deadline:
        time.sleep(0.05)
        counts = fallback_counts(app.log, "m", "2", "1", None, 100)
    assert (counts.champion_rows, counts.fallback_rows) == (0, 5)
    assert counts.error == "RuntimeError: challenger exploded"


@pytest.mark.parametrize(
    ("inline_records", "size", "on_loop"),
    [
        (1, 1, True),  # concurrency 1, one record: predicted on the event loop
        (1, 2, False),  # more records than the setting allows: the model thread
        (0, 1, False),  # 0: always the model thread
        (4, 3, True),
    ],
)
def test_a_lone_small_request_is_predicted_on_the_event_loop(
    tmp_path: Path, inline_records: int, size: int, on_loop: bool
) -> None:
    import threading

    app, models, _ = make_app(tmp_path, {"champion": "1"}, inline_predict_records=inline_records)
    threads: list[str] = []
    predict = models["1"].predict
    models["1"].predict = lambda frame: (  # type: ignore[method-assign]
        threads.append(threading.current_thread().name) or predict(frame)
    )

    async def go() -> tuple[str, int]:
        for _ in range(3):  # one at a time: concurrency 1
            response = await app.predict(records(size))
            assert response.status_code == 200
        return threading.current_thread().name, len(app.log.predictions())

    loop_thread, logged = asyncio.run(go())
    assert len(threads) == 3
    assert all((name == loop_thread) == on_loop for name in threads)
    assert logged == 3 * size  # each answer came after its records' commit


def test_requests_that_queue_behind_a_batch_go_to_the_model_thread(tmp_path: Path) -> None:
    import threading

    app, models, _ = make_app(tmp_path, {"champion": "1"}, inline_predict_records=1)
    threads: list[str] = []
    predict = models["1"].predict

    def slow(frame: pd.DataFrame) -> Any:
        threads.append(threading.current_thread().name)
        time.sleep(0.05)  # the first batch runs while the others queue
        return predict(frame)

    models["1"].predict = slow  # type: ignore[method-assign]

    async def go() -> list[int]:
        first = asyncio.ensure_future(app.predict(records(1)))
        await asyncio.sleep(0.01)
        rest = [app.predict([{"temp": 1.0, "city": "dc"}]) for _ in range(3)]
        return [r.status_code for r in await asyncio.gather(first, *rest)]

    assert asyncio.run(go()) == [200] * 4
    # The lone first request waited for nothing: the model thread took it (the loop
    # stays free), or the loop did; the three queued behind it form one batch that
    # another request waits with, so they never run on the loop.
    assert len(threads) == 2
    assert threads[1].startswith("model")


def test_concurrent_small_requests_keep_the_model_thread(tmp_path: Path) -> None:
    import threading

    app, models, _ = make_app(tmp_path, {"champion": "1"}, inline_predict_records=1)
    threads: list[str] = []
    predict = models["1"].predict
    models["1"].predict = lambda frame: (  # type: ignore[method-assign]
        threads.append(threading.current_thread().name) or predict(frame)
    )

    async def go() -> list[int]:
        responses = await asyncio.gather(
            *(app.predict([{"temp": float(k), "city": "dc"}]) for k in range(4))
        )
        return [r.status_code for r in responses]

    assert asyncio.run(go()) == [200] * 4
    assert threads and all(name.startswith("model") for name in threads)


def test_the_batcher_expects_the_recent_peak_of_requests_in_flight(tmp_path: Path) -> None:
    app, _, _ = make_app(tmp_path, {"champion": "1"})

    async def go() -> tuple[int, int]:
        answers = await asyncio.gather(*(app.predict(records(1)) for _ in range(4)))
        assert [a.status_code for a in answers] == [200] * 4
        during = app._recent_concurrency()
        await asyncio.sleep(0.15)  # longer than the peak counts
        assert (await app.predict(records(1))).status_code == 200
        return during, app._recent_concurrency()

    assert asyncio.run(go()) == (4, 1)


@pytest.fixture
def started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The launcher's folder where workers mark that they started (bentos/startup.py)."""
    from bentos.startup import STARTED_DIR_ENV

    folder = tmp_path / "started"
    folder.mkdir()
    monkeypatch.setenv(STARTED_DIR_ENV, str(folder))
    return folder


def test_readyz_says_starting_until_every_worker_has_loaded_its_champion(
    tmp_path: Path, started: Path
) -> None:
    from bentos.startup import mark_started

    app, _, _ = make_app(tmp_path, {"champion": "1"}, workers=2)
    mark_started(1)  # this worker; its sibling is still loading
    status, body = app.readyz()
    assert status == 503 and body["status"] == "starting"
    assert body["reason"] == "1 of 2 serving workers have loaded the champion"
    assert run(app, app.predict(records(1)))[0] == 200  # it answers whoever reaches it
    mark_started(2)
    status, body = app.readyz()
    assert status == 200 and body["status"] == "ready"
    for marker in started.iterdir():  # a worker restarted later does not gate its siblings
        marker.unlink()
    assert app.readyz()[1]["status"] == "ready"


def test_a_worker_that_never_starts_leaves_the_server_degraded_not_unready(
    tmp_path: Path, started: Path
) -> None:
    from bentos.startup import mark_started

    app, _, _ = make_app(tmp_path, {"champion": "1"}, workers=3)
    mark_started(1)
    assert app.readyz()[0] == 503
    app.startup.grace_s = 0.0
    status, body = app.readyz()
    assert status == 200 and body["status"] == "degraded"
    assert "1 of 3 serving workers" in body["reason"]


def test_without_the_launcher_each_worker_is_ready_on_its_own(tmp_path: Path) -> None:
    app, _, _ = make_app(tmp_path, {"champion": "1"}, workers=2)
    assert app.readyz()[1]["status"] == "ready"
