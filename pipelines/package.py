"""Packaging: registered version N → Bento ``<model>-service:v<N>`` (see bentos/packaging.py).

`package_version_plain` is the plain function (`driftloop package` calls it);
`package_version` is the one Prefect task around it, with retries and a timeout (the
training flow's `package` step and `package_flow`); `package_flow` packages one
version by hand or from a deployment in prefect.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bentos.packaging import package_version as _package
from registry import VersionInfo


def package_version_plain(
    settings: Any,
    version: str | int,
    logged_copy: Path | None = None,
    info: VersionInfo | None = None,
) -> str:
    """Package `version` of `settings.model_name` into the state folder's BentoML store.

    `settings` is duck-typed: `model_name`, `resolved_tracking_uri()` and
    `resolved_bentoml_home()` (driftloop's `Settings` and `ServingSettings` fit).
    Returns the Bento tag, which is also written on the MLflow version. `logged_copy`:
    the training flow's local copy of the version's logged model (else downloaded);
    `info`: the version as the flow registered it (else read from the registry).
    """
    packaged = _package(
        settings.model_name,
        version,
        settings.resolved_tracking_uri(),
        home=settings.resolved_bentoml_home(),
        logged_copy=logged_copy,
        info=info,
    )
    return packaged.bento_tag


@task(
    name="package",
    retries=3,
    retry_delay_seconds=[2, 5, 15],
    retry_jitter_factor=0.2,
    timeout_seconds=600,
    cache_policy=NO_CACHE,
)
def package_version(
    settings: Any,
    version: str | int,
    logged_copy: Path | None = None,
    info: VersionInfo | None = None,
) -> str:
    """Build the Bento `<model>-service:v<N>`; the tag is written back on the version
    (registry and store I/O: retried)."""
    tag = package_version_plain(settings, version, logged_copy, info)
    get_run_logger().info("version %s packaged as %s", version, tag)
    return tag


@flow(name="package")
def package_flow(version: str, model_name: str | None = None) -> str:
    """Package one registered version as a Bento; returns the Bento tag."""
    from config.settings import load_settings

    settings = load_settings(model_name=model_name)
    return package_version(settings, version)
