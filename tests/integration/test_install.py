"""`pip install .` works off this machine: a fresh venv (no system site-packages) gets the
locked versions minus torch (`pip install --require-hashes --no-deps`), then driftloop
itself, non-editable, from a copy of the checkout. From a folder outside the copy: the
CLI runs, torch is absent, a sklearn model trains and registers with no MLflow server
(the prediction log's migrations are in the installed package), the torch family names
the extra to install, and the package metadata has torch under the `torch` extra only."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftloop import procs
from predlog.migrations import FOLDER as SOURCE_MIGRATIONS
from predlog.migrations import HEAD

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", ".driftloop", "__pycache__", "*.pyc", "*.egg-info", "build", "dist",
    ".ruff_cache", ".pytest_cache", "bench",
)  # fmt: skip
STRIPPED_PREFIXES = ("MLFLOW_", "DRIFTLOOP_", "PREFECT_", "BENTOML_")
INSTALL_TIMEOUT_S = 1500
TORCH_HINT = "the torch family needs torch, which is not installed: pip install 'driftloop[torch]'"


def _revision_files(migrations: Path) -> set[str]:
    return {f.name for f in (migrations / "versions").glob("0*.py")}


@dataclass(frozen=True)
class Venv:
    bin: Path
    workdir: Path  # outside the source copy: imports come from site-packages
    env: dict[str, str]

    def run(self, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        program = str(self.bin / argv[0])
        return subprocess.run(
            [program, *argv[1:]],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def without_torch(lock: str) -> str:
    """The lock's requirement blocks (pin + hashes) minus torch's."""
    blocks = re.split(r"\n(?=[A-Za-z0-9])", lock)
    kept = [b for b in blocks if not b.startswith("torch==")]
    assert len(kept) == len(blocks) - 1, "requirements.lock has no torch pin"
    return "\n".join(kept) + "\n"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venv]:
    root = tmp_path_factory.mktemp("fresh-install")
    source = root / "driftloop-src"
    shutil.copytree(REPO, source, ignore=COPY_IGNORE)
    folder = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
    lock = root / "requirements-no-torch.txt"
    lock.write_text(without_torch((REPO / "requirements.lock").read_text()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(STRIPPED_PREFIXES)}
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(name, None)
    env.update(
        PATH=f"{folder / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    pip = [str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile"]
    for argv in (
        [*pip, "--require-hashes", "--no-deps", "-r", str(lock)],
        [*pip, "--no-deps", str(source)],  # a wheel built from the copy: not editable
    ):
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
        )
        assert done.returncode == 0, done.stderr[-3000:]
    workdir = root / "work"
    workdir.mkdir()
    env["DRIFTLOOP_STATE_DIR"] = str(workdir / ".driftloop")
    yield Venv(folder / "bin", workdir, env)


def test_the_installed_package_runs_without_torch(venv: Venv) -> None:
    help_text = venv.run("driftloop", "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert "train" in help_text.stdout and "deploy" in help_text.stdout
    no_torch = venv.run("python", "-c", "import torch")
    assert no_torch.returncode == 1 and "No module named 'torch'" in no_torch.stderr
    where = venv.run(
        "python",
        "-c",
        "import predlog.migrations as m, driftloop.cli as c; print(c.__file__); print(m.FOLDER)",
    )
    assert where.returncode == 0, where.stderr
    cli_file, migrations = (Path(line) for line in where.stdout.split())
    site = venv.bin.parent / "lib"
    assert site in cli_file.parents and site in migrations.parents  # not the source copy
    assert (migrations / "env.py").is_file()
    assert _revision_files(migrations) == _revision_files(SOURCE_MIGRATIONS)  # every revision
    assert (migrations / "script.py.mako").is_file()


def test_sklearn_trains_and_registers_torch_names_its_extra(
    venv: Venv, prefect_server: procs.Server
) -> None:
    rng = np.random.default_rng(5)
    temp = rng.uniform(0, 30, 400)
    kind = rng.choice(["a", "b", "c"], 400)
    frame = pd.DataFrame(
        {"temp": temp, "kind": kind, "y": 3 * temp + (kind == "b") * 10 + rng.normal(0, 1, 400)}
    )
    frame.to_csv(venv.workdir / "tiny.csv", index=False)
    # No MLflow server (the state folder's SQLite store); Prefect: the session's server.
    venv.env["PREFECT_API_URL"] = prefect_server.base_url
    common = ("--data", "tiny.csv", "--target", "y", "--model-name", "tiny")
    trained = venv.run("driftloop", "train", *common, "--no-package", "--json", timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:] + trained.stdout[-2000:]
    models = venv.run("driftloop", "models", "--model-name", "tiny", "--json")
    assert models.returncode == 0, models.stderr[-3000:]
    import json

    versions = json.loads(models.stdout)
    assert [str(v["version"]) for v in versions] == ["1"], versions
    torch = venv.run("driftloop", "train", *common, "--family", "torch", "--no-package")
    assert torch.returncode == 2, torch.stdout + torch.stderr
    assert TORCH_HINT in " ".join((torch.stdout + torch.stderr).split())
    # the log the service and monitor use opens (and migrates) from the installed package
    migrated = venv.run("driftloop", "log", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert f"revision {HEAD} (head)" in migrated.stdout


def test_torch_is_an_extra_in_the_installed_metadata(venv: Venv) -> None:
    code = (
        "from importlib.metadata import requires; "
        "print('\\n'.join(r for r in requires('driftloop') if r.split()[0] in "
        "('torch', 'alembic') or r.startswith(('torch', 'alembic'))))"
    )
    shown = venv.run("python", "-c", code)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.strip().splitlines()
    torch = [line for line in lines if line.startswith("torch")]
    assert torch and all('extra == "torch"' in line for line in torch), lines
    assert any(line.startswith("alembic") and "extra" not in line for line in lines), lines
