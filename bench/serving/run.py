"""Serving: requests/s and latency of four ways to serve the same MLflow pyfunc.

(a) the floor: the pyfunc's own `predict` in process (no HTTP);
(b) a minimal FastAPI + uvicorn wrapper (what a user would write instead);
(c) `driftloop serve` with the prediction log (fsynced before answering) and an API key;
(d) the same without the batcher's wait for company (`DRIFTLOOP_MAX_LATENCY_MS=0`);
plus (c) as it was before this round's hardening (`bentos/` of BEFORE_COMMIT), when git
history is there: the hardening must not cost speed (≥ 0.95× in every cell). Every
server runs with its defaults (FastAPI: one uvicorn worker; driftloop: 2 workers) with
OMP=1, loaded from a separate process (wrk -t1, else the bundled asyncio client) at
concurrency 1, 8, 64 with 1- and 100-record bodies. All servers stay up and the points
are measured in alternation (server after server for each point), so a burst of load
from another process on this shared machine hits them alike.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Section, Table, log, ratio, run_json, workdir
from bench.model import PreparedModel, prepare_model
from bench.servers import checkout_bentos, driftloop_server, fastapi_server, mlflow_server
from bench.serving import restart
from bench.serving.loadgen import LoadResult, have_wrk, run_load

API_KEY = "bench-api-key"
# main before the hardening of issue #13 (timeouts, bounded requests, label scope, ...);
# the benchmark's earlier fixes were judged against 0a78756 (see git history of RESULTS.md).
BEFORE_COMMIT = "3e8347a"
TUNED = {"max_latency_ms": 0.0}  # the default waits up to 1 ms for company
SIZES = (1, 100)
CONCURRENCY = (1, 8, 64)


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    url: str
    headers: dict[str, str]


def _settings(model: PreparedModel, state: Path, **overrides: Any) -> Any:
    from config.serving import ServingSettings

    state.mkdir(parents=True, exist_ok=True)
    shutil.copytree(model.state / "bentoml", state / "bentoml", dirs_exist_ok=True)
    return ServingSettings(
        model_name=model.model_name,
        state_dir=state,
        tracking_uri=model.tracking_uri,
        api_key=API_KEY,
        **overrides,
    )


def run(section: Section, quick: bool) -> None:
    seconds, rounds = (2.0, 2) if quick else (3.0, 3)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with workdir("serving") as tmp, contextlib.ExitStack() as stack:
        log("serving: starting an MLflow server, fitting and registering the model")
        # A real registry server, as `driftloop up` runs it: the services poll its aliases.
        registry = stack.enter_context(mlflow_server(tmp / "mlflow"))
        model = prepare_model(tmp / "model", tracking_uri=registry.base_url)
        records_file = tmp / "records.json"
        records_file.write_text(json.dumps(model.records))
        log("serving: the floor (pyfunc.predict in process)")
        floor = run_json(
            [
                sys.executable,
                "-m",
                "bench.serving.floor",
                str(model.local_model),
                str(records_file),
                "--seconds",
                "1.5" if quick else "3",
            ],
            timeout_s=300,
        )
        log("serving: starting the servers")
        targets: list[Target] = []
        fastapi = stack.enter_context(fastapi_server("fastapi", tmp, model.local_model))
        targets.append(Target("fastapi", "FastAPI wrapper", fastapi.base_url + "/predict", {}))
        plain = stack.enter_context(
            driftloop_server("driftloop", tmp, _settings(model, tmp / "s-default"))
        )
        targets.append(Target("driftloop", "driftloop serve", plain.base_url + "/predict", auth))
        tuned = stack.enter_context(
            driftloop_server("tuned", tmp, _settings(model, tmp / "s-tuned", **TUNED))
        )
        targets.append(
            Target("tuned", "driftloop serve, max_latency_ms 0", tuned.base_url + "/predict", auth)
        )
        before_code = None if quick else checkout_bentos(BEFORE_COMMIT, tmp / "before-code")
        if before_code is not None:
            before = stack.enter_context(
                driftloop_server(
                    "before", tmp, _settings(model, tmp / "s-before"), code=before_code
                )
            )
            targets.append(
                Target(
                    "before",
                    f"driftloop serve before the hardening ({BEFORE_COMMIT})",
                    before.base_url + "/predict",
                    auth,
                )
            )
        results: dict[tuple[str, int, int], LoadResult] = {}
        for size in SIZES:
            body = model.body(size)
            for concurrency in CONCURRENCY:
                log(f"serving: {size}-record bodies at concurrency {concurrency}")
                runs: dict[str, list[LoadResult]] = {t.key: [] for t in targets}
                for target in targets:
                    run_load(target.url, body, concurrency, 1.0, target.headers)  # warm-up
                for round_ in range(rounds):
                    # Rotated order: a burst from another process hits a different server
                    # each round, and the median round of each server is kept.
                    for target in targets[round_:] + targets[:round_]:
                        runs[target.key].append(
                            run_load(target.url, body, concurrency, seconds, target.headers)
                        )
                for key, measured in runs.items():
                    results[(key, size, concurrency)] = median_run(measured)
        log("serving: kill -9 of driftloop's serving processes (restart.measure_all)")
        restarts = restart.measure_all(plain, plain.base_url + "/predict", model.body(1), auth)
    report(section, floor, targets, results, seconds, rounds, model)
    restart.report(section, restarts)


def median_run(runs: list[LoadResult]) -> LoadResult:
    """Each figure's median over the rounds; requests and failures summed."""

    def med(values: list[float]) -> float:
        return statistics.median(values)

    return LoadResult(
        tool=runs[0].tool,
        concurrency=runs[0].concurrency,
        seconds=sum(r.seconds for r in runs),
        requests=sum(r.requests for r in runs),
        rps=med([r.rps for r in runs]),
        p50_ms=med([r.p50_ms for r in runs]),
        p95_ms=med([r.p95_ms for r in runs]),
        p99_ms=med([r.p99_ms for r in runs]),
        max_ms=max(r.max_ms for r in runs),
        failed=sum(r.failed for r in runs),
    )


