"""Peers: driftloop against the inference servers a user would pick instead.

One server at a time (started, checked, loaded, stopped), each with its own request
format for the same rows of the same registered model:

- driftloop serve, defaults, prediction log on (fsynced before answering) and an API key;
- the FastAPI + uvicorn wrapper of the serving section (`bench/serving/fastapi_app.py`);
- MLServer 1.7.1 with the MLflow runtime and adaptive batching (max 64, 2 ms), V2 protocol;
- `mlflow models serve --env-manager local` (MLflow's scoring server, `dataframe_split`);
- a plain BentoML service with `batchable=True` (`bench/peers/bentoml_service.py`);
- Ray Serve with `@serve.batch` (`bench/peers/ray_app.py`).

MLServer and Ray run from their own venvs (`bench/peers/envs.py`), created on first use.
Before any load, a server must answer a 100-record request with the pyfunc's own
predictions (within 1e-6); a peer that fails to install, start or answer right shows up
in the table as "failed: <reason>". Cells: 1- and 100-record bodies at concurrency 1, 8,
64 (wrk -t1, else the asyncio client), plus p99 at concurrency 1.

Durations: `DRIFTLOOP_BENCH_PEER_WARMUP_S` (default 2, `--quick` 1) and
`DRIFTLOOP_BENCH_PEER_SECONDS` (default 6, `--quick` 3) per cell.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    QUIET_ENV,
    REPO,
    Section,
    Table,
    cpu_ticks,
    fmt,
    log,
    steal_share,
    workdir,
)
from bench.model import PreparedModel, prepare_model
from bench.peers import formats
from bench.peers.envs import PEERS_STATE, PeerFailed, ensure_venv, model_requirements
from bench.servers import (
    _start,
    checkout,
    driftloop_server,
    fastapi_server,
    mlflow_server,
    stop_tree,
)
from bench.serving.loadgen import LoadResult, have_wrk, run_load
from driftloop import procs

API_KEY = "bench-api-key"
SIZES = (1, 100)
CONCURRENCY = (1, 8, 64)
TOLERANCE = 1e-6
CHECK_ROWS = 100
START_TIMEOUT_S = 180.0
RAY_START_TIMEOUT_S = 420.0  # a Ray head (GCS, raylet...) first, up to 3 tries
MLSERVER = ("mlserver==1.7.1", "mlserver-mlflow==1.7.1", "uvloop<0.21")
RAY = ("ray[serve]==2.60.0",)
MLSERVER_BATCH = {"max_batch_size": 64, "max_batch_time": 0.002}  # seconds


@dataclass(frozen=True)
class Endpoint:
    """Where a started server answers and how to talk to it."""

    url: str
    fmt: formats.Format
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Context:
    tmp: Path
    model: PreparedModel
    registry_url: str


@dataclass(frozen=True)
class Peer:
    key: str
    label: str
    start: Callable[[Context], contextlib.AbstractContextManager[Endpoint]]


@dataclass
class Outcome:
    """A server's cells, or why it has none."""

    error: str | None = None
    cells: dict[tuple[int, int], LoadResult] = field(default_factory=dict)
    steal: float | None = None  # share of the cores' time stolen during its cells


# -- the servers --------------------------------------------------------------------------


def _driftloop_settings(model: PreparedModel, state: Path) -> Any:
    from config.serving import ServingSettings

    state.mkdir(parents=True, exist_ok=True)
    shutil.copytree(model.state / "bentoml", state / "bentoml", dirs_exist_ok=True)
    return ServingSettings(
        model_name=model.model_name,
        state_dir=state,
        tracking_uri=model.tracking_uri,
        api_key=API_KEY,
    )


@contextlib.contextmanager
def start_driftloop(ctx: Context) -> Iterator[Endpoint]:
    settings = _driftloop_settings(ctx.model, ctx.tmp / "s-driftloop")
    with driftloop_server("driftloop", ctx.tmp, settings) as server:
        auth = {"Authorization": f"Bearer {API_KEY}"}
        yield Endpoint(server.base_url + "/predict", formats.RECORDS, auth)


