"""The OOD reference a version keeps in the state folder: read back as stored, rebuilt
(never a crash) when its embedder or reference cannot be read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from config.settings import Settings
from monitoring.ood import ood_rate_frame
from pipelines.reference import ensure_ood_reference, monitor_dir

SCHEMA = {"features": ["x", "c"], "numeric": ["x"], "categorical": ["c"]}


def reference() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({"x": rng.normal(size=600), "c": rng.choice(["a", "b"], size=600)})


def window() -> pd.DataFrame:
    rng = np.random.default_rng(4)
    far = pd.DataFrame({"x": rng.normal(size=100) + 9, "c": "a"})
    near = pd.DataFrame({"x": rng.normal(size=300), "c": rng.choice(["a", "b"], size=300)})
    return pd.concat([far, near], ignore_index=True)


def rate(settings: Settings) -> tuple[float, dict]:
    index, ref, embedder = ensure_ood_reference(settings, "1", reference(), SCHEMA)
    try:
        return ood_rate_frame(index, ref, embedder, window()).rate, embedder.to_dict()
    finally:
        index.close()


@pytest.mark.parametrize(
    "damage",
    [
        lambda meta: {**meta, "embedder": {"version": 1, "numeric": ["x"]}},  # fields lost
        lambda meta: {**meta, "embedder": {**meta["embedder"], "means": {"x": "warm"}}},
        lambda meta: {**meta, "embedder": {**meta["embedder"], "categories": {"c": []}}},
        lambda meta: {**meta, "reference": {"collection": "m_v1"}},
        lambda meta: "not an object",
    ],
)
def test_a_stored_embedder_that_cannot_be_read_back_is_rebuilt(tmp_path: Path, damage) -> None:
    settings = Settings(model_name="m", state_dir=tmp_path, seed=0)
    first, stored = rate(settings)
    assert first == pytest.approx(0.25, abs=0.02)  # the 100 far rows of 400
    meta_path = monitor_dir(settings) / "v1" / "ood.json"
    meta = json.loads(meta_path.read_text())
    assert meta["embedder"] == stored  # what the monitor reads back next time
    meta_path.write_text(json.dumps(damage(meta)))
    again, rebuilt = rate(settings)
    assert again == first and rebuilt == stored
    assert json.loads(meta_path.read_text())["embedder"] == stored  # written anew


def test_exact_self_scores_give_qdrants_figures(tmp_path: Path) -> None:
    """The in-memory leave-one-out scores (numpy) agree with Qdrant Edge's exact search,
    and so does the threshold `fit_reference` sets from them."""
    from monitoring.ood import EdgeOODIndex, fit_reference
    from pipelines.reference import ExactSelfScores, exact_knn_distance

    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(1500, 12)).astype("float32")
    vectors[7] = vectors[8]  # a duplicate: its nearest other point is at distance 0
    with EdgeOODIndex(tmp_path / "ood") as index:
        by_qdrant = fit_reference(index, "q", vectors, max_self_queries=400, seed=1)
        by_numpy = fit_reference(ExactSelfScores(index), "n", vectors, max_self_queries=400, seed=1)
        assert by_numpy.threshold == pytest.approx(by_qdrant.threshold, rel=1e-6)
        assert index.count("n") == 1500  # the points are stored in Qdrant all the same
        for skip_self in (True, False):
            expected = index.knn_distance("q", vectors[:200], 5, skip_self=skip_self)
            got = exact_knn_distance(vectors, vectors[:200], 5, skip_self, chunk=64)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