def report(
    section: Section,
    floor: dict[str, Any],
    targets: list[Target],
    results: dict[tuple[str, int, int], LoadResult],
    seconds: float,
    rounds: int,
    model: PreparedModel,
) -> None:
    tool = next(iter(results.values())).tool
    for size in SIZES:
        table = Table(
            f"{size}-record bodies",
            [
                "server",
                "concurrency",
                "req/s",
                "records/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "failed",
                "req/s × FastAPI",
            ],
        )
        f = floor[str(size)]
        table.add(
            "(a) floor: pyfunc.predict in process",
            "–",
            f["rps"],
            f["rps"] * size,
            f["p50_ms"],
            f["p95_ms"],
            f["p99_ms"],
            0,
            "",
        )
        for target in targets:
            for concurrency in CONCURRENCY:
                r = results[(target.key, size, concurrency)]
                base = results[("fastapi", size, concurrency)].rps
                table.add(
                    target.label,
                    concurrency,
                    r.rps,
                    r.rps * size,
                    r.p50_ms,
                    r.p95_ms,
                    r.p99_ms,
                    r.failed,
                    ratio(r.rps, base),
                )
        section.tables.append(table)

    def rps(key: str, size: int, concurrency: int) -> float:
        return results[(key, size, concurrency)].rps

    # The targets are judged on the defaults (what `driftloop serve` does out of the box);
    # the tuned server's figure is shown beside them.
    for size, concurrency in ((1, 8), (100, 64)):
        base = rps("fastapi", size, concurrency)
        got = rps("driftloop", size, concurrency) / base
        tuned = rps("tuned", size, concurrency) / base
        section.target(
            f"driftloop (log + auth, defaults) vs FastAPI, {size} record"
            f"{'s' if size > 1 else ''}, c={concurrency}",
            "≥ 3×",
            f"{got:.2f}× ({rps('driftloop', size, concurrency):,.0f} vs {base:,.0f} req/s; "
            f"max_latency_ms 0: {tuned:.2f}×)",
            got >= 3,
        )
    p99 = results[("driftloop", 1, 1)].p99_ms
    section.target(
        "driftloop p99 at c=1, 1 record",
        "≤ 10 ms",
        f"{p99:.1f} ms (FastAPI {results[('fastapi', 1, 1)].p99_ms:.1f} ms)",
        p99 <= 10,
    )
    if any(t.key == "before" for t in targets):
        cells = {
            (size, c): rps("driftloop", size, c) / rps("before", size, c)
            for size in SIZES
            for c in CONCURRENCY
        }
        (worst_size, worst_c), worst = min(cells.items(), key=lambda kv: kv[1])
        section.target(
            f"driftloop now vs before the hardening ({BEFORE_COMMIT}), every cell",
            "≥ 0.95×",
            f"worst {worst:.2f}× ({worst_size} record{'s' if worst_size > 1 else ''}, "
            f"c={worst_c}); median {statistics.median(cells.values()):.2f}×",
            worst >= 0.95,
        )
    failed = sum(r.failed for r in results.values())
    section.target("failed requests, all runs", "0", str(failed), failed == 0)
    section.notes.append(
        f"Load: {tool} with 1 thread, closed loop (each connection sends its next request when "
        f"answered); per point a 1 s warm-up, then {rounds} rounds of {seconds:g} s with the "
        "servers in rotated order; each figure is the median of the rounds (failures: the sum). "
        "driftloop runs "
        "`bentoml serve bentos.service:DriftloopService` exactly as `driftloop serve` starts it, "
        f"with `DRIFTLOOP_API_KEY` set (every request authenticated) and the prediction log on "
        "(SQLite WAL, synchronous=FULL: a request is answered only after the commit holding its "
        "records). The max_latency_ms 0 rows: "
        + ", ".join(f"`DRIFTLOOP_{k.upper()}={v}`" for k, v in TUNED.items())
        + " (no wait for company; the default waits up to 1 ms while the worker had more "
        "requests in flight lately). Model: the product's sklearn family on the bundled data "
        f"({len(model.features)} features), registered in a real `mlflow server` (whose "
        "aliases the services poll) and imported into BentoML's store."
    )
    if not have_wrk():
        section.notes.append(
            "wrk was not installed: the bundled asyncio client generated the load."
        )
