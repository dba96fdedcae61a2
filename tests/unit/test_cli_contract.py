"""`driftloop contract show | widen | diff`: what a user types to admit real drift."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from driftloop.cli import app

BUNDLED = Path(__file__).resolve().parents[2] / "data" / "bundled" / "bikeshare_2011.csv"


@pytest.fixture()
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DRIFTLOOP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("DRIFTLOOP_MODEL_NAME", raising=False)
    return tmp_path / "state"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_show_lists_hard_and_soft_rules_of_the_committed_contract(state: Path) -> None:
    code, out = run("contract", "show")
    assert code == 0, out
    assert "bikeshare-demand data contract r1" in out
    assert "soft: clear, cloudy/misty" in out  # weathersit categories
    assert "hard: none" in out  # no empties allowed


def test_widen_writes_a_new_revision_and_diff_shows_it(state: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(BUNDLED).head(500)
    frame.loc[:19, "temp"] = 2.0
    drifted = tmp_path / "heatwave.csv"
    frame.to_csv(drifted, index=False)

    code, out = run("contract", "widen", "--data", str(drifted), "--target", "bikers", "--dry-run")
    assert code == 0, out
    assert "temp: range" in out and "dry run: nothing written" in out
    assert not (state / "contracts").exists()

    code, out = run("contract", "widen", "--data", str(drifted), "--target", "bikers")
    assert code == 0, out
    assert "wrote revision 2" in out
    assert (state / "contracts" / "bikeshare-demand.r1.json").exists()

    code, out = run("contract", "diff")
    assert code == 0, out
    assert "contract revision 1 → 2: 1 change" in out and "temp: range" in out

    code, out = run("contract", "widen", "--data", str(drifted), "--target", "bikers")
    assert code == 0 and "already meets contract r2" in out


def test_widen_refuses_hard_failures_with_exit_1(state: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(BUNDLED).head(200).drop(columns=["hum"])
    broken = tmp_path / "broken.csv"
    frame.to_csv(broken, index=False)
    code, out = run("contract", "widen", "--data", str(broken), "--target", "bikers")
    assert code == 1
    assert "breaks hard rules that widening never relaxes" in out
    assert "column 'hum': is missing" in out
    assert not (state / "contracts").exists()
