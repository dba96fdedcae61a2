"""Alias moves under concurrency and retries, against the session's real servers.

Concurrent rollbacks (threads with their own clients, and two `driftloop rollback`
processes) make exactly one move; a Prefect retry of `act` after a move that went
through does not move again; a retried registration and gate do not duplicate a
version or a move; the history pages newest first; one monitor check per model.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from prefect import flow
from prefect.settings import PREFECT_API_URL, temporary_settings

from config.names import CHAMPION, PREVIOUS
from config.settings import Settings
from driftloop import procs
from monitoring.policy import Action, Decision
from pipelines.monitor import act, monitor_guard
from registry import AliasesMoved, AliasMove, Registry

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "driftloop")


@pytest.fixture(scope="module")
def source(mlflow_server: procs.Server) -> str:
    """A run with a placeholder artifact to register versions from (no model needed)."""
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.base_url)
    experiment = client.create_experiment(f"moves-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment)
    client.log_text(run.info.run_id, "placeholder", "model/MLmodel")
    return run.info.run_id


@pytest.fixture
def promoted(mlflow_server: procs.Server, source: str) -> Callable[[], tuple[str, Registry]]:
    """A fresh model with versions 1..3, champion 3 and previous 2."""

    def make() -> tuple[str, Registry]:
        name = f"moves-{uuid.uuid4().hex[:8]}"
        registry = Registry(name, mlflow_server.base_url)
        for _ in range(3):
            registry.register(f"runs:/{source}/model", source)
        registry.set_alias(CHAMPION, 1, "first")
        registry.promote(2, "second")
        registry.promote(3, "third")
        return name, registry

    return make


@pytest.fixture(scope="module")
def prefect_api(prefect_server: procs.Server) -> Iterator[str]:
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.base_url}):
        yield prefect_server.base_url


def test_concurrent_rollbacks_make_exactly_one_move(
    mlflow_server: procs.Server, promoted: Callable[[], tuple[str, Registry]]
) -> None:
    name, registry = promoted()
    seen = registry.aliases()
    expected = {CHAMPION: seen[CHAMPION], PREVIOUS: seen[PREVIOUS]}
    racers = 4
    start = threading.Barrier(racers)
    outcomes: list[object] = [None] * racers

    def roll(i: int) -> None:
        mover = Registry(name, mlflow_server.base_url)  # its own client, as another machine
        start.wait()
        try:
            outcomes[i] = mover.rollback(f"racer {i}", expected=expected)
        except AliasesMoved as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=roll, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    moves = [o for o in outcomes if isinstance(o, AliasMove)]
    refused = [o for o in outcomes if isinstance(o, AliasesMoved)]
    assert len(moves) == 1 and len(refused) == racers - 1, outcomes
    assert registry.aliases() == {CHAMPION: "2", PREVIOUS: "3"}
    assert all("already rolled back?" in str(r) for r in refused)
    rollbacks = [m for m in registry.history.list(10) if m.action == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0].reason == moves[0].reason


def test_two_cli_rollbacks_one_moves_the_other_exits_1(
    mlflow_server: procs.Server, promoted: Callable[[], tuple[str, Registry]], tmp_path: Path
) -> None:
    name, registry = promoted()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server.base_url,
        "DRIFTLOOP_STATE_DIR": str(tmp_path),
        "DRIFTLOOP_MODEL_NAME": name,
    }
    argv = [CLI, "rollback", "--expect-champion", "3", "--reason", "v3 degraded"]
    both = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=180), *p.communicate()) for p in both]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    moved = next(out for code, out, _ in results if code == 0)
    refused = next(err for code, _, err in results if code == 1)
    assert f"{name} now: champion v3, previous v2" in moved
    assert "rolled back: champion: 3 → 2, previous: 2 → 3" in moved
    assert "rollback of" in refused and "refused: the aliases moved" in refused
    assert "expected champion v3" in refused and "found champion v2" in refused
    assert registry.aliases() == {CHAMPION: "2", PREVIOUS: "3"}
    assert [m.action for m in registry.history.list(10)].count("rollback") == 1


def test_retried_act_after_a_successful_rollback_does_not_move_again(
    mlflow_server: procs.Server,
    prefect_api: str,
    promoted: Callable[[], tuple[str, Registry]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The swap lands, then the task fails (its event cannot be sent): Prefect retries."""
    name, registry = promoted()
    settings = Settings(model_name=name, tracking_uri=mlflow_server.base_url, state_dir=tmp_path)
    state = {"versions": {alias: registry.get(v) for alias, v in registry.aliases().items()}}
    decision = Decision(Action.ROLLBACK, "champion rmse 80 vs previous 50", {"x": 1.0})
    import prefect.events

    real_emit = prefect.events.emit_event
    attempts: list[str] = []

    def emit_fails_once(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args[0])
        if len(attempts) == 1:
            raise ConnectionError("event bus dropped the connection after the swap")
        return real_emit(*args, **kwargs)

    monkeypatch.setattr(prefect.events, "emit_event", emit_fails_once)

    @flow(name="act-retry-test")
    def one_check() -> str | None:
        return act(settings, decision, pd.DataFrame(), state, f"monitor-{uuid.uuid4().hex}")

    acted = one_check()
    assert attempts == ["driftloop.rollback"]  # the retry replayed: no second swap, no event
    assert acted == "rolled back: champion: 3 → 2, previous: 2 → 3"
    assert registry.aliases() == {CHAMPION: "2", PREVIOUS: "3"}  # not swapped back
    rollbacks = [m for m in registry.history.list(10) if m.action == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0].actor == "monitor"


