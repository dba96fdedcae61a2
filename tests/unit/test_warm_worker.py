"""The warm parent that forks serving workers (driftloop/warm_worker.py), with real forks
and tiny child functions instead of BentoML's worker: respawn, give-up, signals, death
with the parent, and finding the processes under a server."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

from bentos import service
from driftloop import warm_worker
from driftloop.warm_worker import Keeper


@pytest.fixture(autouse=True)
def restored_signals() -> Iterator[None]:
    """Keeper.run installs its handlers in this process: put pytest's back."""
    before = {sig: signal.getsignal(sig) for sig in warm_worker.FORWARDED}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


def keeper(children: list[Callable[[Callable[[], None]], int | None]], **kw: Any) -> Keeper:
    """A keeper whose n-th child runs `children[n]` (the child sees the forks before it)."""

    def serve(ready: Callable[[], None]) -> int | None:
        return children[made.forks](ready)

    made = Keeper(serve=serve, exit_child=os._exit, backoff_s=0.01, **kw)
    return made


def served_then(code: int) -> Callable[[Callable[[], None]], int]:
    def child(ready: Callable[[], None]) -> int:
        ready()
        return code

    return child


def killed(ready: Callable[[], None]) -> None:
    ready()
    os.kill(os.getpid(), signal.SIGKILL)


def crashed_at_start(ready: Callable[[], None]) -> int:
    return 3  # uvicorn's STARTUP_FAILURE: never said ready


def test_a_child_killed_by_a_signal_is_replaced_at_once() -> None:
    keep = keeper([killed, killed, served_then(0)])
    began = time.monotonic()
    assert keep.run() == 0  # the third child stopped gracefully: the keeper exits 0
    assert keep.forks == 3
    assert time.monotonic() - began < 5  # no back-off after children that served


def test_children_that_die_before_serving_make_the_keeper_give_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    keep = keeper([crashed_at_start] * 5, start_failure_limit=3)
    with caplog.at_level(logging.WARNING, logger="driftloop.serving"):
        assert keep.run() == 1  # circus then starts a fresh worker
    assert keep.forks == 3
    assert "the 3. in a row that died before serving" in caplog.text
    assert "exited 3" in caplog.text


def test_a_child_that_served_resets_the_count_of_start_failures() -> None:
    children = [crashed_at_start, crashed_at_start, served_then(1), crashed_at_start]
    keep = keeper([*children, crashed_at_start, served_then(0)], start_failure_limit=3)
    assert keep.run() == 0
    assert keep.forks == 6


def test_an_exception_in_the_child_is_a_failed_child_not_a_second_keeper() -> None:
    def raises(ready: Callable[[], None]) -> None:
        raise ValueError("boom")

    keep = keeper([raises, served_then(0)])
    assert keep.run() == 0
    assert keep.forks == 2


def test_the_keeper_refuses_to_fork_beside_another_thread() -> None:
    import threading

    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        with pytest.raises(RuntimeError, match="2 threads"):
            keeper([served_then(0)]).run()
    finally:
        stop.set()
        other.join()


def _sleeper(ready: Callable[[], None]) -> None:
    """A child that serves until SIGTERM, then exits 42 (a graceful stop)."""
    signal.signal(signal.SIGTERM, lambda *_: os._exit(42))
    ready()
    time.sleep(60)
    os._exit(0)


