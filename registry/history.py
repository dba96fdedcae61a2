"""Append-only promotion history, kept in MLflow itself.

Each alias move is one MLflow run in the experiment ``<model>-decisions``:
tags say who moved which alias from which version to which and why; metrics
hold the figures that caused it. So the history lives wherever the registry
lives (local SQLite or a remote server) and the MLflow UI shows it as runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException


@dataclass(frozen=True)
class AliasMove:
    """One decision: which aliases moved, from which version to which, and why."""

    at: str  # ISO 8601, UTC
    action: str  # register | promote | rollback | set-<alias> | clear-<alias> | retrain ...
    moves: dict[str, tuple[str | None, str | None]]  # alias -> (from version, to version)
    reason: str
    actor: str  # "user", "train-flow", "monitor" ...
    figures: dict[str, float] = field(default_factory=dict)

    @classmethod
    def now(cls, **kwargs: object) -> AliasMove:
        return cls(at=datetime.now(UTC).isoformat(timespec="seconds"), **kwargs)  # type: ignore[arg-type]

    def describe_moves(self) -> str:
        parts = [
            f"{alias}: {old or '-'} → {new or '-'}"
            for alias, (old, new) in sorted(self.moves.items())
        ]
        return ", ".join(parts) if parts else "no alias moved"

    def to_dict(self) -> dict[str, object]:
        return {
            "at": self.at,
            "action": self.action,
            "moves": {alias: list(pair) for alias, pair in self.moves.items()},
            "reason": self.reason,
            "actor": self.actor,
            "figures": self.figures,
        }


class PromotionHistory:
    """Read and append decisions for one registered model."""

    def __init__(self, client: MlflowClient, model_name: str) -> None:
        self.client = client
        self.model_name = model_name
        self.experiment_name = f"{model_name}-decisions"

    def _experiment_id(self, create: bool) -> str | None:
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        if not create:
            return None
        try:
            return self.client.create_experiment(
                self.experiment_name, tags={"driftloop.kind": "decisions"}
            )
        except MlflowException:  # created concurrently by another process
            experiment = self.client.get_experiment_by_name(self.experiment_name)
            assert experiment is not None
            return experiment.experiment_id

    def append(self, move: AliasMove) -> str:
        """Record a decision as a finished MLflow run; returns the run id."""
        experiment_id = self._experiment_id(create=True)
        assert experiment_id is not None
        moved = {alias: pair for alias, pair in move.moves.items() if pair[0] != pair[1]}
        run_name = f"{move.action} " + " ".join(
            f"{alias}=v{new}" for alias, (_, new) in sorted(moved.items()) if new
        )
        tags = {
            "mlflow.runName": run_name.strip(),
            "driftloop.model_name": self.model_name,
            "driftloop.action": move.action,
            "driftloop.actor": move.actor,
            "driftloop.at": move.at,
            "driftloop.reason": move.reason[:4900],
            "driftloop.moves": json.dumps({a: list(p) for a, p in move.moves.items()}),
            "mlflow.note.content": f"{move.describe_moves()}\n\n{move.reason}",
        }
        run = self.client.create_run(experiment_id, tags=tags)
        for key, value in move.figures.items():
            self.client.log_metric(run.info.run_id, _metric_key(key), float(value))
        self.client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FINISHED))
        return run.info.run_id

    def list(self, limit: int = 1000) -> list[AliasMove]:
        """Decisions oldest first."""
        experiment_id = self._experiment_id(create=False)
        if experiment_id is None:
            return []
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`driftloop.model_name` = '{self.model_name}'",
            order_by=["attributes.start_time ASC"],
            max_results=limit,
        )
        moves = []
        for run in runs:
            tags = run.data.tags
            raw_moves = json.loads(tags.get("driftloop.moves", "{}"))
            moves.append(
                AliasMove(
                    at=tags.get("driftloop.at", ""),
                    action=tags.get("driftloop.action", "?"),
                    moves={alias: (pair[0], pair[1]) for alias, pair in raw_moves.items()},
                    reason=tags.get("driftloop.reason", ""),
                    actor=tags.get("driftloop.actor", "?"),
                    figures=dict(run.data.metrics),
                )
            )
        # start_time has millisecond resolution; the ISO stamp breaks no ties either,
        # so keep the store's order for equal times.
        return moves


def _metric_key(name: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and spaces."""
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in name)
