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
