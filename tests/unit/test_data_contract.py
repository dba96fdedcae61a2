"""The data contract: built from the bundled data, it passes that data and names what breaks it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from data.contract import (
    BETWEEN,
    EXIST,
    IN_SET,
    NOT_NULL,
    ROW_COUNT,
    TYPE,
    Contract,
    ContractViolation,
    build_contract,
    label_rule,
    validate,
)
from data.errors import DataError
from data.sources import Snapshot, load_snapshot

BUNDLED = Path(__file__).resolve().parents[2] / "data" / "bundled" / "bikeshare_2011.csv"


@pytest.fixture(scope="module")
def snap() -> Snapshot:
    return load_snapshot(BUNDLED, "bikers", "day", ("casual", "registered"))


@pytest.fixture(scope="module")
def contract(snap: Snapshot) -> Contract:
    return build_contract(snap.frame, snap.target, snap.time_column, digest=snap.digest)


@pytest.fixture()
def frame(snap: Snapshot) -> pd.DataFrame:
    return snap.frame.copy()


def test_contract_built_from_bundled_data_passes_it_quickly(
    snap: Snapshot, contract: Contract, capfd: pytest.CaptureFixture[str]
) -> None:
    validate(snap.frame.head(50), contract)  # warm up: the first call imports GE
    capfd.readouterr()
    started = time.perf_counter()
    report = validate(snap.frame, contract, source=snap.source)
    elapsed = time.perf_counter() - started
    assert report.success, report.summary()
    assert report.failures == [] and report.evaluated >= 40
    assert report.summary().startswith(f"data contract passed for {snap.source}")
    assert elapsed < 3.0
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # no progress bars, no analytics chatter


def test_contract_rules_follow_the_reference_data(snap: Snapshot, contract: Contract) -> None:
    assert contract.created_from_digest == snap.digest
    target = contract.rule("bikers")
    assert target.role == "target" and not target.nullable
    assert "rows without a label cannot train" in target.why[NOT_NULL]
    temp = contract.rule("temp")
    low, high = snap.frame["temp"].min(), snap.frame["temp"].max()
    assert temp.min == pytest.approx(low - 0.5 * (high - low))
    assert temp.max == pytest.approx(high + 0.5 * (high - low))
    assert contract.rule("weathersit").allowed == [
        "clear",
        "cloudy/misty",
        "heavy rain/snow",
        "light rain/snow",
    ]
    day = contract.rule("day")
    assert day.role == "time" and day.min is None  # later data may come from later days
    assert {r.name for r in contract.columns} == set(snap.frame.columns)


def test_many_categories_get_no_allowed_set() -> None:
    reference = pd.DataFrame({"id": [f"u{i}" for i in range(60)], "y": range(60)})
    assert build_contract(reference, "y", None).rule("id").allowed is None


def test_text_in_a_numeric_column_is_named_with_examples(
    frame: pd.DataFrame, contract: Contract
) -> None:
    frame["temp"] = frame["temp"].astype(object)
    frame.loc[frame.index[[3, 8]], "temp"] = ["hot", "n/a"]
    report = validate(frame, contract)
    failure = report.failure("temp")
    assert failure.expectation == TYPE
    assert failure.examples == ["hot", "n/a"] and failure.unexpected_count == 2
    assert failure.example_rows == [3, 8]
    assert "column 'temp': should be numeric but 2 values" in report.summary()
    assert [f.column for f in report.failures] == ["temp"]  # no follow-up range noise


def test_numbers_where_categories_belong_are_named(frame: pd.DataFrame, contract: Contract) -> None:
    frame["weathersit"] = frame["weathersit"].map({"clear": 1}).fillna(2).astype(int)
    failure = validate(frame, contract).failure("weathersit", TYPE)
    assert "where the reference had categories such as 'clear'" in failure.message


def test_values_outside_the_widened_range_are_shown(
    frame: pd.DataFrame, contract: Contract
) -> None:
    frame.loc[frame.index[:3], "hum"] = [7.3, 9.1, 7.3]
    frame.loc[frame.index[5], "hum"] = 1.2  # above the data's 1.0 but inside the tolerance
    report = validate(frame, contract)
    failure = report.failure("hum", BETWEEN)
    assert failure.unexpected_count == 3 and failure.examples == [7.3, 9.1]
    line = "column 'hum': 3 values (0.035%) outside [-0.5, 1.5], e.g. 7.3, 9.1"
    assert f"{line} ({BETWEEN})" in report.summary()


def test_unseen_category_is_named_with_the_known_ones(
    frame: pd.DataFrame, contract: Contract
) -> None:
    frame.loc[frame.index[10], "weathersit"] = "blizzard"
    failure = validate(frame, contract).failure("weathersit", IN_SET)
    assert failure.examples == ["blizzard"] and failure.example_rows == [10]
    assert "not seen in the reference data, e.g. 'blizzard'; known: 'clear'" in failure.message


def test_empty_target_rows_are_pointed_at(frame: pd.DataFrame, contract: Contract) -> None:
    frame["bikers"] = frame["bikers"].astype(float)
    frame.loc[frame.index[[20, 21]], "bikers"] = None
    failure = validate(frame, contract).failure("bikers", NOT_NULL)
    assert failure.unexpected_count == 2 and failure.example_rows == [20, 21]
    assert failure.message.startswith("2 empty values") and "rows 20, 21" in failure.message
    assert "rows without a label cannot train" in failure.why


def test_missing_and_renamed_columns_are_named(frame: pd.DataFrame, contract: Contract) -> None:
    frame = frame.drop(columns=["atemp"]).rename(columns={"windspeed": "wind_speed"})
    report = validate(frame, contract)
    assert report.failure("atemp", EXIST).message == "is missing: the contract requires it"
    assert "did you rename it to 'wind_speed'?" in report.failure("windspeed", EXIST).message
    assert {f.column for f in report.failures} == {"atemp", "windspeed"}


def test_too_few_rows_fail_the_table(frame: pd.DataFrame, contract: Contract) -> None:
    report = validate(frame.head(5), contract)
    assert report.failure(None, ROW_COUNT).message == (
        "only 5 rows: the contract needs at least 20"
    )
    assert report.summary().splitlines()[1].startswith("  table: only 5 rows")


def test_several_failures_are_each_reported_by_column(
    frame: pd.DataFrame, contract: Contract
) -> None:
    frame.loc[frame.index[0], "hr"] = 99
    frame.loc[frame.index[1], "mnth"] = "Smarch"
    report = validate(frame, contract)
    assert {(f.column, f.expectation) for f in report.failures} == {
        ("hr", BETWEEN),
        ("mnth", IN_SET),
    }
    assert report.statistics["failed"] == 2 and report.statistics["rows"] == len(frame)


def test_raw_data_with_extra_columns_and_unlabelled_inputs_pass(
    snap: Snapshot, contract: Contract
) -> None:
    raw = pd.read_csv(BUNDLED)
    report = validate(raw, contract)
    assert report.success, report.summary()
    assert report.statistics["extra_columns"] == ["casual", "registered"]
    inputs = snap.frame.drop(columns=["bikers"])
    assert not validate(inputs, contract).success


def test_contract_json_round_trip(tmp_path: Path, contract: Contract) -> None:
    path = contract.save(tmp_path / "contract" / "data_contract.json")
    text = path.read_text()
    assert text.startswith('{\n  "columns": [')  # sorted keys, indent 2: diffable
    assert json.loads(text)["format"] == 1
    assert Contract.load(path) == contract
    assert Contract.from_json(contract.to_json()) == contract


def test_broken_contract_files_say_how_to_rebuild(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data contract .*nope\.json does not exist"):
        Contract.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json is not valid JSON.*build_contract"):
        Contract.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(DataError, match=r"other\.json is not a driftloop data contract"):
        Contract.load(tmp_path / "other.json")


def test_a_violation_says_what_a_human_can_act_on(frame: pd.DataFrame, contract: Contract) -> None:
    frame.loc[frame.index[0], "temp"] = 7.3
    with pytest.raises(ContractViolation) as err:
        raise ContractViolation(validate(frame, contract, source="new_rides.csv"))
    message = str(err.value)
    assert message.startswith("data contract failed for new_rides.csv: 1 of ")
    assert "column 'temp': 1 value (0.012%) outside [-0.45, 1.43], e.g. 7.3" in message
    assert "driftloop contract widen --data FILE" in message  # the fix
    assert isinstance(err.value, DataError)
    assert err.value.report.failure("temp").examples == [7.3]
    json.dumps(err.value.report.to_dict())  # loggable as validation.json


def test_the_label_rule_is_the_targets_contract_rule(contract: Contract, snap: Snapshot) -> None:
    rule = label_rule(contract, "regression", snap.frame["bikers"])
    target = contract.rule("bikers")
    assert rule == {
        "target": "bikers",
        "task": "regression",
        "kind": "numeric",
        "classes": None,
        "min": target.min,
        "max": target.max,
    }
    churn = pd.DataFrame({"x": range(40), "churned": ["Yes", "No"] * 20})
    rule = label_rule(build_contract(churn, "churned", None), "classification", churn["churned"])
    assert rule["classes"] == ["No", "Yes"] and rule["min"] is None
    codes = pd.DataFrame({"x": range(40), "y": [0, 1] * 20})  # numeric classes: from the data
    rule = label_rule(build_contract(codes, "y", None), "classification", codes["y"])
    assert rule["classes"] == [0, 1] and rule["kind"] == "numeric" and rule["max"] is None


def test_the_two_pass_run_gives_what_one_summary_pass_gives(
    frame: pd.DataFrame, contract: Contract
) -> None:
    """Great Expectations runs every expectation with BOOLEAN_ONLY, then the failed ones
    with SUMMARY: each result must be what a single SUMMARY pass gives (the report's
    counts, examples and rows come from it), and every passed one must have passed."""
    import great_expectations as gx

    from data.contract import (
        _SUMMARY,
        _expectation_specs,
        _gx_batch_definition,
        _run_great_expectations,
        _to_expectations,
    )

    frame.loc[frame.index[:7], "temp"] = 99.0
    frame.loc[frame.index[3:6], "hum"] = None
    frame.loc[frame.index[10:12], "mnth"] = "Smarch"
    frame.loc[frame.index[20], "bikers"] = None
    specs = _expectation_specs(contract)
    two_pass = _run_great_expectations(frame, _to_expectations(specs))
    batch = _gx_batch_definition().get_batch(batch_parameters={"dataframe": frame})
    suite = gx.ExpectationSuite(name="one-pass", expectations=_to_expectations(specs))
    one_pass = {
        (r.expectation_config.type, r.expectation_config.kwargs.get("column")): r
        for r in batch.validate(suite, result_format=_SUMMARY).results
    }
    assert two_pass.keys() == one_pass.keys() and len(two_pass) == len(specs)
    failed = {key for key, result in one_pass.items() if not result.success}
    assert failed == {
        (BETWEEN, "temp"),
        (NOT_NULL, "hum"),
        (IN_SET, "mnth"),
        (NOT_NULL, "bikers"),
    }
    assert {key for key, result in two_pass.items() if not result.success} == failed
    for key in failed:
        assert repr(two_pass[key].result) == repr(one_pass[key].result), key  # NaN != NaN
    report = validate(frame, contract)
    assert report.failure("temp", BETWEEN).unexpected_count == 7
    assert report.failure("hum", NOT_NULL).example_rows == [3, 4, 5]
    assert report.failure("mnth", IN_SET).examples == ["Smarch"]
