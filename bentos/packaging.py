"""Package a registered MLflow version as an immutable Bento ``<model>-service:v<N>``.

1. import the version into the local BentoML model store as ``<model>:v<N>``;
2. build the Bento from ``bentos/bentofile.yaml`` with that model, labelled with
   the MLflow name, version, run id and data digest;
3. write the Bento tag back on the MLflow version (tags ``bento_tag``,
   ``bento_model_tag``).

Each step is idempotent: an existing model or Bento is reused, never rebuilt, so
``v<N>`` always means the same thing. Nothing is downloaded besides the model
from MLflow, and not even that when the training flow hands over the folder it logged
(no package resolution: ``lock_packages: false``): the Bento's Python
requirements are the pinned sets `make lock` writes, ``bentos/requirements.txt`` or,
for a torch-family version, ``bentos/requirements-torch.txt`` (with the CPU build of
torch), so ``bentoml containerize`` installs the versions driftloop was tested with.
"""

from __future__ import annotations

import logging
import optparse
import shlex
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
import yaml
from bentoml.exceptions import NotFound

from bentos.store import bentoml_home, import_version, service_tag, version_labels
from registry import Registry, VersionInfo

log = logging.getLogger("driftloop.packaging")

BENTOFILE = Path(__file__).with_name("bentofile.yaml")
BUILD_CONTEXT = Path(__file__).resolve().parent.parent  # holds bentos/, registry/, data/
# Requirements of a torch-family Bento (relative to the build context) and the index its
# image takes torch from: PyPI's Linux torch wheel is the CUDA build, several GB.
TORCH_REQUIREMENTS = "bentos/requirements-torch.txt"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass(frozen=True)
class Packaged:
    """What packaging produced for one version."""

    model_name: str
    version: str
    model_tag: str
    bento_tag: str
    built: bool  # False when the Bento already existed


def bento_config(path: Path = BENTOFILE) -> dict[str, Any]:
    """The bentofile as a dict (the keys `bentoml.bentos.build` accepts)."""
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict) or "service" not in config:
        raise ValueError(f"{path} is not a bentofile: it needs at least a 'service' key")
    return config


def python_options(config: dict[str, Any], family: str) -> dict[str, Any]:
    """The bentofile's ``python`` section for a version of `family`.

    A torch-family Bento installs ``bentos/requirements-torch.txt`` (torch's CPU build
    from the PyTorch index); every other Bento the bentofile's set, which has no torch.
    """
    python = {"lock_packages": False, **(config.get("python") or {})}
    if family == "torch":
        python["requirements_txt"] = TORCH_REQUIREMENTS
        python["extra_index_url"] = [*(python.get("extra_index_url") or []), TORCH_CPU_INDEX]
    return python


def build_envs(config: dict[str, Any], family: str) -> list[Any] | None:
    """The bentofile's ``envs``; a torch-family image also needs uv told how to use two indexes.

    The image installs with uv, which takes a package the torch index also hosts (numpy,
    jinja2...) from that index alone unless the strategy lets it pick the pinned version
    from PyPI.
    """
    envs = list(config.get("envs") or [])
    if family == "torch":
        envs.append({"name": "UV_INDEX_STRATEGY", "value": "unsafe-best-match"})
    return env_schemas(envs)


def env_schemas(envs: list[dict[str, Any]]) -> list[Any] | None:
    """The bentofile's ``envs`` mappings as the objects `bentoml.bentos.build` takes.

    Private BentoML API, kept here only: ``bentoml.bentos.build(envs=...)`` is typed
    ``list[BentoEnvSchema]`` and passes the list on unconverted (a mapping fails later, at
    ``env.name``), and ``BentoEnvSchema`` is exported only from
    ``bentoml._internal.bento.build_config`` (checked against BentoML 1.4.40; the public
    ``build_bentofile`` reads mappings but only from a bentofile on disk).
    """
    from bentoml._internal.bento.build_config import BentoEnvSchema

    return [BentoEnvSchema(**env) for env in envs] or None


def build_bento(info: VersionInfo, model_tag: str, bentofile: Path = BENTOFILE) -> tuple[str, bool]:
    """Build ``<model>-service:v<N>`` with the version's model; reuse it if it exists."""
    tag = service_tag(info.name, info.version)
    try:
        return str(bentoml.bentos.get(tag).tag), False
    except NotFound:
        pass
    config = bento_config(bentofile)
    family = info.tags.get("family", "sklearn")
    labels = {
        **{str(k): str(v) for k, v in (config.get("labels") or {}).items()},
        **version_labels(info),
        "bento_model_tag": model_tag,
    }
    with staged_context(config) as context, quick_requirement_lines():
        bento = bentoml.bentos.build(
            service=config["service"],
            name=tag.split(":")[0],
            version=tag.split(":")[1],
            description=config.get("description"),
            labels=labels,
            include=config.get("include"),
            exclude=config.get("exclude"),
            python=python_options(config, family),
            docker=config.get("docker"),
            envs=build_envs(config, family),
            models=[model_tag],
            build_ctx=str(context),
        )
    return str(bento.tag), True


