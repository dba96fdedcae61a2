"""Canary and shadow routing: sticky, proportional, and shadow when the share is 0."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

import pytest

from bentos.routing import SALT_FILE, Route, bucket, model_salt, route, routing_secret


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


def test_assignment_depends_on_the_secret_not_only_on_public_data() -> None:
    keys = [f"station-{n}" for n in range(1000)]
    public = {k for k in keys if route(k, 0.3, True, salt="bikeshare-demand").answer != "champion"}
    secret = model_salt("s" * 64, "bikeshare-demand")
    salted = {k for k in keys if route(k, 0.3, True, salt=secret).answer != "champion"}
    # Knowing the model name tells an outsider nothing: the two splits agree by chance only.
    overlap = len(public & salted) / len(salted)
    assert 0.2 <= overlap <= 0.4
    assert salted == {k for k in keys if route(k, 0.3, True, salt=secret).answer != "champion"}


def test_the_secret_is_created_once_kept_private_and_survives_restarts(tmp_path: Path) -> None:
    state = tmp_path / "serving" / "m"
    first = routing_secret(None, state)
    assert len(first) == 64 and routing_secret(None, state) == first  # sticky
    assert (state / SALT_FILE).stat().st_mode & 0o777 == 0o600
    assert routing_secret("from-env", state) == "from-env"  # the setting wins
    assert routing_secret(None, tmp_path / "other") != first  # random, not derived


def test_concurrent_starts_agree_on_one_secret(tmp_path: Path) -> None:
    seen: list[str] = []
    threads = [
        threading.Thread(target=lambda: seen.append(routing_secret(None, tmp_path)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1 and len(seen) == 8
    assert [p.name for p in tmp_path.iterdir()] == [SALT_FILE]  # no temp files left


def test_a_truncated_secret_file_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    (tmp_path / SALT_FILE).write_text("abc")
    os.chmod(tmp_path / SALT_FILE, 0o600)
    with pytest.raises(ValueError, match="DRIFTLOOP_ROUTING_SALT"):
        routing_secret(None, tmp_path)
