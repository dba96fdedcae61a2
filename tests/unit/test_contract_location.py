"""Where the training flow finds a model's data contract, and how it is rebuilt."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from config.settings import REPO_ROOT, Settings
from data.sources import load_snapshot
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


def test_an_empty_state_folder_takes_the_newest_contract_logged_to_the_tracking_store(
    tmp_path: Path, mlflow_store: tuple[str, str]
) -> None:
    """Another machine widened the contract and logged it; this one has no local copy."""
    import mlflow

    from pipelines.tracking import CONTRACT_ARTIFACT

    uri, _ = mlflow_store
    frame = pd.DataFrame({"x": range(40), "y": range(40)})
    elsewhere = Settings(state_dir=tmp_path / "a", model_name="loc-c", tracking_uri=uri)
    older, _ = load_or_build_contract(elsewhere, snapshot_of(tmp_path, frame))
    newer, _ = load_or_build_contract(
        Settings(state_dir=tmp_path / "b", model_name="loc-c"),
        snapshot_of(tmp_path, pd.DataFrame({"x": range(100, 140), "y": range(40)})),
    )
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("loc-c", artifact_location=(tmp_path / "art").as_uri())
    logged = (("training", older), ("validation", None), ("contract", newer))
    for i, (stage, contract) in enumerate(logged):
        run = client.create_run(
            experiment, start_time=1_700_000_000_000 + i, tags={"driftloop.stage": stage}
        )
        if contract is not None:
            client.log_dict(run.info.run_id, contract.to_dict(), CONTRACT_ARTIFACT)
        client.set_terminated(run.info.run_id)

    here = Settings(state_dir=tmp_path / "empty", model_name="loc-c", tracking_uri=uri)
    found, built = load_or_build_contract(here, snapshot_of(tmp_path, frame))
    assert not built and found.to_json() == newer.to_json()
    assert contract_path(here) == tmp_path / "empty" / "contracts" / "loc-c.json"  # kept
    # The embedded store lives in the state folder: nothing elsewhere to look at.
    alone = Settings(state_dir=tmp_path / "alone", model_name="loc-c")
    _, built_alone = load_or_build_contract(alone, snapshot_of(tmp_path, frame))
    assert built_alone
