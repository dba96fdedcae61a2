"""Data and prediction drift with Evidently 0.7, read into typed results; live performance.

``measure_drift`` samples both sides to a stated bound *before* Evidently sees them (a
1M-row window costs one index draw, not a 1M-row report), runs the metrics
``DataDriftPreset`` generates (``DriftedColumnsCount`` + ``ValueDrift`` per feature, not the
preset's own summary table, which recomputes every column's drift to draw it: a third of
the check) plus ``ValueDrift`` on the prediction column, and reads the results by metric type
and column from the report's run, never by position. Evidently chooses each column's test from
the reference size and column type (K-S / chi-square up to 1,000 rows, Wasserstein /
Jensen-Shannon above); a column drifts when its test fails.

A feature that is entirely missing in the current window cannot be tested by Evidently;
it counts as drifted (method ``"all values missing"``), since the model then sees only
imputed values. A feature entirely missing in the reference is not judged.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from monitoring.frames import category_key, category_keys, sample_rows
from monitoring.metrics import PRIMARY_METRICS, Task

if TYPE_CHECKING:
    from evidently.core.report import Snapshot as EvidentlyRun

_VALUE_DRIFT = "evidently:metric_v2:ValueDrift"
_ALL_MISSING = "all values missing"


@dataclass(frozen=True)
class FeatureDrift:
    """One column's drift: the test's score, which test, its threshold and the verdict.

    For p-value tests (K-S, chi-square, Z) a *low* score means drift; for distances
    (Wasserstein, Jensen-Shannon, PSI) a *high* one does.
    """

    score: float
    method: str
    threshold: float | None
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """Drift of one window against the reference."""

    n_reference: int
    n_current: int
    sampled: bool
    """Whether either side was cut down to ``max_rows``."""
    drift_share: float
    drifted_features: tuple[str, ...]
    per_feature: dict[str, FeatureDrift]
    dataset_drift: bool
    """``drift_share`` at or above ``drift_share_threshold`` (Evidently's dataset verdict)."""
    drift_share_threshold: float
    prediction_drift: FeatureDrift | None = None
    n_current_rows: int = 0
    """Rows in the window before sampling."""
    not_judged: tuple[str, ...] = field(default=())
    """Features Evidently could not test (all values missing in the reference)."""
    score_drift: FeatureDrift | None = None
    """A binary classifier's P(positive) compared as a number, when both sides logged it."""
    prediction_shares: dict[str, dict[str, float]] = field(default_factory=dict)
    """A classifier's label distribution: ``{"reference": {class: share}, "current": ...}``."""

    @property
    def feature_count(self) -> int:
        return len(self.per_feature) + len(self.not_judged)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly copy (NaN scores become None)."""
        data = asdict(self)
        for entry in [*data["per_feature"].values(), data["prediction_drift"], data["score_drift"]]:
            if entry is not None and isinstance(entry["score"], float):
                entry["score"] = None if math.isnan(entry["score"]) else entry["score"]
        data["drifted_features"] = list(self.drifted_features)
        data["not_judged"] = list(self.not_judged)
        return data


def measure_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: list[str],
    categorical: list[str],
    prediction_column: str | None = None,
    max_rows: int = 20_000,
    seed: int = 0,
    drift_share: float = 0.5,
    score_column: str | None = None,
) -> tuple[DriftResult, EvidentlyRun]:
    """Compare ``current`` with ``reference`` on ``features`` (and the prediction column).

    A classifier's prediction column goes in ``categorical`` (its label distribution is
    compared, and each class's share is reported); ``score_column`` is a binary
    classifier's P(positive), compared as a number where both sides have it.

    Each side is sampled down to ``max_rows`` rows (deterministic for ``seed``). Columns in
    ``categorical`` are compared as categories, the rest as numbers. Raises ``ValueError``
    for an empty side, missing columns or a window with nothing testable; the caller turns
    that into "no action" with the message as its reason. Returns the result and
    Evidently's run of the report (`save_report` writes it).
    """
    columns = _check_inputs(reference, current, features, categorical, prediction_column)
    score_column = _score_column(reference, current, columns, score_column)
    columns += [score_column] if score_column else []
    categories = set(categorical)
    ref, cur, sampled = _sides(reference, current, columns, categories, max_rows, seed)
    plan = _plan(ref, cur, features, prediction_column, score_column)
    run = _run_report(ref, cur, columns, categories, plan, drift_share)
    found = _read_value_drift(run)
    per_feature = _per_feature(found, features, plan)
    drifted = tuple(c for c, d in per_feature.items() if d.drifted)
    share = len(drifted) / len(features)
    result = DriftResult(
        n_reference=len(ref),
        n_current=len(cur),
        sampled=sampled,
        drift_share=share,
        drifted_features=drifted,
        per_feature=per_feature,
        dataset_drift=share >= drift_share,
        drift_share_threshold=drift_share,
        prediction_drift=found.get(plan.prediction) if plan.prediction else None,
        n_current_rows=len(current),
        not_judged=tuple(plan.empty_reference),
        score_drift=found.get(plan.score) if plan.score else None,
        prediction_shares=(
            label_shares(ref[prediction_column], cur[prediction_column])
            if prediction_column is not None and prediction_column in categories
            else {}
        ),
    )
    return result, run


@dataclass(frozen=True)
class _Plan:
    """What the report tests: the features both sides have, the prediction and score
    columns when both sides have them (None otherwise), and the features left out."""

    testable: list[str]
    empty_current: list[str]
    """Entirely missing in the window: drifted (the model sees only imputed values)."""
    empty_reference: list[str]
    """Entirely missing in the reference: not judged."""
    prediction: str | None
    score: str | None


def _score_column(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], score_column: str | None
) -> str | None:
    """The score column to compare, or None when a side did not log it (an older version)."""
    if score_column is None:
        return None
    if score_column in columns:
        raise ValueError(f"score column {score_column!r} is also a feature or the prediction")
    if score_column not in reference.columns or score_column not in current.columns:
        return None
    return score_column


def _sides(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    categories: set[str],
    max_rows: int,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """Both sides sampled to ``max_rows`` and prepared; whether either was sampled."""
    if len(reference) == 0:
        raise ValueError("the reference frame is empty: no rows to compare the window with")
    if len(current) == 0:
        raise ValueError(
            "the current window is empty: no traffic to compare with the reference yet"
        )
    ref, ref_sampled = sample_rows(reference, max_rows, seed)
    cur, cur_sampled = sample_rows(current, max_rows, seed + 1)
    prepared = _prepare(ref, columns, categories), _prepare(cur, columns, categories)
    return *prepared, ref_sampled or cur_sampled


def _plan(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    features: list[str],
    prediction_column: str | None,
    score_column: str | None,
) -> _Plan:
    """Which columns the report can test; a ValueError when nothing is testable."""

    def on_both_sides(column: str | None) -> str | None:
        if column is None or cur[column].isna().all() or ref[column].isna().all():
            return None
        return column

    empty_current = [c for c in features if cur[c].isna().all()]
    empty_reference = [c for c in features if ref[c].isna().all() and c not in empty_current]
    testable = [c for c in features if c not in empty_current and c not in empty_reference]
    prediction = on_both_sides(prediction_column)
    if not testable and prediction is None:
        raise ValueError(
            f"nothing to test for drift: every feature is missing in the window "
            f"({empty_current}) or in the reference ({empty_reference})"
        )
    score = on_both_sides(score_column)
    return _Plan(testable, empty_current, empty_reference, prediction, score)


def _run_report(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    columns: list[str],
    categories: set[str],
    plan: _Plan,
    drift_share: float,
) -> EvidentlyRun:
    """Evidently's run of the drift metrics on both sides."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    from monitoring.heap import freeze_imports
    from monitoring.lean import lean_report

    freeze_imports("evidently")  # its ~220,000 import-time objects (monitoring/heap.py)
    definition = DataDefinition(
        numerical_columns=[c for c in columns if c not in categories],
        categorical_columns=[c for c in columns if c in categories],
    )
    metrics: list[Any] = []
    if plan.testable:
        # The metrics DataDriftPreset generates, without the preset's own render, which
        # recomputes every column's drift through Evidently's legacy metrics to draw its
        # table (about half the check): each ValueDrift still draws its own widget.
        metrics.append(DriftedColumnsCount(columns=plan.testable, drift_share=drift_share))
        metrics += [ValueDrift(column=column) for column in plan.testable]
    metrics += [ValueDrift(column=c) for c in (plan.prediction, plan.score) if c is not None]
    report = Report(metrics, include_tests=True)
    with warnings.catch_warnings(), lean_report():
        # scipy divides by zero for categories seen on one side only; the test still fails
        # (drift), which is the right answer. `lean_report`: the same report without
        # plotly's object layer and the legacy recount (monitoring/lean.py).
        warnings.simplefilter("ignore", RuntimeWarning)
        return report.run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition),
        )


