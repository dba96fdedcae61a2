"""`driftloop log prune` and the durations the CLI takes (`--older-than`, `monitor --since`)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from driftloop.cli import CliError, app, parse_duration
from predlog.fallbacks import record_fallback_event
from predlog.log import FeedbackRecord, PredictionLog
from predlog.tables import fallback_events_table, label_history_table


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
        feedback=[
            FeedbackRecord("pruned-model-0", "pruned-model", 1.0, now - 39 * 86_400),
            # a later label for the same prediction: kept in label_history, pruned too
            FeedbackRecord("pruned-model-0", "pruned-model", 2.0, now - 38 * 86_400),
        ],
    )
    record_fallback_event(log, "pruned-model", "2", "1", "ValueError: x", ts=now - 33 * 86_400)
    record_fallback_event(log, "kept-model", "2", "1", "ValueError: y", ts=now - 33 * 86_400)
    runner = CliRunner()
    result = runner.invoke(app, ["log", "prune", "--older-than", "30d", "-m", "pruned-model"])
    assert result.exit_code == 0, result.output
    assert "deleted 2 predictions and 2 labels of pruned-model" in result.output
    assert "(and 1 fallback events)" in result.output
    assert log.count("pruned-model") == 1 and log.count("kept-model") == 3
    with log.engine.connect() as conn:
        left = conn.execute(sa.select(fallback_events_table.c.model_name)).scalars().all()
        history = conn.execute(sa.select(sa.func.count()).select_from(label_history_table))
        assert left == ["kept-model"] and history.scalar_one() == 0
    bad = runner.invoke(app, ["log", "prune", "--older-than", "soon"])
    assert bad.exit_code == 2 and "is not a duration" in bad.output
    log.close()
