"""A version's tags: a short, fixed set a person reads, one JSON tag for the code, and the
same flat view for versions registered before (one tag per key)."""

from __future__ import annotations

import json

from mlflow import MlflowClient

from registry import Registry
from registry.tags import DETAILS_TAG, data_line, flat_tags, holdout_line, stored_tags

# What a training registers (pipelines/train.py: version_tags + provenance_tags + rule).
TRAINED = {
    "data_digest": "1a2b3c4d5e6f7a8b9c0d",
    "data_source": "/home/me/project/data/Bikeshare.csv",
    "validation": "passed",
    "validation_checks": "41",
    "family": "sklearn",
    "task": "regression",
    "target": "bikers",
    "parent_version": "2",
    "holdout_rmse": "32.93417",
    "holdout_mae": "21.0712",
    "holdout_r2": "0.71234",
    "data_source_arg": "data/Bikeshare.csv",
    "time_from": "1293840000.0",
    "time_until": "1301529600.0",
    "recent_rows_added": "",
    "shuffled_labels": "false",
    "contract_revision": "1",
    "contract_widened": "",
}
READABLE = {"family", "task", "data", "holdout", "gate", "bento", "status", DETAILS_TAG}


def test_a_trained_version_carries_the_fixed_readable_set_and_one_json_tag(
    mlflow_store: tuple[str, str],
) -> None:
    uri, run_id = mlflow_store
    registry = Registry("tags-a", uri)
    registry.register(f"runs:/{run_id}/model", run_id, TRAINED, registration_key="train-1")
    registry.set_tags("1", {"gate_decision": "champion: no champion yet"})
    registry.set_tags("1", {"bento_tag": "tags-a-service:v1", "bento_model_tag": "tags-a:v1"})
    registry.set_alias("champion", "1", "first version")

    stored = MlflowClient(uri).get_model_version("tags-a", "1").tags
    assert set(stored) == READABLE
    assert stored["gate"] == "champion: no champion yet"
    assert stored["bento"] == "tags-a-service:v1"
    assert stored["status"].startswith("champion since ")
    assert stored["status"].endswith(" — set-champion: first version")
    assert stored["data"] == (
        "Bikeshare.csv 2011-01-01 → 2011-03-31 · digest 1a2b3c4d5e6f · "
        "validation passed (41 checks)"
    )
    assert (
        stored["holdout"]
        == "rmse 32.93 · mae 21.07 · r2 0.7123 · compared with v2 on the same holdout"
    )
    details = json.loads(stored[DETAILS_TAG])
    assert details["bento_model_tag"] == "tags-a:v1" and "champion_since" in details
    assert details["driftloop.registration_key"] == "train-1"

    flat = registry.get("1").tags  # what every caller reads: the same keys as before
    assert {k: flat[k] for k in TRAINED} == TRAINED
    assert flat["gate_decision"] == "champion: no champion yet"
    assert flat["bento_tag"] == "tags-a-service:v1"
    assert registry.get("1").holdout_metric("rmse") == 32.93417
    assert registry.find_registered("train-1").version == "1"  # type: ignore[union-attr]


def test_later_writes_merge_into_the_details_and_keep_earlier_ones(
    mlflow_store: tuple[str, str],
) -> None:
    uri, run_id = mlflow_store
    registry = Registry("tags-b", uri)
    registry.register(f"runs:/{run_id}/model", run_id, TRAINED)
    registry.set_tags("1", {"champion_since": "2026-12-01T10:00:00+00:00"})
    registry.set_tags("1", {"bento_model_tag": "tags-b:v1"})
    registry.set_tags("1", {"last_monitor_decision": "retrain pending: 12 labels of 200"})
    flat = registry.get("1").tags
    assert flat["champion_since"] == "2026-12-01T10:00:00+00:00"
    assert flat["bento_model_tag"] == "tags-b:v1" and flat["target"] == "bikers"
    assert flat["last_monitor_decision"] == "retrain pending: 12 labels of 200"
    assert MlflowClient(uri).get_model_version("tags-b", "1").tags["monitor"].startswith("retrain")


