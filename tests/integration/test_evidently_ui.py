"""`evidently ui` (as `driftloop up` starts it) serves the workspace the monitor feeds:
its API lists the model's project, its runs and the dashboard's drift-over-time series."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from driftloop import procs
from driftloop.stack import evidently_ui_argv
from monitoring.workspace import DRIFT_TITLE, OOD_TITLE, add_check

pytestmark = pytest.mark.integration


def test_evidently_ui_lists_the_project_and_its_runs(tmp_path: Path) -> None:
    folder = tmp_path / "evidently"
    for i, (action, ood) in enumerate((("none", 0.02), ("retrain", 0.35))):
        check = {
            "model_name": "bikes",
            "at": f"2026-12-01T10:0{i}:00+00:00",
            "decision": {"action": action, "reason": "why"},
            "figures": {"window_rows": 500, "drift_share": 0.1 * i, "ood_rate": ood},
        }
        assert add_check(folder, check, f"c{i}", {"ood_rate_threshold": 0.2}, 10) is None

    port = procs.free_port()
    base = f"http://127.0.0.1:{port}"
    server = procs.start_server(
        "evidently",
        evidently_ui_argv(port, folder),
        f"{base}/api/version",
        base,
        tmp_path / "evidently.log",
        env={"DO_NOT_TRACK": "1"},
    )
    try:
        server.wait_healthy(timeout_s=120)
        projects = httpx.get(f"{base}/api/projects", timeout=10).json()
        (project,) = [p for p in projects if p["name"] == "bikes"]
        runs = httpx.get(f"{base}/api/projects/{project['id']}/snapshots", timeout=10).json()
        assert sorted(r["metadata"]["decision"] for r in runs) == ["none", "retrain"]
        assert any("decision:retrain" in r["tags"] for r in runs)
        board = httpx.get(f"{base}/api/v2/dashboards/{project['id']}", timeout=10).json()
        titles = {p["title"] for p in board["panels"]}
        assert {DRIFT_TITLE, OOD_TITLE} <= titles
        # The OOD panel's series, asked for as the UI asks: one point per check, in order.
        panel = next(p for p in board["panels"] if p["title"] == OOD_TITLE)
        filters = [
            {k: v[k] for k in ("tags", "metadata", "metric", "metric_labels")}
            for v in panel["values"]
        ]
        series = httpx.post(
            f"{base}/api/v2/snapshots/{project['id']}/data_series_batch",
            json={"series_filter": filters},
            timeout=10,
        ).json()
        values = {s["params"]["column"]: s["values"] for s in series["series"]}
        assert values == {"ood_rate": [0.02, 0.35], "ood_rate_threshold": [0.2, 0.2]}

        # A check made while the UI runs shows up without a restart (it watches the folder).
        later = {
            "model_name": "bikes",
            "at": "2026-12-01T10:05:00+00:00",
            "decision": {"action": "promote", "reason": "why"},
            "figures": {"window_rows": 500, "ood_rate": 0.01},
        }
        assert add_check(folder, later, "c9", {}, 10) is None

        def listed() -> bool:
            found = httpx.get(f"{base}/api/projects/{project['id']}/snapshots", timeout=10)
            return len(found.json()) == 3

        procs.wait_until(listed, 60, what="the new run listed by evidently ui")
    finally:
        server.stop()
    assert not procs.port_in_use(port)
