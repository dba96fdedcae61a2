"""Canary and shadow routing: sticky, proportional, and shadow when the share is 0."""

from __future__ import annotations

import uuid

from bentos.routing import Route, bucket, route


def test_share_of_1000_distinct_ids_is_close_to_the_canary_share() -> None:
    ids = [uuid.uuid4().hex for _ in range(1000)]
    to_challenger = sum(route(i, 0.3, has_challenger=True).answer == "challenger" for i in ids)
    assert 250 <= to_challenger <= 350  # 0.3 ± 5 %


def test_the_same_key_always_goes_to_the_same_model() -> None:
    keys = [f"station-{n}" for n in range(200)]
    first = [route(k, 0.3, True, salt="m") for k in keys]
    assert first == [route(k, 0.3, True, salt="m") for k in keys]
    assert {r.answer for r in first} == {"champion", "challenger"}


def test_raising_the_share_only_moves_callers_to_the_challenger() -> None:
    keys = [str(n) for n in range(500)]
    at_10 = {k for k in keys if route(k, 0.1, True).answer == "challenger"}
    at_30 = {k for k in keys if route(k, 0.3, True).answer == "challenger"}
    assert at_10 < at_30


def test_share_zero_is_shadow_and_no_challenger_is_champion_only() -> None:
    assert route("k", 0.0, has_challenger=True) == Route("champion", shadow=True)
    assert route("k", 0.5, has_challenger=False) == Route("champion", shadow=False)
    assert route("k", 1.0, has_challenger=True) == Route("challenger")


def test_buckets_are_uniform_and_salted_per_model() -> None:
    values = [bucket(str(n)) for n in range(4000)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert abs(sum(values) / len(values) - 0.5) < 0.03
    assert bucket("k", salt="model-a") != bucket("k", salt="model-b")
