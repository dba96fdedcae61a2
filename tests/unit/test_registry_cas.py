"""Compare-and-swap alias moves, idempotent retries and the newest-first history.

Pure parts on plain data; the moves on a throwaway SQLite MLflow store (no server).
The same moves across real processes against `mlflow server` are in
tests/integration/test_moves.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from config.names import CHALLENGER, CHAMPION, PREVIOUS
from monitoring.figures import decision_times
from pipelines.monitor import expected_aliases
from registry import (
    AliasesMoved,
    AliasMove,
    Registry,
    RegistryError,
    VersionInfo,
)
from registry.client import REGISTRATION_KEY_TAG, alias_differences, plan_promote, plan_rollback
from registry.ledger import Claim, claim_key, done_key, parse_ledger

# -- pure parts -------------------------------------------------------------------------------


def test_alias_differences_compare_only_expected_aliases() -> None:
    live = {CHAMPION: "3", PREVIOUS: "2"}
    assert alias_differences({CHAMPION: "3", PREVIOUS: "2"}, live) == {}
    assert alias_differences({CHAMPION: "2"}, live) == {CHAMPION: ("2", "3")}
    assert alias_differences({CHALLENGER: None}, live) == {}  # None = expected unset
    assert alias_differences({CHALLENGER: "4"}, live) == {CHALLENGER: ("4", None)}
    assert alias_differences({}, live) == {}


def test_plans_say_which_aliases_move() -> None:
    assert plan_rollback("m", {CHAMPION: "3", PREVIOUS: "2"}) == {CHAMPION: "2", PREVIOUS: "3"}
    assert plan_promote("m", {CHAMPION: "1", CHALLENGER: "2"}, "2") == {
        CHAMPION: "2",
        PREVIOUS: "1",
        CHALLENGER: None,
    }
    assert plan_promote("m", {}, "1") == {CHAMPION: "1"}
    with pytest.raises(RegistryError, match="no 'previous' version"):
        plan_rollback("m", {CHAMPION: "1"})
    with pytest.raises(RegistryError, match="already the champion"):
        plan_promote("m", {CHAMPION: "1"}, "1")


def test_refusal_names_expected_and_found() -> None:
    exc = AliasesMoved(
        "bikes", "rollback", {CHAMPION: "3", PREVIOUS: "2"}, {CHAMPION: "2", PREVIOUS: "3"}
    )
    text = str(exc)
    assert "rollback of 'bikes' refused" in text and "already rolled back?" in text
    assert "expected champion v3, previous v2; found champion v2, previous v3" in text
    assert exc.expected == {CHAMPION: "3", PREVIOUS: "2"}
    assert exc.actual == {CHAMPION: "2", PREVIOUS: "3"}


def test_ledger_params_parse_into_claims_and_outcomes() -> None:
    first = Claim("d-1", "promote", "user", {CHAMPION: "1"}, {CHAMPION: "2"}, "t")
    second = Claim("d-2", "rollback", "monitor", {CHAMPION: "2"}, {CHAMPION: "1"}, "t")
    state = parse_ledger(
        {
            claim_key(1): first.encode(),
            done_key(1): "ok",
            claim_key(2): second.encode(),
            "move.garbage": "x",
            claim_key(3): "not json",  # never blocks the ledger
        }
    )
    assert state.generation == 2 and not state.settled
    assert state.claims[1] == first and state.outcomes == {1: "ok"}
    assert state.find("d-2") == (2, second) and state.find("d-9") is None
    assert parse_ledger({}).generation == 0 and parse_ledger({}).settled


def test_decision_times_take_the_newest_of_each_kind() -> None:
    def move(action: str, at: str) -> AliasMove:
        return AliasMove(at=at, action=action, moves={}, reason="", actor="monitor")

    newest_first = [
        move("rollback", "2026-03-04T00:00:00+00:00"),
        move("promote", "2026-03-03T00:00:00+00:00"),
        move("retrain", "2026-03-02T00:00:00+00:00"),
        move("promote", "2026-01-01T00:00:00+00:00"),
        move("retrain", "2026-01-01T00:00:00+00:00"),
    ]
    assert decision_times(newest_first) == (
        datetime(2026, 3, 3, tzinfo=UTC),
        datetime(2026, 3, 2, tzinfo=UTC),
    )
    assert decision_times([]) == (None, None)


def test_expected_aliases_cover_every_alias() -> None:
    def info(version: str) -> VersionInfo:
        return VersionInfo("m", version, None, "", (), {}, datetime.now(UTC))

    assert expected_aliases({CHAMPION: info("2"), PREVIOUS: info("1")}) == {
        CHAMPION: "2",
        CHALLENGER: None,
        PREVIOUS: "1",
    }


# -- on a SQLite store ----------------------------------------------------------------------


@pytest.fixture
def store(mlflow_store: tuple[str, str]) -> tuple[str, str]:
    """The session's SQLite MLflow store (tests/unit/conftest.py); model names are unique."""
    return mlflow_store