@contextlib.contextmanager
def start_driftloop_base(ctx: Context) -> Iterator[Endpoint]:
    """driftloop serve with `bentos/`, `predlog/` and `config/` of the git ref
    `DRIFTLOOP_BENCH_BASE_REF` (an A/B of a change in the same run; not in `make bench`)."""
    ref = os.environ.get("DRIFTLOOP_BENCH_BASE_REF")
    if not ref:
        raise PeerFailed("set DRIFTLOOP_BENCH_BASE_REF to the git ref to compare with")
    code = ctx.tmp / "base-code"
    if not checkout(ref, code, ("bentos", "predlog", "config")):
        raise PeerFailed(f"could not check out {ref} with git")
    settings = _driftloop_settings(ctx.model, ctx.tmp / "s-driftloop-base")
    with driftloop_server("driftloop-base", ctx.tmp, settings, code=code) as server:
        auth = {"Authorization": f"Bearer {API_KEY}"}
        yield Endpoint(server.base_url + "/predict", formats.RECORDS, auth)


@contextlib.contextmanager
def start_fastapi(ctx: Context) -> Iterator[Endpoint]:
    with fastapi_server("fastapi", ctx.tmp, ctx.model.local_model) as server:
        yield Endpoint(server.base_url + "/predict", formats.RECORDS)


@contextlib.contextmanager
def _running(
    server: procs.Server, ready: Callable[[], bool], timeout_s: float = START_TIMEOUT_S
) -> Iterator[procs.Server]:
    """Wait until `ready()` (or the process dies / `timeout_s`), stop its tree after."""

    def check() -> bool:
        if server.process.poll() is not None:
            raise PeerFailed(
                f"exited ({server.process.returncode}): {_last_line(procs.tail(server.log_path))}"
            )
        try:
            return ready()
        except httpx.HTTPError:
            return False

    try:
        try:
            procs.wait_until(check, timeout_s, 0.5, f"{server.name} to be ready")
        except TimeoutError as exc:
            tail = _last_line(procs.tail(server.log_path))
            raise PeerFailed(f"not ready after {timeout_s:.0f} s: {tail}") from exc
        yield server
    finally:
        stop_tree(server)
        # The temp folder goes; the server's log stays for a look at what it did.
        kept = PEERS_STATE / "logs" / server.log_path.name
        kept.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copyfile(server.log_path, kept)


def _get_ok(url: str) -> Callable[[], bool]:
    return lambda: httpx.get(url, timeout=2).status_code == 200


