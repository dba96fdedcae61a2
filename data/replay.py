"""Replay a dataset as live traffic: predictions over HTTP, then the labels as feedback.

Used by the demo and the integration tests to play later months of the bundled
data against a running service, the way a client application would.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pandas as pd


@dataclass
class ReplayStats:
    """What a replay sent and got back."""

    requests: int = 0
    records: int = 0
    failed: int = 0
    labels: int = 0
    versions: dict[str, int] = field(default_factory=dict)  # model_version -> records answered
    errors: list[str] = field(default_factory=list)


def _records(rows: pd.DataFrame, features: list[str], prefix: str) -> list[dict[str, Any]]:
    out = []
    for position, values in enumerate(rows[features].to_dict(orient="records")):
        clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in values.items()}
        clean["request_id"] = f"{prefix}-{position}"
        out.append(clean)
    return out


def replay(
    base_url: str,
    rows: pd.DataFrame,
    features: list[str],
    target: str | None,
    batch_size: int = 50,
    api_key: str | None = None,
    feedback_key: str | None = None,
    send_feedback: bool = True,
    timeout_s: float = 30.0,
    on_batch: Callable[[int], None] | None = None,
) -> ReplayStats:
    """POST `rows` to /predict in batches, then their `target` values to /feedback.

    `api_key` authenticates predictions, `feedback_key` (default: `api_key`) the labels.
    """
    stats = ReplayStats()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    label_key = feedback_key or api_key
    label_headers = {"Authorization": f"Bearer {label_key}"} if label_key else {}
    run = uuid.uuid4().hex[:8]
    with httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s) as client:
        for start in range(0, len(rows), batch_size):
            chunk = rows.iloc[start : start + batch_size]
            records = _records(chunk, features, f"{run}-{start}")
            response = client.post("/predict", json={"records": records})
            stats.requests += 1
            if response.status_code != 200:
                stats.failed += len(records)
                stats.errors.append(f"{response.status_code}: {response.text[:300]}")
                continue
            answer = response.json()
            stats.records += len(records)
            for version in _versions(answer, len(records)):
                stats.versions[version] = stats.versions.get(version, 0) + 1
            if send_feedback and target is not None:
                labels = [
                    {"request_id": rid, "label": _plain(value)}
                    for rid, value in zip(answer["request_ids"], chunk[target], strict=True)
                ]
                feedback = client.post("/feedback", json={"labels": labels}, headers=label_headers)
                if feedback.status_code == 200:
                    stats.labels += len(labels)
                else:
                    stats.errors.append(f"feedback {feedback.status_code}: {feedback.text[:300]}")
            if on_batch is not None:
                on_batch(len(records))
    return stats


def _versions(answer: dict[str, Any], n: int) -> list[str]:
    """Per-record answering versions (canary splits one request across versions)."""
    per_record = answer.get("model_versions")
    if isinstance(per_record, list) and len(per_record) == n:
        return [str(v) for v in per_record]
    return [str(answer.get("model_version"))] * n


def _plain(value: Any) -> Any:
    """numpy scalars → Python values for JSON."""
    return value.item() if hasattr(value, "item") else value