def promoted(store: tuple[str, str], name: str, wait_s: float = 5.0) -> Registry:
    """Versions 1..3; champion 3, previous 2 (after two promotions)."""
    uri, run_id = store
    registry = Registry(name, uri, move_wait_s=wait_s)
    for _ in range(3):
        registry.register(f"runs:/{run_id}/model", run_id)
    registry.set_alias(CHAMPION, 1, "first")
    registry.promote(2, "second")
    registry.promote(3, "third")
    return registry


def test_rollback_with_stale_expectation_is_refused_and_moves_nothing(
    store: tuple[str, str],
) -> None:
    registry = promoted(store, "cas-a")
    seen = registry.aliases()
    other = Registry("cas-a", store[0])  # a second process that saw the same aliases
    other.rollback("first rollback", expected={CHAMPION: seen[CHAMPION], PREVIOUS: "2"})
    with pytest.raises(AliasesMoved, match="already rolled back") as refused:
        registry.rollback("second rollback", expected={CHAMPION: "3", PREVIOUS: "2"})
    assert refused.value.actual == {CHAMPION: "2", PREVIOUS: "3"}
    assert registry.aliases() == {CHAMPION: "2", PREVIOUS: "3"}
    actions = [m.action for m in registry.history.list()]
    assert actions.count("rollback") == 1