def _per_feature(
    found: dict[str, FeatureDrift], features: list[str], plan: _Plan
) -> dict[str, FeatureDrift]:
    """Each judged feature's drift in feature order; one missing in the window drifted."""
    per_feature: dict[str, FeatureDrift] = {}
    for column in plan.testable:
        if column not in found:
            raise RuntimeError(f"Evidently returned no ValueDrift result for column {column!r}")
        per_feature[column] = found[column]
    for column in plan.empty_current:
        per_feature[column] = FeatureDrift(math.nan, _ALL_MISSING, None, True)
    return {c: per_feature[c] for c in features if c in per_feature}


def label_shares(reference: pd.Series, current: pd.Series) -> dict[str, dict[str, float]]:
    """Each class's share of the predictions on both sides (classes seen on either)."""
    ref = reference.dropna().value_counts(normalize=True)
    cur = current.dropna().value_counts(normalize=True)
    classes = sorted(set(ref.index) | set(cur.index), key=str)
    return {
        "reference": {str(c): float(ref.get(c, 0.0)) for c in classes},
        "current": {str(c): float(cur.get(c, 0.0)) for c in classes},
    }


def save_report(run: EvidentlyRun, folder: Path, name: str = "drift") -> tuple[Path, Path]:
    """Write ``<name>.html`` (for people) and ``<name>.json`` (for machines) into ``folder``,
    and the whole run beside them (`report_run_file`), which Evidently can load again.

    The widgets (most of a report's bytes) are turned into plain data once, for the run's
    file, and the HTML page is built from that data (`_report_html`): Evidently's own
    ``save_html`` would convert every widget again (a tenth of a 1M-row check).
    """
    import json

    from evidently.legacy.utils.numpy_encoder import NumpyEncoder

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    html_path, json_path = folder / f"{name}.html", folder / f"{name}.json"
    from monitoring.lean import dump_run

    dumped = dump_run(run)
    html_path.write_text(_report_html(run, dumped), encoding="utf-8")
    run.save_json(str(json_path))  # Evidently 0.7 writes only when given a str
    report_run_file(json_path).write_text(json.dumps(dumped, cls=NumpyEncoder))
    return html_path, json_path


