"""MLflow's HTTP client environment, decided in one place for every process.

MLflow's defaults (``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` 7 with exponential backoff,
``MLFLOW_HTTP_REQUEST_TIMEOUT`` 120 s) retry a dead tracking server for minutes. Neither
the flows nor the service should wait that long; they want different bounds:
"""

from __future__ import annotations

import math

FLOW_MLFLOW_RETRIES = 2
"""Retries per MLflow call in the CLI, the flows and the stack's processes: a tracking
server that restarts (a few seconds) is survived, a dead one fails the call within a
minute and the flow's own retries (Prefect) take over."""

FLOW_MLFLOW_TIMEOUT_S = 15
"""Seconds per MLflow HTTP attempt in the CLI and the flows: registering a model or
logging an artifact to a busy server may take several seconds."""


def mlflow_http_env(timeout_s: float | None = None) -> dict[str, str]:
    """``MLFLOW_HTTP_REQUEST_*`` for a process's environment.

    - ``timeout_s=None`` — the CLI, the flows and the stack's processes:
      `FLOW_MLFLOW_RETRIES` retries of `FLOW_MLFLOW_TIMEOUT_S` seconds each.
    - ``timeout_s`` given — the serving process (its ``registry_timeout_s``): one attempt
      of ``timeout_s`` rounded up to whole seconds (what MLflow accepts), no retries: a
      registry call must never hold the alias follower longer than that, and the
      follower has its own backoff (circuit breaker).
    """
    if timeout_s is None:
        return {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(FLOW_MLFLOW_RETRIES),
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(FLOW_MLFLOW_TIMEOUT_S),
        }
    return {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(timeout_s))),
    }
