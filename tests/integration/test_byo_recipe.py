"""The README's bring-your-own-data recipe, run as a user runs it: no stack, no MLflow
environment variable, only the `driftloop` CLI, `driftloop serve` and HTTP.

For a classification and a regression dataset (generated here, seeded, no downloads),
each with a shifted period whose feature ranges leave the training range and whose
relationship changes (so a retrained model is genuinely better there):

train v1 → serve → shifted traffic without labels → `driftloop monitor` exits 0, prints
the figures and records "retrain pending" → labels arrive → `driftloop monitor` retrains;
the retrain passes its data contract by widening the soft ranges (a new revision, its
diff recorded) → the new version is challenger → more traffic + labels → the monitor
promotes it on live labels → `driftloop rollback` → `driftloop promote`.

Nothing may be written to the working folder besides the user's CSV and the state
folder `.driftloop/` (no ./mlflow.db, no ./mlruns).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from driftloop import procs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

API_KEY = "byo-predict-key-0123"
FEEDBACK_KEY = "byo-feedback-key-4567"
TRAIN_ROWS = 1500
SHIFTED_ROWS = 600  # per traffic phase: ≥ min_window_rows (200), ≥ min_labelled_rows (100)
CLI_TIMEOUT_S = 420
# What a user's shell would not carry for this recipe: a stack, a tracking server, driftloop
# settings, tool homes of another project.
STRIPPED_PREFIXES = ("MLFLOW_", "DRIFTLOOP_", "PREFECT_", "BENTOML_")


# -- the datasets -----------------------------------------------------------------------


def credit(rng: np.random.Generator, rows: int, shifted: bool) -> pd.DataFrame:
    """Credit-like defaults, target 'default' Yes/No.

    Training period: balance 0–10, income 20–80; 'Yes' rises with the balance.
    Shifted period: balance 20–30, income 90–150 (beyond the contract's ranges even after
    its tolerance) and the boundary moved to balance 28 (about 20 % 'Yes'), so a model
    that never saw it answers 'Yes' to nearly everyone there.
    """
    region = rng.choice(["north", "south", "east", "west"], rows)
    age = rng.integers(21, 70, rows)
    if shifted:
        balance = rng.uniform(20, 30, rows)
        income = rng.uniform(90, 150, rows)
        logit = 2.0 * (balance - 28) + 0.05 * (income - 120)
    else:
        balance = rng.uniform(0, 10, rows)
        income = rng.uniform(20, 80, rows)
        logit = 2.0 * (balance - 7) - 0.05 * (income - 50)
    default = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "Yes", "No")
    return pd.DataFrame(
        {"income": income, "balance": balance, "age": age, "region": region, "default": default}
    )


def demand(rng: np.random.Generator, rows: int, shifted: bool) -> pd.DataFrame:
    """Demand-like counts, target 'demand'.

    Training period: temp 0–20, hum 30–70, demand grows with temp. Shifted period: temp
    30–45, hum 75–100 and demand now falls with temp: a model that never saw it
    extrapolates flat, far from the truth.
    """
    weekday = rng.choice(["mon", "tue", "wed", "thu", "fri", "sat", "sun"], rows)
    weekend = np.isin(weekday, ["sat", "sun"]).astype(float)
    noise = rng.normal(0, 3, rows)
    if shifted:
        temp = rng.uniform(30, 45, rows)
        hum = rng.uniform(75, 100, rows)
        value = 300 - 3.0 * temp + 0.5 * hum + 10 * weekend + noise
    else:
        temp = rng.uniform(0, 20, rows)
        hum = rng.uniform(30, 70, rows)
        value = 20 + 4.0 * temp - 0.3 * hum + 10 * weekend + noise
    return pd.DataFrame({"temp": temp, "hum": hum, "weekday": weekday, "demand": value})


@dataclass(frozen=True)
class Case:
    model: str
    target: str
    task_flag: tuple[str, ...]  # what the user passes to `driftloop train`
    make: Callable[[np.random.Generator, int, bool], pd.DataFrame]
    seed: int
    drifted: str  # a column whose range the shifted period leaves

    @property
    def csv(self) -> str:
        return f"{self.model}.csv"


CASES = [
    # The README's first line names the task; the regression user lets it be inferred.
    Case("credit", "default", ("--task", "classification"), credit, 7, "balance"),
    Case("demand", "demand", (), demand, 11, "temp"),
]


# -- a user's shell ---------------------------------------------------------------------


@dataclass
class Shell:
    """A working folder and an environment without any stack or tracking variable."""

    workdir: Path
    env: dict[str, str]
    logs: Path

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        done = subprocess.run(
            [procs.venv_bin("driftloop"), *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )
        took = time.monotonic() - started
        print(f"driftloop {' '.join(args)}: exit {done.returncode}, {took:.1f} s")  # shown with -s
        if ok:
            assert done.returncode == 0, (
                f"driftloop {' '.join(args)} exited {done.returncode}\n"
                f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
            )
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def aliases(self, model: str) -> dict[str, str]:
        versions = self.json("models", "-m", model)
        return {alias: row["version"] for row in versions for alias in row["aliases"]}


def user_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(STRIPPED_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def served(shell: Shell, model: str) -> Iterator[str]:
    """`driftloop serve` with an API key and a feedback key, as its own process group."""
    port = procs.free_port()
    env = {
        **shell.env,
        "DRIFTLOOP_API_KEY": API_KEY,
        "DRIFTLOOP_FEEDBACK_API_KEY": FEEDBACK_KEY,
    }
    log = (shell.logs / f"serve-{model}.log").open("wb")
    process = subprocess.Popen(
        [procs.venv_bin("driftloop"), "serve", "-m", model, "--port", str(port)],
        cwd=shell.workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        procs.wait_until(
            lambda: process.poll() is None and _ready(url) is not None,
            180,
            interval_s=0.5,
            what=f"driftloop serve -m {model} (log {shell.logs / f'serve-{model}.log'})",
        )
        yield url
    finally:
        procs.stop_process_group(process.pid)
        log.close()


def _ready(url: str) -> dict[str, Any] | None:
    try:
        response = httpx.get(f"{url}/readyz", timeout=2)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def send(url: str, frame: pd.DataFrame, target: str, prefix: str) -> dict[str, Any]:
    """POST the rows' features to /predict (100 a request); request id → the true label."""
    truth: dict[str, Any] = {}
    features = [c for c in frame.columns if c != target]
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for start in range(0, len(frame), 100):
            chunk = frame.iloc[start : start + 100]
            records = chunk[features].to_dict(orient="records")
            for offset, record in enumerate(records):
                record["request_id"] = f"{prefix}-{start + offset}"
            answer = client.post("/predict", json={"records": records})
            assert answer.status_code == 200, answer.text[:500]
            body = answer.json()
            assert len(body["predictions"]) == len(records)
            truth.update(zip(body["request_ids"], chunk[target].tolist(), strict=True))
    return truth


