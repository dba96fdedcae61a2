"""What a version is compared against: its schema, its reference rows (the training
sample with the version's own predictions on it) and its out-of-distribution index.

Training prepares them when a version is registered (`index_reference`); the monitor
reads them, from a cache in the state folder or from the version's MLflow run (a
machine that never trained the version rebuilds them from there).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from config.settings import Settings
from monitoring.figures import SCORE_COLUMN
from registry import Registry, VersionInfo
from registry.environment import import_skops_without_torch, requirements_checked_by_name


def monitor_dir(settings: Settings) -> Path:
    return settings.state_path / "monitor" / settings.model_name


def schema_of(version: VersionInfo, settings: Settings) -> dict[str, Any]:
    """features / categorical / numeric / target / task of a version (its schema.json)."""
    import mlflow

    cache = monitor_dir(settings) / f"v{version.version}" / "schema.json"
    if cache.exists():
        return json.loads(cache.read_text())
    cache.parent.mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(
        run_id=str(version.run_id),
        artifact_path="schema.json",
        dst_path=str(cache.parent),
        tracking_uri=settings.resolved_tracking_uri(),
    )
    return json.loads(Path(local).read_text())


def reference_of(version: VersionInfo, settings: Settings, schema: dict[str, Any]) -> pd.DataFrame:
    """The version's training sample with the champion's predictions on it (cached)."""
    import mlflow

    cache = monitor_dir(settings) / f"v{version.version}" / "reference.parquet"
    if cache.exists():
        return pd.read_parquet(cache)
    # Every MLflow read names the resolved tracking URI: MLflow's global default would
    # be ./mlflow.db in the working folder (embedded mode has no MLFLOW_TRACKING_URI).
    local = mlflow.artifacts.download_artifacts(
        run_id=str(version.run_id),
        artifact_path="reference/train_sample.parquet",
        tracking_uri=settings.resolved_tracking_uri(),
    )
    reference = pd.read_parquet(local)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Registry.from_settings(settings).download_model(version.version, Path(tmp))
        import_skops_without_torch()  # MLflow loads sklearn models with skops
        with requirements_checked_by_name():
            model = mlflow.pyfunc.load_model(str(model_dir))
        features = reference[schema["features"]].astype(
            {c: "float64" for c in schema["numeric"] if c in reference.columns}
        )
        reference["prediction"], score = reference_predictions(model, features, schema["task"])
        if score is not None:
            reference[SCORE_COLUMN] = score
    cache.parent.mkdir(parents=True, exist_ok=True)
    reference.to_parquet(cache)
    return reference


def reference_predictions(model: Any, features: pd.DataFrame, task: str) -> tuple[Any, Any]:
    """The version's predictions on its reference rows, labelled by the decision rule it
    recorded (as serving labels them), and P(positive) for a binary classifier (else None).
    """
    from pipelines.evaluate import score_pyfunc
    from registry.decision import DECISION_KEY, Decision

    recorded = (model.metadata.metadata or {}).get(DECISION_KEY)
    if task != "classification" or not recorded:
        return model.predict(features), None
    decision = Decision.from_dict(recorded)
    labels, proba, _ = score_pyfunc(model, features, task, decision)
    return labels, None if proba is None else decision.scores(proba)


def ood_collection(settings: Settings, version: str) -> str:
    safe = "".join(ch if ch.isalnum() else "_" for ch in settings.model_name.lower())
    return f"{safe}_v{version}"


def ensure_ood_reference(
    settings: Settings, version: str, reference: pd.DataFrame, schema: dict[str, Any]
) -> tuple[Any, Any, Any]:
    """(index, OODReference, TabularEmbedder) for a version; indexed on first use, and
    again when the stored embedder or reference cannot be read back."""
    from monitoring.ood import TabularEmbedder, fit_reference, make_ood_index

    folder = settings.state_path / "ood"
    index = make_ood_index(settings.qdrant_url, folder)
    meta_path = monitor_dir(settings) / f"v{version}" / "ood.json"
    collection = ood_collection(settings, version)
    if meta_path.exists() and index.exists(collection):
        stored = read_ood_meta(meta_path)
        if stored is not None:
            return index, *stored
    embedder = TabularEmbedder.fit(
        reference[schema["features"]],
        numeric=schema["numeric"],
        categorical=schema["categorical"],
    )
    ref = fit_reference(
        ExactSelfScores(index),
        collection,
        embedder.transform(reference[schema["features"]]),
        max_points=settings.ood_max_points,
        seed=settings.seed,
    )
    meta_path.parent.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps({"reference": ref.to_dict(), "embedder": embedder.to_dict()}))
    return index, ref, embedder


class ExactSelfScores:
    """An OOD index whose leave-one-out queries on a collection it just created are
    answered from those vectors in memory (numpy, exact Euclidean kNN); everything else,
    the stored points included, goes to `index` (Qdrant).

    `fit_reference` scores up to 5,000 reference points against the whole reference for
    the threshold; Qdrant Edge answers that one query at a time (~1.2 s
    CPU for the bundled data), where one matrix product per chunk gives the same
    distances in a fraction of that. The figures agree with Qdrant's exact search to
    float32 rounding (`tests/unit/test_ood_reference.py`).
    """

    # Queries per distance matrix: 64 x 20,000 float32 = 5 MB at most, which stays in the
    # cache between the product and the partition. The bundled data's threshold (5,000
    # queries x 6,921 points, one thread): 0.15 s of CPU in chunks of 512, 0.10 s in 64.
    _ROWS_PER_CHUNK = 64

    def __init__(self, index: Any) -> None:
        self.index = index
        self._vectors: dict[str, np.ndarray] = {}

    def create(self, collection: str, vectors: np.ndarray) -> None:
        self.index.create(collection, vectors)
        self._vectors[collection] = np.asarray(vectors, dtype=np.float64)

    def knn_distance(
        self, collection: str, queries: np.ndarray, k: int, *, skip_self: bool = False
    ) -> np.ndarray:
        points = self._vectors.get(collection)
        if points is None or not skip_self or k < 1 or len(points) < k + 1:
            return self.index.knn_distance(collection, queries, k, skip_self=skip_self)
        return exact_knn_distance(points, queries, k, skip_self, self._ROWS_PER_CHUNK)

    def __getattr__(self, name: str) -> Any:  # exists, count, drop, close: the index's own
        return getattr(self.index, name)


def exact_knn_distance(
    points: np.ndarray, queries: np.ndarray, k: int, skip_self: bool, chunk: int = 64
) -> np.ndarray:
    """Mean Euclidean distance from each query to its `k` nearest `points` (the nearest
    dropped first with `skip_self`: the query itself).

    The neighbours are picked on float32 squared distances (one matrix product per
    chunk of queries, as Qdrant's float32 vectors would), then their distances are
    computed directly in float64."""
    points = np.asarray(points, dtype=np.float64)
    queries = np.asarray(queries, dtype=np.float64)
    wanted = k + 1 if skip_self else k
    points32 = points.astype(np.float32)
    squared_points = np.einsum("ij,ij->i", points32, points32)
    out = np.empty(len(queries), dtype=np.float64)
    for start in range(0, len(queries), chunk):
        part = queries[start : start + chunk]
        part32 = part.astype(np.float32)
        d2 = np.einsum("ij,ij->i", part32, part32)[:, None] + squared_points[None, :]
        d2 -= 2.0 * (part32 @ points32.T)
        nearest = np.argpartition(d2, wanted - 1, axis=1)[:, :wanted]
        gaps = points[nearest] - part[:, None, :]
        distances = np.sqrt(np.einsum("qnd,qnd->qn", gaps, gaps))
        distances.sort(axis=1)
        out[start : start + len(part)] = (distances[:, 1:] if skip_self else distances).mean(axis=1)
    return out


def read_ood_meta(path: Path) -> tuple[Any, Any] | None:
    """(OODReference, TabularEmbedder) stored at `path`, or None when they cannot be read
    back (a damaged file, another format, an embedder of other dims): then re-indexed."""
    from monitoring.ood import OODReference, TabularEmbedder

    try:
        meta = json.loads(path.read_text())
        ref = OODReference.from_dict(meta["reference"])
        embedder = TabularEmbedder.from_dict(meta["embedder"])
    except (OSError, KeyError, TypeError, ValueError):
        return None
    return (ref, embedder) if embedder.dim == ref.dim else None
