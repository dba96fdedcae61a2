"""What every benchmark section shares: the machine, temp folders, the model, tables.

Every figure in RESULTS.md is a ratio against a baseline measured in the same run on the
same machine, so a section returns both absolute numbers and the baseline it divides by.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "data" / "bundled" / "bikeshare_2011.csv"
# Single-threaded numeric libraries everywhere: the machine has 2 cores, and a BLAS/OpenMP
# pool per process would fight the server, the load generator and the model thread.
QUIET_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",  # MLflow reads DO_NOT_TRACK only as "true"
    "GX_ANALYTICS_ENABLED": "False",
    "BENTOML_DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "PYTHONUNBUFFERED": "1",
}


# Where MLflow and Prefect are: each child is told explicitly, never by inheritance (MLflow's
# set_tracking_uri/set_registry_uri write them into os.environ of whoever called them).
LOCATIONS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL", "PREFECT_HOME")


def quiet_env() -> dict[str, str]:
    """The environment of every child process a benchmark starts."""
    env = {k: v for k, v in os.environ.items() if k not in LOCATIONS}
    return {**env, **QUIET_ENV, "PYTHONPATH": str(REPO)}


def machine() -> dict[str, str]:
    """What the results were measured on."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "nproc": str(os.cpu_count()),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "load_before": f"{load[0]:.2f}",
    }


def cpu_busy(seconds: float) -> float:
    """Share of all cores busy (not idle, not waiting for I/O) over the next `seconds`,
    from /proc/stat; NaN where there is none."""

    def sample() -> tuple[int, int] | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    first = sample()
    time.sleep(seconds)
    second = sample()
    if first is None or second is None or second[0] == first[0]:
        return float("nan")
    total, idle = second[0] - first[0], second[1] - first[1]
    return 1.0 - idle / total


def cpu_ticks(stat: Path = Path("/proc/stat")) -> tuple[int, int] | None:
    """(all, steal) clock ticks of every core so far, from the first line of /proc/stat;
    None where there is none. Steal is time a virtual machine's cores were ready to run
    while the hypervisor ran someone else: on a shared host, what makes one window of a
    benchmark slower than the next without anything in it changing."""
    try:
        fields = [int(x) for x in stat.read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: inside user/nice]
    return sum(fields[:8]), fields[7] if len(fields) > 7 else 0


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Share of the cores' time stolen between two `cpu_ticks` readings; None if unknown."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    return (after[1] - before[1]) / (after[0] - before[0])


def wait_for_quiet(
    busy_below: float = 0.10, settle_s: float = 2.0, max_wait_s: float = 60.0
) -> str:
    """Wait until the cores have been under `busy_below` busy for `settle_s` (the servers
    of the section before this one take a few seconds to go), at most `max_wait_s`; says
    what it found, for the section's header. A section started on busy cores measures
    whatever else runs: the training section's plain fit took 0.59-0.66 s right after the
    serving sections and 0.29 s on idle cores."""
    started = time.perf_counter()
    while True:
        busy = cpu_busy(settle_s)
        waited = time.perf_counter() - started
        if busy != busy or busy < busy_below or waited >= max_wait_s:
            break
    if busy != busy:
        return "cores of unknown load (no /proc/stat)"
    state = "idle" if busy < busy_below else "busy"
    return f"{state} cores ({busy:.0%} busy over {settle_s:g} s, after {waited:.0f} s of waiting)"


def tree_cpu_s(root_pid: int) -> float:
    """User + system CPU seconds of `root_pid` and every live descendant."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


@contextlib.contextmanager
def preserved_environ() -> Iterator[None]:
    """Undo what a block writes into os.environ (MLflow writes its URIs there)."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A temporary folder removed afterwards, whatever happens."""
    path = Path(tempfile.mkdtemp(prefix=f"driftloop-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Clock:
    """`with Clock() as c: ...; c.s` — wall seconds of a block."""

    def __enter__(self) -> Clock:
        self.started = time.perf_counter()
        self.s = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.s = time.perf_counter() - self.started


def log(message: str) -> None:
    """Progress on stderr (stdout of child processes carries their JSON result)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_json(argv: Sequence[str], timeout_s: float, env: dict[str, str] | None = None) -> Any:
    """Run a child Python benchmark; its last stdout line is its JSON result."""
    import json

    done = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
        env=env or quiet_env(),
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:4])}… exited {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- results ------------------------------------------------------------------------------


@dataclass
class Table:
    """One Markdown table of a section."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""

    def add(self, *cells: Any) -> None:
        self.rows.append([fmt(c) for c in cells])

    def markdown(self) -> str:
        lines = [f"#### {self.title}", ""] if self.title else []
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines)


@dataclass
class Section:
    """A section of RESULTS.md: tables, targets and notes, plus its own wall time."""

    name: str
    title: str
    tables: list[Table] = field(default_factory=list)
    targets: list[tuple[str, str, str, bool | None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    quiet: str = ""  # how busy the cores were when it started (`wait_for_quiet`)
    steal: float | None = None  # share of the cores' time the hypervisor took meanwhile

    def target(self, what: str, wanted: str, got: str, met: bool | None) -> None:
        self.targets.append((what, wanted, got, met))

    def markdown(self) -> str:
        started = f" Started on {self.quiet}." if self.quiet else ""
        if self.steal is not None:
            started += f" Steal (the hypervisor running others on these cores): {self.steal:.1%}."
        lines = [f"## {self.title}", "", f"_Section wall time: {self.seconds:.0f} s.{started}_", ""]
        if self.error:
            lines += [f"**This section failed:** `{self.error}`", ""]
        for table in self.tables:
            lines += [table.markdown(), ""]
        if self.notes:
            lines += [f"- {note}" for note in self.notes] + [""]
        return "\n".join(lines)


def fmt(value: Any) -> str:
    """Numbers the way a table wants them: 3 significant figures, thousands separated."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "–"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def ratio(a: float | None, b: float | None) -> str:
    """`a / b` as "2.3×" (– when either is missing or b is 0)."""
    if a is None or b is None or b == 0 or a != a or b != b:
        return "–"
    return f"{a / b:.2f}×"