_parser_lock = threading.Lock()


@contextmanager
def quick_requirement_lines() -> Iterator[None]:
    """While inside, `pip_requirements_parser` (BentoML reads the requirements file with
    it, twice per build) parses a line without options (``name==version``, a comment, a
    blank line) without building an option parser for it; lines with options go to its
    own parser.

    Private API of pip-requirements-parser (32.0.1), kept here only: its line parser builds
    a new `optparse` parser with its ~22 options for every line (~75 % of a parse; the
    109-line ``bentos/requirements.txt`` is parsed twice per build). For a line whose
    options part is empty, its `parse_line` returns that parser's default values and no
    arguments; so does this, with fresh lists (a new parser's defaults are new lists).
    The files BentoML writes from the parse are the same
    (`tests/unit/test_packaging_requirements.py`).
    """
    import pip_requirements_parser as parser_module

    with _parser_lock:
        original = parser_module.get_line_parser

        def get_line_parser() -> Callable[[str], tuple[str, optparse.Values, list[str]]]:
            slow = original()
            defaults = parser_module.build_parser().get_default_values().__dict__

            def parse_line(line: str) -> tuple[str, optparse.Values, list[str]]:
                args, options = parser_module.break_args_options(line)
                if shlex.split(options):
                    return slow(line)
                fresh = {k: list(v) if isinstance(v, list) else v for k, v in defaults.items()}
                return args, optparse.Values(fresh), []

            return parse_line

        parser_module.get_line_parser = get_line_parser
        try:
            yield
        finally:
            parser_module.get_line_parser = original


@contextmanager
def staged_context(config: dict[str, Any], source: Path = BUILD_CONTEXT) -> Iterator[Path]:
    """A temporary build context holding only the top-level folders the bentofile's
    `include` patterns name (bentos/, config/, predlog/, registry/, data/), caches left out.

    BentoML walks the whole build context to match `include`; from the repo root that
    is the virtualenv and the state folder too (~131k entries: ~40 % of a training
    flow's time). The patterns still apply inside the staged copy, so the Bento's files
    are the same.
    """
    tops = sorted({str(p).split("/", 1)[0] for p in config.get("include") or []})
    with tempfile.TemporaryDirectory(prefix="driftloop-bento-context-") as tmp:
        root = Path(tmp)
        skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
        for top in tops:
            if any(ch in top for ch in "*?["):  # a pattern at the top: stage it all
                root.rmdir()
                shutil.copytree(source, root, ignore=skip)  # hidden: .venv, .git, state
                break
            if (source / top).is_dir():
                shutil.copytree(source / top, root / top, ignore=skip)
            elif (source / top).is_file():
                shutil.copy2(source / top, root / top)
        yield root


def package_version(
    model_name: str,
    version: str | int,
    tracking_uri: str,
    home: Path | None = None,
    registry: Registry | None = None,
    logged_copy: Path | None = None,
    info: VersionInfo | None = None,
) -> Packaged:
    """Import version N into the BentoML store at `home`, build its Bento, tag the version.

    `home` is the BentoML home (``<state>/bentoml``); None keeps the process's own.
    `logged_copy`: the training flow's local copy of the model it logged for this version
    (see `bentos.store.import_version`); None downloads the model from the registry.
    The version is read once: the import and the tag merge use that read. `info`: version
    N as the caller has just read or registered it (``Registry.register``'s answer,
    tags as stored); None (or another version) reads it here.
    """
    registry = registry or Registry(model_name, tracking_uri)
    if info is None or str(info.version) != str(version) or info.stored_tags is None:
        info = registry.get(version)
    with bentoml_home(home):
        model = import_version(registry, info.version, info=info, logged_copy=logged_copy)
        bento_tag, built = build_bento(info, str(model.tag))
    registry.set_tags(
        info.version,
        {"bento_tag": bento_tag, "bento_model_tag": str(model.tag)},
        current=info.stored_tags,
    )
    log.info("%s version %s packaged as %s", model_name, info.version, bento_tag)
    return Packaged(
        model_name=model_name,
        version=info.version,
        model_tag=str(model.tag),
        bento_tag=bento_tag,
        built=built,
    )
