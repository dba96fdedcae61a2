"""Package a registered MLflow version as an immutable Bento ``<model>-service:v<N>``.

1. import the version into the local BentoML model store as ``<model>:v<N>``;
2. build the Bento from ``bentos/bentofile.yaml`` with that model, labelled with
   the MLflow name, version, run id and data digest;
3. write the Bento tag back on the MLflow version (tags ``bento_tag``,
   ``bento_model_tag``).

Each step is idempotent: an existing model or Bento is reused, never rebuilt, so
``v<N>`` always means the same thing. Nothing is downloaded besides the model
from MLflow (no package resolution: ``lock_packages: false``).
"""

from __future__ import annotations

import logging
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


def build_bento(info: VersionInfo, model_tag: str, bentofile: Path = BENTOFILE) -> tuple[str, bool]:
    """Build ``<model>-service:v<N>`` with the version's model; reuse it if it exists."""
    tag = service_tag(info.name, info.version)
    try:
        return str(bentoml.bentos.get(tag).tag), False
    except NotFound:
        pass
    config = bento_config(bentofile)
    labels = {
        **{str(k): str(v) for k, v in (config.get("labels") or {}).items()},
        **version_labels(info),
        "bento_model_tag": model_tag,
    }
    bento = bentoml.bentos.build(
        service=config["service"],
        name=tag.split(":")[0],
        version=tag.split(":")[1],
        description=config.get("description"),
        labels=labels,
        include=config.get("include"),
        exclude=config.get("exclude"),
        python={"lock_packages": False, **(config.get("python") or {})},
        envs=config.get("envs"),
        models=[model_tag],
        build_ctx=str(BUILD_CONTEXT),
    )
    return str(bento.tag), True


def package_version(
    model_name: str,
    version: str | int,
    tracking_uri: str,
    home: Path | None = None,
    registry: Registry | None = None,
) -> Packaged:
    """Import version N into the BentoML store at `home`, build its Bento, tag the version.

    `home` is the BentoML home (``<state>/bentoml``); None keeps the process's own.
    """
    registry = registry or Registry(model_name, tracking_uri)
    info = registry.get(version)
    with bentoml_home(home):
        model = import_version(registry, info.version)
        bento_tag, built = build_bento(info, str(model.tag))
    registry.set_tags(info.version, {"bento_tag": bento_tag, "bento_model_tag": str(model.tag)})
    log.info("%s version %s packaged as %s", model_name, info.version, bento_tag)
    return Packaged(
        model_name=model_name,
        version=info.version,
        model_tag=str(model.tag),
        bento_tag=bento_tag,
        built=built,
    )
