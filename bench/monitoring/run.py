"""Monitoring cost: one drift + OOD check at 1k, 10k, 100k and 1M window rows.

Each size runs in its own process (`bench.monitoring.check`), so its peak memory is its
own. The baseline of each row is the 1k-row check of the same run: time and memory
ratios show how the check grows with the window (the sampling bounds make it flat above
them). At 100k rows the bounds are varied to show what they buy and what they cost.
"""

from __future__ import annotations

import itertools
import math
import sys
from typing import Any

from bench.common import Section, Table, fmt, log, ratio, run_json, workdir
from bench.servers import checkout_bentos
from bench.serving.run import BEFORE_COMMIT

SIZES = (1_000, 10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000, 100_000)
BOUND_VARIANTS = "default,drift-5k,drift-all,ood-1k,ood-10k"


def run(section: Section, quick: bool) -> None:
    sizes = QUICK_SIZES if quick else SIZES
    results: dict[int, dict[str, Any]] = {}
    with workdir("monitoring") as tmp:
        before = None if quick else checkout_bentos(BEFORE_COMMIT, tmp / "before-code")
        for rows in sizes:
            variants = BOUND_VARIANTS if rows == 100_000 else "default"
            log(f"monitoring: {rows:,} rows ({variants})")
            argv = [sys.executable, "-m", "bench.monitoring.check", "--rows", str(rows)]
            argv += ["--variants", variants, "--log"]
            if before is not None and rows <= 100_000:  # the old read needs ~3 GB at 1M
                argv += ["--before-code", str(before)]
            results[rows] = run_json(argv, timeout_s=600)
    report(section, results)


def report(section: Section, results: dict[int, dict[str, Any]]) -> None:
    sizes = sorted(results)
    base = results[sizes[0]]["variants"]["default"]
    first = results[sizes[0]]
    table = Table(
        f"One check (drift + OOD, imports excluded; median of 3) by window size × "
        f"{first['features']} features, product defaults",
        [
            "window rows",
            "rows compared (drift / OOD)",
            "drift s",
            "OOD s",
            "check s",
            "× 1k check",
            "peak RSS MB",
            "× 1k peak",
            "drift share",
            "OOD rate",
        ],
    )
    for rows in sizes:
        v = results[rows]["variants"]["default"]
        table.add(
            rows,
            f"{v['drift_max_rows']:,} / {v['ood_max_queries']:,}",
            v["drift_s"],
            v["ood_s"],
            v["check_s"],
            ratio(v["check_s"], base["check_s"]),
            v["peak_rss_mb"],
            ratio(v["peak_rss_mb"], base["peak_rss_mb"]),
            v["drift_share"],
            v["ood_rate"],
        )
    defaults = first["defaults"]
    table.note = (
        f"Defaults: `drift_max_rows` {defaults['drift_max_rows']:,} per side, "
        f"`ood_max_queries` {defaults['ood_max_queries']:,}, reference index of at most "
        f"{defaults['ood_max_points']:,} points (built once per version: "
        f"{fmt(first['fit_reference_s'])} s). Peak RSS is the checking process's high-water "
        "mark during the check, window included. Not counted: imports "
        f"({fmt(first['import_s'])} s per process) and Evidently's first use in a process "
        f"(a 500-row check first: {fmt(first['first_check_s'])} s)."
    )
    section.tables.append(table)

    growth = Table(
        "How the check grows (log-log slope of time against rows: 1 = linear)",
        ["from → to", "check time slope", "peak memory slope"],
    )
    for a, b in itertools.pairwise(sizes):
        va, vb = results[a]["variants"]["default"], results[b]["variants"]["default"]
        growth.add(
            f"{a:,} → {b:,}",
            _slope(va["check_s"], vb["check_s"], a, b),
            _slope(va["peak_rss_mb"], vb["peak_rss_mb"], a, b),
        )
    section.tables.append(growth)

    if 100_000 in results:
        r = results[100_000]["variants"]
        d = r["default"]
        bounds = Table(
            "Effect of the sampling bounds (100k-row window)",
            [
                "variant",
                "rows compared (drift / OOD)",
                "check s",
                "× default",
                "peak RSS MB",
                "drift share",
                "drifted features",
                "OOD rate",
            ],
        )
        for name, v in r.items():
            bounds.add(
                name,
                f"{v['drift_max_rows']:,} / {v['ood_max_queries']:,}",
                v["check_s"],
                ratio(v["check_s"], d["check_s"]),
                v["peak_rss_mb"],
                v["drift_share"],
                ", ".join(v["drifted"]) or "none",
                v["ood_rate"],
            )
        section.tables.append(bounds)

    reads = Table(
        "Reading the window back from the prediction log (the monitor's `log.frame(latest=N)`)",
        [
            "window rows",
            "read s",
            "× 1k read",
            "peak RSS MB",
            "before the fix: read s",
            "before: peak RSS MB",
            "speed-up",
            "write s (bench setup)",
        ],
    )
    read_base = first["log"]["read_s"]
    for rows in sizes:
        entry = results[rows].get("log")
        if entry:
            old = entry.get("before_read_s")
            reads.add(
                rows,
                entry["read_s"],
                ratio(entry["read_s"], read_base),
                entry["read_peak_rss_mb"],
                old,
                entry.get("before_read_peak_rss_mb"),
                ratio(old, entry["read_s"]),
                entry["write_s"],
            )
    reads.note = (
        "Median of 3 reads up to 100k rows. Before the fix = `PredictionLog.frame` of "
        "`bentos/predlog.py` at the commit before this benchmark's fixes, reading the same "
        "file in the same process (not run at 1M rows: it needs ~3 GB). Peak RSS is the whole "
        "process's, window already in memory. "
        "No target: the monitor reads `monitor_window_rows` (default 2,000) rows."
    )
    section.tables.append(reads)

    for rows, limit_s in ((100_000, 3.0), (1_000_000, 15.0)):
        if rows not in results:
            continue
        v = results[rows]["variants"]["default"]
        ok = v["check_s"] <= limit_s and v["peak_rss_mb"] <= 1024
        section.target(
            f"drift + OOD check, {rows:,} rows",
            f"≤ {limit_s:.0f} s, ≤ 1 GB",
            f"{v['check_s']:.2f} s, {v['peak_rss_mb']:,.0f} MB",
            ok,
        )


def _slope(ya: float, yb: float, xa: int, xb: int) -> str:
    if ya <= 0 or yb <= 0:
        return "–"
    return f"{math.log(yb / ya) / math.log(xb / xa):.2f}"
