"""What a person sees in a real browser (headless Chromium) after a short loop.

Real parts: the session's `mlflow server` and `prefect server`, `driftloop train` /
`promote` / `rollback` / `monitor` as commands, `driftloop serve` (bentoml serve), and
Chromium from the OS packages (`make chromium`). Asserted on the rendered pages, as a
user would read them: the champion's description with its reason (MLflow), the monitor's
artifact on its flow run with a report link that opens (Prefect → MLflow), the service's
docs, and the docs' example answering 200.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
import pytest

from driftloop import procs
from driftloop.browser import rendered_dom
from driftloop.stack import evidently_ui_argv
from monitoring.workspace import (
    DECISIONS_TITLE,
    DRIFT_TITLE,
    LIVE_TITLE,
    OOD_TITLE,
    VERSIONS_TITLE,
)

pytestmark = pytest.mark.integration  # ~2.5 min, in `make test` (issue #17 asks for it there)

CLI = str(Path(sys.executable).parent / "driftloop")
BUNDLED = Path(__file__).parents[2] / "data" / "bundled" / "bikeshare_2011.csv"
MODEL = "browser-bikes"
DROP = ["--drop", "casual", "--drop", "registered", "--drop", "day"]


def run(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"driftloop {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def text_of(html: str) -> str:
    """The visible words of a rendered page, whitespace folded (tags dropped)."""
    without = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", html, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", without).split())


@dataclass
class Loop:
    env: dict[str, str]
    mlflow_url: str
    prefect_ui: str
    service_url: str
    champion: str
    rolled_back: str
    check: dict
    evidently_url: str


@pytest.fixture(scope="module")
def loop(
    mlflow_server: procs.Server,
    prefect_server: procs.Server,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Loop]:
    """train v1 → train v2 → promote v2 → roll back (v1 champion again, v2 rolled back) →
    serve → traffic with labels → one monitor check."""
    state = tmp_path_factory.mktemp("browser-state")
    bikes = pd.read_csv(BUNDLED)
    winter = state / "jan_mar.csv"
    bikes[bikes["day"] < 91].to_csv(winter, index=False)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")},
        "MLFLOW_TRACKING_URI": mlflow_server.base_url,
        "PREFECT_API_URL": prefect_server.base_url,
        "DRIFTLOOP_STATE_DIR": str(state),
        "DRIFTLOOP_MODEL_NAME": MODEL,
        "DRIFTLOOP_MIN_WINDOW_ROWS": "50",
        "DRIFTLOOP_ALIAS_POLL_INTERVAL_S": "1",
    }
    for _ in range(2):
        run(env, "train", "--data", str(winter), "--target", "bikers", *DROP, "--no-package")
    run(env, "promote", "v2", "--reason", "browser test: v2 by hand")
    run(env, "rollback", "--reason", "browser test: v2 answered worse on live labels")

    stoppers: list[Any] = []
    port = procs.free_port()
    service = procs.start_server(
        "serve-browser",
        [CLI, "serve", "--port", str(port)],
        health_url=f"http://127.0.0.1:{port}/readyz",
        base_url=f"http://127.0.0.1:{port}",
        log_path=state / "serve.log",
        env=env,
    )
    try:
        service.wait_healthy(timeout_s=180)
        spring = bikes[(bikes["day"] >= 91) & (bikes["day"] < 121)].head(300)
        features = spring.drop(columns=["bikers", "casual", "registered", "day"])
        body = {"records": json.loads(features.to_json(orient="records"))}
        answer = httpx.post(f"{service.base_url}/predict", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        labels = [
            {"request_id": rid, "label": float(label)}
            for rid, label in zip(answer.json()["request_ids"], spring["bikers"], strict=True)
        ]
        fed = httpx.post(f"{service.base_url}/feedback", json={"labels": labels}, timeout=60)
        assert fed.status_code == 200, fed.text
        check = json.loads(run(env, "monitor", "--json", "--dry-run").stdout)
        evidently_port = procs.free_port()
        evidently = procs.start_server(
            "evidently-browser",
            evidently_ui_argv(evidently_port, state / "evidently"),
            health_url=f"http://127.0.0.1:{evidently_port}/api/version",
            base_url=f"http://127.0.0.1:{evidently_port}",
            log_path=state / "evidently.log",
        )
        stoppers.append(evidently.stop)
        evidently.wait_healthy(timeout_s=120)
        yield Loop(
            env,
            mlflow_server.base_url,
            prefect_server.base_url.removesuffix("/api"),
            service.base_url,
            champion="1",
            rolled_back="2",
            check=check,
            evidently_url=evidently.base_url,
        )
    finally:
        for stop in [*stoppers, service.stop]:
            stop()


def test_mlflow_shows_which_version_is_champion_and_why(loop: Loop) -> None:
    page = text_of(rendered_dom(f"{loop.mlflow_url}/#/models/{MODEL}/versions/{loop.champion}"))
    assert f"v{loop.champion} is champion" in page, page[:2000]
    assert "browser test: v2 answered worse on live labels" in page
    assert f"v{loop.champion} sklearn" in page  # its training run, named by version and data
    # A short, fixed set of readable tags (registry/tags.py), the details in one JSON tag.
    assert "champion since" in page and "validation passed" in page, page[:3000]
    assert "compared with v" not in page or "on the same holdout" in page
    for machine_key in ("gate_decision", "last_decision", "data_source_arg", "contract_revision"):
        assert machine_key not in page.replace('"' + machine_key + '"', ""), machine_key
    runs = mlflow.MlflowClient(loop.mlflow_url).search_runs(
        [mlflow.MlflowClient(loop.mlflow_url).get_experiment_by_name(MODEL).experiment_id],
        filter_string="tags.`driftloop.stage` = 'training'",
    )
    second = next(r for r in runs if r.info.run_name.startswith("v2 sklearn"))
    # Compare shows the champion's figure on v2's own holdout beside v2's.
    assert {"holdout_rmse", "gate_champion_rmse"} <= set(second.data.metrics)
    assert second.data.tags["gate_champion_version"] == "1"
    model_page = text_of(rendered_dom(f"{loop.mlflow_url}/#/models/{MODEL}"))
    assert f"champion: v{loop.champion}" in model_page, model_page[:2000]
    assert f"previous: v{loop.rolled_back} (⚠ rolled back" in model_page
    rolled = text_of(
        rendered_dom(f"{loop.mlflow_url}/#/models/{MODEL}/versions/{loop.rolled_back}")
    )
    assert "Rolled back" in rolled and "would make this version champion again" in rolled


def test_prefect_shows_the_monitor_decision_on_its_flow_run_with_a_report_link_that_opens(
    loop: Loop,
) -> None:
    found = httpx.post(
        f"{loop.env['PREFECT_API_URL']}/artifacts/filter",
        json={"artifacts": {"key": {"any_": [f"monitor-{MODEL}"]}}, "sort": "CREATED_DESC"},
        timeout=10,
    )
    assert found.status_code == 200, found.text
    assert found.json(), "no monitor artifact"
    artifact = found.json()[0]
    # On the flow run (its Artifacts tab), not hidden on a task run.
    assert artifact["flow_run_id"] is not None and artifact["task_run_id"] is None, artifact
    page = text_of(rendered_dom(f"{loop.prefect_ui}/runs/flow-run/{artifact['flow_run_id']}"))
    action = loop.check["decision"]["action"]
    assert "monitor" in page
    artifact_page = rendered_dom(f"{loop.prefect_ui}/artifacts/artifact/{artifact['id']}")
    words = text_of(artifact_page)
    assert f"{MODEL}: {action}" in words, words[:3000]
    assert "drift share (features drifted)" in words and "%" in words
    links = re.findall(r'href="([^"]+/artifacts/evidently)"', artifact_page)
    assert links, "no report link in the artifact"
    assert links[0].startswith(loop.mlflow_url)
    report_page = text_of(rendered_dom(links[0].replace("&amp;", "&")))
    assert "drift.html" in report_page, report_page[:2000]


def test_the_service_docs_example_answers_200(loop: Loop) -> None:
    page = text_of(rendered_dom(f"{loop.service_url}/"))
    assert f"{MODEL} — driftloop" in page, page[:2000]  # Swagger UI's title: the model
    assert f"champion v{loop.champion}" in page
    assert "temp" in page and "double" in page  # the features and their types
    assert "additionalProp1" not in page
    schema = httpx.get(f"{loop.service_url}/docs.json", timeout=10).json()
    assert "/metadata" in schema["paths"]
    operation = schema["paths"]["/predict"]["post"]
    content = operation["requestBody"]["content"]["application/json"]
    example = content.get("example") or content["schema"].get("example")
    assert example, "the /predict docs carry no example"
    answer = httpx.post(f"{loop.service_url}/predict", json=example, timeout=30)
    assert answer.status_code == 200, answer.text


def test_evidently_shows_drift_and_decisions_over_time(loop: Loop) -> None:
    projects = httpx.get(f"{loop.evidently_url}/api/projects", timeout=10).json()
    project = next(p for p in projects if p["name"] == MODEL)
    page = text_of(rendered_dom(f"{loop.evidently_url}/projects/{project['id']}"))
    panels = (DRIFT_TITLE, OOD_TITLE, LIVE_TITLE, VERSIONS_TITLE, DECISIONS_TITLE)
    missing = [title for title in panels if title not in page]
    assert not missing, (missing, page[:3000])
    assert "retrain threshold" in page and "OOD rate" in page  # the series' legends
