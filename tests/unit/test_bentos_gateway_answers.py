"""/predict and /feedback answered by the gateway itself (the real `ServingApp` behind it,
no BentoML API layer): auth, the 4xx naming the field, the answer after the log commit."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bentos.app import ServingApp
from bentos.gateway import Gateway
from tests.unit.test_bentos_app import _close_apps, make_app, records  # noqa: F401

KEY, FEEDBACK_KEY = "k3y", "fb-k3y"


class BentoML:
    """Stands in for BentoML's routes: /predict and /feedback must never reach it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def keyed_app(tmp_path: Path, **settings: Any) -> ServingApp:
    settings.setdefault("api_key", KEY)
    settings.setdefault("feedback_api_key", FEEDBACK_KEY)
    app, _, _ = make_app(tmp_path, {"champion": "1"}, **settings)
    return app


def post(
    app: ServingApp,
    path: str,
    body: Any,
    key: str | None = KEY,
    inner: BentoML | None = None,
    on_send: Any = None,
    answers: bool | None = None,
) -> tuple[int, dict[str, str], Any]:
    """POST `body` through the gateway in front of `app`: (status, headers, JSON body)."""
    inner = inner or BentoML()
    gateway = Gateway(inner, backend=lambda: app, answers=answers)
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"host", b"t")]
    if key is not None:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": headers,
        "client": ("127.0.0.1", 1),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": payload, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if on_send is not None:
            on_send(message)
        sent.append(message)

    asyncio.run(gateway(scope, receive, send))
    if answers is not False:
        assert inner.paths == [], "the request reached BentoML's API layer"
    start, body_message = sent
    out_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], out_headers, json.loads(body_message["body"])


def test_predict_is_answered_by_the_gateway_and_logged(tmp_path: Path) -> None:
    app = keyed_app(tmp_path)
    status, headers, body = post(app, "/predict", {"records": records(2)})
    assert status == 200, body
    assert body["predictions"] == [0.0, 1.0] and body["request_ids"] == ["r0", "r1"]
    assert headers["x-model-version"] == "1"
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(json.dumps(body, separators=(",", ":")))
    assert headers["server"].startswith("BentoML Service/")
    assert [r.request_id for r in app.log.predictions()] == ["r0", "r1"]


@pytest.mark.parametrize(("key", "status"), [(None, 401), ("wrong", 401), (FEEDBACK_KEY, 401)])
def test_predict_without_the_key_is_refused_before_the_model(
    tmp_path: Path, key: str | None, status: int
) -> None:
    app = keyed_app(tmp_path)
    got, _, body = post(app, "/predict", {"records": records(1)}, key=key)
    assert got == status and "key" in body["detail"]
    assert app.log.count() == 0


def test_bad_records_get_422_naming_the_field(tmp_path: Path) -> None:
    app = keyed_app(tmp_path)
    status, _, body = post(app, "/predict", {"records": [{"temp": "hot", "city": "dc"}]})
    assert status == 422
    assert body["detail"][0]["loc"] == ["records", 0, "temp"]
    status, _, body = post(app, "/predict", {"rows": records(1)})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "rows"]
    assert app.log.count() == 0


def test_the_answer_waits_for_the_log_commit(tmp_path: Path) -> None:
    """A commit held back 0.3 s: the answer starts only after it, never before."""
    app = keyed_app(tmp_path)
    real_submit = app.writer.submit
    events: list[str] = []

    def slow_submit(**kwargs: Any) -> concurrent.futures.Future[None]:
        held: concurrent.futures.Future[None] = concurrent.futures.Future()

        def later() -> None:
            time.sleep(0.3)
            real_submit(**kwargs).result()
            events.append("committed")
            held.set_result(None)

        threading.Thread(target=later, daemon=True).start()
        return held

    app.writer.submit = slow_submit  # type: ignore[method-assign]

    def on_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            events.append("answered")

    status, _, _ = post(app, "/predict", {"records": records(3)}, on_send=on_send)
    assert status == 200
    assert events == ["committed", "answered"]


def test_an_unwritable_log_means_503_and_no_answer(tmp_path: Path) -> None:
    app = keyed_app(tmp_path)
    app.writer.healthy = False
    status, headers, body = post(app, "/predict", {"records": records(1)})
    assert status == 503 and headers["retry-after"] == "1"
    assert "log" in body["detail"]


def test_a_handler_that_raises_is_a_500_and_the_gateway_keeps_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = keyed_app(tmp_path)

    async def boom(records: list[Any]) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(app, "predict", boom)
    status, headers, body = post(app, "/predict", {"records": records(1)})
    assert status == 500 and "RuntimeError" in body["detail"]
    assert headers["content-type"] == "application/json"


def test_feedback_is_answered_by_the_gateway_with_its_own_key(tmp_path: Path) -> None:
    app = keyed_app(tmp_path)
    assert post(app, "/predict", {"records": records(2)})[0] == 200
    labels = {"labels": [{"request_id": "r0", "label": 3}]}
    assert post(app, "/feedback", labels)[0] == 403  # the predicting key posts no labels
    status, _, body = post(app, "/feedback", labels, key=FEEDBACK_KEY)
    assert status == 200 and body["accepted"] == 1
    status, _, body = post(
        app, "/feedback", {"labels": [{"request_id": "r1", "label": "x"}]}, key=FEEDBACK_KEY
    )
    assert status == 422 and body["detail"][0]["loc"][-1] == "label"
    assert app.log.frame()["label"].dropna().tolist() == [3]


def test_with_bentoml_cors_on_the_api_layer_answers_so_cors_headers_are_added(
    tmp_path: Path,
) -> None:
    """BentoML's CORS middleware sits inside the gateway: with it on, /predict goes on to
    BentoML's routes (here a stand-in) instead of being answered by the gateway."""
    app = keyed_app(tmp_path)
    inner = BentoML()
    status, _, _ = post(app, "/predict", {"records": records(1)}, inner=inner, answers=False)
    assert status == 299 and inner.paths == ["/predict"]
    assert app.log.count() == 0
