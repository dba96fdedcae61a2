"""One typed settings object for driftloop.

Defaults serve the bundled Bikeshare demo. Every field can be overridden by an
environment variable ``DRIFTLOOP_<FIELD>`` (for example ``DRIFTLOOP_MODEL_NAME``)
or by a CLI flag. The ecosystem's own variables are honoured too:
``MLFLOW_TRACKING_URI`` and ``PREFECT_API_URL`` point driftloop at servers that
already run. Nothing here touches the disk or the network at import time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

import config.thresholds as T
from config.serving import ServingSettings

Task = Literal["auto", "regression", "classification"]
Family = Literal["sklearn", "torch"]
PromotionPolicy = Literal["challenger", "auto"]

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_DATA = REPO_ROOT / "data" / "bundled" / "bikeshare_2011.csv"

# MLflow registered model names are free text, but the Bento tag derived from
# them must be a valid BentoML name: lowercase letters, digits, '-', '_', '.'.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class DatasetSpec:
    """Where the training data comes from and how to read it
    (`data.sources.load_dataset` reads it)."""

    path: Path
    target: str
    time_column: str | None
    drop_columns: tuple[str, ...] = ()
    bundled: bool = False
    categorical_columns: tuple[str, ...] = field(default=())


class Settings(ServingSettings):
    """Everything driftloop can be told; see the README's configuration table.

    The serving fields (canary share, API key, batching, prediction log...) are
    inherited from `config.serving.ServingSettings`, which the service reads on its
    own because `bentos/` does not import `driftloop`.
    """

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLOOP_", extra="ignore", validate_assignment=True
    )

    # -- the use case -----------------------------------------------------
    data: Path | None = Field(
        None, description="CSV or Parquet training data; empty = bundled Bikeshare 2011."
    )
    target: str | None = Field(None, description="Target column; the bundled data uses 'bikers'.")
    task: Task = Field("auto", description="regression | classification | auto (inferred).")
    time_column: str | None = Field(
        None, description="Column that orders rows in time; the bundled data uses 'day'."
    )
    drop_columns: list[str] = Field(
        default_factory=list,
        description="Columns never used as features (ids, leaks). Bundled: casual, registered.",
    )
    family: Family = Field("sklearn", description="Model family: sklearn | torch.")
    seed: int = Field(42, description="Random seed for splits and model fitting.")

    # -- where things live ------------------------------------------------
    prefect_api_url: str | None = Field(
        None, description="Prefect API URL; falls back to PREFECT_API_URL."
    )
    experiment_name: str | None = Field(
        None, description="MLflow experiment; defaults to the model name."
    )

    # -- training and the gate -------------------------------------------
    holdout_fraction: float = Field(
        0.2, gt=0.0, lt=0.9, description="Share of rows (the latest ones) kept as holdout."
    )
    validation_fraction: float = Field(
        0.15, gt=0.0, lt=0.9, description="Share of training rows for early stopping (torch)."
    )
    promotion_margin: float = Field(
        0.02,
        ge=0.0,
        description="Relative improvement on the holdout a new version needs to beat the "
        "champion (0.02 = 2 %).",
    )
    promotion_policy: PromotionPolicy = Field(
        "challenger",
        description="'challenger': a winner becomes challenger and waits for live traffic; "
        "'auto': a winner by the margin is promoted to champion at once.",
    )
    range_tolerance: float = Field(
        0.5,
        ge=0.0,
        description="Numeric value ranges in the data contract are widened by this share "
        "of the reference range on each side.",
    )
    positive_class: str | None = Field(
        None,
        description="Binary classifiers: the class whose probability is the score (as "
        "spelled in the data, e.g. 'Yes' or '1'); empty = a class named like 1/true/yes/"
        "positive, else the rarer class. Recorded on the version.",
    )
    decision_threshold: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="Binary classifiers: the label is the positive class when P(positive) "
        "≥ this probability. Recorded on the version; serving and the monitor use it.",
    )
    torch_max_epochs: int = Field(200, gt=0, description="Upper bound on MLP epochs.")
    torch_patience: int = Field(10, gt=0, description="Early-stopping patience in epochs.")

    # -- monitoring: the window and the decision policy ------------------------
    monitor_window_rows: int = Field(
        2000,
        gt=0,
        description="Latest requests one monitor check looks at (per model; shadow rows of "
        "the same requests do not count).",
    )
    monitor_window_s: float | None = Field(
        None,
        gt=0,
        description="Only requests logged in the last this many seconds (a time window, "
        "together with the rows bound); empty = no time bound. CLI: `monitor --since 1h`.",
    )
    log_retention_s: float | None = Field(
        None,
        gt=0,
        description="Delete the model's prediction-log rows older than this many seconds "
        "after each monitor check (batched); empty = keep everything. By hand: "
        "`driftloop log prune --older-than 30d`.",
    )
    monitor_interval_s: int = Field(
        300, gt=0, description="Schedule of the `monitor` deployment, in seconds."
    )
    drift_share_threshold: float = Field(
        T.DRIFT_SHARE_THRESHOLD,
        ge=0,
        le=1,
        description="Share of drifted features that triggers a retrain.",
    )
    ood_rate_threshold: float = Field(
        T.OOD_RATE_THRESHOLD,
        ge=0,
        le=1,
        description="Share of out-of-distribution rows that triggers a retrain.",
    )
    min_window_rows: int = Field(
        T.MIN_WINDOW_ROWS, ge=0, description="Fewest rows before drift is judged."
    )
    min_labelled_rows: int = Field(
        T.MIN_LABELLED_ROWS,
        ge=0,
        description="Fewest labelled rows per model before live metrics compare.",
    )
    live_promotion_margin: float = Field(
        T.LIVE_PROMOTION_MARGIN,
        ge=0,
        description="Live improvement a challenger needs over the champion.",
    )
    rollback_margin: float = Field(
        T.ROLLBACK_MARGIN,
        ge=0,
        description="Live degradation vs the previous champion that rolls back.",
    )
    watch_period_s: float = Field(
        T.WATCH_PERIOD_S,
        ge=0,
        description="Seconds after a promotion in which a rollback is considered.",
    )
    retrain_cooldown_s: float = Field(
        T.RETRAIN_COOLDOWN_S,
        ge=0,
        description="Seconds after a retrain before drift may trigger another.",
    )
    challenger_patience_s: float = Field(
        T.CHALLENGER_PATIENCE_S,
        ge=0,
        description="Seconds a challenger may wait to be judged on live labels before it is "
        "retired (its alias cleared, with the reason recorded).",
    )
    min_retrain_labelled_rows: int = Field(
        T.MIN_RETRAIN_LABELLED_ROWS,
        ge=0,
        description="Labelled rows the drifted window needs before a drift retrain runs; "
        "with fewer the check records 'retrain pending' and alerts, and retrains by itself "
        "once the labels arrive.",
    )
    retrain_without_labels: bool = Field(
        T.RETRAIN_WITHOUT_LABELS,
        description="On drift, retrain at once on whatever is labelled instead of waiting "
        "for min_retrain_labelled_rows.",
    )
    fallback_rollback_share: float = Field(
        T.FALLBACK_ROLLBACK_SHARE,
        ge=0,
        le=1,
        description="Share of the champion's requests (since it took the alias, within the "
        "window) that the serving fallback answered because the champion raised or returned "
        "NaN/inf, at or above which the monitor rolls back (0.01 = 1 %).",
    )
    fallback_min_rows: int = Field(
        T.FALLBACK_MIN_ROWS,
        ge=1,
        description="Fewest fallback answers before a failing champion is rolled back "
        "(one odd request does not move the alias).",
    )
    label_delay_s: float = Field(
        0.0,
        ge=0,
        description="Seconds a prediction needs before it counts as matured: live metrics, "
        "promotion/rollback comparisons and label coverage use only predictions older than "
        "this, so young ones whose labels cannot have arrived yet neither dilute coverage "
        "nor bias the comparison toward fast labels. 0 = every prediction (labels arrive at "
        "once). Set it near the label delay p90 the monitor prints.",
    )
    retrain_max_rows: int = Field(
        100_000,
        gt=0,
        description="Live labelled rows a drift retrain carries at most: the champion's "
        "earlier live rows plus the new window's, newest kept (the original training data "
        "comes on top).",
    )
    live_interval_level: float = Field(
        0.9,
        gt=0,
        lt=1,
        description="Confidence of the bootstrap interval of a live gain: promotion and "
        "rollback need the whole interval to clear their margin.",
    )
    gate_losers_as_challenger: bool = Field(
        False,
        description="Make a new version that does not beat the champion by promotion_margin "
        "challenger anyway (default: registered without an alias).",
    )
    monitor_guard_wait_s: float = Field(
        120,
        ge=0,
        description="Seconds a monitor check waits while another check of the same model "
        "runs (a Prefect global concurrency limit); 0 = refuse at once.",
    )
    alias_move_wait_s: float = Field(
        30,
        gt=0,
        description="Seconds an alias move waits for another move in progress before taking "
        "it as abandoned; also the longest one move may spend writing aliases.",
    )
    drift_max_rows: int = Field(
        20_000, gt=0, description="Sampling bound per side for the Evidently drift check."
    )
    live_max_labels: int = Field(
        20_000,
        gt=0,
        description="Labels per check joined for live metrics; above it an evenly spread "
        "1-in-k sample of the window's labels.",
    )
    ood_max_points: int = Field(
        20_000, gt=0, description="Reference rows indexed per version for OOD."
    )
    ood_max_queries: int = Field(
        2_500, gt=0, description="Window rows scored for OOD per check (sampling bound)."
    )
    qdrant_url: str | None = Field(
        None, description="Qdrant server URL for the OOD index; empty = embedded Qdrant Edge."
    )
    alert_webhook_url: str | None = Field(
        None,
        description="Webhook URL that drift, promotion and rollback events POST to "
        "(through a Prefect automation); empty = no alerts.",
    )

    # -- servers ------------------------------------------------------------
    mlflow_port: int = Field(5000, gt=0, lt=65536, description="`driftloop up`: MLflow port.")
    prefect_port: int = Field(4200, gt=0, lt=65536, description="`driftloop up`: Prefect port.")
    serve_port: int = Field(3000, gt=0, lt=65536, description="`bentoml serve` port.")
    evidently_port: int = Field(
        8000,
        gt=0,
        lt=65536,
        description="`driftloop up`: Evidently UI port (`evidently ui` over the workspace in "
        "`<state_dir>/evidently`: drift over time, one project per model).",
    )
    evidently_retention_runs: int | None = Field(
        500,
        gt=0,
        description="Runs (one per monitor check) kept per model in the Evidently workspace; "
        "older ones are deleted after each check. 500 is ~42 hours of checks every 5 minutes; "
        "a run is ~6 KB plus ~12 KB per monitored column (160 KB for the demo). The same "
        "number of local HTML/JSON report folders is kept (the copies logged to MLflow "
        "stay). Empty = keep everything.",
    )
    work_pool: str = Field("driftloop", description="Prefect process work pool for deployments.")

    @field_validator("evidently_retention_runs", mode="before")
    @classmethod
    def _empty_keeps_every_run(cls, value: object) -> object:
        """``DRIFTLOOP_EVIDENTLY_RETENTION_RUNS=`` (empty) turns the default retention off."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("model_name")
    @classmethod
    def _valid_model_name(cls, value: str) -> str:
        if not _MODEL_NAME.match(value):
            raise ValueError(
                f"model name {value!r} is not usable: use letters, digits, '-', '_' or '.', "
                "start with a letter or digit, at most 63 characters "
                "(it becomes the Bento tag '<name>-service')"
            )
        return value

    @field_validator("data")
    @classmethod
    def _data_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.exists():
            raise ValueError(f"data file {value} does not exist")
        return value

    @model_validator(mode="after")
    def _user_data_needs_target(self) -> Settings:
        if self.data is not None and self.target is None:
            raise ValueError(
                f"--target is required with --data {self.data}: name the column to predict"
            )
        return self

    # -- derived values -------------------------------------------------------
    @property
    def experiment(self) -> str:
        return self.experiment_name or self.model_name

    def evidently_workspace(self) -> Path:
        """The local Evidently workspace the monitor feeds and `evidently ui` serves."""
        return self.state_path / "evidently"

    def artifact_root(self) -> Path:
        """Where the embedded store keeps artifacts (used only with the SQLite default)."""
        return self.state_path / "mlartifacts"

    def resolved_prefect_api_url(self) -> str | None:
        return self.prefect_api_url or os.environ.get("PREFECT_API_URL")

    def dataset_spec(self) -> DatasetSpec:
        """The data source with the bundled demo's defaults filled in."""
        if self.data is None:
            return DatasetSpec(
                path=BUNDLED_DATA,
                target=self.target or "bikers",
                time_column=self.time_column or "day",
                drop_columns=tuple(self.drop_columns or ("casual", "registered")),
                bundled=True,
            )
        return DatasetSpec(
            path=self.data,
            target=self.target or "",
            time_column=self.time_column,
            drop_columns=tuple(self.drop_columns),
        )


def load_settings(**overrides: object) -> Settings:
    """Build settings from env vars, with CLI overrides (None values are ignored)."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
