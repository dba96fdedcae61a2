"""Time one monitor check (Evidently drift + Qdrant Edge OOD) on one window size, in this process.

    python -m bench.monitoring.check --rows 100000 [--variants default,drift-all,...] [--log]

The reference is what the training flow logs for the monitor: a 5,000-row sample of the
training rows (the first 80 % of the bundled year) with the model's prediction column.
The window resamples the whole year (so the last months drift, as live traffic would) with
numeric columns jittered, and a prediction column. The check is what `pipelines/monitor.py`
runs per window: `measure_drift` (both sides sampled to `drift_max_rows`) and
`ood_rate_frame` (`ood_max_queries` rows sampled, embedded, scored against a reference index
of at most `ood_max_points` points that is built once per model version). Imports, building
the window and fitting the OOD reference are timed separately. Peak memory is the process's
peak RSS during the check (Linux `clear_refs` resets the high-water mark just before it).

With `--log`, the window is also written to a real prediction log (SQLite) and read back
with `PredictionLog.frame(latest=N)`, the monitor's own read.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import BUNDLED

FEATURES = [
    "season",
    "mnth",
    "hr",
    "holiday",
    "weekday",
    "workingday",
    "weathersit",
    "temp",
    "atemp",
    "hum",
    "windspeed",
]  # the bundled model's features (the training flow's `snapshot.features`)
CATEGORICAL = ["mnth", "weathersit"]
NUMERIC = [c for c in FEATURES if c not in CATEGORICAL]
JITTERED = ["temp", "atemp", "hum", "windspeed"]

# name -> (drift_max_rows, ood_max_queries); None = the product default (settings)
DEFAULT_REPEATS = 3  # the default bounds run 3 times; the median is reported
VARIANTS: dict[str, tuple[int | None, int | None]] = {
    "default": (None, None),
    "drift-5k": (5_000, None),
    "drift-all": (10**9, None),
    "ood-1k": (None, 1_000),
    "ood-10k": (None, 10_000),
}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS, so the next peak is the check's own (Linux ≥ 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def build_frames(rows: int, seed: int = 0) -> tuple[Any, Any]:
    """(reference with prediction, window of `rows` rows with prediction)."""
    import numpy as np
    import pandas as pd

    data = pd.read_csv(BUNDLED)
    data["prediction"] = data["bikers"].astype(float)
    rng = np.random.default_rng(seed)
    training = data.iloc[: int(0.8 * len(data))]  # the flow's time split: holdout = last 20 %
    reference = training.sample(5_000, random_state=seed).reset_index(drop=True)
    window = data.iloc[rng.integers(0, len(data), size=rows)].reset_index(drop=True)
    for column in [*JITTERED, "prediction"]:
        noise = rng.normal(scale=0.02 * float(data[column].std()), size=rows)
        window[column] = window[column].to_numpy() + noise
    columns = [*FEATURES, "prediction"]
    return reference[columns], window[columns]


def run(
    rows: int, variants: list[str], with_log: bool, before_code: Path | None = None
) -> dict[str, Any]:
    started = time.perf_counter()
    import evidently  # noqa: F401
    import qdrant_edge  # noqa: F401

    from driftloop.settings import Settings
    from monitoring.drift import measure_drift
    from monitoring.ood import EdgeOODIndex, TabularEmbedder, fit_reference, ood_rate_frame

    import_s = time.perf_counter() - started
    settings = Settings()
    started = time.perf_counter()
    reference, window = build_frames(rows)
    build_s = time.perf_counter() - started
    out: dict[str, Any] = {
        "rows": rows,
        "features": len(FEATURES),
        "import_s": import_s,
        "build_window_s": build_s,
        "window_mb": float(window.memory_usage(deep=True).sum()) / 2**20,
        "defaults": {
            "drift_max_rows": settings.drift_max_rows,
            "ood_max_queries": settings.ood_max_queries,
            "ood_max_points": settings.ood_max_points,
        },
        "variants": {},
    }
    with tempfile.TemporaryDirectory(prefix="driftloop-bench-ood-") as folder:
        index = EdgeOODIndex(Path(folder))
        started = time.perf_counter()
        embedder = TabularEmbedder.fit(reference[FEATURES], NUMERIC, CATEGORICAL)
        ref = fit_reference(
            index,
            "bench",
            embedder.transform(reference[FEATURES]),
            max_points=settings.ood_max_points,
            seed=settings.seed,
        )
        out["fit_reference_s"] = time.perf_counter() - started
        # Evidently builds parts of itself on first use: a small check first, timed apart.
        started = time.perf_counter()
        small = window.iloc[:500]
        measure_drift(reference, small, FEATURES, CATEGORICAL, "prediction", seed=settings.seed)
        ood_rate_frame(index, ref, embedder, small[FEATURES], seed=settings.seed)
        out["first_check_s"] = time.perf_counter() - started
        for name in variants:
            repeats = DEFAULT_REPEATS if name == "default" else 1
            runs = [
                _timed_check(name, rows, settings, reference, window, index, ref, embedder)
                for _ in range(repeats)
            ]
            runs.sort(key=lambda r: r["check_s"])
            out["variants"][name] = {**runs[len(runs) // 2], "repeats": repeats}
        index.close()
    if with_log:
        out["log"] = log_read(window, before_code)
    return out


def _timed_check(
    name: str,
    rows: int,
    settings: Any,
    reference: Any,
    window: Any,
    index: Any,
    ref: Any,
    embedder: Any,
) -> dict[str, Any]:
    """One drift + OOD check with a variant's bounds: times, peak memory, the figures."""
    from monitoring.drift import measure_drift
    from monitoring.ood import ood_rate_frame

    drift_rows, queries = VARIANTS[name]
    drift_rows = drift_rows or settings.drift_max_rows
    queries = queries or settings.ood_max_queries
    peak_reset = _reset_peak()
    rss_before = _status_kb("VmRSS") / 1024
    t0 = time.perf_counter()
    drift, _ = measure_drift(
        reference,
        window,
        features=FEATURES,
        categorical=CATEGORICAL,
        prediction_column="prediction",
        max_rows=drift_rows,
        seed=settings.seed,
        drift_share=settings.drift_share_threshold,
    )
    t1 = time.perf_counter()
    ood = ood_rate_frame(
        index, ref, embedder, window[FEATURES], max_queries=queries, seed=settings.seed
    )
    t2 = time.perf_counter()
    return {
        "drift_max_rows": min(drift_rows, rows),
        "ood_max_queries": min(queries, rows),
        "drift_s": t1 - t0,
        "ood_s": t2 - t1,
        "check_s": t2 - t0,
        "rss_before_mb": rss_before,
        "peak_rss_mb": _status_kb("VmHWM") / 1024,
        "peak_is_check_only": peak_reset,
        "drift_share": drift.drift_share,
        "drifted": list(drift.drifted_features),
        "ood_rate": ood.rate,
    }


