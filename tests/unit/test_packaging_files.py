"""The lock and the Bento's requirements say the same thing as pyproject.toml, and the
Bento needs only mlflow-skinny: caught here, before an install or an image build fails."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.MULTILINE)


def pins(path: Path) -> dict[str, str]:
    return {canonicalize_name(n): v for n, v in PIN.findall(path.read_text())}


def test_the_lock_pins_every_dependency_of_pyproject_within_its_bounds() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        wanted += extra
    locked = pins(REPO / "requirements.lock")
    problems = []
    for line in wanted:
        requirement = Requirement(line)
        version = locked.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{requirement.name} is not in requirements.lock")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement.name}=={version} breaks {requirement.specifier}")
    assert problems == [], f"run `make lock`: {problems}"


def test_every_lock_line_has_a_hash() -> None:
    text = (REPO / "requirements.lock").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    assert blocks and all("--hash=sha256:" in block for block in blocks if "==" in block)


def test_bento_requirements_are_the_locked_versions() -> None:
    locked = pins(REPO / "requirements.lock")
    sklearn = pins(REPO / "bentos" / "requirements.txt")
    torch = pins(REPO / "bentos" / "requirements-torch.txt")
    for name, bento in (("requirements.txt", sklearn), ("requirements-torch.txt", torch)):
        differ = {n: (v, locked.get(n)) for n, v in bento.items() if locked.get(n) != v}
        assert differ == {}, f"bentos/{name} differs from requirements.lock; run `make lock`"
    assert "mlflow-skinny" in sklearn and "mlflow" not in sklearn
    assert "torch" not in sklearn and torch["torch"] == locked["torch"]
    assert set(sklearn) < set(torch)


def test_the_root_bentofile_is_the_packaging_one() -> None:
    """`bentoml build` from the repo root reads the same recipe packaging uses."""
    from bentoml._internal.bento.build_config import BentoBuildConfig

    root = REPO / "bentofile.yaml"
    assert root.resolve() == (REPO / "bentos" / "bentofile.yaml").resolve()
    with root.open() as stream:
        config = BentoBuildConfig.from_yaml(stream)
    assert config.service == "bentos.service:DriftloopService"
    assert config.python.requirements_txt == "bentos/requirements.txt"
    assert config.python.lock_packages is False
    assert (REPO / config.python.requirements_txt).is_file()
    assert config.docker.distro == "debian" and config.docker.python_version == "3.11"
    assert "bentos/requirements*.txt" in yaml.safe_load(root.read_text())["include"]


# Distributions full `mlflow` adds to `mlflow-skinny` that the Bento leaves out.
# (Alembic is one, but the Bento installs it itself: the prediction log's migrations.)
FULL_MLFLOW_ONLY = ("flask", "flask_cors", "graphene", "gunicorn", "huey", "docker")
FULL_MLFLOW_ONLY += ("matplotlib", "pyarrow")


def test_the_service_runs_on_mlflow_skinny(tmp_path: Path) -> None:
    """Import the service, load + predict with a logged sklearn pyfunc and open (migrate)
    a prediction log while the modules only full mlflow brings are unimportable."""
    code = f"""
import importlib.abc, sys
BLOCKED = {FULL_MLFLOW_ONLY!r}

class Skinny(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Skinny())
import bentos.service, bentos.app  # noqa: F401
import mlflow.pyfunc, mlflow.sklearn
import numpy as np, pandas as pd
from sklearn.linear_model import LinearRegression

X = pd.DataFrame({{"a": np.arange(20.0), "b": np.arange(20.0) % 3}})
model = LinearRegression().fit(X, X["a"] * 2 + X["b"])
mlflow.sklearn.save_model(model, {str(tmp_path / "model")!r}, pip_requirements=["scikit-learn"])
loaded = mlflow.pyfunc.load_model({str(tmp_path / "model")!r})
print(round(float(loaded.predict(X.iloc[[1]])[0]), 6))
from predlog.log import PredictionLog
PredictionLog("sqlite:///{tmp_path / "predictions.db"}").close()  # migrations run
leaked = sorted({{m.split(".")[0] for m in sys.modules}} & set(BLOCKED))
assert not leaked, leaked
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "3.0"  # 2 * a + b at a = b = 1


def test_the_build_context_is_staged_with_only_the_included_folders() -> None:
    """BentoML walks its whole build context: the staged one holds the folders the
    bentofile includes (caches left out), not the virtualenv or the state folder."""
    from bentos.packaging import BUILD_CONTEXT, bento_config, staged_context

    config = bento_config()
    with staged_context(config) as root:
        tops = sorted(p.name for p in root.iterdir())
        assert tops == sorted({str(p).split("/", 1)[0] for p in config["include"]})
        assert (root / "bentos" / "service.py").read_bytes() == (
            BUILD_CONTEXT / "bentos" / "service.py"
        ).read_bytes()
        assert not list(root.rglob("__pycache__"))
        assert (root / "registry" / "client.py").exists()
    assert not root.exists()  # removed afterwards
