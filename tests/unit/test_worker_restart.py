"""What makes a killed serving worker answer again soon (no server): the supervisor's
respawn check, the torch-free skops import, MLflow's requirements check after start-up."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from config.serving import ServingSettings
from driftloop import bentoml_serve
from driftloop.serving import serve_command


def test_driftloop_serve_runs_bentoml_through_the_fast_respawn_launcher(tmp_path: Path) -> None:
    settings = ServingSettings(model_name="m", state_dir=tmp_path)
    argv, _, _ = serve_command(settings, 3123, bento_tag="m-service:v2")
    assert argv[:5] == [sys.executable, "-m", "driftloop.bentoml_serve", "serve", "m-service:v2"]
    assert argv[5:] == ["--host", "127.0.0.1", "--port", "3123"]


def test_the_launcher_gives_bentomls_arbiter_a_short_check_delay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bentoml._internal.utils.circus as bentoml_circus
    from circus.arbiter import Arbiter
    from circus.exc import ConflictError

    # monkeypatch puts BentoML's and circus's originals back after the test
    monkeypatch.setattr(
        bentoml_circus, "create_standalone_arbiter", bentoml_circus.create_standalone_arbiter
    )
    original_manage = Arbiter.manage_watchers
    monkeypatch.setattr(Arbiter, "manage_watchers", original_manage)
    unpatched = bentoml_circus.create_standalone_arbiter([])
    assert unpatched.check_delay == 10  # BentoML's own: a dead worker waits up to 10 s

    bentoml_serve._patch_arbiter(bentoml_serve.RESPAWN_CHECK_S)
    arbiter = bentoml_circus.create_standalone_arbiter([])
    assert arbiter.check_delay == bentoml_serve.RESPAWN_CHECK_S <= 0.5
    # A pass refused while another arbiter command runs is skipped (circus would log it as
    # an error at every check while the arbiter starts).
    arbiter._exclusive_running_command = "arbiter_start"
    with pytest.raises(ConflictError):
        original_manage(arbiter)
    assert arbiter.manage_watchers() is None


SKOPS_CHECK = """
import json, sys
from registry.environment import import_skops_without_torch
import_skops_without_torch()
from skops.io import _trusted_types
without_torch = "torch" not in sys.modules
names = list(_trusted_types.SKLEARN_ESTIMATOR_TYPE_NAMES)
from sklearn.utils import all_estimators  # the full walk (imports torch where installed)
from skops.io._utils import get_type_name
full = [get_type_name(c) for _, c in all_estimators()]
full = [n for n in full if n.startswith("sklearn.")]
print(json.dumps({"without_torch": without_torch, "names": names, "full": full}))
"""


def test_skops_imports_without_torch_and_trusts_the_same_types() -> None:
    pytest.importorskip("skops")
    done = subprocess.run(
        [sys.executable, "-c", SKOPS_CHECK], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["without_torch"]
    assert (
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor"
        in found["names"]
    )
    assert found["names"] == found["full"]


TRUSTED_NAMES = """
import json, sys
import mlflow.sklearn, pandas, prefect  # a process with thousands of modules loaded
if sys.argv[1] == "indexed":
    from registry.environment import import_skops_without_torch
    import_skops_without_torch()
import skops.io._utils
from skops.io import _trusted_types
names = {
    key: value
    for key, value in vars(_trusted_types).items()
    if key.endswith("_NAMES") and isinstance(value, list)
}
restored = skops.io._utils.whichmodule.__module__ == "skops.io._utils"
print(json.dumps({"names": names, "restored": restored, "modules": len(sys.modules)}))
"""


def test_skops_names_the_same_trusted_types_with_its_search_indexed() -> None:
    """skops's ufunc search answered from an index (`_IndexedWhichmodule`) gives every
    trusted-type name skops's own search gives, and skops's function is back after."""
    pytest.importorskip("skops")
    found = {}
    for mode in ("indexed", "skops"):
        done = subprocess.run(
            [sys.executable, "-c", TRUSTED_NAMES, mode],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        found[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    indexed, own = found["indexed"]["names"], found["skops"]["names"]
    assert found["indexed"]["restored"]
    assert found["indexed"]["modules"] > 1000
    assert len(own["NUMPY_UFUNC_TYPE_NAMES"]) > 50 and len(own["SCIPY_UFUNC_TYPE_NAMES"]) > 50
    assert indexed == own


def test_the_launcher_has_bentoml_start_workers_as_warm_parents(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import _bentoml_impl.server.serving as bentoml_serving

    from driftloop import warm_worker

    # monkeypatch puts BentoML's own worker module back after the test
    monkeypatch.setattr(bentoml_serving, "_SERVICE_WORKER_SCRIPT", "_bentoml_impl.worker.service")
    bentoml_serve._patch_worker(warm_worker.WORKER_MODULE)
    assert bentoml_serving._SERVICE_WORKER_SCRIPT == "driftloop.warm_worker"
    # what `python -m` runs: the module's command line (found by restart.worker_pids)
    assert importlib.util.find_spec(warm_worker.WORKER_MODULE) is not None
