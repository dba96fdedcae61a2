"""OOD index contract, the same for Qdrant Edge and qdrant-client (local mode as the server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring import ood
from monitoring.ood import (
    EdgeOODIndex,
    OODIndex,
    OODReference,
    QdrantClientOODIndex,
    TabularEmbedder,
    fit_reference,
    make_ood_index,
    ood_rate,
    ood_rate_frame,
)

DIM = 8


def brute_force(points: np.ndarray, queries: np.ndarray, k: int, skip_self: bool = False):
    """Mean distance to the k nearest points, by numpy."""
    d = np.sqrt(((queries[:, None, :] - points[None, :, :]) ** 2).sum(-1))
    d.sort(axis=1)
    start = 1 if skip_self else 0
    return d[:, start : start + k].mean(axis=1)


@pytest.fixture(params=["edge", "client"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OODIndex]:
    backend: OODIndex
    if request.param == "edge":
        backend = EdgeOODIndex(tmp_path / "ood")
    else:
        backend = QdrantClientOODIndex(location=":memory:")
    yield backend
    backend.close()


@pytest.fixture
def points() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(1_500, DIM)).astype(np.float32)


def test_backends_follow_the_protocol(index: OODIndex) -> None:
    assert isinstance(index, OODIndex)


def test_distances_match_brute_force(index: OODIndex, points: np.ndarray) -> None:
    queries = np.random.default_rng(1).normal(size=(200, DIM)).astype(np.float32)
    index.create("ref", points)
    got = index.knn_distance("ref", queries, k=5)
    assert got.shape == (200,)
    np.testing.assert_allclose(got, brute_force(points, queries, 5), rtol=1e-4, atol=1e-5)


def test_leave_one_out_skips_the_query_itself(index: OODIndex, points: np.ndarray) -> None:
    index.create("ref", points)
    got = index.knn_distance("ref", points[:100], k=5, skip_self=True)
    want = brute_force(points, points[:100], 5, skip_self=True)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert (got > 0).all()


def test_create_replaces_an_existing_collection(index: OODIndex, points: np.ndarray) -> None:
    index.create("ref", points)
    other = np.random.default_rng(2).normal(size=(50, 3)).astype(np.float32)
    index.create("ref", other)
    assert index.count("ref") == 50
    got = index.knn_distance("ref", other[:5], k=2)
    np.testing.assert_allclose(got, brute_force(other, other[:5], 2), rtol=1e-4, atol=1e-5)


def test_exists_and_drop(index: OODIndex, points: np.ndarray) -> None:
    assert not index.exists("ref")
    index.create("ref", points)
    assert index.exists("ref")
    assert index.count("ref") == len(points)
    index.drop("ref")
    assert not index.exists("ref")
    index.drop("ref")  # dropping a missing collection is fine
    with pytest.raises(KeyError, match="fit the reference first"):
        index.knn_distance("ref", points[:1], k=1)


def test_collections_are_independent(index: OODIndex, points: np.ndarray) -> None:
    index.create("a", points)
    index.create("b", points[:20] + 100)
    assert index.count("a") == len(points)
    assert index.count("b") == 20


@pytest.mark.parametrize(
    ("queries", "match"),
    [
        (np.zeros((3, DIM + 1), dtype=np.float32), "dims"),
        (np.full((3, DIM), np.nan, dtype=np.float32), "NaN"),
        (np.zeros(DIM, dtype=np.float32), "2-D"),
    ],
)
def test_bad_queries_are_refused_with_a_reason(
    index: OODIndex, points: np.ndarray, queries: np.ndarray, match: str
) -> None:
    index.create("ref", points)
    with pytest.raises(ValueError, match=match):
        index.knn_distance("ref", queries, k=3)


def test_k_larger_than_the_index_is_refused(index: OODIndex, points: np.ndarray) -> None:
    index.create("tiny", points[:3])
    with pytest.raises(ValueError, match="fewer than 5 points"):
        index.knn_distance("tiny", points[:2], k=5)


def test_unsafe_collection_names_are_refused(index: OODIndex, points: np.ndarray) -> None:
    with pytest.raises(ValueError, match="not usable"):
        index.create("../escape", points)


def test_ood_rate_is_about_one_percent_in_distribution_and_all_when_shifted(
    index: OODIndex, points: np.ndarray
) -> None:
    ref = fit_reference(index, "ref", points, k=10, percentile=99.0)
    assert ref.threshold > 0
    fresh = np.random.default_rng(3).normal(size=(1_000, DIM)).astype(np.float32)
    inside = ood_rate(index, ref, fresh)
    assert 0.0 <= inside.rate <= 0.04
    shifted = ood_rate(index, ref, fresh + 3.0)
    assert shifted.rate >= 0.99
    assert shifted.n_scored == 1_000
    assert not shifted.sampled


def test_sampling_bounds_are_respected(index: OODIndex, points: np.ndarray) -> None:
    ref = fit_reference(index, "ref", points, k=5, max_points=400, max_self_queries=100)
    assert ref.sampled
    assert ref.n_points == 400
    assert index.count("ref") == 400
    queries = np.random.default_rng(4).normal(size=(900, DIM)).astype(np.float32)
    result = ood_rate(index, ref, queries, max_queries=150, seed=7)
    assert result.sampled
    assert result.n_scored == 150
    assert result.n_rows == 900
    again = ood_rate(index, ref, queries, max_queries=150, seed=7)
    assert again.rate == result.rate


def test_ood_rate_refuses_an_empty_window_or_other_dims(
    index: OODIndex, points: np.ndarray
) -> None:
    ref = fit_reference(index, "ref", points[:300], k=5)
    with pytest.raises(ValueError, match="empty window"):
        ood_rate(index, ref, np.empty((0, DIM), dtype=np.float32))
    with pytest.raises(ValueError, match="dims"):
        ood_rate(index, ref, np.zeros((4, DIM + 2), dtype=np.float32))


def test_fit_needs_more_rows_than_k(index: OODIndex, points: np.ndarray) -> None:
    with pytest.raises(ValueError, match="at least k\\+2"):
        fit_reference(index, "ref", points[:5], k=10)


def test_edge_index_persists_in_its_folder(tmp_path: Path, points: np.ndarray) -> None:
    folder = tmp_path / "state" / "ood"
    first = EdgeOODIndex(folder)
    ref = fit_reference(first, "bikeshare-v3", points, k=5)
    before = first.knn_distance("bikeshare-v3", points[:20], k=5)
    first.close()
    assert (folder / "bikeshare-v3" / "edge_config.json").is_file()
    assert [p.name for p in folder.iterdir()] == ["bikeshare-v3"]  # no leftover build folder

    reopened = EdgeOODIndex(folder)
    assert reopened.exists("bikeshare-v3")
    assert reopened.count("bikeshare-v3") == len(points)
    after = reopened.knn_distance("bikeshare-v3", points[:20], k=5)
    np.testing.assert_array_equal(before, after)
    stored = OODReference.from_dict(json.loads(json.dumps(ref.to_dict())))
    assert ood_rate(reopened, stored, points[:50] + 5).rate == 1.0
    reopened.close()


def test_make_ood_index_picks_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    edge = make_ood_index(None, tmp_path)
    assert isinstance(edge, EdgeOODIndex)
    edge.close()
    # A real client would check the server version in a background thread; record the call.
    calls: list[str | None] = []
    monkeypatch.setattr(ood, "QdrantClientOODIndex", lambda url: calls.append(url) or url)
    assert make_ood_index("http://qdrant:6333", tmp_path) == "http://qdrant:6333"
    assert calls == ["http://qdrant:6333"]


def test_client_local_mode_on_a_path(tmp_path: Path, points: np.ndarray) -> None:
    index = QdrantClientOODIndex(path=tmp_path / "qdrant")
    index.create("ref", points[:200])
    index.close()
    reopened = QdrantClientOODIndex(path=tmp_path / "qdrant")
    assert reopened.count("ref") == 200
    reopened.close()


# -- embedding -------------------------------------------------------------------------------


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "temp": [0.2, 0.4, 0.6, 0.8],
            "hr": [0, 1, 1, 2],
            "weathersit": ["clear", "misty", "clear", "rain"],
        }
    )


def test_embedder_standardises_and_one_hot_encodes(frame: pd.DataFrame) -> None:
    embedder = TabularEmbedder.fit(frame, numeric=["temp"], categorical=["hr", "weathersit"])
    vectors = embedder.transform(frame)
    assert vectors.dtype == np.float32
    assert vectors.shape == (4, embedder.dim) == (4, 1 + 3 + 3)
    assert vectors[:, 0].mean() == pytest.approx(0.0, abs=1e-6)
    assert vectors[:, 0].std() == pytest.approx(1.0, abs=1e-6)
    assert (vectors[:, 1:].sum(axis=1) == 2).all()  # one hot per categorical column


def test_embedder_handles_missing_and_unseen_values(frame: pd.DataFrame) -> None:
    embedder = TabularEmbedder.fit(frame, numeric=["temp"], categorical=["hr", "weathersit"])
    live = pd.DataFrame(
        {
            "temp": [np.nan, 0.5],
            "hr": [np.nan, 1.0],  # an integer column turned float by a missing value
            "weathersit": ["snow", None],
        }
    )
    vectors = embedder.transform(live)
    assert np.isfinite(vectors).all()
    assert vectors[0, 0] == 0.0  # missing number -> the mean
    assert vectors[0, 1:].sum() == 0  # missing / unseen categories -> all zero
    hr_one = 1 + embedder.categories["hr"].index("1")
    assert vectors[1, hr_one] == 1.0  # 1.0 is the category "1"


def test_embedder_round_trips_through_json(frame: pd.DataFrame) -> None:
    embedder = TabularEmbedder.fit(frame)  # inferred: numbers numeric, text categorical
    assert embedder.numeric == ["temp", "hr"]
    assert embedder.categorical == ["weathersit"]
    restored = TabularEmbedder.from_dict(json.loads(json.dumps(embedder.to_dict())))
    np.testing.assert_array_equal(restored.transform(frame), embedder.transform(frame))


def test_embedder_names_a_missing_column(frame: pd.DataFrame) -> None:
    embedder = TabularEmbedder.fit(frame)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['weathersit'\]"):
        embedder.transform(frame.drop(columns="weathersit"))


def test_embedder_caps_categories_and_survives_constant_columns() -> None:
    frame = pd.DataFrame({"id": [str(i) for i in range(100)], "const": [1.0] * 100})
    embedder = TabularEmbedder.fit(frame, numeric=["const"], categorical=["id"], max_categories=10)
    assert embedder.dim == 11
    assert np.isfinite(embedder.transform(frame)).all()


def test_ood_rate_of_a_raw_frame_samples_before_embedding(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    reference = pd.DataFrame(
        {"x": rng.normal(size=2_000), "c": rng.choice(["a", "b", "c"], size=2_000)}
    )
    embedder = TabularEmbedder.fit(reference)
    index = EdgeOODIndex(tmp_path)
    ref = fit_reference(index, "ref", embedder.transform(reference), k=5)
    window = pd.DataFrame({"x": rng.normal(size=3_000) + 8, "c": ["z"] * 3_000})
    result = ood_rate_frame(index, ref, embedder, window, max_queries=500)
    assert result.sampled
    assert result.n_scored == 500
    assert result.n_rows == 3_000
    assert result.rate == 1.0
    index.close()
