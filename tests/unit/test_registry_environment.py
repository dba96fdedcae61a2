"""The serving process's check of a model's pip requirements: MLflow's verdicts and
wording, without MLflow's scan of every installed package's file list."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import importlib_metadata
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow.utils.requirements_utils import _check_requirement_satisfied
from sklearn.linear_model import LinearRegression

from bentos.store import warn_requirement_mismatches
from registry.environment import (
    installed_version,
    requirement_mismatches,
    requirements_checked_by_name,
)

REQUIREMENTS = [
    "mlflow==3.17.2",
    "mlflow<1",
    "scikit-learn==1.0",
    "scikit_learn>=1",
    "Pandas==1.0",
    "pandas<3",
    "numpy",
    "numpy<1; python_version < '3'",
    "numpy<1; python_version >= '3'",
    "cloudpickle>=99",
    "torch==2.13.0",
    "no-such-package-driftloop==1.0",
    "no_such_package_driftloop",
    "./a/local/path",
    "https://example.org/some.whl",
    "-r other.txt",
]


def test_the_same_verdicts_and_words_as_mlflow() -> None:
    theirs = [str(m) for m in map(_check_requirement_satisfied, REQUIREMENTS) if m is not None]
    assert requirement_mismatches(REQUIREMENTS) == theirs
    assert theirs  # the list holds mismatches of every kind, so the comparison means something


def test_no_scan_of_every_installed_package(monkeypatch: pytest.MonkeyPatch) -> None:
    def scan() -> None:
        raise AssertionError("packages_distributions() reads every installed package's files")

    monkeypatch.setattr(importlib_metadata, "packages_distributions", scan)
    assert requirement_mismatches(["scikit-learn==0.1", "pandas<3"]) == [
        f"scikit-learn (current: {installed_version('scikit-learn')}, required: scikit-learn==0.1)"
    ]


def test_a_module_without_metadata_is_read_by_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "driftloop_plain_module"
    package.mkdir()
    (package / "__init__.py").write_text("__version__ = '1.2.3'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert installed_version("driftloop_plain_module") == "1.2.3"
        assert installed_version("driftloop-plain-module") == "1.2.3"
        assert requirement_mismatches(["driftloop_plain_module>=2"]) == [
            "driftloop_plain_module (current: 1.2.3, required: driftloop_plain_module>=2)"
        ]
    finally:
        sys.modules.pop("driftloop_plain_module", None)
    assert installed_version("driftloop-never-installed") is None


def _model(tmp_path: Path, requirements: list[str]) -> str:
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0]})
    folder = tmp_path / "model"
    mlflow.sklearn.save_model(
        LinearRegression().fit(frame, np.array([0.0, 1.0, 2.0])),
        str(folder),
        pip_requirements=requirements,
    )
    return str(folder)


def test_a_stored_model_warns_only_when_it_does_not_fit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fits = _model(tmp_path / "fits", [f"scikit-learn=={installed_version('scikit-learn')}"])
    misses = _model(tmp_path / "misses", ["scikit-learn==0.1", "no-such-package-driftloop"])
    caplog.clear()  # MLflow warns about the second one's requirements as it saves it

    def ours() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "driftloop.serving"]

    with caplog.at_level(logging.WARNING, logger="driftloop.serving"):
        warn_requirement_mismatches(fits)
        assert ours() == []
        warn_requirement_mismatches(misses)
    (warning,) = ours()
    assert "scikit-learn (current: " in warning
    assert "required: scikit-learn==0.1)" in warning
    assert "no-such-package-driftloop (current: uninstalled" in warning
    assert "mlflow.pyfunc.get_model_dependencies" in warning


def count_scans(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """MLflow's module map reset (its scan runs again once per process) and a list that
    gets an entry per scan of every installed package."""
    import mlflow.utils.requirements_utils as requirements_utils

    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)  # not built yet
    calls: list[None] = []
    real = importlib_metadata.packages_distributions

    def counted() -> object:
        calls.append(None)
        return real()

    monkeypatch.setattr(importlib_metadata, "packages_distributions", counted)
    return calls


def test_save_model_checks_requirements_by_name_inside_the_block_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import mlflow.utils.environment as environment

    mlflows = environment.warn_dependency_requirement_mismatches
    calls = count_scans(monkeypatch)
    with requirements_checked_by_name():
        with requirements_checked_by_name():  # nested: still ours, restored by the outer
            pass
        assert environment.warn_dependency_requirement_mismatches is not mlflows
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            _model(tmp_path / "inside", ["scikit-learn==0.1"])
    assert environment.warn_dependency_requirement_mismatches is mlflows
    assert calls == []  # MLflow's scan did not run
    (warning,) = [r for r in caplog.records if "mismatches" in r.getMessage()]
    assert warning.name == "mlflow.utils.requirements_utils"
    assert "scikit-learn (current: " in warning.getMessage()
    assert "required: scikit-learn==0.1)" in warning.getMessage()
    _model(tmp_path / "outside", ["scikit-learn==0.1"])
    assert len(calls) == 1  # outside the block MLflow scans, once per process


def test_load_model_checks_requirements_by_name_inside_the_block_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import mlflow.pyfunc

    path = _model(tmp_path, ["scikit-learn==0.1"])
    mlflows = mlflow.pyfunc.warn_dependency_requirement_mismatches
    calls = count_scans(monkeypatch)
    with requirements_checked_by_name():
        assert mlflow.pyfunc.warn_dependency_requirement_mismatches is not mlflows
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            model = mlflow.pyfunc.load_model(path)
    assert mlflow.pyfunc.warn_dependency_requirement_mismatches is mlflows
    assert calls == []  # MLflow's scan did not run
    (warning,) = [r for r in caplog.records if "mismatches" in r.getMessage()]
    assert "required: scikit-learn==0.1)" in warning.getMessage()
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    assert np.allclose(model.predict(frame), frame["x"])  # the model fitted y = x
    mlflow.pyfunc.load_model(path)
    assert len(calls) == 1  # outside the block MLflow scans, once per process