def _start_keeper() -> tuple[int, int]:
    """A keeper in its own process (so this test can signal it); its pid and its child's."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = Keeper(serve=_sleeper, exit_child=os._exit).run()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        kids = psutil.Process(pid).children()
        if kids:
            return pid, kids[0].pid
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    raise TimeoutError("the keeper forked no child")


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def test_a_stop_signal_reaches_the_child_and_the_keeper_exits_with_its_code() -> None:
    keeper_pid, child = _start_keeper()
    time.sleep(0.2)  # the child installed its SIGTERM handler
    os.kill(keeper_pid, signal.SIGTERM)
    _, status = os.waitpid(keeper_pid, 0)
    assert os.waitstatus_to_exitcode(status) == 42  # the child's graceful exit code
    assert _gone(child)


def test_the_child_is_terminated_when_its_keeper_is_killed() -> None:
    keeper_pid, child = _start_keeper()
    os.kill(keeper_pid, signal.SIGKILL)
    os.waitpid(keeper_pid, 0)
    assert _gone(child)  # PR_SET_PDEATHSIG: no child outlives its keeper


def test_find_workers_tells_keepers_from_their_forked_children() -> None:
    forks = "import os, time\nif os.fork() == 0:\n    time.sleep(30)\nelse:\n    time.sleep(30)\n"
    keepers = [
        subprocess.Popen([sys.executable, "-c", forks, warm_worker.WORKER_MODULE]) for _ in range(2)
    ]
    stock = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", warm_worker.STOCK_WORKER_MODULE]
    )
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        found = warm_worker.find_workers(os.getpid())
        while time.monotonic() < deadline and sum(map(len, found.tree.values())) < 2:
            time.sleep(0.05)
            found = warm_worker.find_workers(os.getpid())
        assert found.keepers == {p.pid for p in [*keepers, stock]}
        children = {kid.pid for p in keepers for kid in psutil.Process(p.pid).children()}
        assert len(children) == 2
        assert found.serving == children | {stock.pid}  # a stock worker serves itself
    finally:
        for proc in [*keepers, stock, other]:
            for kid in psutil.Process(proc.pid).children():
                kid.kill()
            proc.kill()
            proc.wait()


def test_reconfiguring_logging_keeps_the_loggers_created_since_enabled() -> None:
    import logging.config

    def configure() -> None:  # BentoML's dictConfig disables every logger it does not name
        logging.config.dictConfig({"version": 1, "root": {"level": logging.WARNING}})

    created = logging.getLogger("driftloop.test-warm-worker")
    created.disabled = False
    warm_worker.keep_logger_states(configure)()
    assert not created.disabled
    configure()
    assert created.disabled  # what the child's `main` would have done to it
    created.disabled = False


def test_the_service_reads_the_parent_variable_the_keeper_sets() -> None:
    assert service.WARM_PARENT_ENV == warm_worker.PARENT_ENV


def test_exit_codes_read_like_a_shell_reads_them() -> None:
    assert warm_worker.exit_code(0) == 0
    assert warm_worker.exit_code(3 << 8) == 3
    assert warm_worker.exit_code(signal.SIGKILL) == 128 + 9
    assert warm_worker.describe(signal.SIGKILL) == "was killed by SIGKILL"


def test_the_bench_rows_say_what_was_killed_and_judge_the_median_kill() -> None:
    from bench.common import Section
    from bench.serving import restart

    results = restart.Results(
        serving=[restart.Restart(0.02, s, 2) for s in (1.4, 3.5, 2.9)],
        whole=restart.Restart(0.2, 7.1, 4),
        one=restart.OneKilled(900, 2, 0.05, 0.01, 15.0),
        workers=2,
    )
    section = Section("serving", "Serving")
    restart.report(section, results)
    (what, wanted, got, met), whole, one = section.targets
    assert "2 serving processes" in what and wanted == "≤ 3 s"
    assert got.startswith("2.9 s (median of 1.4, 3.5, 2.9 s") and met is True
    assert "warm parents included (4 processes" in whole[0] and "7.1 s" in whole[2]
    assert whole[3] is None and one[3] is None
    kills = [restart.Restart(0.02, s, 2) for s in (3.1, 3.5)]
    slower = restart.Results(kills, results.whole, results.one, 2)
    section = Section("serving", "Serving")
    restart.report(section, slower)
    assert section.targets[0][3] is False


PREPARE = """
import json, sys, threading
from driftloop import warm_worker
warm_worker.prepare(["bentos.service:DriftloopService", "--fd", "0", "--worker-id", "1"])
wanted = ["bentos.app", "mlflow.pyfunc", "skops.io", "sklearn.pipeline", "sqlalchemy", "uvicorn"]
print(json.dumps({
    "threads": [t.name for t in threading.enumerate()],
    "missing": [name for name in wanted if name not in sys.modules],
    "torch": "torch" in sys.modules,
}))
"""


def test_the_keepers_imports_start_no_thread_and_cover_the_service() -> None:
    """What a keeper runs before its first fork (BentoML's loader + `prefork`), for real:
    an import that started a thread would make every worker fall back to cold restarts."""
    done = subprocess.run(
        [sys.executable, "-c", PREPARE],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {"threads": ["MainThread"], "missing": [], "torch": False}
