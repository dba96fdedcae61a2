"""The BentoML service: ``bentoml serve bentos.service:DriftloopService``.

Serves one registered MLflow model (``DRIFTLOOP_MODEL_NAME``): the ``champion``
alias answers, a ``challenger`` gets ``DRIFTLOOP_CANARY_SHARE`` of the traffic
(0 = shadow), and the aliases are re-read every ``DRIFTLOOP_ALIAS_POLL_INTERVAL_S``
so promotions and rollbacks apply without a restart. Built into a Bento
(``<model>-service:v<N>``), it serves the same way, and falls back to its own
version N when it knows no aliases at all.

Endpoints: ``POST /predict``, ``POST /feedback`` (declared as BentoML APIs for the
OpenAPI document; the gateway middleware answers them), ``GET /healthz``, ``/readyz``,
``/metadata`` (gateway middleware), BentoML's ``/metrics``.

Two BentoML settings below are deliberate (measurements in bentos/README.md):
the per-request access log is off (it costs ~40 % of throughput; turn it on with
``DRIFTLOOP_ACCESS_LOG=true`` via ``driftloop serve``), and the traffic timeout
is 10 s, not 60: BentoML's timeout middleware keeps one timer per request alive
for the whole timeout, holding the request's context, and the garbage collector
then pauses the event loop for hundreds of milliseconds; `gc.freeze()` after
start-up keeps the import-time objects out of those collections.
"""

import gc
import importlib
import logging
import os
import time
from typing import Any

import bentoml
from bentoml.exceptions import BentoMLException

from bentos.connections import ConnectionShares, balance_connections
from bentos.gateway import Gateway, parsed_list
from bentos.startup import mark_started, started_dir
from config.serving import SERVICE_NAME


