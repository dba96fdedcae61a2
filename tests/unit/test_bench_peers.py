"""The peers benchmark's pure parts: request formats, the answer check, the table."""

from __future__ import annotations

import json

import pytest

from bench.common import Section
from bench.peers import formats
from bench.peers.envs import model_requirements
from bench.peers.run import (
    CONCURRENCY,
    SIZES,
    Endpoint,
    Outcome,
    Peer,
    acceptance,
    best_peer,
    compare,
    durations,
    load_cell,
    report,
    selected,
)
from bench.serving.loadgen import LoadResult

ROWS = [
    {"temp": 0.24, "hr": "0", "holiday": 0, "weathersit": "clear"},
    {"temp": 0.5, "hr": "13", "holiday": 1, "weathersit": "mist"},
]
FEATURES = ["temp", "hr", "holiday", "weathersit"]


def test_records_and_dataframe_split_carry_the_same_rows() -> None:
    records = json.loads(formats.records_body(ROWS, FEATURES))["records"]
    split = json.loads(formats.dataframe_split_body(ROWS, FEATURES))["dataframe_split"]
    assert records == ROWS
    assert split["columns"] == FEATURES
    assert [dict(zip(split["columns"], row, strict=True)) for row in split["data"]] == ROWS


def test_v2_body_has_one_typed_input_per_column() -> None:
    body = json.loads(formats.v2_body(ROWS, FEATURES))
    assert body["parameters"] == {"content_type": "pd"}
    by_name = {i["name"]: i for i in body["inputs"]}
    assert list(by_name) == FEATURES
    assert by_name["temp"]["datatype"] == "FP64"
    assert by_name["holiday"]["datatype"] == "INT64"
    assert by_name["hr"]["datatype"] == "BYTES"
    assert by_name["hr"]["parameters"] == {"content_type": "str"}
    assert by_name["weathersit"]["data"] == ["clear", "mist"]
    assert all(i["shape"] == [2] for i in body["inputs"])


def test_decoders_read_each_answer_shape() -> None:
    assert formats.RECORDS.decode({"predictions": [1.5, 2.0], "request_ids": []}) == [1.5, 2.0]
    answer = {"outputs": [{"name": "output-1", "data": [3.0, 4.0]}]}
    assert formats.V2.decode(answer) == [3.0, 4.0]


def test_compare_accepts_equal_answers_and_names_the_difference() -> None:
    assert compare([1.0, 2.0 + 1e-9], [1.0, 2.0]) is None
    assert "largest difference" in (compare([1.0, 2.1], [1.0, 2.0]) or "")
    assert compare([1.0], [1.0, 2.0]) == "1 predictions for 2 rows"
    assert "non-numeric" in (compare(["a", "b"], [1.0, 2.0]) or "")


def test_durations_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRIFTLOOP_BENCH_PEER_WARMUP_S", raising=False)
    monkeypatch.delenv("DRIFTLOOP_BENCH_PEER_SECONDS", raising=False)
    assert durations(quick=False) == (2.0, 6.0)
    assert durations(quick=True) == (1.0, 3.0)
    monkeypatch.setenv("DRIFTLOOP_BENCH_PEER_SECONDS", "10")
    assert durations(quick=False) == (2.0, 10.0)


def test_c1_cells_count_their_first_seconds_and_busy_cells_warm_up_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[int, float]] = []

    def fake_load(url, body, concurrency, seconds, headers):
        calls.append((concurrency, seconds))
        n = len(calls)
        return LoadResult("wrk", concurrency, seconds, n, n / seconds, 1.0, 1.0, 1.0, 1.0, 0)

    monkeypatch.setattr("bench.peers.run.run_load", fake_load)
    endpoint = Endpoint("http://127.0.0.1:1/predict", formats.RECORDS)
    measured = load_cell(endpoint, b"{}", 1, 2.0, 6.0)
    assert calls == [(1, 8.0)]  # one run from the first request: nothing discarded
    assert measured.requests == 1
    calls.clear()
    measured = load_cell(endpoint, b"{}", 64, 2.0, 6.0)
    assert calls == [(64, 2.0), (64, 6.0)]  # the warm-up's figures are dropped
    assert measured.requests == 2


def test_model_requirements_skip_comments_and_options(tmp_path) -> None:
    text = "# pinned\n-r other.txt\nmlflow==3.1\n\npandas==2.3\n"
    (tmp_path / "requirements.txt").write_text(text)
    assert model_requirements(tmp_path) == ["mlflow==3.1", "pandas==2.3"]
    assert model_requirements(tmp_path / "missing") == []


def _cells(rps: float, p99: float) -> dict[tuple[int, int], LoadResult]:
    return {
        (s, c): LoadResult("wrk", c, 1.0, int(rps), rps, 1.0, 1.0, p99, p99, 0)
        for s in SIZES
        for c in CONCURRENCY
    }


def _start(_ctx):  # never called by report()
    raise AssertionError


