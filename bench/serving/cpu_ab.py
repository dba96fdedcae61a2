"""CPU per request of `driftloop serve` at two (or more) versions of `bentos/`, side by side.

    python -m bench.serving.cpu_ab                          # the working tree vs BEFORE_COMMIT
    python -m bench.serving.cpu_ab --refs HEAD~3 3e8347a --size 100 --concurrency 8
    python -m bench.serving.cpu_ab --refs worktree HEAD --folders bentos predlog

On a shared machine req/s moves with whatever else runs; the CPU a server spends per
request does much less. This starts one MLflow server, registers the bench model, serves
it once per version (`worktree` = this checkout; any other ref = `bentos/` (or `--folders`) of
that git ref with the rest of the project from the working tree, as `run.py` serves the
"before" row), and then loads the servers in alternation (rotated order, `wrk`, one
body size and concurrency). Per run it reads the CPU time (user + system, from
``/proc/<pid>/stat`` via psutil) of every process of each server's tree before and after,
and prints CPU ms per request, req/s and p99 per run, then the medians and each
version's median CPU per request against the first's.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import tree_cpu_s
from bench.model import prepare_model
from bench.servers import checkout, driftloop_server, mlflow_server
from bench.serving.loadgen import run_load
from bench.serving.run import API_KEY, BEFORE_COMMIT, _settings


def connections_per_process(root_pid: int, port: int) -> list[int]:
    """Established connections on `port` held by each process of the tree (sorted)."""
    import psutil

    counts = []
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            n = sum(
                1
                for c in proc.net_connections("tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
            )
            if n:
                counts.append(n)
    return sorted(counts, reverse=True)


def accept_spread(server: Any, n: int) -> str:
    """Open `n` connections at once (as wrk does), then count them per worker process."""
    port = int(server.base_url.rsplit(":", 1)[1].split("/")[0])
    socks = []
    for _ in range(n):
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", port))
        socks.append(sock)
    time.sleep(0.3)
    spread = "/".join(map(str, connections_per_process(server.process.pid, port)))
    for sock in socks:
        sock.close()
    time.sleep(0.2)
    return spread


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", nargs="+", default=["worktree", BEFORE_COMMIT])
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--balance",
        type=int,
        default=0,
        help="first, N trials of opening `concurrency` "
        "connections at once: how they spread over the worker processes",
    )
    parser.add_argument("--env", action="append", default=[], help="REF:NAME=VALUE")
    parser.add_argument(
        "--folders",
        nargs="+",
        default=["bentos"],
        help="the project folders taken from each ref (the rest from the working tree)",
    )
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the servers below are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with (
        tempfile.TemporaryDirectory(prefix="driftloop-cpu-ab-") as folder,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(folder)
        registry = stack.enter_context(mlflow_server(tmp / "mlflow"))
        model = prepare_model(tmp / "model", tracking_uri=registry.base_url)
        servers = {}
        for i, ref in enumerate(args.refs):
            key = f"{i}:{ref}"
            code = None
            if ref != "worktree" and checkout(ref, tmp / f"code-{i}", tuple(args.folders)):
                code = tmp / f"code-{i}"
            env = {}
            for item in args.env:
                who, _, pair = item.partition(":")
                if who in (ref, str(i)):
                    name, _, value = pair.partition("=")
                    env[name] = value
            servers[key] = stack.enter_context(
                driftloop_server(
                    f"s{i}", tmp, _settings(model, tmp / f"state-{i}"), code=code, env=env
                )
            )
        body = model.body(args.size)
        for key, server in servers.items():
            if args.balance:
                spread = collections.Counter(
                    accept_spread(server, args.concurrency) for _ in range(args.balance)
                )
                print(f"{key}: {args.concurrency} connections per process: {dict(spread)}")
        for server in servers.values():
            run_load(server.base_url + "/predict", body, args.concurrency, 2.0, auth)  # warm-up
        cpu: dict[str, list[float]] = {k: [] for k in servers}
        rps: dict[str, list[float]] = {k: [] for k in servers}
        p99: dict[str, list[float]] = {k: [] for k in servers}
        keys = list(servers)
        print("| round | server | CPU ms/request | req/s | p99 ms | connections per process |")
        print("|---|---|---|---|---|---|", flush=True)
        for round_ in range(args.rounds):
            shift = round_ % len(keys)
            for key in keys[shift:] + keys[:shift]:
                server = servers[key]
                before = tree_cpu_s(server.process.pid)
                port = int(server.base_url.rsplit(":", 1)[1].split("/")[0])
                seen: list[list[int]] = []
                sampler = threading.Timer(
                    min(1.0, args.seconds / 2),
                    lambda seen=seen, pid=server.process.pid, port=port: seen.append(
                        connections_per_process(pid, port)
                    ),
                )
                sampler.start()
                got = run_load(
                    server.base_url + "/predict", body, args.concurrency, args.seconds, auth
                )
                sampler.join()
                used = tree_cpu_s(server.process.pid) - before
                per = 1000 * used / max(1, got.requests)
                cpu[key].append(per)
                rps[key].append(got.rps)
                p99[key].append(got.p99_ms)
                print(
                    f"| {round_} | {key} | {per:.2f} | {got.rps:.0f} | {got.p99_ms:.1f} | "
                    f"{'/'.join(map(str, seen[0] if seen else []))} |",
                    flush=True,
                )
        first = keys[0]
        print(f"\nmedians ({args.size} records, c={args.concurrency}):")
        for key in keys:
            ratios = [a / b for a, b in zip(cpu[key], cpu[first], strict=True)]
            print(
                f"  {key}: CPU {statistics.median(cpu[key]):.2f} ms/request "
                f"(per-round ratio to {first}: {', '.join(f'{r:.2f}' for r in ratios)}), "
                f"{statistics.median(rps[key]):.0f} req/s, "
                f"p99 {statistics.median(p99[key]):.1f} ms",
                flush=True,
            )


if __name__ == "__main__":
    main()
