"""The baseline: a plain script that fits and evaluates the same model, nothing else.

    python -m bench.training.plain

Same data (the bundled year), same split, same model family and seed as the training
flow; no validation, no tracking, no registry, no packaging. Prints JSON timings.
"""

from __future__ import annotations

import json
import time


def main() -> None:
    process_started = time.perf_counter()
    from config.settings import Settings
    from data.sources import load_dataset
    from data.split import time_split
    from pipelines.evaluate import holdout_metrics
    from pipelines.families import FitConfig, fit_model

    imported = time.perf_counter()
    cpu_before = time.process_time()
    settings = Settings()
    snapshot = load_dataset(settings.dataset_spec(), settings.task)
    train, holdout = time_split(
        snapshot.frame, snapshot.time_column, settings.holdout_fraction, seed=settings.seed
    )
    features = list(snapshot.features)
    config = FitConfig(
        task=snapshot.task,
        categorical=snapshot.categorical,
        numeric=snapshot.numeric,
        seed=settings.seed,
    )
    fitted = fit_model(settings.family, config, train[features], train[snapshot.target])
    metrics = holdout_metrics(
        snapshot.task, holdout[snapshot.target], fitted.predict(holdout[features])
    )
    done = time.perf_counter()
    cpu = time.process_time() - cpu_before
    print(
        json.dumps(
            {
                "import_s": imported - process_started,
                "work_s": done - imported,
                "work_cpu_s": cpu,
                "metrics": metrics,
                "rows": {"train": len(train), "holdout": len(holdout)},
            }
        )
    )


if __name__ == "__main__":
    main()
