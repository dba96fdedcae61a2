"""Out-of-distribution index: how far live rows are from the training data.

One small interface (``OODIndex``), two backends:

- ``EdgeOODIndex``: Qdrant Edge (``qdrant-edge-py``), Qdrant's engine in process, one
  shard folder per collection under a state folder. The embedded default.
- ``QdrantClientOODIndex``: ``qdrant_client.QdrantClient`` against a Qdrant server by URL;
  its local mode (``:memory:`` or a path) stands in for a server in tests only, being a
  pure-Python brute force that slows down sharply above ~20k points.

Both search exactly (brute force) with Euclidean distance: the reference is bounded
(``max_points``, default 20,000) and the scored window too (``max_queries``), so exact kNN
stays around a second, where HNSW would add build time and approximation for nothing.
Above ~100k reference points switch to a server with HNSW (measured: Edge exact on 100k
points answers 1,000 queries in 1.8 s).

A row's OOD score is the mean Euclidean distance to its k nearest reference points; the
threshold is a high percentile (default 99th) of the reference's own leave-one-out scores,
so about 1 % of in-distribution rows score above it, and the OOD rate of a window is the
share of its rows that do.
"""

from __future__ import annotations

import math
import re
import shutil
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

import numpy as np
import pandas as pd

from monitoring.frames import category_keys, sample_rows

if TYPE_CHECKING:
    from sklearn.compose import ColumnTransformer

_COLLECTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_UPSERT_BATCH = 4_096
_QUERY_BATCH = 1_024


@runtime_checkable
class OODIndex(Protocol):
    """A store of reference vectors answering exact Euclidean kNN distances."""

    def create(self, collection: str, vectors: np.ndarray) -> None:
        """Store ``vectors`` (n x d) as ``collection``, replacing it if it exists."""
        ...

    def exists(self, collection: str) -> bool:
        """Whether ``collection`` holds an index."""
        ...

    def count(self, collection: str) -> int:
        """Number of points in ``collection``."""
        ...

    def knn_distance(
        self, collection: str, queries: np.ndarray, k: int, *, skip_self: bool = False
    ) -> np.ndarray:
        """Mean distance from each query to its ``k`` nearest points, shape (n,).

        ``skip_self`` drops the nearest neighbour first: for queries that are themselves in
        the index (leave-one-out), that neighbour is the query at distance 0.
        """
        ...

    def drop(self, collection: str) -> None:
        """Delete ``collection``; a missing one is not an error."""
        ...

    def close(self) -> None:
        """Release files and connections."""
        ...


# -- shared checks -----------------------------------------------------------------------


def _check_collection(name: str) -> str:
    if not _COLLECTION.match(name):
        raise ValueError(
            f"collection name {name!r} is not usable: use letters, digits, '_', '-' or '.', "
            "start with a letter or digit, at most 128 characters"
        )
    return name


def _as_vectors(vectors: np.ndarray, what: str) -> np.ndarray:
    """A C-contiguous float32 (n x d) array with only finite values, or a clear error."""
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(f"{what} must be a 2-D array (rows x dims), got shape {array.shape}")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{what} has {int(bad.sum())} row(s) with NaN or infinite values (first: row "
            f"{int(np.argmax(bad))}); embed with TabularEmbedder, which fills missing values"
        )
    return array


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _reduce(rows: Sequence[Sequence[float]], k: int, skip_self: bool, collection: str) -> float:
    """Mean of the ``k`` nearest distances of one query (after dropping self if asked)."""
    wanted = k + 1 if skip_self else k
    if len(rows) < wanted:
        raise ValueError(
            f"collection {collection!r} has fewer than {wanted} points; "
            f"cannot answer k={k} nearest neighbours"
        )
    distances = rows[1:wanted] if skip_self else rows[:wanted]
    return float(sum(distances) / k)


# -- Qdrant Edge ---------------------------------------------------------------------------