class _Dumped:
    """Stands in for Evidently's ``DashboardInfo`` where only its ``dict()`` is read."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def dict(self) -> dict[str, Any]:
        return self.data


def _report_html(run: EvidentlyRun, dumped: dict[str, Any]) -> str:
    """The page ``run.save_html`` writes, from the run's ``dump_dict()`` (`dumped`): the
    same template, widgets and extra graphs (the test compares the two byte for byte, but
    for the random dashboard id)."""
    import uuid

    from evidently.core.metric_types import render_widgets
    from evidently.legacy.model.widget import AdditionalGraphInfo, BaseWidgetInfo
    from evidently.legacy.renderers.html_widgets import group_widget
    from evidently.legacy.utils.dashboard import TemplateParams, file_html_template

    # What `get_html_str` renders: the widgets in a group, then the tests' widgets.
    rendered = [group_widget(title="", widgets=run._widgets), *run._tests_widgets]
    if len(dumped.get("widgets", ())) != len(run._widgets) or len(
        dumped.get("tests_widgets", ())
    ) != len(run._tests_widgets):  # not the layout this was written for: Evidently's own
        return str(render_widgets(rendered))
    group = group_widget(title="", widgets=[]).dict()
    group["widgets"] = dumped["widgets"]
    info = {"name": "Report", "widgets": [group, *[dict(w) for w in dumped["tests_widgets"]]]}
    graphs: dict[str, Any] = {}
    for widget in rendered:  # as `render_widgets` collects them
        for graph in widget.get_additional_graphs():
            found = graph.params if isinstance(graph, AdditionalGraphInfo) else graph
            graphs[f"{graph.id}"] = found.dict() if isinstance(found, BaseWidgetInfo) else found
    return file_html_template(
        TemplateParams(
            dashboard_id="metric_" + str(uuid.uuid4()).replace("-", ""),
            dashboard_info=_Dumped(info),  # type: ignore[arg-type]
            additional_graphs=graphs,
        )
    )


def title_report(html_path: Path | str, title: str, lines: Sequence[str]) -> None:
    """Give a saved HTML report a title and a header (Evidently writes neither): the page
    title and, above the widgets, `title` and `lines` (model, versions, window, OOD rate,
    decision) so that a report opened on its own says what it is."""
    import html

    path = Path(html_path)
    text = path.read_text(encoding="utf-8")
    header = (
        '<div id="driftloop-header" style="font-family:sans-serif;margin:16px 24px">'
        f'<h1 style="font-size:22px;margin:0 0 8px">{html.escape(title)}</h1>'
        + "".join(f'<p style="margin:2px 0">{html.escape(line)}</p>' for line in lines)
        + "</div>"
    )
    page_title = f"<title>{html.escape(title)}</title>"
    if "<title>" in text:
        start, end = text.index("<title>"), text.index("</title>") + len("</title>")
        text = text[:start] + page_title + text[end:]
    elif "<head>" in text:
        text = text.replace("<head>", "<head>" + page_title, 1)
    body = text.find("<body")
    if body >= 0:
        close = text.index(">", body) + 1
        text = text[:close] + header + text[close:]
    else:
        text = header + text
    path.write_text(text, encoding="utf-8")


def report_run_file(report_json: Path | str) -> Path:
    """Where `save_report` keeps the loadable run of a report (``<name>.snapshot.json``,
    Evidently's own word, beside ``<name>.json``): `save_json` writes only the results,
    which Evidently's ``Snapshot.load`` cannot read back."""
    path = Path(report_json)
    return path.with_name(f"{path.stem}.snapshot.json")


def _check_inputs(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: Sequence[str],
    categorical: Sequence[str],
    prediction_column: str | None,
) -> list[str]:
    """All columns to compare, or a ValueError naming what is wrong and where."""
    if not features:
        raise ValueError("no features given to check for drift")
    if prediction_column is not None and prediction_column in features:
        raise ValueError(
            f"prediction column {prediction_column!r} is also listed as a feature; list it "
            "once, as prediction_column"
        )
    columns = [*features, *([prediction_column] if prediction_column else [])]
    stray = [c for c in categorical if c not in columns]
    if stray:
        raise ValueError(f"categorical column(s) {stray} are not among the features {columns}")
    for frame, side in ((reference, "reference"), (current, "current window")):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"the {side} lacks column(s) {missing}; it has {list(frame.columns)}")
    return columns


