"""What the CLI prints for people: `promote v3`, one-line errors (never a traceback),
`history` within 100 columns, `status` naming its check and the services it found."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from config.names import CHAMPION
from driftloop import cli
from driftloop.cli import app, format_figure, short_moves, short_time
from registry import ROLLED_BACK_TAG, Registry, RegistryError, version_number


@pytest.fixture()
def model(lifecycle_model: Registry) -> Registry:
    """Versions 1-3 of a fresh model, champion v1, challenger v2 (tests/unit/conftest.py)."""
    return lifecycle_model


def run(registry: Registry, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args, "-m", registry.model_name])
    return result.exit_code, result.output


def test_version_numbers_accept_v_prefixes_and_refuse_the_rest() -> None:
    assert [version_number(v) for v in (3, "3", "v3", "V3", " v12 ", "03")] == [
        "3",
        "3",
        "3",
        "3",
        "12",
        "3",
    ]
    for bad in ("three", "v", "", "3.0", "-1", "0", "v-2"):
        with pytest.raises(RegistryError, match="not a model version"):
            version_number(bad)


def test_promote_v3_is_promote_3(model: Registry) -> None:
    code, out = run(model, "promote", "v3")
    assert code == 0, out
    assert model.aliases()[CHAMPION] == "3"


@pytest.mark.parametrize(
    ("version", "says"),
    [("three", "not a model version: 'three'"), ("v99", "has no version 99 (versions: 3, 2, 1)")],
)
def test_a_bad_version_is_one_line_and_exit_2(model: Registry, version: str, says: str) -> None:
    code, out = run(model, "promote", version)
    assert code == 2, out
    assert says in out
    assert "Traceback" not in out
    assert model.aliases()[CHAMPION] == "1"


def test_an_unexpected_error_is_one_line_exit_1_and_verbose_shows_it(
    model: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(settings: object) -> Registry:
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(cli, "registry_for", broken)
    code, out = run(model, "history")
    assert code == 1
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines == [
        "error: RuntimeError: disk on fire second line (DRIFTLOOP_VERBOSE=1 shows the traceback)"
    ]
    monkeypatch.setenv("DRIFTLOOP_VERBOSE", "1")
    result = CliRunner().invoke(app, ["history", "-m", model.model_name])
    assert isinstance(result.exception, RuntimeError)


def test_mlflow_errors_on_a_bad_name_are_usage_errors() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, RESOURCE_DOES_NOT_EXIST

    missing = MlflowException("no such thing", error_code=RESOURCE_DOES_NOT_EXIST)
    assert cli.describe_unexpected(missing) == ("MLflow: no such thing", 2)
    internal = MlflowException("boom", error_code=INTERNAL_ERROR)
    assert cli.describe_unexpected(internal)[1] == 1


def test_history_fits_100_columns_and_wide_shows_everything(model: Registry) -> None:
    reason = (
        "challenger beats champion on live labels: rmse 28.41 vs 33.02 over 412 labelled rows "
        "(margin 5 %, min rows 200); drift share 36 % in the window"
    )
    model.promote(2, reason, actor="monitor:check-1234")
    model.rollback("champion got worse on live labels", actor="user:alice@host")
    code, out = run(model, "history")
    assert code == 0, out
    assert max(len(line) for line in out.splitlines()) <= 100, out
    flat = " ".join(out.split())
    for word in ("rollback", "promote", "monitor", "user", "champion 2→1", "412", "worse"):
        assert word in flat, (word, out)
    assert "alice@host" not in out  # the actor's detail is for --wide

    code, wide = run(model, "history", "--wide")
    assert code == 0
    assert "user:alice@host" in wide and "monitor:check-1234" in wide
    decision_ids = [m.decision_id for m in model.history.list() if m.decision_id]
    assert decision_ids and all(d in " ".join(wide.split()) for d in decision_ids)


def test_short_forms() -> None:
    assert short_time("2026-12-01T15:04:05.123+00:00") == "12-01 15:04"
    assert short_time("not a time") == "not a time"
    assert short_moves({"previous": ("1", "2"), "champion": ("2", "3")}) == (
        "champion 2→3\nprevious 1→2"
    )
    assert short_moves({"challenger": ("4", None)}) == "challenger 4→-"
    assert format_figure("ood_rate", 1) == "100.0%"
    assert format_figure("drift_share", 0.3636) == "36.4%"
    assert format_figure("champion_metric", 28.412345) == "28.41"
    assert format_figure("window_rows", 12000) == "12,000"
    assert format_figure("champion_version", "3") == "3"


def test_status_names_its_check_shows_shares_as_percent_and_finds_services(
    model: Registry, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    check = {
        "model_name": model.model_name,
        "at": "2000-01-01T00:00:00+00:00",  # before every move of this model
        "figures": {"drift_share": 0.5, "ood_rate": 1.0, "window_rows": 2000},
        "decision": {"action": "retrain", "reason": "drift share 50% >= 30%"},
    }
    folder = state / "monitor" / model.model_name
    folder.mkdir(parents=True)
    (folder / "last_check.json").write_text(json.dumps(check))
    services = state / "services"
    services.mkdir()
    # A live `driftloop serve` of this model (this process stands for it), a dead one, and
    # one of another model: only the first is listed.
    for port, pid, name in (
        (39001, os.getpid(), model.model_name),
        (39002, 2**22 + 12345, model.model_name),
        (39003, os.getpid(), "other-model"),
    ):
        entry = {"url": f"http://127.0.0.1:{port}", "pid": pid, "model_name": name}
        (services / f"{port}.json").write_text(json.dumps(entry))

    code, out = run(model, "status", "--url", "http://127.0.0.1:39004/")
    assert code == 0, out
    assert "last monitor check (2000-01-01T00:00:00+00:00)" in out
    assert "100.0%" in out and "50.0%" in out
    assert "after this check" in out  # the aliases moved since: its figures are older
    assert "http://127.0.0.1:39001" in out and "http://127.0.0.1:39004" in out
    assert "39002" not in out and "39003" not in out
    assert not (services / "39002.json").exists()  # a dead service's entry is dropped
    serve_rows = [line for line in out.splitlines() if "serve" in line and "39" in line]
    assert len(serve_rows) == 2 and all("NO" in line for line in serve_rows)


def test_moves_write_descriptions_the_registry_ui_shows(model: Registry) -> None:
    """Each move rewrites the touched versions' descriptions (role, since when, why, the
    figures) and the model's; a champion a rollback replaced is tagged `rolled_back`."""
    client = model.client
    model.promote(2, "challenger better on live labels", actor="monitor", figures={"rmse": 28.4123})
    v2 = client.get_model_version(model.model_name, "2").description
    assert "**v2 is champion**" in v2 and "challenger better on live labels" in v2
    assert "rmse 28.41" in v2 and "by `promote` (monitor)" in v2
    v1 = client.get_model_version(model.model_name, "1").description
    assert "**v1 is previous**" in v1 and "driftloop rollback" in v1
    described = client.get_registered_model(model.model_name).description
    assert "**champion: v2**" in described and "**previous: v1**" in described

    model.rollback("worse on live labels", actor="user:bob")
    assert "worse on live labels" in model.get(2).tags[ROLLED_BACK_TAG]
    v2 = client.get_model_version(model.model_name, "2").description
    assert "⚠ Rolled back" in v2 and "would make this version champion again" in v2
    assert "(⚠ rolled back" in client.get_registered_model(model.model_name).description

    # Rolling back again brings the rolled-back version back: the CLI says so first.
    code, out = run(model, "rollback")
    assert code == 0, out
    assert "previous v2 was itself rolled back" in " ".join(out.split())
    # An explicit promotion is new evidence: the tag goes.
    model.rollback("undo", actor="user:bob")
    model.promote(2, "fixed upstream data", actor="user:bob")
    assert ROLLED_BACK_TAG not in model.get(2).tags
