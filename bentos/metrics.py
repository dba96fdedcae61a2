"""Prometheus metrics per model version, exported on BentoML's /metrics.

`bentoml serve` runs workers in Prometheus multiprocess mode, so values written
here reach /metrics whatever registry the metrics are registered in. Each
`ServingMetrics` uses its own registry, so building several in one process (tests)
never collides.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


_BY_VERSION_AND_ROLE = ["model_name", "model_version", "role"]


class ServingMetrics:
    """Counters and histograms of the driftloop service (names start with `driftloop_`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else CollectorRegistry()
        self.registry = reg
        self.predictions = Counter(
            "driftloop_predictions",
            "Records predicted, by model version and role (champion, challenger, shadow).",
            _BY_VERSION_AND_ROLE,
            registry=reg,
        )
        self.model_errors = Counter(
            "driftloop_model_errors",
            "Model calls that raised, by model version and role.",
            _BY_VERSION_AND_ROLE,
            registry=reg,
        )
        self.fallbacks = Counter(
            "driftloop_fallback_predictions",
            "Records the previous version answered because the champion failed on them "
            "(reason: error | non_finite).",
            ["model_name", "failed_version", "answered_by", "reason"],
            registry=reg,
        )
        self.model_call_seconds = Histogram(
            "driftloop_model_call_seconds",
            "Duration of one model call (one adaptive batch), by model version.",
            ["model_name", "model_version"],
            buckets=_LATENCY_BUCKETS_S,
            registry=reg,
        )
        self.prediction_latency_seconds = Histogram(
            "driftloop_prediction_latency_seconds",
            "Request arrival to prediction ready, per request, by model version and role.",
            _BY_VERSION_AND_ROLE,
            buckets=_LATENCY_BUCKETS_S,
            registry=reg,
        )
        self.batch_records = Histogram(
            "driftloop_batch_records",
            "Records per adaptive batch.",
            ["model_name"],
            buckets=_BATCH_BUCKETS,
            registry=reg,
        )
        self.log_commit_seconds = Histogram(
            "driftloop_prediction_log_commit_seconds",
            "Duration of one group commit of the prediction log.",
            buckets=_LATENCY_BUCKETS_S,
            registry=reg,
        )
        self.log_commit_records = Histogram(
            "driftloop_prediction_log_commit_records",
            "Records written by one group commit of the prediction log.",
            buckets=_BATCH_BUCKETS,
            registry=reg,
        )
        self.feedback = Counter(
            "driftloop_feedback_labels",
            "Ground-truth labels received.",
            ["model_name"],
            registry=reg,
        )
        self.registry_up = Gauge(
            "driftloop_registry_up",
            "1 while the MLflow registry answers, 0 while the circuit breaker is open.",
            ["model_name"],
            multiprocess_mode="livemostrecent",
            registry=reg,
        )
        self.alias_version = Gauge(
            "driftloop_serving_version",
            "Version served in each role (0 = none).",
            ["model_name", "role"],
            multiprocess_mode="livemostrecent",
            registry=reg,
        )
