"""The demo's polling: the first truthy answer, or a failure naming what never came."""

from __future__ import annotations

import pytest

from driftloop.demo import DemoFailed, wait_for


def test_wait_for_returns_the_first_truthy_answer() -> None:
    answers = iter([None, "", "v2", "v3"])
    assert wait_for(lambda: next(answers), 10, "the challenger") == "v2"
    assert next(answers) == "v3"  # polling stopped at the first truthy answer


def test_wait_for_names_what_never_came() -> None:
    calls: list[int] = []
    with pytest.raises(DemoFailed, match=r"timed out after 2 s waiting for the rollback"):
        wait_for(lambda: calls.append(1), 1.5, "the rollback")
    assert 1 <= len(calls) <= 3  # polled about once a second
