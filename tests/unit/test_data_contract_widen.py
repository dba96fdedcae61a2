"""Contracts that follow legitimate drift: soft rules (ranges, feature categories) can be
widened into a new revision; hard rules (columns, kinds, empties, target classes) never."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from config.settings import Settings
from data.contract import (
    BETWEEN,
    EXIST,
    IN_SET,
    NOT_NULL,
    Contract,
    build_contract,
    diff,
    validate,
    widen,
)
from data.live import append_live_rows
from data.sources import Snapshot, load_snapshot, load_table
from pipelines.train import check_contract

BUNDLED = Path(__file__).resolve().parents[2] / "data" / "bundled" / "bikeshare_2011.csv"


@pytest.fixture(scope="module")
def snap() -> Snapshot:
    return load_snapshot(BUNDLED, "bikers", "day", ("casual", "registered"))


@pytest.fixture(scope="module")
def contract(snap: Snapshot) -> Contract:
    return build_contract(snap.frame, snap.target, snap.time_column, digest=snap.digest)


def drifted(frame: pd.DataFrame) -> pd.DataFrame:
    """A heatwave and a new weather label: real drift, not broken data."""
    out = frame.copy()
    out.loc[out.index[:40], "temp"] = 2.4  # far above the reference's 0..1 (+50 %)
    out.loc[out.index[40], "weathersit"] = "dust storm"
    return out


def test_range_and_category_failures_are_soft_and_name_the_widen_command(
    snap: Snapshot, contract: Contract
) -> None:
    report = validate(drifted(snap.frame), contract)
    assert {(f.column, f.expectation) for f in report.soft_failures} == {
        ("temp", BETWEEN),
        ("weathersit", IN_SET),
    }
    assert report.hard_failures == []
    assert "driftloop contract widen --data FILE" in report.summary()


def test_widen_admits_the_drift_in_a_new_revision_with_a_readable_diff(
    snap: Snapshot, contract: Contract
) -> None:
    frame = drifted(snap.frame)
    widened = widen(contract, frame, reason="admit march")
    assert widened.revision == contract.revision + 1
    assert validate(frame, widened).success
    rule = widened.rule("temp")
    assert rule.max >= 2.4 and rule.min == contract.rule("temp").min
    assert widened.rule("weathersit").allowed[-1] == "dust storm"
    assert "Widened in revision 2 (admit march)" in rule.why[BETWEEN]
    change = diff(contract, widened)
    assert [(c.column, c.what) for c in change.changes] == [
        ("weathersit", "categories"),
        ("temp", "range"),
    ]
    assert change.hard == []
    assert "contract revision 1 → 2: 2 changes" in change.summary()
    # untouched rules stay as they were; the original contract is not mutated
    assert widened.rule("hum").max == contract.rule("hum").max
    assert contract.rule("temp").max < 2.4
    assert Contract.from_json(widened.to_json()).revision == 2


def test_hard_rules_are_never_widened(snap: Snapshot, contract: Contract) -> None:
    frame = drifted(snap.frame).drop(columns=["hum"])
    frame["bikers"] = frame["bikers"].astype(float)
    frame.loc[frame.index[3], "bikers"] = None
    report = validate(frame, widen(contract, frame))
    hard = {(f.column, f.expectation) for f in report.hard_failures}
    assert ("hum", EXIST) in hard and ("bikers", NOT_NULL) in hard
    assert report.soft_failures == []


def test_an_unknown_target_class_is_hard() -> None:
    reference = pd.DataFrame({"x": [1.0, 2.0, 3.0] * 10, "churn": ["yes", "no", "no"] * 10})
    contract = build_contract(reference, "churn", None)
    window = reference.copy()
    window.loc[0, "churn"] = "Maybe"
    report = validate(window, widen(contract, window))
    assert [(f.column, f.expectation) for f in report.hard_failures] == [("churn", IN_SET)]


def test_failures_count_offending_rows_per_source(snap: Snapshot, tmp_path: Path) -> None:
    recent = snap.frame.tail(30).copy()
    recent["temp"] = 3.0
    path = tmp_path / "window.parquet"
    recent.to_parquet(path)
    combined = append_live_rows(snap, load_table(path), str(path))
    assert combined.provenance is not None and len(combined.provenance) == len(combined.frame)
    assert combined.source == f"{snap.source} + live window {path}"
    contract = build_contract(snap.frame, snap.target, snap.time_column)
    report = validate(combined.frame, contract, provenance=combined.provenance)
    failure = report.failure("temp", BETWEEN)
    assert failure.origins == {snap.source: 0, f"live window {path}": 30}
    assert f"from {snap.source}: 0, live window {path}: 30" in failure.line()


def test_check_contract_widens_only_when_allowed_and_keeps_the_old_revision(
    snap: Snapshot, tmp_path: Path
) -> None:
    settings = Settings(state_dir=tmp_path, model_name="widen-demo")
    first = check_contract(settings, snap)  # builds r1 from the data itself
    assert first.built and first.report.success and first.contract.revision == 1
    frame = drifted(snap.frame)
    moved = Snapshot(**{**snap.__dict__, "frame": frame, "source": "march.csv"})

    refused = check_contract(settings, moved)
    assert not refused.report.success and refused.widened is None

    admitted = check_contract(settings, moved, allow_widen=True)
    assert admitted.report.success and admitted.contract.revision == 2
    assert admitted.first is not None and not admitted.first.success
    assert {c.column for c in admitted.widened.changes} == {"temp", "weathersit"}
    contracts = tmp_path / "contracts"
    assert Contract.load(contracts / "widen-demo.json").revision == 2
    assert Contract.load(contracts / "widen-demo.r1.json").revision == 1

    broken = Snapshot(**{**snap.__dict__, "frame": frame.drop(columns=["hum"]), "source": "x"})
    still = check_contract(settings, broken, allow_widen=True)
    assert not still.report.success and still.widened is None
    assert Contract.load(contracts / "widen-demo.json").revision == 2
