"""Hostile input against a real `bentoml serve`: every malformed request gets a 4xx
naming the problem (never a 5xx), fuzzing the OpenAPI schema finds no server error,
and /healthz keeps answering while the largest legal body is processed.

One service (API key, default body limits) is shared by the tests of this module;
models and helpers come from test_serving.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from test_serving import (
    API_KEY,
    Models,
    Served,
    records,
    register,
    settings_for,
    start,
)
from test_serving import home as home  # the module-scoped fixtures, shared
from test_serving import models as models

from bentos.packaging import package_version
from config.serving import ServingSettings
from driftloop import procs
from registry import Registry

pytestmark = pytest.mark.integration

DEFAULTS = ServingSettings()
MAX_BODY = DEFAULTS.max_body_bytes
MAX_RECORDS = DEFAULTS.max_records_per_request
HEALTH_P99_MS = 50.0  # issue #13
# Measured over ~1,000 probes (p99): 17.4-23.9 ms locally and 82.6 ms in a clean clone's CI
# run when the gateway parsed and validated large bodies in worker threads; 9.6-27.0 ms in
# five runs on a loaded machine since they are parsed and validated a piece per event-loop
# turn (bench/README.md, "/healthz while the largest legal bodies are processed").
ROUNDS = 4  # each sends the three bodies at the limits, one after the other
# p99 over 1,000 probes is the 10th slowest: one stray pause on a shared CI machine (the
# test's own threads included) does not decide it, a service that stalls does.
PROBES = 1000


@pytest.fixture(scope="module")
def hostile(
    mlflow_server: procs.Server,
    models: Models,
    home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """A keyed service with the default limits (body, records per request); the API key
    may post labels too (`feedback_with_api_key`), so /feedback bodies reach their checks
    (the key scopes themselves are tested in test_feedback.py)."""
    name = f"serve-hostile-{uuid.uuid4().hex[:6]}"
    uri = mlflow_server.base_url
    v1, _ = register(uri, name, models)
    package_version(name, v1.version, uri, home=home)
    Registry(name, uri).set_alias("champion", v1.version, reason="hostile-input test")
    settings = settings_for(
        tmp_path_factory.mktemp("hostile"),
        name,
        uri,
        api_key=API_KEY,
        feedback_with_api_key=True,
    )
    served = start("serve-hostile", settings, home)
    yield served
    served.server.stop()


def post(
    served: Served, path: str, body: bytes, content_type: str | None = "application/json"
) -> tuple[httpx.Response, float]:
    headers = dict(served.headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    started = time.monotonic()
    response = httpx.post(f"{served.url}{path}", content=body, headers=headers, timeout=30)
    return response, time.monotonic() - started


def _record(models: Models, **overrides: Any) -> dict[str, Any]:
    return {**records(models, 1)[0], **overrides}


def _body(items: list[Any], field: str = "records") -> bytes:
    return json.dumps({field: items}, separators=(",", ":")).encode()


def _hostile_cases(models: Models) -> dict[str, tuple[str, bytes, str | None, int, str]]:
    """name -> (path, body, content type, expected status, words the answer must hold).

    Status 0: any answer below 500 (a label of 2**64 is a number; whether /feedback takes
    it is the label check's call, but it must never fail the service).
    """
    one = _record(models)
    cases = {
        "nested 5,000 deep": (
            b'{"records":' + b"[" * 5000 + b"]" * 5000 + b"}",
            400,
            "nested deeper",
        ),
        "nested 40 deep in a feature": (
            _body([{**one, "temp": json.loads("[" * 40 + "]" * 40)}]),
            400,
            "nested deeper than 32",
        ),
        "lone surrogate": (
            _body([{**one, "request_id": "SURROGATE"}]).replace(b'"SURROGATE"', b'"\\ud800"'),
            400,
            "surrogate",
        ),
        "2**64 in an integer feature": (_body([{**one, "hr": 2**64}]), 422, "expected an integer"),
        "2**63 in an integer feature": (_body([{**one, "hr": 2**63}]), 422, "between"),
        "10**400": (_body([{**one, "temp": 10**400}]), 400, "does not fit 64 bits"),
        "NaN": (_body([{**one, "temp": "NAN"}]).replace(b'"NAN"', b"NaN"), 400, "NaN"),
        "Infinity": (_body([{**one, "temp": float("inf")}]), 400, "not a JSON number"),
        "empty list": (_body([]), 422, "non-empty list"),
        "one record over the limit": (
            _body([{}] * (MAX_RECORDS + 1)),
            422,
            "max_records_per_request",
        ),
        "300,000 empty records (0.9 MB)": (_body([{}] * 300_000), 422, "max_records_per_request"),
        "as many empty records as allowed": (
            _body([{}] * MAX_RECORDS),
            422,
            "first 20 of >=21 errors",
        ),
        "a list body": (json.dumps([one]).encode(), 422, "expected a JSON object"),
        "a string body": (b'"records"', 422, "expected a JSON object"),
        "records is an object": (b'{"records": {"a": 1}}', 422, "non-empty list"),
        "records that are not objects": (_body([one, 5, "x"]), 422, "expected an object, got 5"),
        "duplicate request ids": (
            _body([{**one, "request_id": "dup"}, {**one, "request_id": "dup"}]),
            422,
            "duplicate request_id 'dup'",
        ),
        "request_id true": (_body([{**one, "request_id": True}]), 422, "request_id"),
        "request_id 1.5": (_body([{**one, "request_id": 1.5}]), 422, "expected an id"),
        "request_id object": (_body([{**one, "request_id": {"a": 1}}]), 422, "expected an id"),
        "request_id of 300 chars": (_body([{**one, "request_id": "x" * 300}]), 422, "1-128"),
        "entity_id list": (_body([{**one, "entity_id": [1]}]), 422, "entity_id"),
        "invalid JSON": (b'{"records": [', 400, "invalid JSON"),
    }
    out = {
        name: ("/predict", body, "application/json", status, words)
        for name, (body, status, words) in cases.items()
    }
    good = _body([one])
    out |= {
        "Application/JSON": ("/predict", good, "Application/JSON", 200, "predictions"),
        "application/x+json": ("/predict", good, "application/x+json", 200, "predictions"),
        "charset=latin-1": ("/predict", good, "application/json; charset=latin-1", 415, "latin-1"),
        "no content type": ("/predict", good, None, 415, "(none)"),
        "text/plain": ("/predict", good, "text/plain", 415, "text/plain"),
        "label 2**64": (
            "/feedback",
            _body([{"request_id": "r1", "label": 2**64}], "labels"),
            "application/json",
            0,
            "",
        ),
        "label NaN": (
            "/feedback",
            b'{"labels": [{"request_id": "r1", "label": NaN}]}',
            "application/json",
            400,
            "NaN",
        ),
        "labels over the limit": (
            "/feedback",
            _body([{"request_id": "r", "label": 1}] * (MAX_RECORDS + 1), "labels"),
            "application/json",
            422,
            "max_records_per_request",
        ),
    }
    return out


def test_hostile_bodies_get_a_quick_4xx_naming_the_problem(hostile: Served, models: Models) -> None:
    wrong: list[str] = []
    for name, (path, body, content_type, status, words) in _hostile_cases(models).items():
        response, elapsed = post(hostile, path, body, content_type)
        status_ok = response.status_code == status or (status == 0 and response.status_code < 500)
        if not status_ok or words not in response.text or elapsed > 5.0:
            wrong.append(
                f"{name}: {response.status_code} in {elapsed:.1f} s, "
                f"wanted {status} with {words!r}: {response.text[:300]}"
            )
    assert not wrong, "\n".join(wrong)
    assert httpx.get(f"{hostile.url}/healthz", timeout=5).status_code == 200


def test_metadata_needs_the_key_health_and_metrics_do_not(hostile: Served) -> None:
    assert httpx.get(f"{hostile.url}/metadata", timeout=5).status_code == 401
    answer = httpx.get(f"{hostile.url}/metadata", headers=hostile.headers, timeout=5)
    assert answer.status_code == 200 and answer.json()["auth_required"] is True
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{hostile.url}{path}", timeout=5).status_code == 200, path


# -- property-based fuzzing of the OpenAPI schema --------------------------------------------

FUZZ_EXAMPLES = 40  # per operation and mode: the whole fuzz runs in seconds


def test_fuzzing_the_openapi_schema_finds_no_server_error(hostile: Served) -> None:
    schema = schemathesis.openapi.from_url(f"{hostile.url}/docs.json", timeout=10)
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/predict", "/feedback"} <= paths, paths
    seen: dict[str, set[int]] = {}
    problems: list[str] = []

    def fuzz(operation: Any, mode: GenerationMode) -> None:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def one(case: Any) -> None:
            response = case.call(base_url=hostile.url, headers=hostile.headers, timeout=30)
            seen.setdefault(operation.label, set()).add(response.status_code)
            try:
                case.validate_response(response, checks=[not_a_server_error])
            except Exception as exc:  # collect all, report together
                problems.append(f"{operation.label}: {exc}")
            if 400 <= response.status_code < 500 and operation.method.upper() == "POST":
                body = response.json()
                if "detail" not in body and "error" not in body:
                    problems.append(f"{operation.label}: 4xx without a reason: {body}")

        one()

    nothing_to_negate = []
    for operation in operations:
        fuzz(operation, GenerationMode.POSITIVE)
        try:
            fuzz(operation, GenerationMode.NEGATIVE)
        except Unsatisfiable:  # e.g. GET /healthz: no input that could be made invalid
            nothing_to_negate.append(operation.label)
    assert "POST /predict" not in nothing_to_negate, nothing_to_negate
    print(f"fuzzing: statuses per operation {seen}; nothing to negate: {nothing_to_negate}")
    assert not problems, "\n".join(problems[:10])
    assert all(status < 500 for statuses in seen.values() for status in statuses), seen
    # the fuzzer reached validation, not only the front door
    assert 422 in seen["POST /predict"] or 400 in seen["POST /predict"], seen


# -- /healthz while the largest legal body is processed --------------------------------------


def largest_bodies(models: Models) -> dict[str, bytes]:
    """Bodies at the limits: the most valid records that fit, the same with the last one
    wrong (the slowest validation: every record through pydantic), MAX_RECORDS empty ones."""
    one = len(json.dumps(records(models, 1)[0], separators=(",", ":"))) + 1
    n = min(MAX_RECORDS, MAX_BODY // one)
    while len(body := _body(records(models, n))) > MAX_BODY:
        n -= 10
    rows = records(models, n)
    rows[-1]["temp"] = "warm"
    wrong = _body(rows)
    assert len(wrong) <= MAX_BODY
    return {"valid": body, "last record wrong": wrong, "empty records": _body([{}] * MAX_RECORDS)}


def p99(latencies_ms: list[float]) -> float:
    ordered = sorted(latencies_ms)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


@pytest.mark.slow
def test_healthz_p99_stays_under_50_ms_while_the_largest_legal_body_is_processed(
    hostile: Served, models: Models
) -> None:
    """Many probes (>= PROBES) while the bodies at the limits are processed, p99 over them;
    the same probes with the service idle first, to tell the machine's noise apart."""
    bodies = largest_bodies(models)
    headers = {**hostile.headers, "Content-Type": "application/json"}
    busy = threading.Event()
    done = threading.Event()
    answers: list[tuple[str, int, float]] = []
    idle_ms: list[float] = []
    busy_ms: list[float] = []

    def send() -> None:
        # Rounds of the large bodies until enough probes ran while one was in flight (a
        # fast machine answers a round sooner); at least ROUNDS, bounded in time.
        deadline = time.monotonic() + 180
        with httpx.Client(headers=headers, timeout=60) as client:
            rounds = 0
            while rounds < ROUNDS or (len(busy_ms) < PROBES and time.monotonic() < deadline):
                rounds += 1
                for name, body in bodies.items():
                    busy.set()
                    started = time.monotonic()
                    response = client.post(f"{hostile.url}/predict", content=body)
                    answers.append((name, response.status_code, time.monotonic() - started))
                    busy.clear()
        done.set()

    def probe(into: list[float], only_busy: bool) -> None:
        with httpx.Client(timeout=10) as client:
            while not done.is_set():
                if only_busy and not busy.wait(0.05):
                    continue
                started = time.perf_counter()
                response = client.get(f"{hostile.url}/healthz")
                took = (time.perf_counter() - started) * 1000.0
                if response.status_code == 200 and (busy.is_set() or not only_busy):
                    into.append(took)
                if not only_busy and len(into) >= 300:
                    return
                time.sleep(0.005)

    probe(idle_ms, only_busy=False)
    sender = threading.Thread(target=send)
    prober = threading.Thread(target=probe, args=(busy_ms, True))
    prober.start()
    sender.start()
    sender.join(300)
    done.set()
    prober.join(20)
    statuses = {(name, status) for name, status, _ in answers}
    assert statuses == {("valid", 200), ("last record wrong", 422), ("empty records", 422)}
    assert len(busy_ms) >= PROBES, f"only {len(busy_ms)} probes while busy"
    slowest = max(elapsed for _, _, elapsed in answers)
    print(
        f"/healthz p99 {p99(busy_ms):.1f} ms over {len(busy_ms)} probes while busy "
        f"(idle p99 {p99(idle_ms):.1f} ms); slowest large answer {slowest:.2f} s"
    )
    assert p99(busy_ms) <= HEALTH_P99_MS, (
        f"/healthz p99 {p99(busy_ms):.1f} ms over {len(busy_ms)} probes (max "
        f"{max(busy_ms):.0f} ms) while {len(bodies['valid'])}-byte bodies were processed "
        f"(slowest answer {slowest:.2f} s); idle: p99 {p99(idle_ms):.1f} ms"
    )
