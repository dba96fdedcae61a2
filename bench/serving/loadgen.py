"""Closed-loop load at a fixed concurrency from a separate process: wrk, else asyncio.

`run_load(url, body, concurrency, seconds, headers)` returns requests/s, p50/p95/p99
latency (ms) and the failed requests (non-2xx answers, socket errors and timeouts).
wrk (a maintained C load generator, `apt-get install wrk`) is used when it is on the
PATH: it costs the 2-core machine far less CPU than any Python client. Without it,
this module runs itself as an aiohttp client with `concurrency` connections, each
sending its next request as soon as the previous one is answered (same model as wrk).

    python -m bench.serving.loadgen URL BODY_FILE -c 8 -d 5 -H "Authorization: Bearer k"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

WRK_SCRIPT = r"""
local f = io.open(os.getenv("BENCH_BODY_FILE"), "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
local extra = os.getenv("BENCH_HEADERS") or ""
for line in string.gmatch(extra, "[^\n]+") do
  local k, v = string.match(line, "^([^:]+):%s*(.*)$")
  if k then wrk.headers[k] = v end
end
local failed = 0
function response(status, headers, body)
  if status >= 300 then failed = failed + 1 end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "socket_errors": %d, "non2xx": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, e.connect + e.read + e.write + e.timeout,
    e.status))
end
"""


@dataclass(frozen=True)
class LoadResult:
    """One closed-loop run."""

    tool: str
    concurrency: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    failed: int

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_load(
    url: str,
    body: bytes,
    concurrency: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
) -> LoadResult:
    """Load `url` with POST `body` from a separate process (wrk, else this module)."""
    headers = headers or {}
    with tempfile.TemporaryDirectory(prefix="driftloop-load-") as tmp:
        body_file = Path(tmp) / "body.json"
        body_file.write_bytes(body)
        if have_wrk():
            return _wrk(url, body_file, concurrency, seconds, headers, timeout_s, Path(tmp))
        argv = [
            sys.executable,
            "-m",
            "bench.serving.loadgen",
            url,
            str(body_file),
            "-c",
            str(concurrency),
            "-d",
            str(seconds),
            "--timeout",
            str(timeout_s),
        ]
        for key, value in headers.items():
            argv += ["-H", f"{key}: {value}"]
        from bench.common import REPO, quiet_env

        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=seconds + timeout_s + 60,
            cwd=REPO,
            env=quiet_env(),
        )
        if done.returncode != 0:
            raise RuntimeError(f"asyncio load generator failed: {done.stderr[-2000:]}")
        return LoadResult(**json.loads(done.stdout.strip().splitlines()[-1]))


def _wrk(
    url: str,
    body_file: Path,
    concurrency: int,
    seconds: float,
    headers: dict[str, str],
    timeout_s: float,
    tmp: Path,
) -> LoadResult:
    import os

    script = tmp / "post.lua"
    script.write_text(WRK_SCRIPT)
    env = {
        **os.environ,
        "BENCH_BODY_FILE": str(body_file),
        "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in headers.items()),
    }
    argv = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=seconds + timeout_s + 30
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-1000:]}{done.stderr}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    duration = raw["duration_us"] / 1e6
    return LoadResult(
        tool="wrk",
        concurrency=concurrency,
        seconds=duration,
        requests=raw["requests"],
        rps=raw["requests"] / duration if duration else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p95_ms=raw["p95_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        failed=raw["socket_errors"] + raw["non2xx"],
    )


# -- the asyncio fallback (runs in its own process) -----------------------------------------


async def _closed_loop(
    url: str, body: bytes, concurrency: int, seconds: float, headers: dict[str, str], timeout: float
) -> LoadResult:
    import aiohttp

    latencies: list[float] = []
    failed = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    all_headers = {"Content-Type": "application/json", **headers}

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failed
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=all_headers) as response:
                    await response.read()
                    ok = response.status < 300
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            latencies.append(time.perf_counter() - started)
            failed += not ok

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies) or [0.0]

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    return LoadResult(
        tool="asyncio",
        concurrency=concurrency,
        seconds=elapsed,
        requests=len(latencies),
        rps=len(latencies) / elapsed,
        p50_ms=pct(50),
        p95_ms=pct(95),
        p99_ms=pct(99),
        max_ms=ordered[-1] * 1000,
        failed=failed,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="closed-loop POST load (asyncio fallback)")
    parser.add_argument("url")
    parser.add_argument("body_file")
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("-H", "--header", action="append", default=[])
    args = parser.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    body = Path(args.body_file).read_bytes()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(
        _closed_loop(args.url, body, args.concurrency, args.duration, headers, args.timeout)
    )
    print(json.dumps(result.to_dict()))


if __name__ == "__main__":
    main()
