"""`driftloop up` starts `evidently ui` over the workspace the monitor feeds."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from config.settings import Settings
from driftloop.stack import components, procfile


def test_procfile_starts_evidently_ui_on_its_port_over_the_state_workspace(
    tmp_path: Path,
) -> None:
    settings = Settings(state_dir=tmp_path, evidently_port=8123)
    line = next(x for x in procfile(settings).splitlines() if x.startswith("evidently:"))
    argv = shlex.split(line.removeprefix("evidently:").split(">>")[0])
    assert argv[0] == "exec" and Path(argv[1]).name == "evidently" and argv[2] == "ui"
    assert argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--workspace") + 1] == str(tmp_path / "evidently")
    assert line.endswith(f"{shlex.quote(str(tmp_path / 'logs' / 'evidently.log'))} 2>&1")
    (component,) = [c for c in components(settings) if c.name == "evidently"]
    assert component.health_url == "http://127.0.0.1:8123/api/version"


def test_retention_default_and_empty_means_keep_everything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DRIFTLOOP_EVIDENTLY_RETENTION_RUNS", raising=False)
    assert Settings().evidently_retention_runs == 500
    monkeypatch.setenv("DRIFTLOOP_EVIDENTLY_RETENTION_RUNS", "")
    assert Settings().evidently_retention_runs is None