@bentoml.service(
    name=SERVICE_NAME,
    description="driftloop: a registered MLflow model served with canary/shadow routing, "
    "alias following and a durable prediction log.",
    workers=2,  # the `workers` setting (DRIFTLOOP_WORKERS via `driftloop serve`)
    logging={"access": {"enabled": False}},
    traffic={"timeout": 10},
)
class DriftloopService:
    """Thin BentoML shell around `bentos.app.ServingApp`."""

    def __init__(self) -> None:
        from bentos.app import ServingApp
        from bentos.store import LABEL_MODEL_NAME, LABEL_VERSION
        from config.serving import ServingSettings

        began = time.time()
        settings = ServingSettings()
        _prepare_process(settings.registry_timeout_s, settings.workers)
        bento = DriftloopService.bento
        labels: dict[str, str] = dict(bento.info.labels) if bento is not None else {}
        model_name = settings.model_name
        if "model_name" not in settings.model_fields_set and labels.get(LABEL_MODEL_NAME):
            model_name = labels[LABEL_MODEL_NAME]  # a Bento serves its own model by default
        pinned = labels.get(LABEL_VERSION) if labels.get(LABEL_MODEL_NAME) == model_name else None
        self.app = ServingApp(
            settings,
            model_name=model_name,
            pinned_version=pinned,
            bento_tag=str(bento.tag) if bento is not None else None,
        )
        # The champion loads before this worker accepts connections (local store, no
        # MLflow call when the aliases are cached): with several workers a sibling
        # that is still loading takes no requests, and a restarted worker is warm.
        self.app.start(load_first=True)
        gc.collect()
        gc.freeze()
        _log_start_up(model_name, began)
        mark_started(bentoml.server_context.worker_index)  # /readyz waits for every worker

    # The gateway answers these two routes itself (`GatewayConfig.handlers`): these
    # declarations give the OpenAPI document its schemas, and serve a gateway without
    # the handlers (then BentoML gets an empty list; `parsed_list()` is the body's list).
    @bentoml.api(route="/predict")
    async def predict(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Predict for records of features (+ optional `request_id`, `entity_id`)."""
        parsed = parsed_list()
        return await self.app.predict(records if parsed is None else parsed)  # type: ignore[return-value]

    @bentoml.api(route="/feedback")
    async def feedback(self, labels: list[dict[str, Any]]) -> dict[str, Any]:
        """Ground-truth labels: `[{"request_id": ..., "label": ...}]`."""
        parsed = parsed_list()
        return await self.app.feedback(labels if parsed is None else parsed)  # type: ignore[return-value]

    @bentoml.on_shutdown
    async def shutdown(self) -> None:
        await self.app.close()


def _prepare_process(registry_timeout_s: float, workers: int = 1) -> None:
    """Process settings of the serving worker: our log level and fail-fast MLflow calls
    (the gateway shortens the GIL switch interval while a large body is in flight).

    The MLflow timeout/retries always come from `registry_timeout_s`, whatever the
    parent process left in the environment (the CLI and the stack set slower ones for
    flows): a registry call must never hold the follower longer than that.
    """
    from config.mlflow_env import mlflow_http_env

    logging.getLogger("driftloop").setLevel(logging.INFO)
    os.environ.update(mlflow_http_env(registry_timeout_s))
    share_new_connections(workers, bentoml.server_context.worker_index)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def share_new_connections(workers: int = 1, worker_index: int | None = None) -> None:
    """Spread new connections over the server's workers (`bentos.connections`): after
    each accept this worker yields the CPU, or, while it holds two connections more than
    a live sibling, pauses 0.5 ms so that sibling takes the next. The cost is a system
    call per new connection, none per request."""
    if not hasattr(os, "sched_yield"):
        return
    protocols = []
    for module, name in (
        ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol"),
        ("uvicorn.protocols.http.h11_impl", "H11Protocol"),
    ):
        try:
            protocols.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    folder = started_dir()
    shares = None
    if folder is not None and workers > 1 and worker_index is not None:
        try:
            shares = ConnectionShares(folder, worker_index)
        except OSError:  # the folder is gone (the server is stopping)
            shares = None
    balance_connections(protocols, shares)


def prefork() -> None:
    """Import what a worker's start-up imports, starting nothing (no thread, loop, socket,
    file or connection): `driftloop serve` runs each worker as a warm parent that calls
    this once and then forks the serving process (driftloop/warm_worker.py), so a killed
    worker restarts without re-importing mlflow, pandas, sqlalchemy, sklearn and skops."""
    import mlflow.pyfunc
    import mlflow.sklearn  # noqa: F401
    import sklearn.pipeline  # noqa: F401

    import bentos.app  # noqa: F401  (store, follower, schema, predlog, registry)
    from registry.environment import import_skops_without_torch

    import_skops_without_torch()


# Set by driftloop/warm_worker.py in a worker it forked: the warm parent's pid.
WARM_PARENT_ENV = "DRIFTLOOP_WARM_PARENT_PID"


def _log_start_up(model_name: str, began: float) -> None:
    """One line per worker start: seconds from its process start (its fork, for a worker
    forked from a warm parent) to serving, how much of it was the service's own start-up
    (settings, prediction log, champion load), and the CPU seconds this process used."""
    try:
        import psutil

        created = psutil.Process().create_time()
    except Exception:  # only a log line
        return
    now = time.time()
    cpu = time.process_time()  # a forked child's CPU times start at 0 at its fork
    parent = os.environ.get(WARM_PARENT_ENV)
    if parent:
        logging.getLogger("driftloop.serving").info(
            "worker serves %s %.2f s after its fork from warm parent %s (service start-up "
            "%.2f s, CPU %.2f s)",
            model_name,
            now - created,
            parent,
            now - began,
            cpu,
        )
        return
    logging.getLogger("driftloop.serving").info(
        "worker serves %s %.2f s after its process started (imports %.2f s, service "
        "start-up %.2f s, CPU %.2f s)",
        model_name,
        now - created,
        began - created,
        now - began,
        cpu,
    )


def _live_app() -> Any:
    """The running ServingApp, or None while the service starts."""
    try:
        service = bentoml.get_current_service()
    except BentoMLException:
        return None
    return getattr(service, "app", None)


DriftloopService.add_asgi_middleware(Gateway, backend=_live_app)
