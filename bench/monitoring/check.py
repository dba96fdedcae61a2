"""Time whole monitor checks on a prediction log of N requests, in this process.

    python -m bench.monitoring.check --requests 1000000 [--repeats 3]

A whole check is what one `driftloop monitor` runs after its imports, with the product's
own functions: `read_window` (the window's bounds and exact counts, a sample drawn by the
database, the labelled rows), `measure` (Evidently drift + Qdrant Edge OOD on the sample,
live metrics per version on the labels, the report written), `decide`, and the recording
(`last_check.json` plus an MLflow run with the figures, `check.json` and the Evidently
report, in a local SQLite tracking store). The window is the whole log: `monitor_window_rows`
= N, as a team with millions of predictions a day would set it. Only the registry is left
out: the champion is given, with its schema and training reference already in the
monitor's cache, and its OOD index built before the timing (once per version in real use).

Imports are timed apart (a fresh process imports everything a check needs). The first
check of the process also pays Evidently's first use; later checks are timed too. Peak
memory is the process's peak RSS (Linux `clear_refs` resets the high-water mark just before
each check, so it is the process with everything imported plus the check).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import BUNDLED
from bench.monitoring.logdb import FEATURES, MODEL, ensure_log

CATEGORICAL = ["mnth", "weathersit"]
NUMERIC = [c for c in FEATURES if c not in CATEGORICAL]


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


def reference_frame(seed: int = 0) -> Any:
    """What the training flow logs for the monitor: 5,000 training rows (the first 80 % of
    the year) with the model's prediction column."""
    import pandas as pd

    data = pd.read_csv(BUNDLED)
    training = data.iloc[: int(0.8 * len(data))]
    reference = training.sample(5_000, random_state=seed).reset_index(drop=True)
    reference["prediction"] = reference["bikers"].astype(float)
    return reference[[*FEATURES, "bikers", "prediction"]]


def run(requests: int, repeats: int) -> dict[str, Any]:
    log_path = ensure_log(requests)
    started = time.perf_counter()
    import evidently.presets  # noqa: F401
    import mlflow
    import qdrant_edge  # noqa: F401

    from config.names import CHAMPION
    from config.settings import Settings
    from monitoring.policy import decide
    from pipelines import monitor
    from pipelines.reference import ensure_ood_reference, monitor_dir
    from pipelines.tracking import configure_mlflow
    from predlog.log import sample_block_rows
    from registry import VersionInfo

    import_s = time.perf_counter() - started
    from monitoring.heap import freeze_imports

    freeze_imports("check")  # what `pipelines.monitor.check` does first, after its imports
    out: dict[str, Any] = {"requests": requests, "import_s": import_s, "checks": []}
    with tempfile.TemporaryDirectory(prefix="driftloop-bench-check-") as folder:
        state = Path(folder)
        settings = Settings(
            model_name=MODEL,
            state_dir=state,
            prediction_log_url=f"sqlite:///{log_path}",
            tracking_uri=f"sqlite:///{state / 'mlflow.db'}",
            monitor_window_rows=requests,
        )
        champion = VersionInfo(
            name=MODEL,
            version="1",
            run_id=None,
            source="bench",
            aliases=(CHAMPION,),
            tags={},
            created_at=monitor.datetime.now(monitor.UTC),
        )
        schema = {
            "features": FEATURES,
            "categorical": CATEGORICAL,
            "numeric": NUMERIC,
            "target": "bikers",
            "task": "regression",
        }
        cache = monitor_dir(settings) / "v1"
        cache.mkdir(parents=True)
        (cache / "schema.json").write_text(json.dumps(schema))
        reference = reference_frame()
        reference.to_parquet(cache / "reference.parquet")
        started = time.perf_counter()
        index, _, _ = ensure_ood_reference(settings, "1", reference, schema)
        index.close()
        out["fit_reference_s"] = time.perf_counter() - started
        started = time.perf_counter()
        experiment = configure_mlflow(
            settings.resolved_tracking_uri(), f"{MODEL}-monitoring", settings.artifact_root()
        )
        out["tracking_store_s"] = time.perf_counter() - started  # a new store: migrations
        registry_state = {"versions": {CHAMPION: champion}, "history": []}
        out["dropped_from_cache_mb"] = drop_from_page_cache(log_path)  # a cold first check
        for _ in range(1 + repeats):
            out["checks"].append(
                _check(settings, registry_state, experiment, monitor, decide, mlflow)
            )
    out["settings"] = {
        "drift_max_rows": settings.drift_max_rows,
        "ood_max_queries": settings.ood_max_queries,
        "ood_max_points": settings.ood_max_points,
        "live_max_labels": settings.live_max_labels,
        "sample_block_rows": sample_block_rows(
            max(settings.drift_max_rows, settings.ood_max_queries)
        ),
        "label_block_rows": sample_block_rows(settings.live_max_labels),
    }
    return out


def drop_from_page_cache(log_path: Path | str) -> float:
    """Take the log's files out of the page cache (written back first; no other file
    touched), so the first check reads them from the disk as a monitor reading an
    hours-old window does; MB of file dropped."""
    dropped = 0
    for path in (Path(log_path), Path(f"{log_path}-wal")):
        if not path.exists():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            dropped += os.fstat(fd).st_size
        finally:
            os.close(fd)
    return dropped / 1e6


def _check(
    settings: Any, state: dict[str, Any], experiment: str, monitor: Any, decide: Any, mlflow: Any
) -> dict[str, Any]:
    """One whole check; its phases timed, the process's peak RSS during it."""
    from monitoring.policy import thresholds_from
    from monitoring.report import numeric_figures

    _reset_peak()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    window = monitor.read_window.fn(settings, settings.monitor_window_rows)
    t1 = time.perf_counter()
    figures, result = monitor.measure.fn(settings, window, state)
    t2 = time.perf_counter()
    decision = decide(figures, thresholds_from(settings))
    result.decision = decision.to_dict()
    result.figures = figures.to_dict()
    t3 = time.perf_counter()
    with mlflow.start_run(experiment_id=experiment, run_name=f"check {result.at}"):
        mlflow.set_tags({"driftloop.action": decision.action, "driftloop.reason": decision.reason})
        mlflow.log_metrics(numeric_figures(result.figures))
        mlflow.log_dict(result.to_dict(), "check.json")
        for report in (result.report_html, result.report_json):
            if report:
                mlflow.log_artifact(report, "evidently")
    path = monitor.last_check_path(settings)
    path.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    t4 = time.perf_counter()
    cpu4 = time.process_time()
    drift, ood = result.drift or {}, result.ood or {}
    return {
        "read_s": t1 - t0,
        "measure_s": t2 - t1,
        "decide_s": t3 - t2,
        "record_s": t4 - t3,
        "check_s": t4 - t0,
        "check_cpu_s": cpu4 - cpu0,  # all threads' CPU: judges changes on a busy machine
        "peak_rss_mb": _status_kb("VmHWM") / 1024,
        "window_requests": window.requests,
        "shadow_rows": window.bounds.shadow_rows,
        "sampled_rows": len(window.sample),
        "labelled_rows": len(window.labels),
        "drift_rows": drift.get("n_current"),
        "ood_rows": ood.get("n_scored"),
        "drift_share": figures.drift_share,
        "ood_rate": figures.ood_rate,
        "champion_rmse": figures.champion_metric,
        "champion_labelled": figures.champion_labelled_rows,
        "action": str(decision.action),
        "messages": result.messages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="time whole monitor checks")
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=2, help="checks after the first")
    args = parser.parse_args()
    print(json.dumps(run(args.requests, args.repeats)))


if __name__ == "__main__":
    main()
