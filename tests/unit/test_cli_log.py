"""`driftloop log prune` and the durations the CLI takes (`--older-than`, `monitor --since`)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bentos.predlog import FeedbackRecord, PredictionLog
from driftloop.cli import CliError, app, parse_duration


def test_durations() -> None:
    assert parse_duration("45s") == 45
    assert parse_duration("90m") == 5_400
    assert parse_duration("1h") == 3_600
    assert parse_duration("30d") == 30 * 86_400
    assert parse_duration("2w") == 14 * 86_400
    assert parse_duration("120") == 120
    for bad in ("", "soon", "-1h", "0d", "h"):
        with pytest.raises(CliError, match="is not a duration") as info:
            parse_duration(bad, "--older-than")
        assert info.value.code == 2


def test_log_prune_deletes_one_models_old_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("DRIFTLOOP_PREDICTION_LOG_URL", raising=False)
    log = PredictionLog(f"sqlite:///{tmp_path / 'predictions.db'}")
    now = time.time()
    rows = []
    for model in ("kept-model", "pruned-model"):
        for i, age_days in enumerate((40, 35, 1)):
            ts = now - age_days * 86_400
            rows.append((f"{model}-{i}", None, ts, model, "1", "champion", {"x": i}, i, 1.0))
    log.append(
        rows=rows,
        feedback=[FeedbackRecord("pruned-model-0", "pruned-model", 1.0, now - 39 * 86_400)],
    )
    runner = CliRunner()
    result = runner.invoke(app, ["log", "prune", "--older-than", "30d", "-m", "pruned-model"])
    assert result.exit_code == 0, result.output
    assert "deleted 2 predictions and 1 labels of pruned-model" in result.output
    assert log.count("pruned-model") == 1 and log.count("kept-model") == 3
    bad = runner.invoke(app, ["log", "prune", "--older-than", "soon"])
    assert bad.exit_code == 2 and "is not a duration" in bad.output
    log.close()