class _ClosesOnExit:
    """``with index:`` closes it (both index kinds)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EdgeOODIndex(_ClosesOnExit):
    """Qdrant Edge shards in process, one folder per collection under ``path``.

    ``create`` builds the new shard in a hidden sibling folder and swaps it in, so a crash
    mid-build leaves the previous index intact. Shards are opened lazily and kept open
    until ``drop``/``close``; do not share one folder between processes that write.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._shards: dict[str, Any] = {}

    def _folder(self, collection: str) -> Path:
        return self.path / _check_collection(collection)

    def exists(self, collection: str) -> bool:
        return (self._folder(collection) / "edge_config.json").is_file()

    def create(self, collection: str, vectors: np.ndarray) -> None:
        from qdrant_edge import (
            Distance,
            EdgeConfig,
            EdgeShard,
            EdgeVectorParams,
            Point,
            UpdateOperation,
        )

        array = _as_vectors(vectors, f"vectors for {collection!r}")
        folder = self._folder(collection)
        self.path.mkdir(parents=True, exist_ok=True)
        building = self.path / f".{collection}.building-{uuid.uuid4().hex[:8]}"
        # Written once and flushed: a write-ahead log would only double the disk writes.
        config = EdgeConfig(
            vectors=EdgeVectorParams(size=int(array.shape[1]), distance=Distance.Euclid),
            wal_enabled=False,
        )
        try:
            shard = EdgeShard.create(str(building), config)
            try:
                for part in _batches(len(array), _UPSERT_BATCH):
                    points = [Point(i, array[i].tolist()) for i in range(part.start, part.stop)]
                    shard.update(UpdateOperation.upsert_points(points))
                shard.flush()
            finally:
                shard.close()
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        self.drop(collection)
        building.rename(folder)

    def count(self, collection: str) -> int:
        return int(self._shard(collection).info().points_count)

    def knn_distance(
        self, collection: str, queries: np.ndarray, k: int, *, skip_self: bool = False
    ) -> np.ndarray:
        from qdrant_edge import Query, QueryBatchRequest, QueryRequest, SearchParams

        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        array = _as_vectors(queries, "queries")
        shard = self._shard(collection)
        self._check_dim(collection, array.shape[1])
        limit = k + 1 if skip_self else k
        exact = SearchParams(exact=True)
        out = np.empty(len(array), dtype=np.float64)
        for part in _batches(len(array), _QUERY_BATCH):
            requests = [
                QueryRequest(limit=limit, query=Query.Nearest(row.tolist()), params=exact)
                for row in array[part]
            ]
            answers = shard.query_batch(QueryBatchRequest(requests))
            out[part] = [
                _reduce([p.score for p in points], k, skip_self, collection) for points in answers
            ]
        return out

    def drop(self, collection: str) -> None:
        shard = self._shards.pop(collection, None)
        if shard is not None:
            shard.close()
        folder = self._folder(collection)
        if folder.exists():
            shutil.rmtree(folder)

    def close(self) -> None:
        while self._shards:
            _, shard = self._shards.popitem()
            shard.close()

    def _shard(self, collection: str) -> Any:
        shard = self._shards.get(collection)
        if shard is None:
            if not self.exists(collection):
                raise KeyError(
                    f"no OOD index {collection!r} under {self.path}; fit the reference first "
                    "(monitoring.ood.fit_reference)"
                )
            from qdrant_edge import EdgeShard

            shard = EdgeShard.load(str(self._folder(collection)))
            self._shards[collection] = shard
        return shard

    def _check_dim(self, collection: str, dim: int) -> None:
        import json

        # edge_config.json is Edge's own file (0.9.0); if its layout changes, Edge still
        # refuses the query itself, only with a terser message.
        try:
            config = json.loads((self._folder(collection) / "edge_config.json").read_text())
            expected = int(config["vectors"][""]["size"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        if dim != expected:
            raise ValueError(
                f"queries have {dim} dims but OOD index {collection!r} holds {expected}-dim "
                "vectors; embed them with the embedder stored beside the index"
            )


# -- qdrant-client ---------------------------------------------------------------------------


class QdrantClientOODIndex(_ClosesOnExit):
    """Collections on a Qdrant server through ``qdrant-client``.

    Give ``url`` (and ``api_key`` from the environment, never a committed file) for a
    server. Without ``url``, the client's local mode runs on ``path`` or in memory: fine for
    tests, too slow for real references (pure-Python brute force).
    """

    def __init__(
        self,
        url: str | None = None,
        path: Path | None = None,
        location: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        from qdrant_client import QdrantClient

        if url is not None:
            self._client = QdrantClient(url=url, api_key=api_key, timeout=int(timeout))
        elif path is not None:
            self._client = QdrantClient(path=str(path))
        else:
            self._client = QdrantClient(location=location or ":memory:")
        # Local mode always searches exactly and warns when given search params.
        self._local = url is None and (path is not None or location in (None, ":memory:"))

    def exists(self, collection: str) -> bool:
        return bool(self._client.collection_exists(_check_collection(collection)))

    def create(self, collection: str, vectors: np.ndarray) -> None:
        from qdrant_client import models

        array = _as_vectors(vectors, f"vectors for {collection!r}")
        self.drop(collection)
        self._client.create_collection(
            collection,
            vectors_config=models.VectorParams(
                size=int(array.shape[1]), distance=models.Distance.EUCLID
            ),
        )
        self._client.upload_collection(
            collection,
            vectors=array,
            ids=range(len(array)),
            batch_size=_UPSERT_BATCH,
            wait=True,
        )

    def count(self, collection: str) -> int:
        self._require(collection)
        return int(self._client.count(collection, exact=True).count)

    def knn_distance(
        self, collection: str, queries: np.ndarray, k: int, *, skip_self: bool = False
    ) -> np.ndarray:
        from qdrant_client import models

        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        array = _as_vectors(queries, "queries")
        self._require(collection)
        info = self._client.get_collection(collection)
        expected = info.config.params.vectors.size  # type: ignore[union-attr]
        if array.shape[1] != expected:
            raise ValueError(
                f"queries have {array.shape[1]} dims but OOD index {collection!r} holds "
                f"{expected}-dim vectors; embed them with the embedder stored beside the index"
            )
        limit = k + 1 if skip_self else k
        params = None if self._local else models.SearchParams(exact=True)
        out = np.empty(len(array), dtype=np.float64)
        for part in _batches(len(array), 256):
            requests = [
                models.QueryRequest(query=row.tolist(), limit=limit, params=params)
                for row in array[part]
            ]
            answers = self._client.query_batch_points(collection, requests=requests)
            out[part] = [
                _reduce([p.score for p in a.points], k, skip_self, collection) for a in answers
            ]
        return out

    def drop(self, collection: str) -> None:
        if self.exists(collection):
            self._client.delete_collection(collection)

    def close(self) -> None:
        self._client.close()

    def _require(self, collection: str) -> None:
        if not self.exists(collection):
            raise KeyError(
                f"no OOD index {collection!r} on the Qdrant server; fit the reference first "
                "(monitoring.ood.fit_reference)"
            )


def make_ood_index(url: str | None, path: Path) -> OODIndex:
    """A Qdrant server by ``url`` when given, else Qdrant Edge in the ``path`` folder."""
    if url:
        return QdrantClientOODIndex(url=url)
    return EdgeOODIndex(path)


# -- reference and rate ----------------------------------------------------------------------


@dataclass(frozen=True)
class OODReference:
    """A fitted reference: where its vectors live and the distance above which a row is OOD."""

    collection: str
    k: int
    threshold: float
    percentile: float
    n_points: int
    dim: int
    sampled: bool
    """Whether the reference was cut down to ``max_points``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OODReference:
        return cls(**data)


@dataclass(frozen=True)
class OODResult:
    """OOD rate of one window."""

    rate: float
    n_scored: int
    threshold: float
    sampled: bool
    """Whether the window was cut down to ``max_queries`` rows before scoring."""
    n_rows: int
    """Rows in the window before sampling."""


def fit_reference(
    index: OODIndex,
    collection: str,
    vectors: np.ndarray,
    k: int = 10,
    percentile: float = 99.0,
    max_points: int = 20_000,
    seed: int = 0,
    max_self_queries: int = 5_000,
) -> OODReference:
    """Index a bounded random sample of the reference and set the OOD threshold.

    The threshold is the ``percentile`` of the sample's leave-one-out kNN scores (each
    point queried with k+1 neighbours, itself skipped); at most ``max_self_queries`` points
    are scored for it, which pins the 99th percentile well (50 points above it) and keeps
    the fit near a second.
    """
    if not 0 < percentile < 100:
        raise ValueError(f"percentile must be between 0 and 100, got {percentile}")
    array = _as_vectors(vectors, "reference vectors")
    if len(array) < k + 2:
        raise ValueError(
            f"reference has {len(array)} rows; at least k+2 = {k + 2} are needed to fit an OOD "
            "threshold"
        )
    points, sampled = sample_rows(array, max_points, seed)
    index.create(collection, points)
    probes, _ = sample_rows(points, max_self_queries, seed + 1)
    scores = index.knn_distance(collection, probes, k, skip_self=True)
    threshold = float(np.percentile(scores, percentile))
    return OODReference(
        collection=collection,
        k=k,
        threshold=threshold,
        percentile=percentile,
        n_points=len(points),
        dim=int(array.shape[1]),
        sampled=sampled,
    )


def ood_rate(
    index: OODIndex,
    ref: OODReference,
    queries: np.ndarray,
    max_queries: int = 5_000,
    seed: int = 0,
) -> OODResult:
    """Share of (at most ``max_queries`` sampled) rows scoring above the reference threshold."""
    array = np.asarray(queries)
    if array.ndim != 2 or len(array) == 0:
        raise ValueError(
            f"no rows to score for OOD (queries shape {array.shape}); an empty window has no rate"
        )
    if array.shape[1] != ref.dim:
        raise ValueError(
            f"queries have {array.shape[1]} dims but the reference {ref.collection!r} has "
            f"{ref.dim}; embed them with the embedder stored beside the index"
        )
    picked, sampled = sample_rows(array, max_queries, seed)
    scores = index.knn_distance(ref.collection, picked, ref.k)
    return OODResult(
        rate=float(np.mean(scores > ref.threshold)),
        n_scored=len(picked),
        threshold=ref.threshold,
        sampled=sampled,
        n_rows=len(array),
    )


def ood_rate_frame(
    index: OODIndex,
    ref: OODReference,
    embedder: TabularEmbedder,
    frame: pd.DataFrame,
    max_queries: int = 5_000,
    seed: int = 0,
) -> OODResult:
    """OOD rate of a raw window: sample first, then embed only the sampled rows."""
    if len(frame) == 0:
        raise ValueError("the window is empty: no rows to score for OOD")
    picked, sampled = sample_rows(frame, max_queries, seed)
    result = ood_rate(index, ref, embedder.transform(picked), max_queries, seed)
    return OODResult(result.rate, result.n_scored, result.threshold, sampled, len(frame))


# -- embedding -------------------------------------------------------------------------------


@dataclass
class TabularEmbedder:
    """A fixed, model-independent vector space for tabular rows: sklearn's
    ``StandardScaler`` on the numbers and ``OneHotEncoder`` on the categories, side by side
    in a ``ColumnTransformer`` (`tabular_encoder`).

    Numbers are standardised on their observed values (missing -> the mean, i.e. 0);
    categories are one-hot over the at most ``max_categories`` most frequent seen at fit
    time, so unseen and missing ones become all-zero. The fitted figures are stored as
    JSON beside the index (``to_dict``/``from_dict``) so live rows land in the same space.
    """

    numeric: list[str]
    categorical: list[str]
    encoder: ColumnTransformer

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        numeric: Sequence[str] | None = None,
        categorical: Sequence[str] | None = None,
        max_categories: int = 50,
    ) -> TabularEmbedder:
        """Learn means, scales and categories; columns are inferred from dtypes if not given."""
        if len(frame) == 0:
            raise ValueError("cannot fit the embedder on an empty frame")
        if numeric is None and categorical is None:
            numeric = [
                c
                for c in frame.columns
                if pd.api.types.is_numeric_dtype(frame[c])
                and not pd.api.types.is_bool_dtype(frame[c])
            ]
            categorical = [c for c in frame.columns if c not in numeric]
        numeric, categorical = list(numeric or []), list(categorical or [])
        _require_columns(frame, [*numeric, *categorical], "the reference frame")
        clean = _clean(frame, numeric, categorical)
        categories = {
            c: [str(k) for k in clean[c].value_counts(dropna=True).index[:max_categories]]
            for c in categorical
        }
        with warnings.catch_warnings():
            # A column missing everywhere has no mean (0 / 0): it embeds as 0 everywhere.
            warnings.simplefilter("ignore", RuntimeWarning)
            encoder = tabular_encoder(numeric, categories).fit(clean)
        return cls(numeric, categorical, encoder)

    @property
    def categories(self) -> dict[str, list[str]]:
        """The categories each categorical column is one-hot over (most frequent first)."""
        _, onehot, encoded = self.encoder.transformers[1]
        found = dict(zip(encoded, onehot.categories, strict=True))
        return {c: list(found.get(c, [])) for c in self.categorical}

    @property
    def dim(self) -> int:
        return len(self.numeric) + sum(len(c) for c in self.categories.values())

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Rows as float32 vectors (n x ``dim``); never NaN."""
        _require_columns(frame, [*self.numeric, *self.categorical], "the frame to embed")
        if len(frame) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.encoder.transform(_clean(frame, self.numeric, self.categorical))
        return np.nan_to_num(np.asarray(vectors, dtype=np.float64), nan=0.0).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """The fitted figures as JSON-friendly data (the format before sklearn did the work)."""
        means: dict[str, float] = {}
        scales: dict[str, float] = {}
        if self.numeric:
            scaler = self.encoder.named_transformers_["numeric"]
            for column, mean, scale in zip(self.numeric, scaler.mean_, scaler.scale_, strict=True):
                unknown = math.isnan(mean)  # never observed: mean 0, scale 1
                means[column] = 0.0 if unknown else float(mean)
                scales[column] = 1.0 if unknown or math.isnan(scale) else float(scale)
        return {
            "version": 1,
            "numeric": self.numeric,
            "categorical": self.categorical,
            "means": means,
            "scales": scales,
            "categories": self.categories,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TabularEmbedder:
        """The embedder `to_dict` stored; a ValueError when the data is not one."""
        try:
            numeric, categorical = list(data["numeric"]), list(data["categorical"])
            means = np.array([float(data["means"][c]) for c in numeric])
            scales = np.array([float(data["scales"][c]) for c in numeric])
            categories = {c: [str(k) for k in data["categories"][c]] for c in categorical}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a stored embedder ({type(exc).__name__}: {exc})") from exc
        # Fit on one row at the means (the categories are given), then set the scales.
        row = {c: [m] for c, m in zip(numeric, means, strict=True)}
        row |= {c: [(categories[c] or [None])[0]] for c in categorical}
        encoder = tabular_encoder(numeric, categories).fit(pd.DataFrame(row))
        if numeric:
            scaler = encoder.named_transformers_["numeric"]
            scaler.scale_, scaler.var_ = scales, scales**2
        return cls(numeric, categorical, encoder)


def tabular_encoder(numeric: list[str], categories: dict[str, list[str]]) -> ColumnTransformer:
    """Standardised numbers, then one-hot categories over the given ones (unseen -> zeros);
    categorical columns without a category are left out (they add no dims)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    encoded = [c for c, known in categories.items() if known]
    onehot = OneHotEncoder(
        categories=[categories[c] for c in encoded],
        handle_unknown="ignore",
        sparse_output=False,
    )
    return ColumnTransformer(
        [("numeric", StandardScaler(), numeric), ("categorical", onehot, encoded)],
        remainder="drop",
        sparse_threshold=0.0,
    )


def _clean(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """Numbers as floats (unparseable or infinite -> missing), categories as one string
    spelling each (`category_keys`: ``1.0`` and ``1`` alike, missing -> None)."""
    out = {c: _numeric(frame[c], c).replace([np.inf, -np.inf], np.nan) for c in numeric}
    out |= {c: category_keys(frame[c]) for c in categorical}
    return pd.DataFrame(out, index=frame.index)


def _numeric(series: pd.Series, column: str) -> pd.Series:
    """Numbers, with anything unparseable as missing."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.astype(np.float64)
    return pd.to_numeric(series, errors="coerce").astype(np.float64)


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what} lacks column(s) {missing}; it has {list(frame.columns)}. Send every "
            "feature the reference was fitted on"
        )