def _prepare(frame: pd.DataFrame, columns: list[str], categorical: set[str]) -> pd.DataFrame:
    """Only the compared columns: numbers as float, categories as one string spelling each."""
    out = {}
    for column in columns:
        series = frame[column]
        if column in categorical:
            out[column] = category_keys(series)
        else:
            out[column] = pd.to_numeric(series, errors="coerce").astype(np.float64)
    return pd.DataFrame(out, index=frame.index).reset_index(drop=True)


def _read_value_drift(run: EvidentlyRun) -> dict[str, FeatureDrift]:
    """Every ValueDrift result keyed by column, with its verdict from the matching test."""
    data = run.dict()
    verdicts: dict[str, bool] = {}
    for test in data["tests"]:
        params = test.get("metric_config", {}).get("params", {})
        if params.get("type") == _VALUE_DRIFT and test.get("id") == "drift":
            status = getattr(test["status"], "value", test["status"])
            verdicts[params["column"]] = str(status).upper() == "FAIL"
    results: dict[str, FeatureDrift] = {}
    for metric in data["metrics"]:
        config = metric.get("config", {})
        if config.get("type") != _VALUE_DRIFT:
            continue
        column = config["column"]
        if column not in verdicts:
            raise RuntimeError(f"Evidently returned no drift test for column {column!r}")
        threshold = config.get("threshold")
        results[column] = FeatureDrift(
            score=float(metric["value"]),
            method=str(config.get("method")),
            threshold=None if threshold is None else float(threshold),
            drifted=verdicts[column],
        )
    return results


