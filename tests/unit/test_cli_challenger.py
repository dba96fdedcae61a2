"""`driftloop challenger set | clear | share` on a throwaway SQLite MLflow store (no server).

Moves go through the same compare-and-swap ledger as `promote` / `rollback`; the share is
a registered-model tag the serving follower polls (tests/unit/test_bentos_follower.py and
tests/integration/test_serving.py show a service following it).
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from config.names import CHALLENGER, CHAMPION
from driftloop.cli import app
from registry import CANARY_SHARE_TAG, Registry


@pytest.fixture()
def model(lifecycle_model: Registry) -> Registry:
    """A fresh model: versions 1-3, champion v1, challenger v2 (tests/unit/conftest.py)."""
    return lifecycle_model


def run(registry: Registry, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args, "-m", registry.model_name])
    return result.exit_code, result.output


def actions(registry: Registry) -> list[str]:
    return [m.action for m in registry.history.list()]


def test_clear_removes_the_challenger_records_who_and_why_and_tags_it_retired(
    model: Registry,
) -> None:
    code, out = run(model, "challenger", "clear")
    assert code == 0, out
    assert "challenger cleared: challenger: 2 → -" in out
    assert model.aliases() == {CHAMPION: "1"}
    newest = model.history.list(1)[0]
    assert newest.action == "clear-challenger" and newest.reason == "cleared by user"
    assert newest.actor.startswith("user:") and newest.moves == {CHALLENGER: ("2", None)}
    assert model.get(2).tags["retired"].endswith(": cleared by user")
    # Claimed and finished through the ledger, like promote / rollback.
    state = model.ledger.read()
    assert state.claims[state.generation].decision_id == newest.decision_id
    assert state.outcomes[state.generation] == "ok"


def test_clear_without_a_challenger_refuses_with_exit_2(model: Registry) -> None:
    assert run(model, "challenger", "clear")[0] == 0
    code, out = run(model, "challenger", "clear")
    assert code == 2
    assert "has no challenger: nothing to clear" in out
    assert actions(model).count("clear-challenger") == 1


def test_clear_retried_with_its_decision_id_changes_nothing(model: Registry) -> None:
    first = run(model, "challenger", "clear", "--decision-id", "ops-42", "--reason", "bad fit")
    again = run(model, "challenger", "clear", "--decision-id", "ops-42", "--reason", "bad fit")
    assert first[0] == 0 and again[0] == 0, (first, again)
    assert "already done by decision ops-42" in again[1] and "nothing changed" in again[1]
    assert actions(model).count("clear-challenger") == 1
    assert model.history.find("ops-42").reason == "bad fit"


def test_clear_refuses_when_the_challenger_is_not_the_expected_one(model: Registry) -> None:
    code, out = run(model, "challenger", "clear", "--expect-challenger", "3")
    assert code == 1
    assert "refused: the aliases moved" in out and "expected challenger v3" in out
    assert model.aliases()[CHALLENGER] == "2"


def test_set_makes_a_version_challenger_but_never_the_champion(model: Registry) -> None:
    code, out = run(model, "challenger", "set", "1")
    assert code == 2 and "is the champion" in out
    code, out = run(model, "challenger", "set", "3", "--reason", "judge the gate loser live")
    assert code == 0, out
    assert model.aliases() == {CHAMPION: "1", CHALLENGER: "3"}
    assert model.history.list(1)[0].reason == "judge the gate loser live"
    code, out = run(model, "challenger", "set", "9")
    assert code == 2 and "has no version 9" in out


@pytest.mark.parametrize("bad", ["1.5", "1.01", "abc", "nan", "inf"])
def test_share_outside_0_to_1_is_refused_with_exit_2(model: Registry, bad: str) -> None:
    code, out = run(model, "challenger", "share", bad)
    assert code == 2
    assert f"SHARE {bad!r} is not a share" in out and "from 0" in out
    assert model.canary_share() is None
    assert "canary-share" not in actions(model)


def test_share_is_set_in_the_registry_shown_recorded_and_reset(model: Registry) -> None:
    code, out = run(model, "challenger", "share")
    assert code == 0 and "canary share 0 (from setting canary_share" in out
    code, out = run(model, "challenger", "share", "0.2", "--reason", "ramp up")
    assert code == 0, out
    assert "canary share the serving setting → 0.2: ramp up" in out
    assert model.canary_share() == 0.2
    assert model.aliases_and_tags()[1][CANARY_SHARE_TAG] == "0.2"
    assert (
        "canary share 0.2 (from registry tag driftloop.canary_share)"
        in run(model, "challenger", "share")[1]
    )
    assert run(model, "challenger", "share", "0.5")[0] == 0
    recorded = model.history.list(1)[0]
    assert recorded.action == "canary-share"
    assert recorded.figures == {"canary_share": 0.5, "previous_canary_share": 0.2}
    code, out = run(model, "challenger", "share", "--reset")
    assert code == 0 and "0.5 → the serving setting (tag removed)" in out
    assert model.canary_share() is None
    assert run(model, "challenger", "share", "0.3", "--reset")[0] == 2
