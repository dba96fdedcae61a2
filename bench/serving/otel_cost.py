"""CPU per request of BentoML's OpenTelemetry middleware, with and without the route excluded.

    python -m bench.serving.otel_cost

BentoML wraps every service in ``opentelemetry.instrumentation.asgi.OpenTelemetryMiddleware``
with its own tracer provider (sample rate 0 unless configured: nothing is recorded). This
times one ``POST /predict`` through that middleware around a trivial ASGI app, in process,
three ways: the bare app, the middleware as BentoML configures it by default, and the
middleware with ``/predict$`` in ``tracing.excluded_urls`` (what ``driftloop serve`` sets
unless ``DRIFTLOOP_TRACE_PREDICTIONS=true``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

SCOPE: dict[str, Any] = {
    "type": "http",
    "http_version": "1.1",
    "method": "POST",
    "path": "/predict",
    "raw_path": b"/predict",
    "query_string": b"",
    "scheme": "http",
    "server": ("127.0.0.1", 3000),
    "client": ("127.0.0.1", 5555),
    "headers": [
        (b"host", b"127.0.0.1:3000"),
        (b"content-type", b"application/json"),
        (b"authorization", b"Bearer x"),
    ],
}


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b'{"predictions":[1.0]}'})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"{}", "more_body": False}


async def _send(message: Any) -> None:
    return None


def cpu_us_per_request(app: Any, requests: int = 20000) -> float:
    async def go() -> float:
        for _ in range(200):
            await app(dict(SCOPE), _receive, _send)
        began = time.process_time()
        for _ in range(requests):
            await app(dict(SCOPE), _receive, _send)
        return (time.process_time() - began) / requests * 1e6

    return asyncio.run(go())


def main() -> None:
    from bentoml._internal.container import BentoMLContainer
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.util.http import ExcludeList

    provider = BentoMLContainer.tracer_provider.get()

    def middleware(excluded: list[str]) -> Any:
        return OpenTelemetryMiddleware(
            _app,
            excluded_urls=ExcludeList(excluded),
            default_span_details=None,
            tracer_provider=provider,
        )

    bare = cpu_us_per_request(_app)
    traced = cpu_us_per_request(middleware([]))
    excluded = cpu_us_per_request(middleware(["/predict$", "/feedback$"]))
    print(
        f"CPU per request: bare app {bare:.1f} µs; through BentoML's OpenTelemetry "
        f"middleware {traced:.1f} µs; with /predict excluded {excluded:.1f} µs"
    )


if __name__ == "__main__":
    main()
