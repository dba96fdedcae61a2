"""The warm parent that forks serving workers (driftloop/warm_worker.py), with real forks
and tiny child functions instead of BentoML's worker: respawn, give-up, signals, death
with the parent, and finding the processes under a server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import psutil
import pytest

from bentos import service
from driftloop import warm_worker
from driftloop.warm_worker import Keeper

# Each keeper runs in a fresh interpreter: it forks only from a single-threaded process,
# and the pytest process may hold threads left by other tests. The n-th child runs
# CHILDREN[n] (a child sees the number of forks before it).
KEEPER = """
import json, logging, os, signal, sys, time
from driftloop.warm_worker import Keeper

logging.basicConfig(level=logging.WARNING, format="%(message)s")


def served_then(code):
    def child(ready):
        ready()
        return code
    return child


def killed(ready):
    ready()
    os.kill(os.getpid(), signal.SIGKILL)


def crashed_at_start(ready):
    return 3  # uvicorn's STARTUP_FAILURE: never said ready


def raises(ready):
    raise ValueError("boom")


def sleeper(ready):
    signal.signal(signal.SIGTERM, lambda *_: os._exit(42))  # a graceful stop
    ready()
    signal.pause()  # until the test's SIGTERM (or the keeper's death) ends it
    os._exit(0)


CHILDREN = [{children}]
keep = Keeper(
    serve=lambda ready: CHILDREN[min(keep.forks, len(CHILDREN) - 1)](ready),
    exit_child=os._exit,
    backoff_s=0.01,
    {options}
)
began = time.monotonic()
code = keep.run()
print(json.dumps({{"code": code, "forks": keep.forks, "seconds": time.monotonic() - began}}))
"""


def keeper_script(children: str, options: str = "") -> list[str]:
    return [sys.executable, "-c", KEEPER.format(children=children, options=options)]


def run_keeper(children: str, options: str = "") -> tuple[dict[str, Any], str]:
    """The keeper's exit code, forks and seconds, and its log (stderr)."""
    done = subprocess.run(
        keeper_script(children, options), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_a_child_killed_by_a_signal_is_replaced_at_once() -> None:
    found, log = run_keeper("killed, killed, served_then(0)")
    assert found["code"] == 0  # the third child stopped gracefully: the keeper exits 0
    assert found["forks"] == 3
    assert found["seconds"] < 5  # no back-off after children that served
    assert log.count("was killed by SIGKILL") == 2


def test_children_that_die_before_serving_make_the_keeper_give_up() -> None:
    found, log = run_keeper("crashed_at_start", "start_failure_limit=3,")
    assert found["code"] == 1  # circus then starts a fresh worker
    assert found["forks"] == 3
    assert "the 3. in a row that died before serving" in log
    assert "exited 3" in log


def test_a_child_that_served_resets_the_count_of_start_failures() -> None:
    children = "crashed_at_start, crashed_at_start, served_then(1), crashed_at_start, "
    found, _ = run_keeper(children + "crashed_at_start, served_then(0)", "start_failure_limit=3,")
    assert found["code"] == 0
    assert found["forks"] == 6


def test_an_exception_in_the_child_is_a_failed_child_not_a_second_keeper() -> None:
    found, log = run_keeper("raises, served_then(0)")
    assert found["code"] == 0
    assert found["forks"] == 2
    assert "ValueError: boom" in log


def test_the_keeper_refuses_to_fork_beside_another_thread() -> None:
    with pytest.raises(RuntimeError, match="threads running"):
        Keeper(serve=lambda ready: 0, exit_child=os._exit, _threads=lambda: 2)._fork()


def _start_keeper() -> tuple[subprocess.Popen[str], int]:
    """A keeper whose child serves until SIGTERM (then exits 42); the keeper and its
    child's pid."""
    keeper = subprocess.Popen(keeper_script("sleeper"), text=True, stdout=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        kids = psutil.Process(keeper.pid).children()
        if kids:
            return keeper, kids[0].pid
        time.sleep(0.02)
    keeper.kill()
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
    keeper, child = _start_keeper()
    time.sleep(0.5)  # the child installed its SIGTERM handler
    keeper.send_signal(signal.SIGTERM)
    out, _ = keeper.communicate(timeout=30)
    found = json.loads(out.strip().splitlines()[-1])
    assert found["code"] == 42  # the keeper exits with the child's graceful exit code
    assert found["forks"] == 1
    assert _gone(child)


def test_the_child_is_terminated_when_its_keeper_is_killed() -> None:
    keeper, child = _start_keeper()
    keeper.kill()
    keeper.wait(timeout=30)
    assert _gone(child)  # PR_SET_PDEATHSIG: no child outlives its keeper


def test_find_workers_tells_keepers_from_their_forked_children() -> None:
    forks = "import os, signal\nos.fork()\nsignal.pause()\n"  # parent and child idle until killed
    keepers = [
        subprocess.Popen([sys.executable, "-c", forks, warm_worker.WORKER_MODULE]) for _ in range(2)
    ]
    stock = subprocess.Popen(
        [sys.executable, "-c", "import signal; signal.pause()", warm_worker.STOCK_WORKER_MODULE]
    )
    other = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
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


def test_the_bench_rows_say_what_was_killed_and_judge_the_slowest_kill() -> None:
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
    assert got.startswith("3.5 s (slowest of 1.4, 3.5, 2.9 s") and met is False
    assert "warm parents included (4 processes" in whole[0] and "7.1 s" in whole[2]
    assert whole[3] is None and one[3] is None
    kills = [restart.Restart(0.02, s, 2) for s in (1.1, 2.9)]
    faster = restart.Results(kills, results.whole, results.one, 2)
    section = Section("serving", "Serving")
    restart.report(section, faster)
    assert section.targets[0][3] is True


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
