"""Append-only promotion history, kept in MLflow itself.

Each alias move is one MLflow run in the experiment ``<model>-decisions``:
tags say who moved which alias from which version to which and why; metrics
hold the figures that caused it. So the history lives wherever the registry
lives (local SQLite or a remote server) and the MLflow UI shows it as runs.

Reads are newest first and paged: the cool-down and the watch period need the
latest decisions, however long the history grows.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException

DEFAULT_PAGE_SIZE = 50


@dataclass(frozen=True)
class AliasMove:
    """One decision: which aliases moved, from which version to which, and why.

    `decision_id` names the decision that caused the move; a retried call that
    carries the same id finds this record instead of moving again (`replayed`).
    """

    at: str  # ISO 8601, UTC
    action: str  # register | promote | rollback | set-<alias> | clear-<alias> | retrain ...
    moves: dict[str, tuple[str | None, str | None]]  # alias -> (from version, to version)
    reason: str
    actor: str  # "user", "train-flow", "monitor" ...
    figures: dict[str, float] = field(default_factory=dict)
    decision_id: str = ""
    replayed: bool = False  # True when a retry found this decision already carried out

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
            "decision_id": self.decision_id,
        }


@dataclass(frozen=True)
class HistoryPage:
    """One page of decisions, newest first; `next_page_token` is None on the last page."""

    moves: list[AliasMove]
    next_page_token: str | None


class PromotionHistory:
    """Read and append decisions for one registered model."""

    def __init__(self, client: MlflowClient, model_name: str) -> None:
        self.client = client
        self.model_name = model_name
        self.experiment_name = f"{model_name}-decisions"
        self._last_start_ms = 0
        self._clock = threading.Lock()

    def ensure_experiment(self) -> tuple[str, bool]:
        """(experiment id, whether this call created it); creation is race-safe."""
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return experiment.experiment_id, False
        try:
            created = self.client.create_experiment(
                self.experiment_name, tags={"driftloop.kind": "decisions"}
            )
            return created, True
        except MlflowException:  # created concurrently by another process
            experiment = self.client.get_experiment_by_name(self.experiment_name)
            if experiment is None:
                raise
            return experiment.experiment_id, False

    def _experiment_id(self) -> str | None:
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        return None if experiment is None else experiment.experiment_id

    def append(self, move: AliasMove) -> str:
        """Record a decision as a finished MLflow run; returns the run id."""
        experiment_id, _ = self.ensure_experiment()
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
        if move.decision_id:
            tags["driftloop.decision_id"] = move.decision_id
        run = self.client.create_run(experiment_id, start_time=self._start_ms(), tags=tags)
        for key, value in move.figures.items():
            self.client.log_metric(run.info.run_id, _metric_key(key), float(value))
        self.client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FINISHED))
        return run.info.run_id

    def _start_ms(self) -> int:
        """Start times strictly increase within this process (newest-first order is by them)."""
        with self._clock:
            self._last_start_ms = max(int(time.time() * 1000), self._last_start_ms + 1)
            return self._last_start_ms

    def page(
        self,
        limit: int = DEFAULT_PAGE_SIZE,
        page_token: str | None = None,
        action: str | None = None,
    ) -> HistoryPage:
        """Decisions newest first, `limit` at a time; pass `next_page_token` for older ones."""
        if limit < 1:
            raise ValueError(f"history page size must be at least 1, got {limit}")
        experiment_id = self._experiment_id()
        if experiment_id is None:
            return HistoryPage([], None)
        query = f"tags.`driftloop.model_name` = '{self.model_name}'"
        if action is not None:
            query += f" and tags.`driftloop.action` = '{action}'"
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=query,
            order_by=["attributes.start_time DESC"],
            max_results=limit,
            page_token=page_token,
        )
        return HistoryPage([move_from_run(run) for run in runs], runs.token or None)

    def list(self, limit: int = DEFAULT_PAGE_SIZE) -> list[AliasMove]:
        """The newest `limit` decisions, newest first."""
        return self.page(limit).moves

    def latest(self, action: str) -> AliasMove | None:
        """The newest decision of one kind (`promote`, `retrain`...), however old."""
        moves = self.page(1, action=action).moves
        return moves[0] if moves else None

    def find(self, decision_id: str) -> AliasMove | None:
        """The decision recorded under `decision_id`, if any (retries look here first)."""
        experiment_id = self._experiment_id()
        if experiment_id is None or not decision_id:
            return None
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=(
                f"tags.`driftloop.model_name` = '{self.model_name}' "
                f"and tags.`driftloop.decision_id` = '{decision_id}'"
            ),
            max_results=1,
        )
        return move_from_run(runs[0]) if runs else None


def move_from_run(run: Run) -> AliasMove:
    """The decision a history run records."""
    tags = run.data.tags
    raw_moves = json.loads(tags.get("driftloop.moves", "{}"))
    return AliasMove(
        at=tags.get("driftloop.at", ""),
        action=tags.get("driftloop.action", "?"),
        moves={alias: (pair[0], pair[1]) for alias, pair in raw_moves.items()},
        reason=tags.get("driftloop.reason", ""),
        actor=tags.get("driftloop.actor", "?"),
        figures=dict(run.data.metrics),
        decision_id=tags.get("driftloop.decision_id", ""),
    )


def _metric_key(name: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and spaces."""
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in name)