def test_losing_the_claim_race_rereads_and_refuses(
    store: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both movers compared the aliases before either claimed: the ledger decides."""
    registry = promoted(store, "cas-b")
    other = Registry("cas-b", store[0])
    real_claim = registry.ledger.claim
    raced = []

    def claim_after_the_other(generation: int, claim: Claim) -> Claim:
        if not raced:  # the other mover claims this very generation first
            raced.append(other.rollback("the other rollback"))
        return real_claim(generation, claim)

    monkeypatch.setattr(registry.ledger, "claim", claim_after_the_other)
    with pytest.raises(AliasesMoved):
        registry.rollback("our rollback")  # implicit expectation: what it read first
    assert registry.aliases() == {CHAMPION: "2", PREVIOUS: "3"}  # one swap, not two
    assert [m.reason for m in registry.history.list(2)] == ["the other rollback", "third"]


def test_retry_with_the_same_decision_id_replays_instead_of_moving(
    store: tuple[str, str],
) -> None:
    registry = promoted(store, "cas-c")
    first = registry.rollback("v3 degraded", decision_id="monitor-abc")
    again = registry.rollback("v3 degraded", decision_id="monitor-abc")
    assert not first.replayed and again.replayed
    assert again.moves == first.moves == {CHAMPION: ("3", "2"), PREVIOUS: ("2", "3")}
    assert registry.aliases() == {CHAMPION: "2", PREVIOUS: "3"}  # not swapped back
    assert [m.action for m in registry.history.list()].count("rollback") == 1
    assert registry.history.find("monitor-abc") == first


def test_a_claim_left_half_done_by_our_own_attempt_is_finished(
    store: tuple[str, str],
) -> None:
    """The first attempt claimed and died before writing: its retry carries it out."""
    registry = promoted(store, "cas-d")
    state = registry.ledger.read()
    claim = Claim(
        "retry-1",
        "rollback",
        "monitor",
        {CHAMPION: "3", PREVIOUS: "2", CHALLENGER: None},
        {CHAMPION: "2", PREVIOUS: "3"},
        "2026-01-01T00:00:00+00:00",
    )
    assert registry.ledger.claim(state.generation + 1, claim) == claim
    move = registry.rollback("v3 degraded", actor="monitor", decision_id="retry-1")
    assert registry.aliases() == {CHAMPION: "2", PREVIOUS: "3"}
    assert move.moves == {CHAMPION: ("3", "2"), PREVIOUS: ("2", "3")}
    assert registry.ledger.read().outcomes[state.generation + 1] == "ok"


def test_an_abandoned_claim_is_waited_for_then_passed(store: tuple[str, str]) -> None:
    registry = promoted(store, "cas-e", wait_s=0.5)
    state = registry.ledger.read()
    dead = Claim("dead-1", "promote", "user", {}, {CHAMPION: "1"}, "t")
    registry.ledger.claim(state.generation + 1, dead)  # its mover died before writing
    move = registry.rollback("v3 degraded")
    assert move.moves[CHAMPION] == ("3", "2")
    assert registry.ledger.read().generation == state.generation + 2


def test_registration_key_makes_register_idempotent(store: tuple[str, str]) -> None:
    uri, run_id = store
    registry = Registry("cas-f", uri)
    first = registry.register(f"runs:/{run_id}/model", run_id, registration_key="train-1")
    again = registry.register(f"runs:/{run_id}/model", run_id, registration_key="train-1")
    other = registry.register(f"runs:/{run_id}/model", run_id, registration_key="train-2")
    assert again.version == first.version == "1" and other.version == "2"
    assert [v.version for v in registry.versions()] == ["2", "1"]


def test_fresh_registration_key_skips_the_lookup_and_still_tags_the_version(
    store: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first attempt (`fresh_key`) registers without searching for its key, the first
    version of a new model included; a retry with the key finds that version."""
    uri, run_id = store
    registry = Registry("cas-h", uri)
    searched: list[str] = []
    real = Registry.find_registered
    monkeypatch.setattr(
        Registry, "find_registered", lambda self, key: searched.append(key) or real(self, key)
    )
    first = registry.register(
        f"runs:/{run_id}/model", run_id, {"family": "sklearn"}, "train-9", fresh_key=True
    )
    assert searched == [] and first.version == "1"
    assert registry.get("1").tags[REGISTRATION_KEY_TAG] == "train-9"
    assert registry.get("1").tags["family"] == "sklearn"
    retried = registry.register(f"runs:/{run_id}/model", run_id, registration_key="train-9")
    assert searched == ["train-9"] and retried.version == "1"
    second = registry.register(
        f"runs:/{run_id}/model", run_id, registration_key="t-2", fresh_key=True
    )
    assert second.version == "2" and [v.version for v in registry.versions()] == ["2", "1"]


def test_history_is_newest_first_and_pages_past_the_first_page(store: tuple[str, str]) -> None:
    uri, _ = store
    history = Registry("cas-g", uri).history
    for i in range(7):
        action = "retrain" if i == 1 else "note"
        history.append(AliasMove.now(action=action, moves={}, reason=f"r{i}", actor="test"))
    seen, token, pages = [], None, 0
    while True:
        page = history.page(limit=3, page_token=token)
        seen += [m.reason for m in page.moves]
        pages += 1
        token = page.next_page_token
        if token is None:
            break
    assert seen == [f"r{i}" for i in reversed(range(7))] and pages == 3
    assert history.list(2)[0].reason == "r6"
    latest = history.latest("retrain")
    assert latest is not None and latest.reason == "r1"  # older than the first page
    with pytest.raises(ValueError, match="at least 1"):
        history.page(limit=0)
