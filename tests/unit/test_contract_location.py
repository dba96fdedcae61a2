"""Where the training flow finds a model's data contract, and how it is rebuilt."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from data.sources import load_snapshot
from driftloop.settings import REPO_ROOT, Settings
from pipelines.train import contract_path, load_or_build_contract


def snapshot_of(tmp_path: Path, frame: pd.DataFrame):
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    return load_snapshot(path, target="y")


def test_first_training_builds_a_local_contract_then_reuses_it(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", model_name="loc-a")
    first = snapshot_of(tmp_path, pd.DataFrame({"x": range(40), "y": range(40)}))
    contract, built = load_or_build_contract(settings, first)
    assert built and contract_path(settings) == tmp_path / "state" / "contracts" / "loc-a.json"
    again, built_again = load_or_build_contract(settings, first)
    assert not built_again and again.to_json() == contract.to_json()


def test_rebuild_replaces_the_contract_after_a_schema_change(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", model_name="loc-b")
    load_or_build_contract(
        settings, snapshot_of(tmp_path, pd.DataFrame({"x": range(40), "y": range(40)}))
    )
    changed = snapshot_of(tmp_path, pd.DataFrame({"z": ["a", "b"] * 20, "y": range(40)}))
    contract, built = load_or_build_contract(settings, changed, rebuild=True)
    assert built and {rule.name for rule in contract.columns} == {"z", "y"}


def test_committed_contract_is_used_until_a_local_one_exists(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")  # bikeshare-demand ships one
    assert contract_path(settings) == REPO_ROOT / "data" / "contracts" / "bikeshare-demand.json"
