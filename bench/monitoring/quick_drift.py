"""Time one monitor check (Evidently drift + Qdrant Edge OOD) on big live windows.

Builds windows of 100k and 1M rows by resampling the bundled Bikeshare CSV (numeric columns
jittered), then times what the scheduled monitor does per window: ``measure_drift`` (both
sides sampled to 20k rows before Evidently) and ``ood_rate_frame`` (5k rows sampled, then
embedded and scored against a 20k-point Qdrant Edge reference). Each size runs in its own
process so peak RSS is per size; the last two runs resample the reference to 40k rows so
both sampling bounds (20k drift rows, 20k OOD points) bite. Imports, building the window
and fitting the reference (once per model version) are timed separately, not in the check.

    .venv/bin/python bench/monitoring/quick_drift.py            # 100k and 1M
    .venv/bin/python bench/monitoring/quick_drift.py --rows 100000 --json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "data" / "bundled" / "bikeshare_2011.csv"
FEATURES = [
    "season",
    "mnth",
    "day",
    "hr",
    "holiday",
    "weekday",
    "workingday",
    "weathersit",
    "temp",
    "atemp",
    "hum",
    "windspeed",
]
CATEGORICAL = ["season", "mnth", "hr", "holiday", "weekday", "workingday", "weathersit"]
NUMERIC = [c for c in FEATURES if c not in CATEGORICAL]


def _status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS now, VmHWM peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the next peak is the check's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _resample(frame: pd.DataFrame, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """``rows`` rows drawn with replacement, numeric columns jittered by 2 % of their std."""
    out = frame.iloc[rng.integers(0, len(frame), size=rows)].reset_index(drop=True)
    for column in NUMERIC:
        jitter = rng.normal(scale=0.02 * frame[column].std(), size=rows)
        out[column] = out[column].to_numpy() + jitter
    return out


def run_one(
    rows: int, reference_rows: int | None = None, max_queries: int = 5_000
) -> dict[str, float | int | bool | str]:
    """Measure one window size in this process."""
    t0 = time.perf_counter()
    import evidently  # noqa: F401
    import numpy as np
    import pandas as pd
    import qdrant_edge  # noqa: F401

    from monitoring.drift import measure_drift
    from monitoring.ood import EdgeOODIndex, TabularEmbedder, fit_reference, ood_rate_frame

    import_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    reference = pd.read_csv(BUNDLED)
    rng = np.random.default_rng(0)
    if reference_rows:  # a bigger training set: resampled, jittered like the window
        reference = _resample(reference, reference_rows, np.random.default_rng(1))
    window = _resample(reference, rows, rng)
    build_s = time.perf_counter() - t0
    window_mb = float(window.memory_usage(deep=True).sum()) / 2**20
    rss_before_mb = _status_kb("VmRSS") / 1024

    with tempfile.TemporaryDirectory() as folder:
        index = EdgeOODIndex(Path(folder))
        t0 = time.perf_counter()
        embedder = TabularEmbedder.fit(reference[FEATURES], NUMERIC, CATEGORICAL)
        ref = fit_reference(index, "bikeshare", embedder.transform(reference[FEATURES]))
        fit_s = time.perf_counter() - t0

        peak_reset = _reset_peak()
        t0 = time.perf_counter()
        drift, _ = measure_drift(reference, window, FEATURES, CATEGORICAL, "bikers")
        drift_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        ood = ood_rate_frame(index, ref, embedder, window, max_queries=max_queries)
        ood_s = time.perf_counter() - t1
        check_s = time.perf_counter() - t0
        index.close()

    return {
        "rows": rows,
        "reference_rows": len(reference),
        "import_s": round(import_s, 2),
        "build_window_s": round(build_s, 2),
        "window_mb": round(window_mb, 1),
        "fit_reference_s": round(fit_s, 2),
        "drift_s": round(drift_s, 2),
        "ood_s": round(ood_s, 2),
        "check_s": round(check_s, 2),
        "rss_before_check_mb": round(rss_before_mb),
        "peak_rss_mb": round(_status_kb("VmHWM") / 1024),
        "peak_is_check_only": peak_reset,
        "drift_share": round(drift.drift_share, 3),
        "drift_rows": f"{drift.n_reference}/{drift.n_current} of {drift.n_current_rows}",
        "ood_rate": round(ood.rate, 4),
        "ood_scored": ood.n_scored,
        "ood_ref_points": ref.n_points,
        "embed_dim": embedder.dim,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, help="measure one size in this process")
    parser.add_argument("--reference-rows", type=int, help="resample the reference to this size")
    parser.add_argument("--max-queries", type=int, default=5_000, help="OOD rows scored")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    if args.rows:
        result = run_one(args.rows, args.reference_rows, args.max_queries)
        print(json.dumps(result) if args.json else result)
        return

    results = []
    for rows, reference_rows in (
        (100_000, 0),
        (1_000_000, 0),
        (100_000, 40_000),
        (1_000_000, 40_000),
    ):
        done = subprocess.run(
            [sys.executable, __file__, "--rows", str(rows), "--json"]
            + (["--reference-rows", str(reference_rows)] if reference_rows else []),
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        )
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    keys = list(results[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for result in results:
        print("| " + " | ".join(str(result[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