def test_report_divides_by_the_best_peer_and_lists_failures() -> None:
    peers = (
        Peer("driftloop", "driftloop", _start),
        Peer("fastapi", "FastAPI", _start),
        Peer("mlserver", "MLServer", _start),
        Peer("ray", "Ray", _start),
    )
    outcomes = {
        "driftloop": Outcome(cells=_cells(300.0, 4.0), steal=0.125),
        "fastapi": Outcome(cells=_cells(100.0, 2.0)),
        "mlserver": Outcome(cells=_cells(200.0, 8.0), steal=0.0),
        "ray": Outcome(error="install of ray failed: no wheel"),
    }
    section = Section("peers", "5. peers")
    report(section, peers, outcomes, 2.0, 6.0)
    [table] = section.tables
    rows = {row[0]: row for row in table.rows}
    assert rows["Ray"][1] == "failed: install of ray failed: no wheel"
    assert len(rows["Ray"]) == len(table.columns) == len(rows["driftloop"])
    assert table.columns[-1] == "steal"
    assert [rows[k][-1] for k in ("driftloop", "FastAPI", "MLServer")] == ["12.5%", "–", "0.0%"]
    last = table.rows[-1]
    assert last[1] == "1.50× (mlserver)"  # 300 / 200 req/s
    assert last[len(SIZES) * len(CONCURRENCY) + 1] == "0.50× (fastapi)"  # p99 2 ms vs 4 ms
    busy, calm, tail = section.targets
    assert "best peer" in busy[0] and busy[1] == "≥ 1.25×"
    assert busy[2].startswith("worst 1.50× (") and "failed: Ray" in busy[2]
    assert busy[3] is False  # 1.5× would do, but a peer failed
    assert calm[2].startswith("worst 3.00×") and calm[3] is False  # Ray failed
    assert tail[1] == "≤ 1.2×" and tail[2].startswith("worst 2.00× (") and tail[3] is False


def test_acceptance_is_judged_on_the_issue_figures() -> None:
    """≥ 1.25× the best peer at c8/c64, ≥ 1× FastAPI at c1, p99 ≤ 1.2× FastAPI's."""
    outcomes = {
        "driftloop": Outcome(cells=_cells(130.0, 2.3)),
        "fastapi": Outcome(cells=_cells(100.0, 2.0)),
        "mlserver": Outcome(cells=_cells(100.0, 8.0)),
    }
    rows = acceptance(outcomes, [])
    assert [row[3] for row in rows] == [True, True, True]  # 1.3×, 1.3×, 1.15×
    outcomes["mlserver"] = Outcome(cells=_cells(110.0, 8.0))  # 130 / 110 = 1.18× < 1.25×
    outcomes["fastapi"] = Outcome(cells=_cells(100.0, 1.9))  # 2.3 / 1.9 = 1.21× > 1.2×
    rows = acceptance(outcomes, [])
    assert [row[3] for row in rows] == [False, True, False]
    assert rows[0][2].startswith("worst 1.18× (")


def test_report_without_driftloop_says_so() -> None:
    peers = (Peer("driftloop", "driftloop", _start), Peer("fastapi", "FastAPI", _start))
    outcomes = {"driftloop": Outcome(error="exited (1)"), "fastapi": Outcome(cells=_cells(1, 1))}
    section = Section("peers", "5. peers")
    report(section, peers, outcomes, 2.0, 6.0)
    assert section.targets[0][2] == "no cell: driftloop failed"
    assert section.targets[0][3] is False


def test_report_survives_empty_cells() -> None:
    """A cell without requests (a stalled server) gives "–", not a crash."""
    peers = (Peer("driftloop", "driftloop", _start), Peer("fastapi", "FastAPI", _start))
    outcomes = {
        "driftloop": Outcome(cells=_cells(10.0, 0.0)),
        "fastapi": Outcome(cells=_cells(0.0, 2.0)),
    }
    section = Section("peers", "5. peers")
    report(section, peers, outcomes, 2.0, 6.0)
    rows = section.tables[0].rows
    assert rows[1][1] == "none answered in 8.00 s"  # fastapi's c1 cell: 2 s + 6 s counted
    assert rows[1][2] == "none answered in 6.00 s"  # its c8 cell: the 6 s after a warm-up
    last = rows[-1]
    assert last[1] == "– (fastapi: 0 req/s)"
    assert last[-3] == "– (driftloop: no latency)"  # then failed requests, steal


def test_the_base_ref_peer_runs_only_when_named_and_is_never_the_best_peer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DRIFTLOOP_BENCH_PEERS", raising=False)
    assert "driftloop-base" not in [p.key for p in selected()]
    monkeypatch.setenv("DRIFTLOOP_BENCH_PEERS", "driftloop,driftloop-base,mlserver")
    assert [p.key for p in selected()] == ["driftloop", "mlserver", "driftloop-base"]
    outcomes = {
        "driftloop": Outcome(cells=_cells(300.0, 4.0)),
        "driftloop-base": Outcome(cells=_cells(900.0, 1.0)),
        "mlserver": Outcome(cells=_cells(200.0, 8.0)),
    }
    best = best_peer(outcomes, 1, 8, lambda r: r.rps)
    assert best is not None and best[0] == "mlserver"