def test_a_version_registered_before_reads_the_same_and_takes_new_writes(
    mlflow_store: tuple[str, str],
) -> None:
    """One tag per key (older driftloop): read as is; new values win over the old tags."""
    uri, run_id = mlflow_store
    client = MlflowClient(uri)
    client.create_registered_model("tags-old")
    legacy = {**TRAINED, "gate_decision": "challenger: old", "champion_since": "2026-01-01"}
    client.create_model_version("tags-old", f"runs:/{run_id}/model", run_id, tags=legacy)
    registry = Registry("tags-old", uri)
    assert registry.get("1").tags == legacy
    registry.set_tags("1", {"gate_decision": "champion: new", "champion_since": "2026-12-01"})
    flat = registry.get("1").tags
    assert flat["gate_decision"] == "champion: new" and flat["champion_since"] == "2026-12-01"
    assert flat["data_digest"] == TRAINED["data_digest"]


def test_registration_keys_match_exactly_not_by_prefix(mlflow_store: tuple[str, str]) -> None:
    uri, run_id = mlflow_store
    registry = Registry("tags-c", uri)
    registry.register(f"runs:/{run_id}/model", run_id, registration_key="train-12")
    assert registry.find_registered("train-1") is None
    assert registry.find_registered("train-12").version == "1"  # type: ignore[union-attr]


def test_long_values_are_cut_to_what_mlflow_keeps() -> None:
    out = stored_tags({"gate_decision": "x" * 9000, "contract_widened": "y" * 9000}, {})
    assert len(out["gate"]) == 4900
    assert len(json.loads(out[DETAILS_TAG])["contract_widened"]) == 600
    assert flat_tags(out)["gate_decision"] == "x" * 4900


def test_the_readable_lines_say_what_was_trained_and_how_it_scored() -> None:
    shuffled = {**TRAINED, "shuffled_labels": "true", "recent_rows_added": "runs:/r/rows"}
    assert data_line(shuffled).endswith(
        "+ recent live rows · LABELS SHUFFLED (demo of a bad version)"
    )
    assert data_line({"data_source": "s3://bucket/x.parquet"}) == "x.parquet"
    assert holdout_line({"holdout_f1_macro": "0.8123456"}) == "f1_macro 0.8123"


def test_the_registry_checks_a_name_is_no_prompt_once_not_before_every_write(
    mlflow_store: tuple[str, str], monkeypatch
) -> None:
    uri, run_id = mlflow_store
    registry = Registry("tags-prompt-check", uri)
    registry.register(f"runs:/{run_id}/model", run_id, TRAINED, registration_key="train-2")
    reads: list[str] = []
    original = MlflowClient.get_registered_model

    def counted(client: MlflowClient, name: str):  # type: ignore[no-untyped-def]
        reads.append(name)
        return original(client, name)

    monkeypatch.setattr(MlflowClient, "get_registered_model", counted)
    for n in range(3):
        registry.set_tags("1", {"gate_decision": f"champion: try {n}"})
    assert reads.count("tags-prompt-check") == 1
    assert MlflowClient(uri).get_model_version("tags-prompt-check", "1").tags["gate"] == (
        "champion: try 2"
    )

    # A prompt stays refused, as MLflow refuses it.
    MlflowClient(uri)._get_registry_client().create_registered_model(  # as prompts are made
        "a-prompt", tags={"mlflow.prompt.is_prompt": "true"}
    )
    try:
        Registry("a-prompt", uri).set_tags("1", {"gate_decision": "x"})
    except Exception as exc:  # MLflow's own answer for a prompt (the version would differ)
        assert "Registered Model with name='a-prompt' not found" in str(exc)
    else:
        raise AssertionError("a prompt took a model version tag")
