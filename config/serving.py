"""Settings of the serving side, read from ``DRIFTLOOP_*`` environment variables.

The bottom layer (``config/``): every package may import it, it imports none of
ours. `config.settings.Settings` inherits these fields so there is still one
settings object. Field names match the main settings where they overlap. Nothing here
touches the disk or the network.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Answered without the API key (the probes, metrics, the docs and BentoML's UI assets).
DEFAULT_OPEN_PATHS = (
    "/healthz",
    "/readyz",
    "/livez",
    "/metrics",
    "/",
    "/docs.json",
    "/schema.json",
    "/static_content/*",
)
SERVICE_NAME = "driftloop"  # the BentoML service name (BentoML config key services.<name>)


class ServingSettings(BaseSettings):
    """What `bentoml serve bentos.service:DriftloopService` can be told."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLOOP_", extra="ignore", validate_assignment=True
    )

    # -- shared with config.settings.Settings ------------------------------
    model_name: str = Field("bikeshare-demand", description="Registered model name.")
    state_dir: Path = Field(
        Path(".driftloop"), description="Runtime state: MLflow store, logs, prediction log."
    )
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking/registry URI; falls back to MLFLOW_TRACKING_URI, "
        "then a SQLite store in the state folder.",
    )

    # -- routing -----------------------------------------------------------------
    canary_share: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of traffic the challenger answers (0 = shadow: the challenger "
        "predicts and is logged, callers get the champion's answer).",
    )
    alias_poll_interval_s: float = Field(
        1.0, gt=0, description="How often the running service re-reads the aliases."
    )
    registry_timeout_s: float = Field(
        3.0, gt=0, description="Timeout of one registry call made by the running service."
    )
    registry_backoff_initial_s: float = Field(
        1.0, gt=0, description="First wait after a failed registry call (circuit breaker)."
    )
    registry_backoff_max_s: float = Field(
        30.0, gt=0, description="Longest wait between registry calls while it is down."
    )

    # -- HTTP ----------------------------------------------------------------------
    api_key: SecretStr | None = Field(
        None,
        description="When set, /predict and /metadata (every path but open_paths and "
        "/feedback) need 'Authorization: Bearer <key>'; /feedback needs the feedback key (see "
        "feedback_api_key). Unset, only loopback clients are served unless insecure. Env only "
        "(DRIFTLOOP_API_KEY); never put it in a file.",
    )
    feedback_api_key: SecretStr | None = Field(
        None,
        description="The key that may POST /feedback (labels decide promotion and rollback). "
        "Set: /feedback needs 'Authorization: Bearer <this key>' and the API key gets 403. "
        "Env only (DRIFTLOOP_FEEDBACK_API_KEY).",
    )
    feedback_with_api_key: bool = Field(
        False,
        description="With DRIFTLOOP_API_KEY set and no feedback key, /feedback refuses "
        "everyone (403) unless this is true: then the API key may also post labels.",
    )
    routing_salt: SecretStr | None = Field(
        None,
        description="Secret that salts canary assignment, so callers cannot pick their "
        "model. Unset: a random one is created once in the serving state folder. Set the "
        "same value on every replica. Env only (DRIFTLOOP_ROUTING_SALT).",
    )
    max_body_bytes: int = Field(
        1_000_000, gt=0, description="Largest accepted request body in bytes (413 above)."
    )
    max_records_per_request: int = Field(
        10_000,
        gt=0,
        description="Most records (or labels) in one request (422 above). A 1 MB body "
        "holds ~6,500 bikeshare records; this bounds the work of a body of tiny records.",
    )
    open_paths: list[str] = Field(
        default_factory=lambda: list(DEFAULT_OPEN_PATHS),
        description="Paths answered without the API key (exact, or 'prefix/*'); all "
        "others, /predict, /feedback and /metadata included, need it when one is set. "
        "Env: a JSON list.",
    )
    insecure: bool = Field(
        False,
        description="Without an API key, answer non-loopback clients too (otherwise 403), "
        "and let `driftloop serve --host` bind beyond loopback (flag --insecure).",
    )
    request_timeout_s: float = Field(
        10.0,
        gt=0,
        description="BentoML traffic timeout (504 above). Also bounds how long BentoML "
        "keeps per-request timers alive, which drives garbage-collection pauses.",
    )
    workers: int = Field(
        2,
        ge=1,
        description="Serving worker processes, each with its own copy of the models, "
        "batcher and prediction log writer (one SQLite WAL log or PostgreSQL shared). "
        "2 uses both cores of a 2-core machine; memory grows by one model set per worker.",
    )
    access_log: bool = Field(
        False, description="BentoML's per-request access log (costs ~40 % throughput)."
    )
    trace_predictions: bool = Field(
        False,
        description="Let BentoML's OpenTelemetry middleware open spans for /predict and "
        "/feedback. Off: those two routes are in BentoML's tracing.excluded_urls, so "
        "nothing is opened per request (with BentoML's default sample rate 0 the spans "
        "are never recorded anyway); turn it on when you configure BentoML tracing.",
    )

    # -- batching --------------------------------------------------------------------
    max_batch_size: int = Field(
        2048, gt=0, description="Most records in one model call (one adaptive batch)."
    )
    max_latency_ms: float = Field(
        1.0,
        ge=0.0,
        description="Longest an idle model waits for others to join a batch, and only "
        "while fewer requests are queued than were in flight at once in the worker in "
        "the last 0.1 s: a lone caller never waits (0: run at once; batches still form "
        "from requests that arrive while the model is busy).",
    )
    inline_predict_records: int = Field(
        128,
        ge=0,
        description="A batch of one request of at most this many records, with no other "
        "request in this worker, is predicted on the event loop instead of in the model "
        "thread (two thread hand-offs fewer at concurrency 1; the loop is held for that "
        "model call: lower it for a slow model). 0: always the model thread.",
    )

    # -- prediction log ------------------------------------------------------------------
    prediction_log_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the prediction log; default: SQLite (WAL) file "
        "predictions.db in the state folder.",
    )
    prediction_log_commit_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Longest a commit waits on a locked or failing prediction log before its "
        "requests get 503 (keep it below request_timeout_s); meanwhile /readyz is 503 and "
        "the service retries by itself.",
    )

    # -- derived values (methods and properties only: no validators) ------------------
    @property
    def state_path(self) -> Path:
        return self.state_dir.expanduser().resolve()

    def resolved_tracking_uri(self) -> str:
        """The MLflow URI: explicit setting, then MLFLOW_TRACKING_URI, then embedded SQLite."""
        if self.tracking_uri:
            return self.tracking_uri
        env = os.environ.get("MLFLOW_TRACKING_URI")
        if env:
            return env
        return f"sqlite:///{self.state_path / 'mlflow.db'}"

    def resolved_prediction_log_url(self) -> str:
        """The prediction log URL: explicit setting, else SQLite in the state folder."""
        return self.prediction_log_url or f"sqlite:///{self.state_path / 'predictions.db'}"

    def resolved_bentoml_home(self) -> Path:
        """BentoML's model and bento store: BENTOML_HOME, else `bentoml/` in the state folder."""
        env = os.environ.get("BENTOML_HOME")
        return Path(env).expanduser().resolve() if env else self.state_path / "bentoml"

    def serving_state_path(self, model_name: str | None = None) -> Path:
        """Where the service caches what it learnt from the registry (aliases)."""
        return self.state_path / "serving" / (model_name or self.model_name)