@pytest.mark.slow
def test_retried_registration_and_gate_do_not_duplicate(
    mlflow_server: procs.Server,
    prefect_api: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server registers the version, then the answer is lost; later the gate's
    alias lands and its answer is lost too. Prefect retries both tasks."""
    from pipelines.train import train_flow

    name = f"retry-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.base_url)
    monkeypatch.setenv("DRIFTLOOP_STATE_DIR", str(tmp_path))
    lost: list[str] = []

    def answer_lost_once(method: Callable[..., Any], what: str) -> Callable[..., Any]:
        def call(self: Registry, *args: Any, **kwargs: Any) -> Any:
            result = method(self, *args, **kwargs)
            if what not in lost:
                lost.append(what)
                raise ConnectionError(f"connection reset after {what}")
            return result

        return call

    monkeypatch.setattr(Registry, "register", answer_lost_once(Registry.register, "register"))
    monkeypatch.setattr(Registry, "set_alias", answer_lost_once(Registry.set_alias, "set_alias"))
    result = train_flow(model_name=name, package_bento=False)
    assert lost == ["register", "set_alias"]  # both failures happened and were retried
    registry = Registry(name, mlflow_server.base_url)
    assert [v.version for v in registry.versions()] == ["1"]  # no duplicate version
    assert result["version"] == "1" and result["alias"] == CHAMPION
    assert registry.aliases() == {CHAMPION: "1"}
    assert [m.action for m in registry.history.list(10)] == ["set-champion"]
    runs = mlflow.MlflowClient(mlflow_server.base_url).search_runs(
        [mlflow.MlflowClient(mlflow_server.base_url).get_experiment_by_name(name).experiment_id],
        filter_string="tags.`driftloop.stage` = 'training'",
    )
    assert len(runs) == 1  # the retry did not log a second training run


def test_history_pages_newest_first_past_the_first_page(
    mlflow_server: procs.Server, tmp_path: Path
) -> None:
    name = f"hist-{uuid.uuid4().hex[:8]}"
    history = Registry(name, mlflow_server.base_url).history
    history.append(AliasMove.now(action="retrain", moves={}, reason="oldest", actor="t"))
    for i in range(6):
        history.append(AliasMove.now(action="note", moves={}, reason=f"n{i}", actor="t"))
    retrain = history.latest("retrain")  # what the cool-down reads, beyond page one
    assert retrain is not None and retrain.reason == "oldest"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server.base_url,
        "DRIFTLOOP_STATE_DIR": str(tmp_path),
    }
    shown: list[str] = []
    token: str | None = None
    for _ in range(3):
        extra = ["--page-token", token] if token else []
        page = subprocess.run(
            [CLI, "history", "-m", name, "--limit", "3", "--json", *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert page.returncode == 0, page.stderr
        shown += [m["reason"] for m in json.loads(page.stdout)]
        more = re.search(r"--page-token (\S+)", page.stderr)
        token = more.group(1) if more else None
        if token is None:
            break
    assert shown == ["n5", "n4", "n3", "n2", "n1", "n0", "oldest"]
    assert token is None


def test_one_monitor_check_per_model_at_a_time(
    mlflow_server: procs.Server, prefect_api: str, tmp_path: Path
) -> None:
    """While a check holds the model's guard, `driftloop monitor` refuses (wait 0) and an
    in-process check with a wait enters only after the holder leaves."""
    name = f"guard-{uuid.uuid4().hex[:8]}"
    settings = Settings(model_name=name, state_dir=tmp_path, monitor_guard_wait_s=60)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server.base_url,
        "PREFECT_API_URL": prefect_api,
        "DRIFTLOOP_STATE_DIR": str(tmp_path),
        "DRIFTLOOP_MODEL_NAME": name,
        "DRIFTLOOP_MONITOR_GUARD_WAIT_S": "0",
    }
    times: dict[str, float] = {}
    with monitor_guard(settings):
        times["held"] = time.monotonic()
        busy = subprocess.run(
            [CLI, "monitor", "--json"], env=env, capture_output=True, text=True, timeout=180
        )

        def second_check() -> None:
            # Prefect's settings context does not follow a new thread: point it again.
            with (
                temporary_settings(updates={PREFECT_API_URL: prefect_api}),
                monitor_guard(settings),
            ):
                times["entered"] = time.monotonic()

        waiter = threading.Thread(target=second_check)
        waiter.start()
        time.sleep(1.0)  # the waiter is inside its acquisition loop by now
        assert "entered" not in times
        times["released"] = time.monotonic()
    waiter.join(timeout=90)
    assert busy.returncode == 1, busy.stdout + busy.stderr
    check = json.loads(busy.stdout)
    assert f"another monitor check of '{name}' is running" in check["error"]
    assert check["acted"] is None
    assert times["entered"] >= times["released"]


def test_registrations_answer_is_what_a_read_gives(
    mlflow_server: procs.Server, source: str
) -> None:
    """The training flow packages the version from `register`'s answer (no read back):
    that answer must be the version as the registry stores it, tags included."""
    registry = Registry(f"moves-{uuid.uuid4().hex[:8]}", mlflow_server.base_url)
    tags = {"family": "sklearn", "data_digest": "abc123", "holdout_rmse": 1.5}
    for _ in range(2):  # the model's first version (creates it), then a later one
        registered = registry.register(
            f"runs:/{source}/model",
            source,
            tags,
            registration_key=f"train-{uuid.uuid4().hex}",
            fresh_key=True,
        )
        read = registry.get(registered.version)
        assert registered == read
        assert registered.stored_tags == read.stored_tags
        assert registered.tags["data_digest"] == "abc123"
