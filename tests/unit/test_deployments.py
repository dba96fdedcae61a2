"""`driftloop deploy` renders prefect.yaml from the settings: work pool, the monitor's
interval, the train family, and (with --git) a git clone as the pull step. The rendered
file must pass Prefect's own prefect.yaml schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect.cli.deploy._models import PrefectYamlModel

from config.settings import Settings
from driftloop.stack import GIT_CLONE_STEP, PREFECT_FILE, StackError, render_deployments


def by_name(config: dict) -> dict[str, dict]:
    return {d["name"]: d for d in config["deployments"]}


def test_prefect_yaml_holds_the_settings_defaults() -> None:
    """`prefect deploy --all` by hand deploys what `driftloop deploy` does by default."""
    raw = yaml.safe_load(PREFECT_FILE.read_text())
    assert render_deployments(Settings()) == raw
    PrefectYamlModel.model_validate(raw)


@pytest.mark.parametrize("interval_s", [1, 45, 86_400 * 2])
def test_settings_reach_pool_schedule_and_family(
    monkeypatch: pytest.MonkeyPatch, interval_s: int
) -> None:
    monkeypatch.setenv("DRIFTLOOP_WORK_POOL", "k8s-pool")
    monkeypatch.setenv("DRIFTLOOP_MONITOR_INTERVAL_S", str(interval_s))
    monkeypatch.setenv("DRIFTLOOP_FAMILY", "torch")
    config = render_deployments(Settings())
    PrefectYamlModel.model_validate(config)
    deployments = by_name(config)
    assert {d["work_pool"]["name"] for d in deployments.values()} == {"k8s-pool"}
    assert deployments["train"]["parameters"] == {"family": "torch"}
    assert deployments["monitor"]["schedules"] == [{"interval": interval_s, "active": True}]
    assert "schedules" not in deployments["train"]
    # the worker fills in where the code is, at run time
    assert config["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $DRIFTLOOP_REPO }}"}}
    ]


def test_git_pull_clones_then_runs_from_the_clone() -> None:
    url = "https://git.example.com/team/driftloop.git"
    config = render_deployments(Settings(), git_url=url, git_branch="release")
    PrefectYamlModel.model_validate(config)
    clone, workdir = config["pull"]
    assert clone[GIT_CLONE_STEP] == {"id": "clone", "repository": url, "branch": "release"}
    assert workdir == {
        "prefect.deployments.steps.set_working_directory": {"directory": "{{ clone.directory }}"}
    }
    no_branch = render_deployments(Settings(), git_url=url)
    assert no_branch["pull"][0][GIT_CLONE_STEP] == {"id": "clone", "repository": url}


def test_a_missing_prefect_file_says_where_to_deploy_from(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"no prefect.yaml at .*driftloop checkout"):
        render_deployments(Settings(), tmp_path / "prefect.yaml")


def test_prefect_file_is_the_checkouts() -> None:
    assert Path(__file__).resolve().parents[2] / "prefect.yaml" == PREFECT_FILE
