"""This environment against what a stored MLflow model needs, checked cheaply.

Two of MLflow's steps cost seconds of CPU in every fresh process, for nothing this
project needs from them:

- *The pip-requirements check* (``warn_dependency_requirement_mismatches``), run by
  ``save_model`` on the requirements it is given and by ``pyfunc.load_model`` on the
  stored ones (`requirements_checked_by_name` swaps it for ours in both). It first maps
  every installed module to its distribution (``importlib_metadata.packages_distributions``:
  the file list of every installed package, 0.7-1.3 s here) to find a version it then
  reads by distribution name anyway. `requirement_mismatches` reads each required
  version directly (~5 ms) and gives the same verdicts in the same words (tested
  against MLflow's own).
- *skops's import* (MLflow saves and loads sklearn models with skops): it lists sklearn's
  estimators by importing every package under sklearn, torch's array-API shim included,
  so it imports torch where torch is installed; and it names each numpy and scipy ufunc
  by searching every loaded module for it, one ``getattr`` per module per ufunc (1.4-2.0
  s in a process that has loaded Prefect, MLflow and Great Expectations: ~4,000
  modules). `import_skops_without_torch` imports it without torch and with that search
  answered from an index of the loaded modules.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.metadata
import importlib.util
import logging
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger(__name__)

MISMATCH_HINT = (
    "To fix the mismatches, call `mlflow.pyfunc.get_model_dependencies(model_uri)` to fetch "
    "the model's environment and install dependencies using the resulting environment file."
)


def mismatch_warning(mismatches: list[str]) -> str:
    """MLflow's warning text for `requirement_mismatches`' findings."""
    listed = "\n - ".join(mismatches)
    return (
        "Detected one or more mismatches between the model's dependencies and the current "
        f"Python environment:\n - {listed}\n{MISMATCH_HINT}"
    )


def requirement_mismatches(requirements: Iterable[str]) -> list[str]:
    """The requirements (pip requirement lines) this environment does not satisfy, each as
    ``"name (current: version or uninstalled, required: line)"`` (MLflow's wording).
    Lines that are not a name with version specifiers (paths, URLs, options) and lines
    whose environment marker does not apply here are skipped, as MLflow skips them."""
    from packaging.requirements import InvalidRequirement, Requirement

    found = []
    for line in requirements:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        installed = installed_version(requirement.name)
        if installed is not None and _is_mlflow_dev(requirement.name, installed):
            continue  # MLflow does not hold its own development builds to a pin
        if installed is None:
            found.append(f"{requirement.name} (current: uninstalled, required: {line})")
        elif requirement.specifier and not requirement.specifier.contains(installed):
            found.append(f"{requirement.name} (current: {installed}, required: {line})")
    return found


def _is_mlflow_dev(name: str, version: str) -> bool:
    from packaging.version import InvalidVersion, Version

    if name.lower() not in ("mlflow", "mlflow-skinny"):
        return False
    try:
        return Version(version).is_devrelease
    except InvalidVersion:
        return False


def installed_version(name: str) -> str | None:
    """The installed version of distribution `name` (None when it is not installed):
    its metadata, else the ``__version__`` of the module of that name (a package put on
    the path without pip); MLflow's own version for ``mlflow`` (an editable install's
    metadata can be stale)."""
    import importlib
    import importlib.metadata

    if name.lower() in ("mlflow", "mlflow-skinny"):
        import mlflow

        return str(mlflow.__version__)
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        module = importlib.import_module(name.replace("-", "_"))
    except ImportError:
        return None
    version = getattr(module, "__version__", None)
    return str(version) if version is not None else None


_MLFLOW_LOGGER = "mlflow.utils.requirements_utils"
_CHECK = "warn_dependency_requirement_mismatches"
# The modules whose own name for MLflow's check is swapped: `save_model` calls it through
# the first, `pyfunc.load_model` through the second.
_CHECKING_MODULES = ("mlflow.utils.environment", "mlflow.pyfunc")
_swap_lock = threading.Lock()
_swaps = 0
_mlflow_checks: dict[str, Any] = {}


def _warn_by_name(requirements: list[str]) -> None:
    """Drop-in for MLflow's ``warn_dependency_requirement_mismatches``: same warning, same
    logger, never raises (MLflow's logs and swallows its own errors too)."""
    try:
        mismatches = requirement_mismatches(requirements)
    except Exception as exc:
        logging.getLogger(_MLFLOW_LOGGER).warning(
            "Encountered an unexpected error (%r) while detecting model dependency mismatches.",
            exc,
        )
        return
    if mismatches:
        logging.getLogger(_MLFLOW_LOGGER).warning(mismatch_warning(mismatches))


@contextlib.contextmanager
def requirements_checked_by_name() -> Iterator[None]:
    """While inside, MLflow's ``save_model`` and ``pyfunc.load_model`` check a model's pip
    requirements with `requirement_mismatches` instead of their own scan of every
    installed package (the same verdicts and warning). Nestable and thread-safe: the
    first to enter swaps the function in ``mlflow.utils.environment`` and
    ``mlflow.pyfunc``, the last to leave swaps MLflow's back."""
    global _swaps
    modules = [importlib.import_module(name) for name in _CHECKING_MODULES]
    with _swap_lock:
        if _swaps == 0:
            for module in modules:
                _mlflow_checks[module.__name__] = getattr(module, _CHECK)
                setattr(module, _CHECK, _warn_by_name)
        _swaps += 1
    try:
        yield
    finally:
        with _swap_lock:
            _swaps -= 1
            if _swaps == 0:
                for module in modules:
                    setattr(module, _CHECK, _mlflow_checks.pop(module.__name__))


# sklearn's array-API shim for torch: importing it imports torch (seconds), and nothing of
# sklearn's estimators lives there (`all_estimators` skips "externals").
_TORCH_SHIM = "sklearn.externals.array_api_compat.torch"
_skops_lock = threading.Lock()


class _NoTorchShim(importlib.abc.MetaPathFinder):
    """Refuses `_TORCH_SHIM` (ImportError), for as long as it is on `sys.meta_path`."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == _TORCH_SHIM:
            raise ImportError(f"{_TORCH_SHIM} is not needed to list sklearn's estimators")
        return None


def import_skops_without_torch() -> None:
    """Import `skops.io` (MLflow saves and loads sklearn models with it, ``serialization_format:
    skops``) without importing torch on the way.

    `skops.io` lists sklearn's estimators at import (`sklearn.utils.all_estimators`), and
    that walk imports every package under sklearn, the torch shim of its vendored
    array-API compat layer included: where torch is installed (the ``torch`` extra), the
    import of skops took 5-12 s instead of 1-1.6 s (loaded 2-core machine), most of a
    worker's model load (bench/README.md "Worker restart"). `walk_packages` skips a
    package that raises ImportError, and `all_estimators` ignores "externals" anyway, so
    refusing the shim during this one import leaves skops's trusted types unchanged (208
    sklearn types either way). A no-op when skops is imported already, is not installed,
    or torch is imported already (then the shim is cheap).
    """
    if "skops.io" in sys.modules or "torch" in sys.modules:
        return
    with _skops_lock:
        if "skops.io" in sys.modules or importlib.util.find_spec("skops") is None:
            return
        blocker, indexer = _NoTorchShim(), _IndexedWhichmodule()
        sys.meta_path[:0] = [blocker, indexer]
        try:
            import skops.io  # noqa: F401
        except Exception as exc:  # MLflow imports it again and reports the real error
            log.debug("early import of skops.io failed: %s", exc)
        finally:
            sys.meta_path.remove(blocker)
            sys.meta_path.remove(indexer)
            indexer.restore()


_SKOPS_UTILS = "skops.io._utils"


class _IndexedWhichmodule(importlib.abc.MetaPathFinder):
    """While `skops.io` imports, answers its ``whichmodule(obj, name)`` from an index.

    skops names each object without a ``__module__`` (numpy's and scipy's ufuncs: ~600
    of them, listed as trusted types at import) by the first module in ``sys.modules``
    whose attribute `name` is that object: a ``getattr`` on every loaded module per
    object. This finder lets ``skops.io._utils`` load as usual and then swaps its
    ``whichmodule`` for `_whichmodule`, which reads each loaded module's namespace once
    per object type into ``(name, id) → first module`` and answers from it; modules
    loaded since are added on a miss (they come later in ``sys.modules``, so an earlier
    answer stands), and what the index still cannot answer (a dotted name, an object
    only a module's ``__getattr__`` hands out) goes to skops's own search. `restore`
    puts skops's function back once the import is done: saving and loading models use
    it unchanged.
    """

    def __init__(self) -> None:
        self.utils: Any = None
        self.original: Any = None
        self._index: dict[type, dict[tuple[str, int], str]] = {}
        self._indexed: dict[type, set[str]] = {}

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != _SKOPS_UTILS or self.utils is not None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _AfterExec(spec.loader, self._swap)
                return spec
        return None

    def _swap(self, module: Any) -> None:
        self.utils, self.original = module, getattr(module, "whichmodule", None)
        if self.original is not None:
            module.whichmodule = self._whichmodule

    def restore(self) -> None:
        if self.utils is not None and self.original is not None:
            self.utils.whichmodule = self.original
        self._index.clear()
        self._indexed.clear()

    def _whichmodule(self, obj: Any, name: str) -> str:
        if getattr(obj, "__module__", None) is not None or "." in name:
            return str(self.original(obj, name))
        kind = type(obj)
        index = self._index.setdefault(kind, {})
        while True:
            found = index.get((name, id(obj)))
            module = sys.modules.get(found) if found is not None else None
            if module is not None and getattr(module, "__dict__", {}).get(name) is obj:
                return str(found)
            if not self._add_new_modules(kind, index):
                return str(self.original(obj, name))

    def _add_new_modules(self, kind: type, index: dict[tuple[str, int], str]) -> bool:
        """Index the attributes of type `kind` of modules not indexed yet; False if none."""
        indexed = self._indexed.setdefault(kind, set())
        added = False
        for module_name, module in list(sys.modules.items()):
            if module_name in indexed:
                continue
            indexed.add(module_name)
            added = True
            if module is None or module_name in ("__main__", "__mp_main__"):
                continue
            namespace = getattr(module, "__dict__", None)
            if not isinstance(namespace, dict):
                continue
            for attr, value in list(namespace.items()):
                if type(value) is kind:
                    index.setdefault((attr, id(value)), module_name)
        return added


class _AfterExec(importlib.abc.Loader):
    """A module's own loader, then `after(module)`."""

    def __init__(self, loader: Any, after: Any) -> None:
        self.loader, self.after = loader, after

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self.loader  # the module's own again
        self.after(module)
