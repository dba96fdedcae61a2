"""Alias logic of the registry helpers, on a throwaway SQLite MLflow store (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.names import CHALLENGER, CHAMPION, PREVIOUS
from registry import Registry, RegistryError


@pytest.fixture
def store(mlflow_store: tuple[str, str]) -> tuple[str, str]:
    """The session's SQLite MLflow store (tests/unit/conftest.py); model names are unique."""
    return mlflow_store


def make(store: tuple[str, str], name: str, versions: int, tmp_path: Path) -> Registry:
    uri, run_id = store
    registry = Registry(name, uri)
    for _ in range(versions):
        registry.register(f"runs:/{run_id}/model", run_id, {"family": "sklearn"})
    return registry


def test_register_numbers_versions_and_keeps_tags(store: tuple[str, str], tmp_path: Path) -> None:
    registry = make(store, "reg-a", 2, tmp_path)
    versions = registry.versions()
    assert [v.version for v in versions] == ["2", "1"]
    assert versions[0].tags["family"] == "sklearn"
    assert registry.by_alias(CHAMPION) is None
    assert registry.aliases() == {}


def test_rollback_after_two_promotions_restores_earlier_champion(
    store: tuple[str, str], tmp_path: Path
) -> None:
    registry = make(store, "reg-b", 3, tmp_path)
    registry.set_alias(CHAMPION, 1, "first version")
    registry.set_alias(CHALLENGER, 2, "waits for traffic")
    registry.promote(2, "won on live labels")
    assert registry.aliases() == {CHAMPION: "2", PREVIOUS: "1"}  # challenger cleared
    registry.promote(3, "won again")
    assert registry.aliases() == {CHAMPION: "3", PREVIOUS: "2"}
    registry.rollback("v3 degraded")
    assert registry.aliases() == {CHAMPION: "2", PREVIOUS: "3"}
    moves = registry.history.list()  # newest first
    assert [m.action for m in moves] == [
        "rollback",
        "promote",
        "promote",
        "set-challenger",
        "set-champion",
    ]
    assert moves[2].moves[CHAMPION] == ("1", "2") and moves[2].reason == "won on live labels"
    assert moves[0].moves == {CHAMPION: ("3", "2"), PREVIOUS: ("2", "3")}
    status = registry.get(2).tags["last_decision"]  # the readable `status` tag
    assert status.startswith("champion since ") and status.endswith(" — rollback: v3 degraded")


def test_history_keeps_figures(store: tuple[str, str], tmp_path: Path) -> None:
    registry = make(store, "reg-c", 2, tmp_path)
    registry.set_alias(CHAMPION, 1, "first")
    registry.promote(2, "better", actor="monitor", figures={"challenger_rmse": 41.5})
    last = registry.history.list()[0]
    assert last.actor == "monitor" and last.figures == {"challenger_rmse": 41.5}


def test_errors_name_the_problem(store: tuple[str, str], tmp_path: Path) -> None:
    registry = make(store, "reg-d", 1, tmp_path)
    with pytest.raises(RegistryError, match="no 'previous' version"):
        registry.rollback("nothing to roll back to")
    with pytest.raises(RegistryError, match=r"no version 7 \(versions: 1\)"):
        registry.promote(7, "typo")
    registry.set_alias(CHAMPION, 1, "first")
    with pytest.raises(RegistryError, match="already the champion"):
        registry.promote(1, "again")
    with pytest.raises(RegistryError, match="unknown alias 'latest'"):
        registry.set_alias("latest", 1, "never rely on latest")