def post_labels(url: str, truth: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {FEEDBACK_KEY}"}
    labels = [{"request_id": rid, "label": label} for rid, label in truth.items()]
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for start in range(0, len(labels), 200):
            answer = client.post("/feedback", json={"labels": labels[start : start + 200]})
            assert answer.status_code == 200, answer.text[:500]
            assert not answer.json().get("unknown_request_ids")


# -- the recipe -------------------------------------------------------------------------


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("case", CASES, ids=[c.model for c in CASES])
def test_bring_your_own_data_recipe_without_a_stack(case: Case, tmp_path: Path) -> None:
    workdir = tmp_path / "project"
    workdir.mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    shell = Shell(workdir, user_env(), logs)
    rng = np.random.default_rng(case.seed)
    case.make(rng, TRAIN_ROWS, False).to_csv(workdir / case.csv, index=False)
    shifted = [case.make(rng, SHIFTED_ROWS, True) for _ in range(2)]
    m = ("-m", case.model)

    # 1. train v1 on the user's CSV: the champion; the contract is built from the file.
    first = json.loads(
        shell.run(
            "train", "--data", case.csv, "--target", case.target, *case.task_flag, *m, "--json"
        ).stdout
    )
    assert first["alias"] == "champion", first
    v1 = str(first["version"])

    with served(shell, case.model) as url:
        # 2. shifted traffic, no labels yet: drift is measured and reported, the retrain waits.
        truth = send(url, shifted[0], case.target, "shift-a")
        pending = shell.run("monitor", *m)
        for figure in ("window_rows", "drift_share", "ood_rate"):
            assert figure in pending.stdout, pending.stdout
        assert "decision: retrain_pending" in pending.stdout, pending.stdout
        assert "retrain pending: 0 of" in pending.stdout, pending.stdout
        newest = shell.json("history", *m)[0]
        assert newest["action"] == "retrain-pending", newest
        assert newest["moves"] == {} and "retrain pending: 0 of" in newest["reason"], newest
        assert "retrain pending" in shell.run("status", *m).stdout

        # 3. the labels arrive: the next check retrains on the CSV + the labelled window;
        # the window breaks the contract's soft ranges, so the retrain widens them (a new
        # revision with its diff) instead of failing on them.
        post_labels(url, truth)
        retrained = shell.json("monitor", *m)
        assert retrained["decision"]["action"] == "retrain", retrained["decision"]
        acted = retrained["acted"] or ""
        assert "→ v" in acted and "failed" not in acted, acted
        versions = {row["version"]: row for row in shell.json("models", *m)}
        aliases = {a: v for v, row in versions.items() for a in row["aliases"]}
        v2 = aliases.get("challenger")
        assert v2 is not None and aliases["champion"] == v1, (aliases, acted)
        assert versions[v2]["data_digest"] != versions[v1]["data_digest"]
        diff = shell.run("contract", "diff", *m).stdout
        assert "contract revision 1 → 2" in diff, diff
        assert case.drifted in diff, diff
        assert shell.json("history", *m)[0]["action"] == "retrain"

        # 4. the service follows the new challenger (shadow by default); more shifted
        # traffic with its labels lets the monitor judge both on live labels.
        procs.wait_until(
            lambda: (_ready(url) or {}).get("challenger") == v2,
            60,
            interval_s=0.5,
            what=f"the service to load challenger v{v2}",
        )
        post_labels(url, send(url, shifted[1], case.target, "shift-b"))
        promoted = shell.json("monitor", *m)
        assert promoted["decision"]["action"] == "promote", promoted["decision"]
        assert shell.aliases(case.model) == {"champion": v2, "previous": v1}
        procs.wait_until(
            lambda: (_ready(url) or {}).get("champion") == v2,
            60,
            interval_s=0.5,
            what=f"the service to serve champion v{v2}",
        )

        # 5. by hand: roll back, then promote again; both recorded.
        back = shell.run("rollback", *m, "--reason", "recipe: rollback drill").stdout
        assert f"champion: {v2} → {v1}" in back, back
        again = shell.run("promote", v2, *m, "--reason", "recipe: promote again").stdout
        assert f"champion: {v1} → {v2}" in again, again
        assert shell.aliases(case.model) == {"champion": v2, "previous": v1}
        actions = [move["action"] for move in shell.json("history", *m)]
        assert actions[:4] == ["promote", "rollback", "promote", "retrain"], actions
        assert "retrain-pending" in actions[4:], actions

    # Nothing but the user's CSV and the state folder in the working folder.
    assert sorted(p.name for p in workdir.iterdir()) == sorted([case.csv, ".driftloop"])
    assert (workdir / ".driftloop" / "mlflow.db").exists()