@contextlib.contextmanager
def start_mlserver(ctx: Context) -> Iterator[Endpoint]:
    venv = ensure_venv("mlserver", [*MLSERVER, *model_requirements(ctx.model.local_model)])
    folder = ctx.tmp / "mlserver"
    (folder / "bike").mkdir(parents=True, exist_ok=True)
    http, grpc, metrics = procs.free_port(), procs.free_port(), procs.free_port()
    settings = {"host": "127.0.0.1", "http_port": http, "grpc_port": grpc, "metrics_port": metrics}
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / "bike" / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "bike",
                "implementation": "mlserver_mlflow.MLflowRuntime",
                **MLSERVER_BATCH,
                "parameters": {"uri": str(ctx.model.local_model)},
            }
        )
    )
    env = {"PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(venv)}
    base = f"http://127.0.0.1:{http}"
    server = _start(
        "mlserver",
        [str(venv / "bin" / "mlserver"), "start", str(folder)],
        http,
        ctx.tmp,
        "/v2/health/ready",
        env=env,
        cwd=folder,
    )
    with _running(server, _get_ok(base + "/v2/models/bike/ready")):
        yield Endpoint(base + "/v2/models/bike/infer", formats.V2)


@contextlib.contextmanager
def start_mlflow(ctx: Context) -> Iterator[Endpoint]:
    port = procs.free_port()
    bin_dir = Path(sys.executable).parent
    argv = [
        str(bin_dir / "mlflow"),
        "models",
        "serve",
        "-m",
        str(ctx.model.local_model),
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        "1",
    ]
    # mlflow's scoring server runs `uvicorn` from the PATH: ours.
    env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    server = _start("mlflow-serve", argv, port, ctx.tmp, "/ping", env=env, cwd=ctx.tmp)
    base = f"http://127.0.0.1:{port}"
    with _running(server, _get_ok(base + "/ping")):
        yield Endpoint(base + "/invocations", formats.DATAFRAME_SPLIT)


@contextlib.contextmanager
def start_bentoml(ctx: Context) -> Iterator[Endpoint]:
    port = procs.free_port()
    argv = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "bench.peers.bentoml_service:PlainService",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {
        "BENCH_MODEL_PATH": str(ctx.model.local_model),
        "BENTOML_HOME": str(ctx.tmp / "bentoml-plain"),
        "PYTHONPATH": str(REPO),
    }
    server = _start("bentoml-plain", argv, port, ctx.tmp, "/readyz", env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    with _running(server, _get_ok(base + "/readyz")):
        yield Endpoint(base + "/predict", formats.RECORDS_ARRAY)


@contextlib.contextmanager
def start_ray(ctx: Context) -> Iterator[Endpoint]:
    venv = ensure_venv("ray", [*RAY, *model_requirements(ctx.model.local_model)])
    port = procs.free_port()
    argv = [
        str(venv / "bin" / "python"),
        str(REPO / "bench" / "peers" / "ray_app.py"),
        str(ctx.model.local_model),
        "--port",
        str(port),
    ]
    env = {
        "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}",
        "RAY_USAGE_STATS_ENABLED": "0",
        # A worker process importing Ray on a busy 2-core machine can take more than the
        # default 60 s to register; Ray then cancels the actor it was meant for.
        "RAY_worker_register_timeout_seconds": "300",
        "RAY_TMPDIR": str(ctx.tmp / "ray"),
        # Not the project's PYTHONPATH: the Ray venv has its own packages.
        "PYTHONPATH": "",
    }
    (ctx.tmp / "ray").mkdir(exist_ok=True)
    server = _start("ray-serve", argv, port, ctx.tmp, "/-/healthz", env=env, cwd=ctx.tmp)
    base = f"http://127.0.0.1:{port}"
    probe = formats.RECORDS.encode(ctx.model.records[:1], ctx.model.features)

    def ready() -> bool:
        return httpx.post(base + "/predict", content=probe, timeout=5).status_code == 200

    with _running(server, ready, RAY_START_TIMEOUT_S):
        yield Endpoint(base + "/predict", formats.RECORDS)


PEERS = (
    Peer("driftloop", "driftloop serve (log + API key, defaults)", start_driftloop),
    Peer("fastapi", "FastAPI + uvicorn wrapper", start_fastapi),
    Peer("mlserver", "MLServer 1.7.1 + MLflow runtime, adaptive batching", start_mlserver),
    Peer("mlflow", "mlflow models serve --env-manager local", start_mlflow),
    Peer("bentoml", "plain BentoML service, batchable=True", start_bentoml),
    Peer("ray", "Ray Serve 2.60 with @serve.batch", start_ray),
)
# Only when named in DRIFTLOOP_BENCH_PEERS: driftloop at another git ref, for A/B runs.
EXTRA_PEERS = (
    Peer("driftloop-base", "driftloop serve at DRIFTLOOP_BENCH_BASE_REF", start_driftloop_base),
)


# -- checking and loading -----------------------------------------------------------------


def check_answers(endpoint: Endpoint, model: PreparedModel, expected: list[float]) -> None:
    """The server's predictions for CHECK_ROWS rows equal the pyfunc's (PeerFailed if not)."""
    rows = model.records[:CHECK_ROWS]
    body = endpoint.fmt.encode(rows, model.features)
    headers = {"Content-Type": "application/json", **endpoint.headers}
    answer = httpx.post(endpoint.url, content=body, headers=headers, timeout=30)
    if answer.status_code != 200:
        raise PeerFailed(f"check request answered {answer.status_code}: {answer.text[:200]}")
    got = endpoint.fmt.decode(answer.json())
    wrong = compare(got, expected)
    if wrong:
        raise PeerFailed(f"wrong answers: {wrong}")


def compare(got: list[Any], expected: list[float], tolerance: float = TOLERANCE) -> str | None:
    """None when `got` equals `expected` within `tolerance`; else what differs."""
    if len(got) != len(expected):
        return f"{len(got)} predictions for {len(expected)} rows"
    try:
        worst = max(
            (abs(float(a) - float(b)) for a, b in zip(got, expected, strict=True)), default=0.0
        )
    except (TypeError, ValueError) as exc:
        return f"non-numeric predictions ({exc})"
    return None if worst <= tolerance else f"largest difference {worst:.3g} > {tolerance:g}"


def measure(
    peer: Peer, ctx: Context, expected: list[float], warmup_s: float, seconds: float
) -> Outcome:
    """Start the peer, check its answers, load every cell, stop it."""
    outcome = Outcome()
    try:
        with peer.start(ctx) as endpoint:
            check_answers(endpoint, ctx.model, expected)
            ticks = cpu_ticks()
            for size in SIZES:
                body = endpoint.fmt.encode(
                    [ctx.model.records[i % len(ctx.model.records)] for i in range(size)],
                    ctx.model.features,
                )
                for concurrency in CONCURRENCY:
                    log(f"peers: {peer.key}, {size}-record bodies at concurrency {concurrency}")
                    outcome.cells[(size, concurrency)] = load_cell(
                        endpoint, body, concurrency, warmup_s, seconds
                    )
            outcome.steal = steal_share(ticks, cpu_ticks())
    except (PeerFailed, procs.ServerError) as exc:
        outcome.error = _last_line(str(exc))
    except Exception as exc:  # one peer's trouble must not hide the others
        outcome.error = f"{type(exc).__name__}: {_last_line(str(exc))}"
    if outcome.error:
        log(f"peers: {peer.key} failed: {outcome.error}")
    return outcome


def load_cell(
    endpoint: Endpoint, body: bytes, concurrency: int, warmup_s: float, seconds: float
) -> LoadResult:
    """One cell. Under concurrency a warm-up fills the server's queues first and is not
    counted; a c1 cell counts every request from its first one (`warmup_s + seconds`),
    so its p99 covers the first seconds after the server's start too (issue #15 wants
    the c1 tail "measured over the whole run including its first seconds"; the first
    cell, 1 record at c1, starts right after the server said ready and answered the
    check)."""
    if concurrency == 1:
        return run_load(endpoint.url, body, 1, warmup_s + seconds, endpoint.headers)
    run_load(endpoint.url, body, concurrency, warmup_s, endpoint.headers)
    return run_load(endpoint.url, body, concurrency, seconds, endpoint.headers)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "no output")[:200]


def durations(quick: bool) -> tuple[float, float]:
    """(warm-up, measured) seconds per cell, from the environment or the defaults."""
    warmup = float(os.environ.get("DRIFTLOOP_BENCH_PEER_WARMUP_S", 1 if quick else 2))
    seconds = float(os.environ.get("DRIFTLOOP_BENCH_PEER_SECONDS", 3 if quick else 6))
    return warmup, seconds


def selected(peers: tuple[Peer, ...] = PEERS) -> tuple[Peer, ...]:
    """All peers, or those named in DRIFTLOOP_BENCH_PEERS (comma-separated keys, e.g.
    `driftloop,mlserver`; without `driftloop` the table has no ratios)."""
    wanted = os.environ.get("DRIFTLOOP_BENCH_PEERS")
    if not wanted:
        return peers
    keys = {k.strip() for k in wanted.split(",")}
    return tuple(p for p in (*peers, *EXTRA_PEERS) if p.key in keys)


def run(section: Section, quick: bool) -> None:
    import mlflow.pyfunc

    warmup_s, seconds = durations(quick)
    os.environ.update(QUIET_ENV)
    outcomes: dict[str, Outcome] = {}
    peers = selected()
    with workdir("peers") as tmp, mlflow_server(tmp / "mlflow") as registry:
        log("peers: fitting and registering the model")
        model = prepare_model(tmp / "model", tracking_uri=registry.base_url)
        frame = _frame(model.records[:CHECK_ROWS], model)
        expected = [
            float(v) for v in mlflow.pyfunc.load_model(str(model.local_model)).predict(frame)
        ]
        ctx = Context(tmp, model, registry.base_url)
        for peer in peers:
            log(f"peers: {peer.label}")
            outcomes[peer.key] = measure(peer, ctx, expected, warmup_s, seconds)
    save(outcomes)
    report(section, peers, outcomes, warmup_s, seconds)


def save(outcomes: dict[str, Outcome], path: Path = PEERS_STATE / "last-run.json") -> None:
    """Every figure of the run, as JSON beside the venvs (for a closer look)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                key: {
                    "error": o.error,
                    "steal": o.steal,
                    "cells": {f"{s}x{c}": r.to_dict() for (s, c), r in o.cells.items()},
                }
                for key, o in outcomes.items()
            },
            indent=1,
        )
    )


def _frame(rows: list[dict[str, Any]], model: PreparedModel) -> Any:
    import pandas as pd

    return pd.DataFrame(rows)[model.features]


# -- the table ----------------------------------------------------------------------------

BUSY = (8, 64)  # concurrencies where driftloop must lead the best peer by LEAD
LEAD = 1.25
P99_BOUND = 1.2  # driftloop's p99 at c1 at most this × the FastAPI wrapper's


def acceptance(outcomes: dict[str, Outcome], failed: list[str]) -> list[tuple[str, str, str, bool]]:
    """Issue #15's acceptance as (what, wanted, measured, met) rows: ≥ LEAD× the best peer
    at c8/c64 for both body sizes; at c1 ≥ 1× the FastAPI wrapper's req/s and a p99 at
    most P99_BOUND× its p99 (every cell of the one run)."""
    mine, fastapi = outcomes.get("driftloop"), outcomes.get("fastapi")
    missing = "driftloop failed" if mine is None or mine.error else None
    rows: list[tuple[str, str, str, bool]] = []
    busy: list[tuple[float, str]] = []
    for size in SIZES:
        for concurrency in BUSY:
            best = best_peer(outcomes, size, concurrency, lambda r: r.rps)
            if missing or best is None or not best[1].rps:
                continue
            value = mine.cells[(size, concurrency)].rps / best[1].rps  # type: ignore[union-attr]
            busy.append((value, f"{size} rec c{concurrency} vs {best[0]}"))
    rows.append(
        _worst_row(
            "driftloop (log + API key, defaults) vs the best peer, c8 and c64, 1 and 100 records",
            f"≥ {LEAD:g}×",
            busy,
            lambda v: v >= LEAD,
            missing or "no peer ran",
            failed,
        )
    )
    calm: list[tuple[float, str]] = []
    tails: list[tuple[float, str]] = []
    if not missing and fastapi is not None and not fastapi.error:
        for size in SIZES:
            me, them = mine.cells[(size, 1)], fastapi.cells[(size, 1)]  # type: ignore[union-attr]
            if them.rps:
                calm.append((me.rps / them.rps, f"{size} rec"))
            if them.p99_ms:
                tails.append(
                    (
                        me.p99_ms / them.p99_ms,
                        f"{size} rec: {fmt(me.p99_ms)} vs {fmt(them.p99_ms)} ms",
                    )
                )
    why = missing or "the FastAPI wrapper did not run"
    rows.append(
        _worst_row(
            "driftloop vs the FastAPI wrapper at c1, req/s",
            "≥ 1×",
            calm,
            lambda v: v >= 1,
            why,
            failed,
        )
    )
    rows.append(
        _worst_row(
            "driftloop's p99 at c1 vs the FastAPI wrapper's",
            f"≤ {P99_BOUND:g}×",
            [(-v, w) for v, w in tails],
            lambda v: -v <= P99_BOUND,
            why,
            failed,
            sign=-1,
        )
    )
    return rows


def _worst_row(
    what: str,
    wanted: str,
    values: list[tuple[float, str]],
    ok: Callable[[float], bool],
    missing: str,
    failed: list[str],
    sign: int = 1,
) -> tuple[str, str, str, bool]:
    """One target row judged on its worst cell (`values` oriented so lower is worse)."""
    if not values:
        return what, wanted, f"no cell: {missing}", False
    worst = min(values)
    got = f"worst {sign * worst[0]:.2f}× ({worst[1]})"
    if failed:
        got += f"; failed: {', '.join(failed)}"
    return what, wanted, got, ok(worst[0]) and not failed


def best_peer(
    outcomes: dict[str, Outcome], size: int, concurrency: int, key: Callable[[LoadResult], float]
) -> tuple[str, LoadResult] | None:
    """The peer (not driftloop) with the highest `key` in a cell, among those that ran."""
    cells = [
        (name, o.cells[(size, concurrency)])
        for name, o in outcomes.items()
        if not name.startswith("driftloop") and not o.error and (size, concurrency) in o.cells
    ]
    return max(cells, key=lambda kv: key(kv[1]), default=None)


def _rps(result: LoadResult, seconds: float) -> float | str:
    """A cell's req/s; a cell where no request came back says so (not "0.00")."""
    return result.rps if result.requests else f"none answered in {fmt(seconds)} s"


def report(
    section: Section,
    peers: tuple[Peer, ...],
    outcomes: dict[str, Outcome],
    warmup_s: float,
    seconds: float,
) -> None:
    labels = {p.key: p.label for p in peers}
    cells = [(s, c) for s in SIZES for c in CONCURRENCY]
    columns = ["server", *(f"{s} rec c{c} req/s" for s, c in cells)]
    columns += [f"{s} rec c1 p99 ms" for s in SIZES] + ["failed requests", "steal"]
    table = Table("Requests per second, same model and rows, one server at a time", columns)
    for peer in peers:
        outcome = outcomes[peer.key]
        if outcome.error:
            table.add(peer.label, *[f"failed: {outcome.error}"] + [""] * (len(columns) - 2))
            continue
        table.add(
            peer.label,
            *(_rps(outcome.cells[c], seconds + (warmup_s if c[1] == 1 else 0)) for c in cells),
            *(outcome.cells[(s, 1)].p99_ms for s in SIZES),
            sum(r.failed for r in outcome.cells.values()),
            "–" if outcome.steal is None else f"{outcome.steal:.1%}",
        )
    ratios: list[str] = []
    mine = outcomes.get("driftloop")
    for size, concurrency in cells:
        best = best_peer(outcomes, size, concurrency, lambda r: r.rps)
        if mine is None or mine.error or best is None:
            ratios.append("–")
            continue
        if not best[1].rps:
            ratios.append(f"– ({best[0]}: 0 req/s)")
            continue
        value = mine.cells[(size, concurrency)].rps / best[1].rps
        ratios.append(f"{value:.2f}× ({best[0]})")
    for size in SIZES:  # p99: lower is better, so best peer / driftloop (> 1: driftloop ahead)
        best = best_peer(outcomes, size, 1, lambda r: -r.p99_ms)
        if mine is None or mine.error or best is None:
            ratios.append("–")
            continue
        if not mine.cells[(size, 1)].p99_ms:
            ratios.append("– (driftloop: no latency)")
            continue
        value = best[1].p99_ms / mine.cells[(size, 1)].p99_ms
        ratios.append(f"{value:.2f}× ({best[0]})")
    table.rows.append(["**driftloop / best peer**", *ratios, "", ""])
    section.tables.append(table)
    failed = [labels[k] for k, o in outcomes.items() if o.error]
    for target in acceptance(outcomes, failed):
        section.target(*target)
    tool = "wrk" if have_wrk() else "the bundled asyncio client (wrk missing)"
    section.notes.append(
        f"Load: {tool}, 1 thread, closed loop, from its own process; per c8/c64 cell a "
        f"{fmt(warmup_s)} s warm-up then {fmt(seconds)} s measured "
        "(`DRIFTLOOP_BENCH_PEER_WARMUP_S`, `DRIFTLOOP_BENCH_PEER_SECONDS`); a c1 cell counts "
        f"every request of its {fmt(warmup_s + seconds)} s, none discarded: the 1-record c1 "
        "cell is the first after the server said ready and answered the check, so its req/s "
        "and p99 include the server's first seconds. One server runs at "
        "a time, each with its defaults (driftloop: 2 serving workers; MLServer: its HTTP "
        "process and one inference worker; the others one process) and its own request "
        "format for the same rows: "
        '`{"records": [...]}` (driftloop, FastAPI, BentoML, Ray), `dataframe_split` (mlflow), '
        "V2 inference protocol with pandas content type (MLServer). Before loading, each "
        f"server answered {CHECK_ROWS} rows with the pyfunc's predictions within {TOLERANCE:g}."
    )
    section.notes.append(
        "Last row: driftloop's req/s over the best peer's in that cell, and for p99 the best "
        "peer's p99 over driftloop's (both > 1× when driftloop is ahead); the best peer is named. "
        "driftloop logs every prediction (fsynced before answering) and checks an API key; "
        "no peer does either. Its commit stages a request's records as one row; indexing them "
        "is left to the first read after them (§2, last table). MLServer: adaptive batching "
        "max_batch_size 64, max_batch_time 2 ms; "
        "Ray Serve: `@serve.batch` with the same bounds; BentoML: `batchable=True`, "
        "max_batch_size 2048 (driftloop's default)."
    )
    section.notes.append(
        "Steal: the share of these virtual cores' time the hypervisor gave to others while "
        "that server's cells ran (/proc/stat); a server measured while it was high ran on "
        "less machine than the others, so its ratios say more about the host than about it."
    )
