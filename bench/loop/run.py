"""The loop on a real local stack: drift → detection → challenger → promotion; rollback.

`bench.loop.driver` does the work in its own process against `driftloop up` on free ports
in a temp folder; this side only reads its timings and makes sure the stack is down
afterwards, whatever happened. The baseline for the swap timings is the service's alias
poll interval (how often it re-reads the registry): a swap cannot be seen sooner.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from bench.common import Section, Table, fmt, log, quiet_env, run_json, workdir
from driftloop import procs

API_KEY = "bench-loop-key"
FEEDBACK_KEY = "bench-loop-feedback-key"


def run(section: Section, quick: bool) -> None:
    from config.settings import Settings
    from driftloop import stack

    with workdir("loop") as tmp:
        state = tmp / "state"
        ports = {name: procs.free_port() for name in ("MLFLOW", "PREFECT", "SERVE", "EVIDENTLY")}
        env = quiet_env()  # the stack's own servers only: no MLflow/Prefect URL inherited
        env.update(
            {
                "DRIFTLOOP_STATE_DIR": str(state),
                "DRIFTLOOP_API_KEY": API_KEY,
                "DRIFTLOOP_FEEDBACK_API_KEY": FEEDBACK_KEY,
                "PREFECT_HOME": str(tmp / "prefect-client"),
                "PREFECT_LOGGING_LEVEL": "WARNING",
                # As in `driftloop demo`: a canary, and guards scaled from hours to minutes.
                "DRIFTLOOP_CANARY_SHARE": "0.3",
                "DRIFTLOOP_RETRAIN_COOLDOWN_S": "600",
                "DRIFTLOOP_WATCH_PERIOD_S": "900",
                **{f"DRIFTLOOP_{name}_PORT": str(port) for name, port in ports.items()},
            }
        )
        log("loop: driftloop up, then the whole loop (several minutes)")
        try:
            result = run_json([sys.executable, "-m", "bench.loop.driver"], 900, env=env)
        finally:
            stopped = stack.down(Settings(state_dir=state))
            log(f"loop: stack down ({len(stopped)} processes)")
    report(section, result)


def report(section: Section, result: dict[str, Any]) -> None:
    steps = result["steps"]
    poll = result["poll_interval_s"]
    table = Table(
        "Each step, timed (wall seconds)",
        ["step", "seconds", "× alias poll interval"],
    )
    for name, seconds in steps.items():
        swap = "decision →" in name
        table.add(name, seconds, f"{seconds / poll:.2f}×" if swap else "")
    table.add("rollback drills, each", " / ".join(f"{x:.2f}" for x in result["rollbacks_s"]), "")
    table.note = (
        f"Alias poll interval of the service: {fmt(poll)} s (`DRIFTLOOP_ALIAS_POLL_INTERVAL_S`)."
        f" Continuous client: {result['clients']} connections sending labelled 1-record "
        "requests (+ their feedback) back to back from before the promotion to after the "
        f"last rollback drill (each at a random moment of the poll cycle): "
        f"{result['client_requests']:,} requests, {result['client_failed']} failed."
    )
    section.tables.append(table)
    drills = result["rollbacks_s"]
    section.target(
        f"rollback decision → clients answered by the previous version ({len(drills)} drills)",
        "≤ 2 s",
        f"max {max(drills):.2f} s, median {sorted(drills)[len(drills) // 2]:.2f} s",
        max(drills) <= 2.0,
    )
    section.target(
        "failed client requests during promotion + rollback",
        "0",
        f"{result['client_failed']} of {result['client_requests']:,}",
        result["client_failed"] == 0,
    )
    section.target(
        "drift onset → detection / → challenger registered / → promotion (reported)",
        "reported",
        " / ".join(
            f"{steps[k]:.0f} s"
            for k in (
                "drift onset → detection",
                "drift onset → challenger registered",
                "drift onset → promotion",
            )
        ),
        None,
    )
    section.notes += result.get("notes", [])
    if result["client_errors"]:
        section.notes.append(f"Client errors: {result['client_errors']}")
    if os.environ.get("PREFECT_WORKER_QUERY_SECONDS") is None:
        section.notes.append(
            "Deployment runs (monitor, train) wait for the Prefect worker's next poll "
            "(10 s by default) and start a fresh process: both are in the detection and "
            "retraining times, as they would be in production."
        )
