"""The one polling loop (`procs.wait_until`): deadline, interval, a named timeout."""

from __future__ import annotations

import time

import pytest

from driftloop.procs import wait_until


def test_returns_as_soon_as_the_condition_holds() -> None:
    asked: list[float] = []

    def third_time() -> bool:
        asked.append(time.monotonic())
        return len(asked) == 3

    wait_until(third_time, timeout_s=5, interval_s=0.01, what="the third ask")
    assert len(asked) == 3


def test_timeout_names_what_it_waited_for_and_asks_at_the_deadline() -> None:
    asked: list[float] = []
    start = time.monotonic()

    def never() -> bool:
        asked.append(time.monotonic())
        return False

    with pytest.raises(TimeoutError, match="waiting for the moon"):
        wait_until(never, timeout_s=0.3, interval_s=0.1, what="the moon")
    assert asked[-1] - start >= 0.3  # the last ask is not skipped by an interval's sleep
    assert time.monotonic() - start < 2.0


def test_zero_timeout_still_asks_once() -> None:
    wait_until(lambda: True, timeout_s=0, what="an answer")


def test_the_condition_may_stop_the_wait_by_raising() -> None:
    def died() -> bool:
        raise RuntimeError("the server exited")

    with pytest.raises(RuntimeError, match="exited"):
        wait_until(died, timeout_s=5, what="a dead server")
