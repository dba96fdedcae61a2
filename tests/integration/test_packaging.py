"""Real Bento builds (no Docker engine here): the image BentoML would build installs the
locked versions — torch, from the CPU index, only in a torch-family Bento."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import bentoml
import pytest

from bentos.packaging import TORCH_CPU_INDEX, build_bento
from bentos.store import bentoml_home
from predlog.migrations import FOLDER as SOURCE_MIGRATIONS
from registry.client import VersionInfo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$", re.MULTILINE)


def pins(text: str) -> set[str]:
    return {f"{name.lower()}=={version}" for name, version in PIN.findall(text)}


@pytest.fixture(scope="module")
def bentos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """One Bento per family, each with a stand-in model, built as packaging builds them."""
    home = tmp_path_factory.mktemp("bentoml")
    built: dict[str, Path] = {}
    with bentoml_home(home):
        for family in ("sklearn", "torch"):
            name = f"pkg-{family}"
            with bentoml.models.create(f"{name}:v1") as model:
                (Path(model.path) / "MLmodel").write_text("stand-in\n")
            info = VersionInfo(
                name=name,
                version="1",
                run_id="run",
                source="models:/x",
                aliases=(),
                tags={"family": family, "data_digest": "d"},
                created_at=datetime.now(UTC),
            )
            tag, fresh = build_bento(info, f"{name}:v1")
            assert fresh and tag == f"{name}-service:v1"
            built[family] = Path(bentoml.bentos.get(tag).path)
    yield built


def test_sklearn_bento_installs_the_locked_set_without_torch(bentos: dict[str, Path]) -> None:
    env = bentos["sklearn"] / "env"
    requirements = (env / "python" / "requirements.txt").read_text()
    assert pins(requirements) == pins((REPO / "bentos" / "requirements.txt").read_text()) | {
        f"bentoml=={bentoml.__version__}"
    }
    assert "torch" not in requirements and "--extra-index-url" not in requirements
    assert "mlflow-skinny==" in requirements and "\nmlflow==" not in requirements
    dockerfile = (env / "docker" / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "pip install -r $BENTO_PATH/env/python/requirements.txt" in dockerfile
    assert "UV_INDEX_STRATEGY" not in dockerfile
    # the service migrates its prediction log when it opens it: Alembic and the revisions
    assert "alembic==" in requirements
    src = bentos["sklearn"] / "src"
    migrations = src / "predlog" / "migrations"
    assert (migrations / "env.py").is_file()
    shipped = {f.name for f in (migrations / "versions").glob("0*.py")}
    assert shipped == {f.name for f in (SOURCE_MIGRATIONS / "versions").glob("0*.py")}
    # the bottom layers the service imports travel with it
    for module in ("config/serving.py", "config/names.py", "predlog/log.py", "predlog/tables.py"):
        assert (src / module).is_file(), module


def test_torch_bento_adds_the_cpu_build_of_torch(bentos: dict[str, Path]) -> None:
    env = bentos["torch"] / "env"
    requirements = (env / "python" / "requirements.txt").read_text()
    locked_torch = re.search(r"^torch==\S+", (REPO / "requirements.lock").read_text(), re.M)
    assert locked_torch and locked_torch.group(0) in pins(requirements)
    assert pins(requirements) == pins((REPO / "bentos" / "requirements-torch.txt").read_text()) | {
        f"bentoml=={bentoml.__version__}"
    }
    assert requirements.splitlines()[0] == f"--extra-index-url {TORCH_CPU_INDEX}"
    dockerfile = (env / "docker" / "Dockerfile").read_text()
    strategy = dockerfile.index("ENV UV_INDEX_STRATEGY=$UV_INDEX_STRATEGY")
    assert "ARG UV_INDEX_STRATEGY=unsafe-best-match" in dockerfile
    assert strategy < dockerfile.index("pip install -r $BENTO_PATH/env/python/requirements.txt")