def log_read(window: Any, before_code: Path | None = None) -> dict[str, float]:
    """Write the window to a SQLite prediction log, then time the monitor's read of it.

    `before_code`: a folder with an older `bentos/` whose `PredictionLog.frame` is timed on
    the same file too (the before/after of the read).
    """
    from bentos.predlog import PredictionLog

    rows = len(window)
    with tempfile.TemporaryDirectory(prefix="driftloop-bench-log-") as folder:
        log = PredictionLog(f"sqlite:///{folder}/predictions.db")
        try:
            features = window[FEATURES].to_dict(orient="records")
            predictions = window["prediction"].tolist()
            now = time.time()
            started = time.perf_counter()
            for start in range(0, rows, 5_000):
                stop = min(rows, start + 5_000)
                log.append(
                    rows=[
                        (f"r{i}", None, now, "m", "1", "champion", features[i], predictions[i], 3.0)
                        for i in range(start, stop)
                    ]
                )
            write_s = time.perf_counter() - started
            del features, predictions
            roles = ("champion", "challenger", "shadow")
            repeats = 3 if rows <= 100_000 else 1  # median of 3 where a read is short
            out: dict[str, float] = {"write_s": write_s, "repeats": repeats}
            if before_code is not None:
                old = _module(before_code / "bentos" / "predlog.py", "bench_before_predlog")
                old_log = old.PredictionLog(log.url)
                out["before_read_s"], out["before_read_peak_rss_mb"] = _timed_read(
                    old_log, roles, rows, repeats
                )
                old_log.close()
            out["read_s"], out["read_peak_rss_mb"] = _timed_read(log, roles, rows, repeats)
        finally:
            log.close()
    return out


def _timed_read(log: Any, roles: tuple[str, ...], rows: int, repeats: int) -> tuple[float, float]:
    """(median seconds, peak RSS MB of the median run) of `log.frame(latest=rows)`."""
    runs = []
    for _ in range(repeats):
        _reset_peak()
        started = time.perf_counter()
        frame = log.frame(roles=roles, latest=rows)
        seconds = time.perf_counter() - started
        assert len(frame) == rows
        del frame
        runs.append((seconds, _status_kb("VmHWM") / 1024))
    runs.sort()
    return runs[len(runs) // 2]


def _module(path: Path, name: str) -> Any:
    """Import one source file as a module of its own (an older version of ours)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description="time one drift + OOD check")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--variants", default="default")
    parser.add_argument("--log", action="store_true", help="also time the prediction-log read")
    parser.add_argument("--before-code", type=Path, help="folder with an older bentos/")
    args = parser.parse_args()
    result = run(args.rows, args.variants.split(","), args.log, args.before_code)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
