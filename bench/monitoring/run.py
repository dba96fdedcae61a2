"""Monitoring cost: whole monitor checks on prediction logs of 10k, 100k, 1M and 10M requests.

Each size runs in its own process (`bench.monitoring.check`), so its imports and its peak
memory are its own. A check is the product's own read (window bounds and exact counts,
a sample drawn by the database, the labelled rows), drift + OOD on the sample, live
metrics, the decision and the recording; the window is the whole log. The logs are
generated once and cached under the state folder (`bench.monitoring.logdb`), keyed by
size and schema. The baseline of each row is the 10k-request check of the same run;
the log-log slope from 100k to 10M says how the check grows with the log.
"""

from __future__ import annotations

import itertools
import math
import statistics
import sys
from typing import Any

from bench.common import Section, Table, fmt, log, ratio, run_json

SIZES = (10_000, 100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (10_000, 100_000)
TARGETS = {1_000_000: 3.0, 10_000_000: 6.0}  # seconds for a whole check; ≤ 1 GB at 1M
MAX_SLOPE = 0.3  # log-log slope of check time from 100k to 10M requests


def run(section: Section, quick: bool) -> None:
    from bench.monitoring.logdb import ensure_log

    sizes = QUICK_SIZES if quick else SIZES
    results: dict[int, dict[str, Any]] = {}
    for requests in sizes:
        log(f"monitoring: log of {requests:,} requests (generated once, then cached)")
        ensure_log(requests)
        log(f"monitoring: whole checks on {requests:,} requests")
        argv = [sys.executable, "-m", "bench.monitoring.check", "--requests", str(requests)]
        results[requests] = run_json(argv, timeout_s=900)
    report(section, results)
    log("monitoring: moving staged serving commits into the indexed table")
    rows, rounds = (20_000, 2) if quick else (200_000, 4)
    argv = [sys.executable, "-m", "bench.serving.staging", "--json"]
    staged = run_json([*argv, "--rows", str(rows), "--rounds", str(rounds)], timeout_s=600)
    report_staging(section, staged)


STAGING_ROWS = {
    "row by row (before)": "a serving commit written row by row into `predictions` "
    "(before session 20)",
    "staged (now)": "a serving commit staged (`prediction_blocks`): what the serving "
    "writer pays now",
    "catch-up": "moving staged rows into `predictions` (`catch_up`): what the first read "
    "after them pays",
}


def report_staging(section: Section, staged: dict[str, Any]) -> None:
    table = Table(
        "Writing the log: CPU per record of a serving commit, and of the first read after it",
        ["what", "CPU µs per record, median", "range", "× row by row"],
    )
    per_record = staged["us_per_record"]
    base = statistics.median(per_record["row by row (before)"])
    for key, what in STAGING_ROWS.items():
        values = per_record[key]
        median = statistics.median(values)
        table.add(
            what, f"{median:.2f}", f"{min(values):.2f}–{max(values):.2f}", ratio(median, base)
        )
    section.tables.append(table)
    section.notes.append(
        f"`python -m bench.serving.staging --rows {staged['rows']}`: two SQLite logs "
        f"(synchronous=FULL) of {staged['rows']:,} rows, then alternated rounds of "
        f"{staged['round_rows']:,} records in commits of 8 requests × 100 records; thread "
        "CPU time. A check moves what was staged since the last read before it reads (the "
        "checks above run on logs written straight into `predictions`)."
    )


def _later(result: dict[str, Any]) -> dict[str, Any]:
    """The median of the checks after the first one in the process."""
    later = sorted(result["checks"][1:], key=lambda c: c["check_s"])
    return later[len(later) // 2] if later else result["checks"][0]


def report(section: Section, results: dict[int, dict[str, Any]]) -> None:
    sizes = sorted(results)
    base = results[sizes[0]]
    table = Table(
        "A whole check (read + drift + OOD + live metrics + decision + recording) by log "
        "size; the window is the whole log",
        [
            "requests logged",
            "first check s (log not in the page cache)",
            "later check s (median)",
            "× 10k",
            "read s",
            "measure s",
            "record s",
            "peak RSS MB",
            "imports s",
            "rows compared (drift / OOD / labelled; sampled in blocks)",
            "drift share",
            "OOD rate",
            "champion rmse",
        ],
    )
    for requests in sizes:
        result = results[requests]
        first, later = result["checks"][0], _later(result)
        table.add(
            requests,
            first["check_s"],
            later["check_s"],
            ratio(first["check_s"], base["checks"][0]["check_s"]),
            first["read_s"],
            first["measure_s"],
            first["record_s"],
            max(c["peak_rss_mb"] for c in result["checks"]),
            result["import_s"],
            f"{first['drift_rows']:,} / {first['ood_rows']:,} / {first['labelled_rows']:,}",
            first["drift_share"],
            first["ood_rate"],
            first["champion_rmse"],
        )
    settings = base["settings"]
    table.note = (
        "One process per size: it imports what a check needs (timed apart: *imports s*), "
        "then runs the check three times; *first check* also pays Evidently's first use in "
        "the process, as one `driftloop monitor` does, and starts with the log's file taken "
        "out of the page cache (`posix_fadvise(DONTNEED)`), so it reads from the disk. "
        "Each log holds the requests "
        "(champion answers), a shadow row for every 10th, another model's row for every 10th "
        "and a label for every 10th; `monitor_window_rows` = the log's requests, so the "
        f"window is all of it. Bounds: `drift_max_rows` {settings['drift_max_rows']:,}, "
        f"`ood_max_queries` {settings['ood_max_queries']:,}, `live_max_labels` "
        f"{settings.get('live_max_labels', 0):,}. Above the bounds the rows compared are "
        "sampled in blocks of consecutive rows spread evenly over the window (drift/OOD: blocks of "
        f"{settings.get('sample_block_rows', '–')} requests; labels: blocks of "
        f"{settings.get('label_block_rows', '–')} labels, one block in k). Recording: "
        "`last_check.json` and an MLflow run (figures, check.json, the Evidently report) "
        "in a local SQLite store. Not "
        "counted: the registry read and building the OOD index (once per version: "
        f"{fmt(base['fit_reference_s'])} s). Peak RSS is the process's, imports included."
    )
    section.tables.append(table)

    growth = Table(
        "How the check grows (log-log slope of time against requests: 0 = flat, 1 = linear)",
        ["from → to", "first check slope", "later check slope", "peak memory slope"],
    )
    for a, b in itertools.pairwise(sizes):
        ra, rb = results[a], results[b]
        growth.add(
            f"{a:,} → {b:,}",
            _slope(ra["checks"][0]["check_s"], rb["checks"][0]["check_s"], a, b),
            _slope(_later(ra)["check_s"], _later(rb)["check_s"], a, b),
            _slope(
                max(c["peak_rss_mb"] for c in ra["checks"]),
                max(c["peak_rss_mb"] for c in rb["checks"]),
                a,
                b,
            ),
        )
    section.tables.append(growth)

    for requests, limit_s in TARGETS.items():
        if requests not in results:
            continue
        first = results[requests]["checks"][0]
        peak = max(c["peak_rss_mb"] for c in results[requests]["checks"])
        memory_ok = requests != 1_000_000 or peak <= 1024
        wanted = f"≤ {limit_s:.0f} s" + (", ≤ 1 GB" if requests == 1_000_000 else "")
        section.target(
            f"whole check incl. log read, {requests:,} requests logged (imports apart)",
            wanted,
            f"{first['check_s']:.2f} s, {peak:,.0f} MB "
            f"(imports {results[requests]['import_s']:.1f} s)",
            first["check_s"] <= limit_s and memory_ok,
        )
    if 100_000 in results and 10_000_000 in results:
        slope = _slope_value(
            results[100_000]["checks"][0]["check_s"],
            results[10_000_000]["checks"][0]["check_s"],
            100_000,
            10_000_000,
        )
        section.target(
            "log-log slope of the whole check, 100k → 10M requests",
            f"≤ {MAX_SLOPE}",
            f"{slope:.2f}",
            slope <= MAX_SLOPE,
        )


def _slope_value(ya: float, yb: float, xa: int, xb: int) -> float:
    return math.log(yb / ya) / math.log(xb / xa)


def _slope(ya: float, yb: float, xa: int, xb: int) -> str:
    if ya <= 0 or yb <= 0:
        return "–"
    return f"{_slope_value(ya, yb, xa, xb):.2f}"
