"""Each `driftloop serve` worker is a warm parent (the process BentoML's supervisor started)
and a serving child it forked (driftloop/warm_worker.py): a `kill -9` of the serving
processes is answered by new children of the same parents, and stopping the server (what
Ctrl-C on `driftloop serve` sends) leaves no process behind."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
import test_serving as ts

from bentos.packaging import package_version
from driftloop import procs
from driftloop.warm_worker import find_workers
from registry import Registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # its own server: 78 s here (loaded)

models = ts.models  # fixtures shared with test_serving.py
home = ts.home
WORKERS = 2  # the default


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_killed_serving_processes_are_re_forked_by_their_warm_parents_and_stop_cleans_up(
    mlflow_server: procs.Server,
    models: ts.Models,
    home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    name = f"warm-{uuid.uuid4().hex[:6]}"
    uri = mlflow_server.base_url
    v1, _ = ts.register(uri, name, models)
    package_version(name, v1.version, uri, home=home)
    Registry(name, uri).set_alias("champion", v1.version, reason="warm restart test")
    settings = ts.settings_for(tmp_path_factory.mktemp("warm"), name, uri, workers=WORKERS)
    served = ts.start("serve-warm", settings, home)
    root = served.server.process.pid
    try:
        before = find_workers(root)
        assert len(before.keepers) == WORKERS, before
        assert all(len(kids) == 1 for kids in before.tree.values()), before
        body = {"records": ts.records(models, 2)}
        assert served.predict(body).status_code == 200

        killed_at = time.monotonic()
        for pid in before.serving:  # every serving process: only a re-forked one can answer
            psutil.Process(pid).kill()

        def answered() -> bool:
            try:
                return served.predict(body).status_code == 200
            except httpx.HTTPError:
                return False

        procs.wait_until(answered, 120, 0.05, "a 200 after the kill")
        answered_s = time.monotonic() - killed_at
        procs.wait_until(
            lambda: all(len(k) == 1 for k in find_workers(root).tree.values()),
            60,
            0.1,
            "a serving child under every keeper",
        )
        after = find_workers(root)
        assert after.keepers == before.keepers  # the warm parents were not restarted
        assert after.serving.isdisjoint(before.serving)
        for keeper, kids in after.tree.items():
            assert psutil.Process(kids[0]).ppid() == keeper
        log = served.server.log_path.read_text(errors="replace")
        assert "after its fork from warm parent" in log
        print(f"\nkill -9 of {WORKERS} serving processes: 200 again after {answered_s:.2f} s")

        # Ctrl-C on `driftloop serve` sends SIGINT to `bentoml serve`; its supervisor stops
        # the keepers, which stop their children.
        tree = {root, *after.keepers, *after.serving}
        served.server.process.send_signal(signal.SIGINT)
        served.server.process.wait(timeout=60)
        procs.wait_until(
            lambda: not any(_alive(pid) for pid in tree), 30, 0.1, "every process gone"
        )
    finally:
        served.server.stop()
