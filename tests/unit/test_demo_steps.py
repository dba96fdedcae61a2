"""The demo's steps without a stack: polling (the first truthy answer, or a failure naming
what never came) and its environment (scoped to the run, restored after)."""

from __future__ import annotations

import os

import pytest

from driftloop.demo import DemoFailed, demo_env, scoped_environ, wait_for


def test_wait_for_returns_the_first_truthy_answer() -> None:
    answers = iter([None, "", "v2", "v3"])
    assert wait_for(lambda: next(answers), 10, "the challenger") == "v2"
    assert next(answers) == "v3"  # polling stopped at the first truthy answer


def test_wait_for_names_what_never_came() -> None:
    calls: list[int] = []
    with pytest.raises(DemoFailed, match=r"timed out after 2 s waiting for the rollback"):
        wait_for(lambda: calls.append(1), 1.5, "the rollback")
    assert 1 <= len(calls) <= 3  # polled about once a second


def test_the_demo_env_keeps_what_the_user_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRIFTLOOP_CANARY_SHARE", raising=False)
    monkeypatch.setenv("DRIFTLOOP_WATCH_PERIOD_S", "60")
    env = demo_env()
    assert env["DRIFTLOOP_CANARY_SHARE"] == "0.3"  # the demo's default
    assert env["DRIFTLOOP_WATCH_PERIOD_S"] == "60"  # the user's


def test_the_environment_is_restored_after_the_demo_even_when_it_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRIFTLOOP_CANARY_SHARE", "0.5")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = dict(os.environ)
    with pytest.raises(DemoFailed), scoped_environ({"DRIFTLOOP_CANARY_SHARE": "0.3"}):
        assert os.environ["DRIFTLOOP_CANARY_SHARE"] == "0.3"
        os.environ["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:5000"  # set by a step
        raise DemoFailed("a step failed")
    assert dict(os.environ) == before