# -- performance ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PerformanceResult:
    """Live performance of one model on its labelled rows."""

    task: Task
    n_labelled: int
    metrics: dict[str, float]
    """rmse and mae (regression) or accuracy and f1_macro (classification); {} without labels."""
    primary_metric: str
    higher_is_better: bool

    @property
    def value(self) -> float | None:
        """The primary metric, or None when there were no labelled rows."""
        return self.metrics.get(self.primary_metric)


def measure_performance(
    y_true: Sequence[Any],
    y_pred: Sequence[Any],
    task: Task,
    scores: Sequence[Mapping[str, float] | None] | None = None,
) -> PerformanceResult:
    """RMSE/MAE or accuracy/macro F1 on the rows that have both a label and a prediction;
    for a classifier whose rows carry class probabilities (`scores`), also roc_auc and
    log_loss on the rows that have them (`score_metrics`).

    Rows without a label (feedback not in yet) are skipped and not counted in ``n_labelled``.
    """
    if task not in ("regression", "classification"):
        raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")
    truth, pred = pd.Series(list(y_true), dtype=object), pd.Series(list(y_pred), dtype=object)
    if len(truth) != len(pred):
        raise ValueError(
            f"{len(truth)} labels but {len(pred)} predictions; join them by request id"
        )
    primary, higher = PRIMARY_METRICS[task].name, PRIMARY_METRICS[task].higher_is_better
    if task == "regression":
        t = pd.to_numeric(truth, errors="coerce").to_numpy(dtype=np.float64)
        p = pd.to_numeric(pred, errors="coerce").to_numpy(dtype=np.float64)
        keep = np.isfinite(t) & np.isfinite(p)
        errors = t[keep] - p[keep]
        metrics = (
            {
                "rmse": float(np.sqrt(np.mean(errors**2))),
                "mae": float(np.mean(np.abs(errors))),
            }
            if keep.any()
            else {}
        )
        return PerformanceResult(task, int(keep.sum()), metrics, primary, higher)

    from sklearn.metrics import accuracy_score, f1_score

    t_keys = [category_key(v) for v in truth]
    p_keys = [category_key(v) for v in pred]
    pairs = [(a, b) for a, b in zip(t_keys, p_keys, strict=True) if a is not None and b is not None]
    metrics = {}
    if pairs:
        labels, predicted = zip(*pairs, strict=True)
        metrics = {
            "accuracy": float(accuracy_score(labels, predicted)),
            "f1_macro": float(f1_score(labels, predicted, average="macro", zero_division=0)),
        }
        if scores is not None:
            metrics.update(score_metrics(t_keys, scores))
    return PerformanceResult(task, len(pairs), metrics, primary, higher)


def score_metrics(
    label_keys: Sequence[str | None], scores: Sequence[Mapping[str, float] | None]
) -> dict[str, float]:
    """roc_auc (binary: of the second class in sorted order, which gives the same area as
    the first; more classes: one-vs-rest, macro) and log_loss, on the labelled rows whose
    scores name every class of the scored rows; {} when fewer than two classes were
    labelled or no row has scores."""
    from sklearn.metrics import log_loss, roc_auc_score

    if len(label_keys) != len(scores):
        raise ValueError(f"{len(label_keys)} labels but {len(scores)} score rows")
    rows = [
        (key, {str(k): float(v) for k, v in s.items()})
        for key, s in zip(label_keys, scores, strict=True)
        if key is not None and isinstance(s, Mapping) and s
    ]
    if not rows:
        return {}
    classes = sorted({c for _, s in rows for c in s})
    rows = [(key, s) for key, s in rows if key in s and all(c in s for c in classes)]
    seen = {key for key, _ in rows}
    if len(seen) < 2:
        return {}
    truth = [key for key, _ in rows]
    proba = np.array([[s[c] for c in classes] for _, s in rows], dtype=np.float64)
    if not np.isfinite(proba).all():
        return {}
    if len(classes) == 2:
        auc = roc_auc_score([k == classes[1] for k in truth], proba[:, 1])
    elif len(seen) == len(classes):
        auc = roc_auc_score(truth, proba, multi_class="ovr", labels=classes)
    else:
        auc = math.nan  # one-vs-rest needs every class labelled
    result = {"log_loss": float(log_loss(truth, proba, labels=classes))}
    if not math.isnan(auc):
        result["roc_auc"] = float(auc)
    return result
